//! The host map: which service answers to a `Host` / `:authority`, found
//! without allocating per request.
//!
//! Keys are stored lower-case without a trailing dot (the control plane
//! normalises custom domains the same way). A request's host is split from
//! its port, and only when it holds an upper-case letter is it copied,
//! lower-cased, into a stack buffer before the lookup.

use std::collections::HashMap;

/// The port a request addresses when its host carries none. Plain HTTP is
/// what local applications send to the outbound listener; an HTTPS
/// listener is reached on 443 only when the client says so.
pub const DEFAULT_PORT: u16 = 80;

/// Size of the stack buffer a mixed-case host is lower-cased into: the
/// longest DNS name (253) rounded up. A snapshot whose hosts are all at most
/// this long (every valid one) never makes a lookup allocate.
const HOST_BUF_LEN: usize = 256;

/// Split a `Host` header or `:authority` into host and port.
///
/// Accepts `name`, `name:port`, `[v6]` and `[v6]:port`; the brackets of an
/// IPv6 literal are removed. No port, or an empty one (`name:`, which RFC
/// 3986 allows), means [`DEFAULT_PORT`]. A trailing dot of a fully
/// qualified name is removed, so `api.example.` finds `api.example`.
///
/// Returns `None` for a malformed value (a port that is not 1–5 digits
/// below 65536, an unbracketed IPv6 address, an unclosed bracket, an empty
/// host), which the listener should answer with 400.
pub fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (inside, port)
    } else {
        match authority.split_once(':') {
            // A second colon means an IPv6 literal without brackets.
            Some((_, p)) if p.contains(':') => return None,
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None | Some("") => DEFAULT_PORT,
        Some(p) => parse_port(p)?,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port))
}

/// Digits only: `u16::from_str` would also take `+80`.
fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// Lower-case host name -> index of a service in the route table.
#[derive(Debug, Default)]
pub(super) struct HostMap {
    map: HashMap<Box<str>, usize>,
    /// Longest key: a longer request host cannot match and is not copied.
    longest: usize,
}

impl HostMap {
    /// Normalise `host` as a key: lower-case, no trailing dot.
    pub(super) fn key(host: &str) -> String {
        let host = host.strip_suffix('.').unwrap_or(host);
        host.to_ascii_lowercase()
    }

    /// Add `host`; returns the service that already had it, if any (and then
    /// keeps that one).
    pub(super) fn insert(&mut self, host: &str, service: usize) -> Result<(), usize> {
        let key = Self::key(host);
        if let Some(&existing) = self.map.get(key.as_str()) {
            return Err(existing);
        }
        self.longest = self.longest.max(key.len());
        self.map.insert(key.into_boxed_str(), service);
        Ok(())
    }

    /// The service answering to `host` (already split from its port),
    /// compared case-insensitively.
    pub(super) fn get(&self, host: &str) -> Option<usize> {
        if host.len() > self.longest {
            return None;
        }
        if !host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.map.get(host).copied();
        }
        let mut buf = [0u8; HOST_BUF_LEN];
        match buf.get_mut(..host.len()) {
            Some(dst) => {
                dst.copy_from_slice(host.as_bytes());
                dst.make_ascii_lowercase();
                // Lower-casing ASCII bytes keeps UTF-8 valid.
                let lower = std::str::from_utf8(dst).ok()?;
                self.map.get(lower).copied()
            }
            // Only reachable when the snapshot itself holds a host longer
            // than any DNS name.
            None => self.map.get(host.to_ascii_lowercase().as_str()).copied(),
        }
    }

    /// Number of host names.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn splits_ports_and_brackets() {
        assert_eq!(split_host_port("api.x"), Some(("api.x", 80)));
        assert_eq!(split_host_port("api.x:8080"), Some(("api.x", 8080)));
        assert_eq!(split_host_port("api.x:"), Some(("api.x", 80)));
        assert_eq!(split_host_port("api.x.:443"), Some(("api.x", 443)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1", 80)));
        assert_eq!(split_host_port("[::1]:8443"), Some(("::1", 8443)));
        assert_eq!(split_host_port("[fe80::1]"), Some(("fe80::1", 80)));
        assert_eq!(split_host_port("10.0.0.1:9000"), Some(("10.0.0.1", 9000)));
    }

    #[test]
    fn rejects_malformed_hosts() {
        for bad in [
            "",
            ":80",
            "api.x:+80",
            "api.x:65536",
            "api.x:123456",
            "api.x:8o",
            "::1",
            "::1:80",
            "[::1",
            "[::1]80",
            "[::1]:x",
            "[]:80",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        let mut m = HostMap::default();
        assert_eq!(m.insert("API.Example.COM.", 3), Ok(()));
        assert_eq!(m.get("api.example.com"), Some(3));
        assert_eq!(m.get("Api.Example.Com"), Some(3));
        assert_eq!(m.get("api.example.org"), None);
        assert_eq!(m.get("a-much-longer-host-than-any-key.example.com"), None);
    }

    #[test]
    fn duplicate_host_reports_the_first_owner() {
        let mut m = HostMap::default();
        assert_eq!(m.insert("a.x", 0), Ok(()));
        assert_eq!(m.insert("A.X", 1), Err(0));
        assert_eq!(m.get("a.x"), Some(0));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn non_ascii_hosts_do_not_panic() {
        let mut m = HostMap::default();
        assert_eq!(m.insert("bücher.example", 0), Ok(()));
        assert_eq!(m.get("BÜCHER.example"), None);
        assert_eq!(m.get("Bücher.EXAMPLE"), Some(0));
    }
}
