//! Checks every request passes before it is routed, on both data
//! listeners. The first head of an HTTP/1 connection was already checked
//! from raw bytes (`head`); these catch later requests on a kept-alive
//! connection and HTTP/2 requests, which hyper parsed itself.

use crate::config::Limits;
use crate::error::{Failure, Reason};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Request, Version};

/// Size of a request head as it would be on an HTTP/1.1 wire: request
/// line, each field as `name: value\r\n`, and the empty line.
pub(crate) fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    let line = req.method().as_str().len() + 1 + target + 1 + "HTTP/1.1".len() + 2;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    line + fields + 2
}

/// Head limits, framing and body size, before any routing.
pub(crate) fn admit<B>(req: &Request<B>, limits: &Limits) -> Result<(), Failure> {
    let headers = req.headers();
    if headers.len() > limits.max_headers {
        return Err(Failure::new(
            Reason::HeadersTooLarge,
            format!(
                "the request has {} header fields, more than {}",
                headers.len(),
                limits.max_headers
            ),
        ));
    }
    let size = head_size(req);
    if size > limits.max_header_bytes {
        return Err(Failure::new(
            Reason::HeadersTooLarge,
            format!(
                "the request head is {size} bytes, larger than {}",
                limits.max_header_bytes
            ),
        ));
    }
    if req.method() == Method::CONNECT {
        return Err(Failure::new(
            Reason::BadRequest,
            "CONNECT tunnels are not supported",
        ));
    }
    if req.version() <= Version::HTTP_11 {
        if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
            return Err(Failure::new(
                Reason::BadRequest,
                "both Content-Length and Transfer-Encoding are set",
            ));
        }
        if headers.get_all(HOST).iter().nth(1).is_some() {
            return Err(Failure::new(Reason::BadRequest, "several Host headers"));
        }
    }
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        && len > limits.max_body_bytes
    {
        return Err(Failure::new(
            Reason::BodyTooLarge,
            format!(
                "the request body is {len} bytes, larger than the limit of {}",
                limits.max_body_bytes
            ),
        ));
    }
    Ok(())
}

/// The host a request is for: `:authority` (HTTP/2, or an absolute-form
/// HTTP/1.1 target, which takes precedence over `Host` per RFC 9112
/// §3.2.2), else the `Host` field.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<&str, Failure> {
    if let Some(a) = req.uri().authority() {
        return Ok(a.as_str());
    }
    match req.headers().get(HOST).map(|h| h.to_str()) {
        Some(Ok(h)) if !h.is_empty() => Ok(h),
        Some(_) => Err(Failure::new(Reason::BadRequest, "invalid Host header")),
        None => Err(Failure::new(
            Reason::BadRequest,
            "the request names no host (no Host header or :authority)",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 200,
            max_headers: 3,
            max_body_bytes: 10,
            header_read_timeout: Duration::from_secs(1),
        }
    }

    fn req(f: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Request<()> {
        f(Request::builder().uri("/p")).body(()).unwrap()
    }

    #[test]
    fn head_size_counts_the_wire_form() {
        let r = req(|b| b.header("host", "ab"));
        // "GET /p HTTP/1.1\r\n" (17) + "host: ab\r\n" (10) + "\r\n" (2)
        assert_eq!(head_size(&r), 29);
    }

    #[test]
    fn limits_apply() {
        let l = limits();
        assert!(admit(&req(|b| b.header("host", "a")), &l).is_ok());
        let many = req(|b| {
            b.header("a", "1")
                .header("b", "2")
                .header("c", "3")
                .header("d", "4")
        });
        assert_eq!(
            admit(&many, &l).unwrap_err().reason,
            Reason::HeadersTooLarge
        );
        let big = req(|b| b.header("a", "x".repeat(200)));
        assert_eq!(admit(&big, &l).unwrap_err().reason, Reason::HeadersTooLarge);
        let body = req(|b| b.header("content-length", "11"));
        assert_eq!(admit(&body, &l).unwrap_err().reason, Reason::BodyTooLarge);
        let both = req(|b| {
            b.header("content-length", "1")
                .header("transfer-encoding", "chunked")
        });
        assert_eq!(admit(&both, &l).unwrap_err().reason, Reason::BadRequest);
        let hosts = req(|b| b.header("host", "a").header("host", "b"));
        assert_eq!(admit(&hosts, &l).unwrap_err().reason, Reason::BadRequest);
        let connect = req(|b| b.method("CONNECT").uri("a:443"));
        assert_eq!(admit(&connect, &l).unwrap_err().reason, Reason::BadRequest);
    }

    #[test]
    fn host_from_authority_then_header() {
        let r = req(|b| b.uri("http://a.example:8080/x").header("host", "other"));
        assert_eq!(request_host(&r).unwrap(), "a.example:8080");
        let r = req(|b| b.header("host", "b.example"));
        assert_eq!(request_host(&r).unwrap(), "b.example");
        assert!(request_host(&req(|b| b)).is_err());
    }
}
