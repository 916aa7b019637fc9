//! What a policy may look at: the facts of one request, borrowed from the
//! proxy's own request, and the readers of its multi-valued parts (query
//! string, port) that need no allocation.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// Access to the request's headers, so the proxy can lend its own header
/// map without copying it (wrap `http::HeaderMap` in a newtype and call
/// `get_all(name)`).
pub trait HeaderLookup {
    /// Call `f` with each value of header `name` (given in lowercase), in
    /// order, until it returns `true`; return whether it did. An absent
    /// header has no value. Values that are not valid UTF-8 may be skipped.
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool;
}

fn pairs_any<N: AsRef<str>, V: AsRef<str>>(
    pairs: &[(N, V)],
    name: &str,
    f: &mut dyn FnMut(&str) -> bool,
) -> bool {
    pairs
        .iter()
        .any(|(n, v)| n.as_ref().eq_ignore_ascii_case(name) && f(v.as_ref()))
}

/// Headers as name–value pairs (names compared ignoring ASCII case), for
/// tests, benches and `explain`.
impl<N: AsRef<str>, V: AsRef<str>, const K: usize> HeaderLookup for [(N, V); K] {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        pairs_any(self, name, f)
    }
}

/// See the array implementation.
impl<N: AsRef<str>, V: AsRef<str>> HeaderLookup for Vec<(N, V)> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        pairs_any(self, name, f)
    }
}

/// A request without headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl HeaderLookup for NoHeaders {
    fn any_value(&self, _: &str, _: &mut dyn FnMut(&str) -> bool) -> bool {
        false
    }
}

/// An authenticated caller: what its mesh certificate says. `account` must
/// be the account named in `workload` (both come from one
/// `WorkloadIdentity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'r> {
    /// Its twelve-digit account id.
    pub account: &'r str,
    /// Its SPIFFE id,
    /// `spiffe://<trust-domain>/account/<id>/workload/<name>`.
    pub workload: &'r str,
}

/// What a policy may look at, borrowed from the request being served.
#[derive(Clone, Copy)]
pub struct RequestFacts<'r> {
    /// The caller, or `None` for an anonymous one (no mesh certificate).
    pub caller: Option<Caller<'r>>,
    /// HTTP method, as sent (`GET`).
    pub method: &'r str,
    /// Path without the query string, exactly as the router matched it.
    pub path: &'r str,
    /// Raw query string without the `?` (empty when there is none).
    pub query: &'r str,
    /// The request headers.
    pub headers: &'r dyn HeaderLookup,
    /// The listener port the request arrived on.
    pub port: u16,
    /// The caller's IP address, when known.
    pub source_ip: Option<IpAddr>,
    /// Name of the service network the request came through, if any.
    pub service_network: Option<&'r str>,
    /// Name of the service called.
    pub service: &'r str,
    /// Account that owns the service called.
    pub service_account: &'r str,
}

impl fmt::Debug for RequestFacts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestFacts")
            .field("caller", &self.caller)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("port", &self.port)
            .field("source_ip", &self.source_ip)
            .field("service_network", &self.service_network)
            .field("service", &self.service)
            .field("service_account", &self.service_account)
            .finish_non_exhaustive()
    }
}

/// `port` in decimal, written into `buf`.
pub(super) fn port_str(port: u16, buf: &mut [u8; 5]) -> &str {
    let mut i = buf.len();
    let mut n = port;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// Values of query parameter `key` (keys and values percent-decoded, `+`
/// as space; a parameter without `=` has the empty value). One pass over
/// the bytes: `&` and `=` are ASCII, so every split is a char boundary.
pub(super) fn query_any(query: &str, key: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
    let mut rest = query;
    while !rest.is_empty() {
        let (pair, next) = match rest.bytes().position(|b| b == b'&') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        rest = next;
        let (k, v) = match pair.bytes().position(|b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        let key_matches = if needs_decoding(k) {
            decode(k) == key
        } else {
            k == key
        };
        if !pair.is_empty() && key_matches && f(&decode(v)) {
            return true;
        }
    }
    false
}

fn needs_decoding(s: &str) -> bool {
    s.bytes().any(|b| b == b'%' || b == b'+')
}

/// Percent-decode `s` (form encoding: `+` is a space). Borrows when there
/// is nothing to decode; a `%` not followed by two hex digits stays as it
/// is; bytes that are not UTF-8 become U+FFFD.
fn decode(s: &str) -> Cow<'_, str> {
    if !needs_decoding(s) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_print_without_allocating() {
        let mut buf = [0u8; 5];
        assert_eq!(port_str(0, &mut buf), "0");
        assert_eq!(port_str(8, &mut buf), "8");
        assert_eq!(port_str(80, &mut buf), "80");
        assert_eq!(port_str(65535, &mut buf), "65535");
    }

    #[test]
    fn query_values_are_decoded() {
        let values = |q: &str, k: &str| {
            let mut out = Vec::new();
            query_any(q, k, &mut |v| {
                out.push(v.to_string());
                false
            });
            out
        };
        assert_eq!(values("a=1&b=2&a=3", "a"), ["1", "3"]);
        assert_eq!(values("admin=%74rue", "admin"), ["true"]);
        assert_eq!(values("%61dmin=x", "admin"), ["x"]);
        assert_eq!(values("q=a+b%2Fc", "q"), ["a b/c"]);
        assert_eq!(values("flag&x=1", "flag"), [""]);
        assert_eq!(values("p=100%", "p"), ["100%"]);
        assert_eq!(values("p=%4", "p"), ["%4"]);
        assert_eq!(values("p=%zz", "p"), ["%zz"]);
        assert_eq!(
            values("A=1", "a"),
            Vec::<String>::new(),
            "keys are case-sensitive"
        );
        assert_eq!(values("", "a"), Vec::<String>::new());
    }
}
