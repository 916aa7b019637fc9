//! The two matchers policies use: globs (`*`, `?`) and IP ranges (CIDR).
//!
//! Both are built once, when a policy is compiled, and match without
//! allocating.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A glob pattern: `*` matches any run of characters (possibly empty), `?`
/// exactly one character, everything else itself, case-sensitively. There
/// is no escape: a policy cannot match a literal `*` or `?` other than with
/// a wildcard.
///
/// A *segmented* glob (workload principals) never lets `*` or `?` match a
/// `/`, so `spiffe://*/account/*/workload/web` cannot be satisfied by
/// stretching one `*` across several path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<str>,
    shape: Shape,
    segmented: bool,
}

/// Precomputed shapes, so the common patterns cost one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `*`: everything.
    Any,
    /// No wildcard: equality.
    Exact,
    /// `literal*`: a prefix (literal is `pattern[..len - 1]`).
    Prefix,
    /// `*literal`: a suffix (literal is `pattern[1..]`).
    Suffix,
    /// Anything else: the general matcher.
    General,
}

impl Glob {
    /// Compile `pattern`; `*` may match `/`.
    pub fn new(pattern: &str) -> Self {
        Self::build(pattern, false)
    }

    /// Compile `pattern`; wildcards never match `/`.
    pub fn segmented(pattern: &str) -> Self {
        Self::build(pattern, true)
    }

    fn build(pattern: &str, segmented: bool) -> Self {
        let wild = |s: &str| s.contains(['*', '?']);
        let shape = if pattern == "*" && !segmented {
            Shape::Any
        } else if !wild(pattern) {
            Shape::Exact
        } else if segmented {
            Shape::General
        } else if let Some(lit) = pattern.strip_suffix('*')
            && !wild(lit)
        {
            Shape::Prefix
        } else if let Some(lit) = pattern.strip_prefix('*')
            && !wild(lit)
        {
            Shape::Suffix
        } else {
            Shape::General
        };
        Self {
            pattern: pattern.into(),
            shape,
            segmented,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern is `*` alone (matches everything).
    pub fn is_any(&self) -> bool {
        self.shape == Shape::Any
    }

    /// Whether `input` matches the whole pattern.
    pub fn matches(&self, input: &str) -> bool {
        let p = &*self.pattern;
        match self.shape {
            Shape::Any => true,
            Shape::Exact => p == input,
            Shape::Prefix => input.starts_with(&p[..p.len() - 1]),
            Shape::Suffix => input.ends_with(&p[1..]),
            Shape::General => general(p.as_bytes(), input.as_bytes(), self.segmented),
        }
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// Length in bytes of the UTF-8 character that starts with `b`, so that `?`
/// and `*` consume whole characters (1 for anything that is not a leading
/// byte, which cannot happen on a `&str` boundary).
fn char_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The classic linear-space wildcard matcher with one backtrack point: on a
/// mismatch, the most recent `*` absorbs one more character. O(len(p) ×
/// len(s)) at worst, which policy and request limits keep small. Literal
/// bytes of `p` are whole UTF-8 sequences, so they never match the middle of
/// a character of `s`.
fn general(p: &[u8], s: &[u8], segmented: bool) -> bool {
    let (mut pi, mut si) = (0, 0);
    // (index of the last `*` in p, index in s where it stopped absorbing)
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            Some(b'?') if !(segmented && s[si] == b'/') => {
                pi += 1;
                si += char_len(s[si]);
                continue;
            }
            Some(&c) if c == s[si] => {
                pi += 1;
                si += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, mark)) if !(segmented && s[mark] == b'/') => {
                let mark = mark + char_len(s[mark]);
                star = Some((sp, mark));
                pi = sp + 1;
                si = mark;
            }
            _ => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|&b| b == b'*')
}

/// An IPv4 or IPv6 range, `10.0.0.0/8`, `2001:db8::/32`, or a single
/// address (`10.1.2.3` is `10.1.2.3/32`). Bits beyond the prefix are
/// ignored, as IAM does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range. IPv4-mapped IPv6 addresses
    /// (`::ffff:10.1.2.3`) count as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!(
                "'{s}' is not an IP address or CIDR range, e.g. '10.0.0.0/8' or '2001:db8::/32'"
            )
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("'{s}': the prefix length must be 0 to {max}")),
            },
        };
        Ok(Self {
            addr: addr.to_canonical(),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The obvious exponential matcher, as the reference.
    fn reference(p: &[char], s: &[char], seg: bool) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len())
                .any(|k| (!seg || !s[..k].contains(&'/')) && reference(&p[1..], &s[k..], seg)),
            Some('?') => {
                s.first().is_some_and(|&c| !(seg && c == '/')) && reference(&p[1..], &s[1..], seg)
            }
            Some(c) => s.first() == Some(c) && reference(&p[1..], &s[1..], seg),
        }
    }

    fn all_strings(alphabet: &[char], max: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..max {
            let mut next = Vec::new();
            for s in &frontier {
                for c in alphabet {
                    let mut t = s.clone();
                    t.push(*c);
                    next.push(t);
                }
            }
            out.extend(next.iter().cloned());
            frontier = next;
        }
        out
    }

    #[test]
    fn agrees_with_the_reference_on_every_small_case() {
        let patterns = all_strings(&['a', '/', '*', '?'], 5);
        let inputs = all_strings(&['a', 'b', '/', 'é'], 5);
        let mut checked = 0;
        for p in &patterns {
            let pc: Vec<char> = p.chars().collect();
            for seg in [false, true] {
                let g = if seg {
                    Glob::segmented(p)
                } else {
                    Glob::new(p)
                };
                for s in &inputs {
                    let sc: Vec<char> = s.chars().collect();
                    assert_eq!(
                        g.matches(s),
                        reference(&pc, &sc, seg),
                        "pattern {p:?} input {s:?} segmented {seg}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 1_000_000, "{checked}");
    }

    #[test]
    fn shapes() {
        assert!(Glob::new("*").is_any());
        assert!(!Glob::segmented("*").is_any());
        assert!(Glob::new("/api/*").matches("/api/v1/x"));
        assert!(!Glob::new("/api/*").matches("/ap"));
        assert!(Glob::new("*.json").matches("/a/b.json"));
        assert!(Glob::new("GET").matches("GET"));
        assert!(
            !Glob::new("GET").matches("get"),
            "values are case-sensitive"
        );
        assert!(Glob::new("/v?/*/items").matches("/v1/x/y/items"));
        assert!(
            Glob::new("?").matches("é"),
            "? is one character, not one byte"
        );
        assert!(!Glob::new("??").matches("é"));
        assert!(!Glob::segmented("*").matches("a/b"));
        assert!(
            Glob::segmented("spiffe://*/account/*/workload/web-*")
                .matches("spiffe://trellis.local/account/111122223333/workload/web-1")
        );
        assert!(
            !Glob::segmented("spiffe://*/workload/web")
                .matches("spiffe://trellis.local/account/111122223333/workload/web")
        );
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert!(
            "192.0.2.1/24"
                .parse::<Cidr>()
                .unwrap()
                .contains("192.0.2.200".parse().unwrap())
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "::/129",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }
}
