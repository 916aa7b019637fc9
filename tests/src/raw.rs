//! Byte-exact HTTP/1.1 over TCP, for edge cases a well-behaved client
//! library refuses to produce: malformed or conflicting heads, slow
//! clients, pipelining, requests after a connection should be closed.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Most headers a parsed response may have.
const MAX_HEADERS: usize = 128;

/// A parsed HTTP/1.x response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// Minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub minor_version: u8,
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Headers in the order received (names as sent).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it was chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parse the status line and headers at the start of `buf`. `Ok(None)`
/// while the head is incomplete; otherwise the response (with an empty
/// body) and the length of the head including the blank line.
pub fn parse_response_head(buf: &[u8]) -> anyhow::Result<Option<(RawResponse, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf).context("parsing the response head")? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let resp = RawResponse {
        minor_version: r.version.unwrap_or(1),
        status: r.code.unwrap_or(0),
        reason: r.reason.unwrap_or("").to_owned(),
        headers: r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
    Ok(Some((resp, len)))
}

/// Parse one complete response at the start of `buf`, framed as RFC 9112
/// says (no body for 1xx/204/304 or when `head_only`; chunked; content
/// length; else until close, which needs `eof`). `Ok(None)` while more
/// bytes are needed; otherwise the response and the bytes it used.
pub fn parse_response(
    buf: &[u8],
    head_only: bool,
    eof: bool,
) -> anyhow::Result<Option<(RawResponse, usize)>> {
    let Some((mut resp, head_len)) = parse_response_head(buf)? else {
        return Ok(None);
    };
    let rest = &buf[head_len..];
    if head_only || (100..200).contains(&resp.status) || matches!(resp.status, 204 | 304) {
        return Ok(Some((resp, head_len)));
    }
    let chunked = resp
        .header_all("transfer-encoding")
        .last()
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if chunked {
        return Ok(dechunk(rest)?.map(|(body, used)| {
            resp.body = body;
            (resp, head_len + used)
        }));
    }
    if let Some(cl) = resp.header("content-length") {
        let cl: usize = cl
            .trim()
            .parse()
            .with_context(|| format!("content-length {cl:?}"))?;
        if rest.len() < cl {
            anyhow::ensure!(
                !eof,
                "connection closed after {} of {cl} body bytes",
                rest.len()
            );
            return Ok(None);
        }
        resp.body = rest[..cl].to_vec();
        return Ok(Some((resp, head_len + cl)));
    }
    if !eof {
        return Ok(None);
    }
    resp.body = rest.to_vec();
    Ok(Some((resp, buf.len())))
}

/// Decode a chunked body at the start of `buf`: `Ok(None)` while
/// incomplete, else the body and the bytes used (trailers included).
fn dechunk(buf: &[u8]) -> anyhow::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + eol]).context("chunk size line")?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("chunk size {size_hex:?}"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer lines until an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        anyhow::ensure!(
            &buf[pos + size..pos + size + 2] == b"\r\n",
            "chunk of {size} bytes not followed by CRLF"
        );
        pos += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A TCP connection for raw HTTP/1.1: write any bytes, read framed
/// responses one at a time (pipelining works), or read until close.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawConnection {
    /// Connect to `addr`.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = super::client::connect_tcp(addr).await?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Write all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Read the next complete response (a `1xx` counts as one), waiting at
    /// most `timeout`.
    pub async fn read_response(&mut self, timeout: Duration) -> anyhow::Result<RawResponse> {
        self.read_framed(false, timeout).await
    }

    /// Read the next response to a `HEAD` request (never a body).
    pub async fn read_head_response(&mut self, timeout: Duration) -> anyhow::Result<RawResponse> {
        self.read_framed(true, timeout).await
    }

    async fn read_framed(
        &mut self,
        head_only: bool,
        timeout: Duration,
    ) -> anyhow::Result<RawResponse> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((resp, used)) = parse_response(&self.buf, head_only, self.eof)? {
                self.buf.drain(..used);
                return Ok(resp);
            }
            anyhow::ensure!(
                !self.eof,
                "connection closed before a complete response ({} bytes: {:?})",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            );
            self.fill(deadline).await.with_context(|| {
                format!(
                    "waiting for a response ({} bytes so far: {:?})",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                )
            })?;
        }
    }

    /// Everything not yet consumed plus what arrives until the peer closes
    /// (or resets) the connection or `timeout` passes.
    pub async fn read_to_close(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            if self.fill(deadline).await.is_err() {
                break;
            }
        }
        std::mem::take(&mut self.buf)
    }

    /// Whether the peer closes (or resets) the connection within `timeout`;
    /// bytes that arrive meanwhile are kept for later reads.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            if self.fill(deadline).await.is_err() {
                return self.eof;
            }
        }
        true
    }

    /// Read once into the buffer; a reset counts as the end of the stream.
    async fn fill(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => anyhow::bail!("timed out"),
            Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
            Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
        }
        Ok(())
    }

    /// The underlying stream, e.g. to half-close it.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// Connect to `addr`, send `request` exactly, and read one complete
/// response, all within `timeout`. A request starting with `HEAD ` is
/// answered without a body.
pub async fn raw_request(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> anyhow::Result<RawResponse> {
    let mut conn = RawConnection::connect(addr).await?;
    conn.send(request).await.context("sending the request")?;
    if request.starts_with(b"HEAD ") {
        conn.read_head_response(timeout).await
    } else {
        conn.read_response(timeout).await
    }
}

/// What [`send_slowly`] saw.
#[derive(Debug, Clone)]
pub struct SlowSend {
    /// Bytes written before the peer answered, closed, or all were sent.
    pub bytes_written: usize,
    /// Whether a write failed (the peer closed or reset the connection).
    pub write_failed: bool,
    /// Everything the peer sent.
    pub received: Vec<u8>,
}

impl SlowSend {
    /// The first response in [`SlowSend::received`], if one is complete.
    pub fn response(&self) -> Option<RawResponse> {
        parse_response(&self.received, false, true)
            .ok()
            .flatten()
            .map(|(r, _)| r)
    }
}

/// Send `bytes` one byte every `interval` (a slowloris client), stopping
/// early when the peer answers or closes. Then keep reading until a
/// complete response arrives, the peer closes, or `timeout` (counted from
/// the start) passes.
pub async fn send_slowly(
    addr: SocketAddr,
    bytes: &[u8],
    interval: Duration,
    timeout: Duration,
) -> anyhow::Result<SlowSend> {
    let deadline = Instant::now() + timeout;
    let stream = super::client::connect_tcp(addr).await?;
    let (mut rd, mut wr) = stream.into_split();
    let answered = Arc::new(AtomicBool::new(false));
    let reader = {
        let answered = Arc::clone(&answered);
        tokio::spawn(async move {
            let mut received = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => {
                        received.extend_from_slice(&chunk[..n]);
                        answered.store(true, Ordering::SeqCst);
                        if matches!(parse_response(&received, false, false), Ok(Some(_))) {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            answered.store(true, Ordering::SeqCst);
            received
        })
    };
    let mut bytes_written = 0;
    let mut write_failed = false;
    for b in bytes {
        if answered.load(Ordering::SeqCst) || Instant::now() >= deadline {
            break;
        }
        if wr.write_all(std::slice::from_ref(b)).await.is_err() {
            write_failed = true;
            break;
        }
        bytes_written += 1;
        if bytes_written < bytes.len() {
            tokio::time::sleep(interval).await;
        }
    }
    let received = reader.await.context("the reader task")?;
    Ok(SlowSend {
        bytes_written,
        write_failed,
        received,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\nabcHTTP/1.1 204 No Content\r\n\r\n";
        let (r, used) = parse_response(cl, false, false).unwrap().unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x-a")),
            (200, &b"abc"[..], Some("1"))
        );
        let (r2, _) = parse_response(&cl[used..], false, false).unwrap().unwrap();
        assert_eq!(r2.status, 204);
        assert!(parse_response(&cl[..40], false, false).unwrap().is_none());

        let ch = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n";
        let (r, used) = parse_response(ch, false, false).unwrap().unwrap();
        assert_eq!((r.body.as_slice(), used), (&b"abcde"[..], ch.len()));
        assert!(
            parse_response(&ch[..ch.len() - 2], false, false)
                .unwrap()
                .is_none()
        );

        let close = b"HTTP/1.0 200 OK\r\n\r\nuntil close";
        assert!(parse_response(close, false, false).unwrap().is_none());
        let (r, _) = parse_response(close, false, true).unwrap().unwrap();
        assert_eq!(
            (r.minor_version, r.body_text().as_str()),
            (0, "until close")
        );

        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        assert!(parse_response(short, false, true).is_err());
        assert!(parse_response(b"NOT HTTP\r\n\r\n", false, false).is_err());
    }
}
