//! Exit codes and the error a command ends with.

use crate::client::ClientError;
use http::StatusCode;
use std::fmt;

/// How `trellis` exits. Scripts can tell "fix your file" from "the server
/// is down" without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success, including an apply that changed nothing.
    Ok = 0,
    /// Anything else: the server failed (5xx), an unexpected answer, I/O.
    Failure = 1,
    /// Bad command line: unknown flag or kind, a file that cannot be read.
    Usage = 2,
    /// The input is invalid: a document does not parse or fails validation
    /// (checked locally, or rejected by the server with 400).
    Invalid = 3,
    /// The resource (or a resource it refers to) does not exist (404).
    NotFound = 4,
    /// Conflict: the name is taken, the resource is still referenced (409),
    /// or an `If-Match` version is stale (412).
    Conflict = 5,
    /// The control plane could not be reached or did not answer in time.
    Unreachable = 6,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Text for `trellis --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (an apply that changed nothing included)
  1  unexpected failure (server error, I/O)
  2  bad command line or unreadable file
  3  invalid input: a document does not parse or fails validation
  4  not found
  5  conflict: name taken, still referenced, or stale If-Match
  6  control plane unreachable or not answering";

/// Why a command failed: the message for stderr and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// The complete text to print (may span lines).
    pub message: String,
}

impl CliError {
    /// An error with this exit code and message (printed after "error: ").
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: format!("error: {}", message.into()),
        }
    }

    /// A message printed as is (clap's own rendering).
    pub fn raw(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    /// Prefix the message with what was being done (`error: <ctx>: <msg>`).
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        if let Some(rest) = self.message.strip_prefix("error: ") {
            self.message = format!("error: {ctx}: {rest}");
        }
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// The exit code for a client error.
pub fn exit_for(e: &ClientError) -> Exit {
    match e {
        ClientError::BadUrl { .. } => Exit::Usage,
        ClientError::Unreachable { .. } | ClientError::Timeout { .. } => Exit::Unreachable,
        ClientError::Transport { .. } => Exit::Failure,
        ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => match *status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Exit::Invalid,
            StatusCode::NOT_FOUND => Exit::NotFound,
            StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => Exit::Conflict,
            _ => Exit::Failure,
        },
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::new(exit_for(&e), e.to_string())
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return CliError::from(std::io::Error::new(io.kind(), io.to_string()));
        }
        if let Some(c) = e.downcast_ref::<ClientError>() {
            return CliError::new(exit_for(c), format!("{e:#}"));
        }
        CliError::new(Exit::Failure, format!("{e:#}"))
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        // `trellis get ... | head`: the reader left; nothing to report.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError::raw(Exit::Failure, "");
        }
        CliError::new(Exit::Failure, e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::client::ApiError;

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            status: StatusCode::from_u16(status).unwrap(),
            body: ApiError {
                error: String::new(),
                message: "m".into(),
                field_errors: vec![],
            },
        }
    }

    #[test]
    fn statuses_map_to_documented_codes() {
        assert_eq!(exit_for(&api(400)), Exit::Invalid);
        assert_eq!(exit_for(&api(404)), Exit::NotFound);
        assert_eq!(exit_for(&api(409)), Exit::Conflict);
        assert_eq!(exit_for(&api(412)), Exit::Conflict);
        assert_eq!(exit_for(&api(500)), Exit::Failure);
        for (exit, code) in [
            (Exit::Ok, 0),
            (Exit::Failure, 1),
            (Exit::Usage, 2),
            (Exit::Invalid, 3),
            (Exit::NotFound, 4),
            (Exit::Conflict, 5),
            (Exit::Unreachable, 6),
        ] {
            assert_eq!(exit.code(), code);
            assert!(EXIT_CODES_HELP.contains(&format!("  {code}  ")));
        }
    }

    #[test]
    fn context_goes_after_the_prefix() {
        let e = CliError::new(Exit::Failure, "boom").context("reading x");
        assert_eq!(e.to_string(), "error: reading x: boom");
    }
}
