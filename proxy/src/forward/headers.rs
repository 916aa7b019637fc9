//! Header rewriting on the way through: hop-by-hop fields (RFC 9110
//! §7.6.1) are dropped in both directions, `x-forwarded-*` and
//! `x-request-id` are set on requests.

use crate::error::REQUEST_ID_HEADER;
use http::header::{
    CONNECTION, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Version};
use std::net::IpAddr;

/// Appended with the client's IP by every proxy on the way.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme the original client used: `https` for a client of an HTTPS
/// listener, kept by fronting proxies; `http` otherwise.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Set by an outbound proxy that sends to a fronting proxy: the
/// `address:port` of the target behind it. Stripped by the inbound proxy.
pub const X_TRELLIS_TARGET: HeaderName = HeaderName::from_static("x-trellis-target");
/// The caller's SPIFFE id, set by the inbound proxy from the caller's
/// mesh certificate (like Lattice's `x-amzn-lattice-identity`).
pub const X_TRELLIS_CALLER_IDENTITY: HeaderName =
    HeaderName::from_static("x-trellis-caller-identity");
/// The caller's account, from the same certificate.
pub const X_TRELLIS_CALLER_ACCOUNT: HeaderName =
    HeaderName::from_static("x-trellis-caller-account");

/// Set by an outbound proxy on a request it forwards to a fronting proxy
/// for a client outside the mesh (an HTTPS listener's connection): the
/// fronting proxy must then treat the caller as anonymous, not as the
/// forwarding proxy's certificate. A proxy can only lower its own
/// standing with it, so the inbound trusts it; clients cannot send it
/// (stripped with the caller-identity headers).
pub const X_TRELLIS_ANONYMOUS: HeaderName = HeaderName::from_static("x-trellis-anonymous");

/// Remove caller-identity headers a client sent: only the inbound proxy
/// sets them, from the certificate, so a caller cannot forge them.
pub fn strip_caller_identity(headers: &mut http::HeaderMap) {
    headers.remove(X_TRELLIS_CALLER_IDENTITY);
    headers.remove(X_TRELLIS_CALLER_ACCOUNT);
    headers.remove(X_TRELLIS_ANONYMOUS);
}

/// Replace the caller-identity headers by `caller`'s (none: anonymous).
pub fn set_caller_identity(
    headers: &mut http::HeaderMap,
    caller: Option<&trellis_config::identity::WorkloadIdentity>,
) {
    strip_caller_identity(headers);
    let Some(id) = caller else {
        return;
    };
    if let Ok(v) = http::HeaderValue::from_str(&id.uri()) {
        headers.insert(X_TRELLIS_CALLER_IDENTITY, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(id.account()) {
        headers.insert(X_TRELLIS_CALLER_ACCOUNT, v);
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const TRAILERS: HeaderValue = HeaderValue::from_static("trailers");
const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");
const HTTP: HeaderValue = HeaderValue::from_static("http");
const HTTPS: HeaderValue = HeaderValue::from_static("https");

/// Longest client-sent request id kept as is; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether an HTTP/1.1 request asks for a protocol upgrade (WebSocket):
/// an `Upgrade` field and `upgrade` among the `Connection` options.
pub fn is_upgrade_request(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(UPGRADE)
        && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Drop the hop-by-hop fields: `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`,
/// `Upgrade`, `Trailer`, `Proxy-Authenticate` and `Proxy-Authorization`.
///
/// Kept on purpose: `te: trailers` on requests (gRPC needs it end to
/// end; it is re-added as exactly `trailers`), and, when `upgrading`,
/// `Upgrade` with `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, is_request: bool, upgrading: bool) {
    let wants_trailers = is_request
        && headers.get_all(TE).iter().any(|v| {
            v.as_bytes().split(|b| *b == b',').any(|t| {
                let t = t.split(|b| *b == b';').next().unwrap_or(t);
                t.trim_ascii().eq_ignore_ascii_case(b"trailers")
            })
        });
    if headers.contains_key(CONNECTION) {
        // Only requests with a Connection field pay for this list.
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .collect();
        for name in named {
            if !(upgrading && name == UPGRADE) {
                headers.remove(name);
            }
        }
        headers.remove(CONNECTION);
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRANSFER_ENCODING,
        TRAILER,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    if upgrading {
        headers.insert(CONNECTION, UPGRADE_TOKEN);
    } else {
        headers.remove(UPGRADE);
    }
    if wants_trailers {
        headers.insert(TE, TRAILERS);
    }
}

/// A request extension: the original client spoke TLS to the mesh (an
/// HTTPS listener's connection, or, at a fronting proxy's inbound, a
/// calling proxy that said `x-forwarded-proto: https`). Absent: `http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHttps;

/// Append the client's IP to `x-forwarded-for` (one field, comma
/// separated) and set `x-forwarded-proto` (`https` when `https`).
pub fn set_forwarded(headers: &mut HeaderMap, client: IpAddr, https: bool) {
    let ip = client.to_canonical().to_string();
    let mut previous = headers.get_all(&X_FORWARDED_FOR).iter();
    let value = match (previous.next(), previous.next()) {
        (None, _) => HeaderValue::from_str(&ip).ok(),
        (Some(only), None) => {
            let mut v = Vec::with_capacity(only.len() + 2 + ip.len());
            v.extend_from_slice(only.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        (Some(_), Some(_)) => {
            let mut v = Vec::new();
            for part in headers.get_all(&X_FORWARDED_FOR) {
                v.extend_from_slice(part.as_bytes());
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(ip.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
    };
    if let Some(value) = value {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, if https { HTTPS } else { HTTP });
}

/// The request's id: the client's `x-request-id` if it is sane (1–128
/// visible ASCII characters), otherwise a new random one, which is then
/// set on the request.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&REQUEST_ID_HEADER)
        && !v.is_empty()
        && v.len() <= MAX_REQUEST_ID_LEN
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    let id = new_request_id();
    headers.insert(REQUEST_ID_HEADER, id.clone());
    id
}

/// A random id in UUID v4 form.
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    // Version 4, variant 10xx, as a UUID v4 has.
    n = (n & !(0xf << 76)) | (0x4 << 76);
    n = (n & !(0x3 << 62)) | (0x2 << 62);
    let mut out = [0u8; 36];
    let mut bit = 128;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
            continue;
        }
        bit -= 4;
        *slot = HEX[((n >> bit) & 0xf) as usize];
    }
    // 36 ASCII hex digits and dashes are always a valid value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("trailer", "grpc-status"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("host", "a.example"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut h, true, false);
        assert_eq!(names(&h), ["content-type", "host"]);
    }

    #[test]
    fn keeps_te_trailers_on_requests_only() {
        let mut h = map(&[("te", "trailers, deflate;q=0.5"), ("connection", "te")]);
        strip_hop_by_hop(&mut h, true, false);
        assert_eq!(h.get(TE).unwrap(), "trailers");
        assert!(h.get(CONNECTION).is_none());

        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false, false);
        assert!(h.get(TE).is_none());
    }

    #[test]
    fn keeps_upgrade_when_upgrading() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade_request(Version::HTTP_11, &h));
        assert!(!is_upgrade_request(Version::HTTP_10, &h));
        strip_hop_by_hop(&mut h, true, true);
        assert_eq!(h.get(UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(CONNECTION).unwrap(), "upgrade");
        assert_eq!(h.get("sec-websocket-key").unwrap(), "k");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "10.0.0.1".parse().unwrap(), false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        set_forwarded(&mut h, "::ffff:10.0.0.2".parse().unwrap(), true);
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2");
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.3"));
        set_forwarded(&mut h, "::1".parse().unwrap(), false);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 10.0.0.3, ::1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(ensure_request_id(&mut h), "abc-123");

        let mut h = map(&[("x-request-id", "has space")]);
        let id = ensure_request_id(&mut h);
        assert_ne!(id, "has space");
        assert_eq!(h[&REQUEST_ID_HEADER], id);

        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert_eq!(
            s.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
    }
}
