//! Checking a request head from raw bytes, before hyper sees the
//! connection, so that every way a head can be wrong is answered with the
//! proxy's own error shape (hyper answers parse errors with bare
//! responses, without our reason header or body).
//!
//! [`check_first_head`] looks at the first bytes of a new connection and
//! says: wait for more, HTTP/2 with prior knowledge, a valid HTTP/1.x head,
//! or the [`Failure`] to answer. It is pure (no I/O) so every error class
//! is tested from bytes below.

use crate::error::{Failure, Reason};

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The verdict on the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeadCheck {
    /// Not enough bytes to decide.
    Partial,
    /// The HTTP/2 connection preface: hand to the HTTP/2 server.
    Http2,
    /// A complete, valid HTTP/1.x request head: hand to the HTTP/1 server.
    Http1,
    /// Answer this and close.
    Invalid(Failure),
}

/// Judge the first bytes of a connection against the head limits.
///
/// - more than `max_bytes` before the head ends, or more than
///   `max_headers` fields: 431 `headers_too_large`;
/// - a version other than `HTTP/1.0`/`HTTP/1.1` in the request line
///   (`HTTP/2.0` without the preface, `HTTP/3`, ...): 505;
/// - anything malformed, `Content-Length` with `Transfer-Encoding`,
///   several different `Content-Length`s, a `Transfer-Encoding` that does
///   not end in `chunked`, and a missing, repeated or invalid `Host` in
///   HTTP/1.1: 400 `bad_request`.
pub(crate) fn check_first_head(buf: &[u8], max_bytes: usize, max_headers: usize) -> HeadCheck {
    if buf.len() < H2_PREFACE.len() {
        if H2_PREFACE.starts_with(buf) {
            return HeadCheck::Partial;
        }
    } else if buf.starts_with(H2_PREFACE) {
        return HeadCheck::Http2;
    }

    // The version first: an HTTP/2 or HTTP/3 request line would otherwise
    // be reported as a generic parse error.
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    match buf[start..].iter().position(|b| *b == b'\n') {
        None => {
            return if buf.len() > max_bytes {
                too_large(format!("the request line is longer than {max_bytes} bytes"))
            } else {
                HeadCheck::Partial
            };
        }
        Some(end) => {
            let line = buf[start..start + end].trim_ascii_end();
            if let Some(failure) = check_version(line) {
                return HeadCheck::Invalid(failure);
            }
        }
    }

    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > max_bytes => {
            too_large(format!("the request head is larger than {max_bytes} bytes"))
        }
        Ok(httparse::Status::Partial) => HeadCheck::Partial,
        Ok(httparse::Status::Complete(n)) if n > max_bytes => too_large(format!(
            "the request head is {n} bytes, larger than {max_bytes}"
        )),
        Ok(httparse::Status::Complete(_)) => match check_semantics(&req) {
            Ok(()) => HeadCheck::Http1,
            Err(f) => HeadCheck::Invalid(f),
        },
        Err(httparse::Error::TooManyHeaders) => too_large(format!(
            "the request has more than {max_headers} header fields"
        )),
        Err(e) => bad(format!("malformed request head: {e}")),
    }
}

fn too_large(message: String) -> HeadCheck {
    HeadCheck::Invalid(Failure::new(Reason::HeadersTooLarge, message))
}

fn bad(message: String) -> HeadCheck {
    HeadCheck::Invalid(Failure::new(Reason::BadRequest, message))
}

/// 505 for a well-formed but unsupported version, 400 for a line that is
/// not `method SP target SP version`. `None` when the version is fine.
fn check_version(line: &[u8]) -> Option<Failure> {
    let mut parts = line.split(|b| *b == b' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(Failure::new(
            Reason::BadRequest,
            "malformed request line: expected 'METHOD target HTTP/1.1'",
        ));
    };
    if version == b"HTTP/1.1" || version == b"HTTP/1.0" {
        return None;
    }
    let shown = String::from_utf8_lossy(&version[..version.len().min(16)]).into_owned();
    if version.starts_with(b"HTTP/") && version.get(5).is_some_and(u8::is_ascii_digit) {
        let hint = if version.starts_with(b"HTTP/2") {
            "; for HTTP/2 without TLS, start the connection with the HTTP/2 preface (prior knowledge)"
        } else {
            ""
        };
        return Some(Failure::new(
            Reason::HttpVersionNotSupported,
            format!(
                "{shown} is not supported; this listener speaks HTTP/1.0, HTTP/1.1 and HTTP/2 (h2c){hint}"
            ),
        ));
    }
    Some(Failure::new(
        Reason::BadRequest,
        format!("malformed request line: '{shown}' is not an HTTP version"),
    ))
}

/// Rules of RFC 9112 that hyper does not enforce, or enforces with a bare
/// response, and that matter to a proxy (request smuggling, routing).
fn check_semantics(req: &httparse::Request<'_, '_>) -> Result<(), Failure> {
    let bad = |m: &'static str| Err(Failure::new(Reason::BadRequest, m));
    let http11 = req.version == Some(1);
    if let Some(path) = req.path
        && http::Uri::try_from(path).is_err()
    {
        return bad("malformed request target");
    }

    let mut hosts = 0;
    let mut host: &[u8] = b"";
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut last_coding: &[u8] = b"";
    let mut chunked = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = h.value;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|b| *b == b',') {
                let Some(n) = parse_length(part.trim_ascii()) else {
                    return bad("invalid Content-Length");
                };
                if content_length.is_some_and(|prev| prev != n) {
                    return bad("several different Content-Length values");
                }
                content_length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in h.value.split(|b| *b == b',') {
                let coding = coding.trim_ascii();
                if coding.is_empty() {
                    continue;
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked += 1;
                }
                last_coding = coding;
            }
        }
    }

    if transfer_encoding {
        if content_length.is_some() {
            return bad("both Content-Length and Transfer-Encoding are set");
        }
        if !http11 {
            return bad("Transfer-Encoding is not allowed in an HTTP/1.0 request");
        }
        if chunked != 1 || !last_coding.eq_ignore_ascii_case(b"chunked") {
            return bad("Transfer-Encoding must end with a single 'chunked'");
        }
    }
    match hosts {
        0 if http11 => return bad("missing Host header (required in HTTP/1.1)"),
        0 => {}
        1 => {
            if host.is_empty() {
                return bad("empty Host header");
            }
            if !valid_host(host) {
                return bad("invalid Host header");
            }
        }
        _ => return bad("several Host headers"),
    }
    Ok(())
}

/// `host[:port]` with no user info and, when present, a numeric port.
fn valid_host(host: &[u8]) -> bool {
    if host.contains(&b'@') {
        return false;
    }
    if http::uri::Authority::try_from(host).is_err() {
        return false;
    }
    // `Authority` accepts a non-numeric port; a router cannot.
    let after_host = match host.iter().rposition(|b| *b == b']') {
        Some(end) => &host[end + 1..],
        None => host,
    };
    match after_host.iter().rposition(|b| *b == b':') {
        None => true,
        Some(colon) => parse_length(&after_host[colon + 1..]).is_some_and(|p| p <= 65535),
    }
}

/// `1*DIGIT`, without overflow.
fn parse_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const MAX: usize = 1024;
    const COUNT: usize = 10;

    fn check(raw: &[u8]) -> HeadCheck {
        check_first_head(raw, MAX, COUNT)
    }

    fn reason(raw: &[u8]) -> Reason {
        match check(raw) {
            HeadCheck::Invalid(f) => f.reason,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(raw)
            ),
        }
    }

    #[test]
    fn valid_heads() {
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"),
            HeadCheck::Http1
        );
        assert_eq!(check(b"\r\nGET / HTTP/1.0\r\n\r\n"), HeadCheck::Http1);
        assert_eq!(
            check(b"POST /x HTTP/1.1\r\nHost: a:80\r\nContent-Length: 3, 3\r\n\r\nabc"),
            HeadCheck::Http1
        );
        assert_eq!(
            check(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HeadCheck::Http1
        );
        assert_eq!(
            check(b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n"),
            HeadCheck::Http1
        );
    }

    #[test]
    fn partial_heads_wait() {
        assert_eq!(check(b""), HeadCheck::Partial);
        assert_eq!(check(b"GET / HT"), HeadCheck::Partial);
        assert_eq!(check(b"GET / HTTP/1.1\r\nHost: a\r\n"), HeadCheck::Partial);
        assert_eq!(check(b"PRI * HTTP/2.0\r\n"), HeadCheck::Partial);
    }

    #[test]
    fn h2_preface() {
        assert_eq!(check(H2_PREFACE), HeadCheck::Http2);
        let mut with_frames = H2_PREFACE.to_vec();
        with_frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(check(&with_frames), HeadCheck::Http2);
    }

    #[test]
    fn too_large() {
        let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX));
        assert_eq!(
            reason(&big),
            Reason::HeadersTooLarge,
            "partial and over the limit"
        );
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            reason(&big),
            Reason::HeadersTooLarge,
            "complete and over the limit"
        );

        let long_line: Vec<u8> = std::iter::repeat_n(b'a', MAX + 1).collect();
        assert_eq!(reason(&long_line), Reason::HeadersTooLarge);

        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..COUNT {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        assert_eq!(
            reason(&many),
            Reason::HeadersTooLarge,
            "count, even before the end"
        );
    }

    #[test]
    fn unsupported_versions() {
        for raw in [
            &b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/3\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        ] {
            assert_eq!(reason(raw), Reason::HttpVersionNotSupported);
        }
        assert_eq!(reason(b"GET / FTP/1.0\r\n\r\n"), Reason::BadRequest);
        assert_eq!(reason(b"GET /\r\n\r\n"), Reason::BadRequest, "HTTP/0.9");
    }

    #[test]
    fn malformed() {
        for raw in [
            &b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                reason(raw),
                Reason::BadRequest,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn smuggling_shapes() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for raw in cases {
            assert_eq!(
                reason(raw),
                Reason::BadRequest,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            reason(b"GET / HTTP/1.1\r\n\r\n"),
            Reason::BadRequest,
            "missing"
        );
        assert_eq!(
            reason(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Reason::BadRequest
        );
        assert_eq!(
            reason(b"GET / HTTP/1.1\r\nHost:\r\n\r\n"),
            Reason::BadRequest,
            "empty"
        );
        assert_eq!(
            reason(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Reason::BadRequest
        );
        assert_eq!(
            reason(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
            Reason::BadRequest
        );
        assert_eq!(
            reason(b"GET / HTTP/1.1\r\nHost: a:port\r\n\r\n"),
            Reason::BadRequest
        );
        assert_eq!(
            reason(b"GET / HTTP/1.1\r\nHost: a:70000\r\n\r\n"),
            Reason::BadRequest
        );
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"),
            HeadCheck::Http1
        );
    }
}
