//! Splitting a byte stream into newline-delimited JSON lines.

use bytes::{Buf, Bytes, BytesMut};

/// A line longer than the limit: the stream is not what we expect.
#[derive(Debug, thiserror::Error)]
#[error("a watch stream line is longer than {limit} bytes")]
pub(crate) struct LineTooLong {
    pub limit: usize,
}

/// Collects chunks and yields complete lines (without `\n` or `\r\n`).
#[derive(Debug)]
pub(crate) struct Lines {
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline.
    searched: usize,
    limit: usize,
}

impl Lines {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            searched: 0,
            limit,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, if any.
    pub(crate) fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLong> {
        match self.buf[self.searched..].iter().position(|b| *b == b'\n') {
            Some(i) => {
                let end = self.searched + i;
                let mut line = self.buf.split_to(end + 1).freeze();
                self.searched = 0;
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                Ok(Some(line))
            }
            None if self.buf.len() > self.limit => {
                self.buf.advance(self.buf.len());
                self.searched = 0;
                Err(LineTooLong { limit: self.limit })
            }
            None => {
                self.searched = self.buf.len();
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunks() {
        let mut l = Lines::new(100);
        l.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(l.next_line().unwrap().unwrap(), &b"{\"a\":1}"[..]);
        assert!(l.next_line().unwrap().is_none());
        l.push(b":2}\r\n\n");
        assert_eq!(l.next_line().unwrap().unwrap(), &b"{\"b\":2}"[..]);
        assert_eq!(l.next_line().unwrap().unwrap(), &b""[..]);
        assert!(l.next_line().unwrap().is_none());
    }

    #[test]
    fn refuses_endless_lines() {
        let mut l = Lines::new(4);
        l.push(b"abcdef");
        assert!(l.next_line().is_err());
    }
}
