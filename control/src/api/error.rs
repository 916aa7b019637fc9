//! The API's error replies: a status and a small JSON body that names the
//! problem (`error`), explains it (`message`) and, for invalid input, lists
//! every field at fault.

use crate::repo::RepoError;
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use trellis_config::FieldError;

/// The JSON body of every error reply.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Machine-readable code: `validation_failed`, `bad_request`,
    /// `unauthorized`, `forbidden`, `not_found`, `conflict`, `precondition_failed`, `unavailable`, `internal`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// For `validation_failed`: every problem with its field path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_errors: Vec<FieldError>,
}

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    /// Send `WWW-Authenticate: Bearer` (401 replies).
    challenge: bool,
}

impl ApiError {
    /// A reply with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: code.into(),
                message: message.into(),
                field_errors: Vec::new(),
            },
            challenge: false,
        }
    }

    /// 401 `unauthorized`, with the `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.challenge = true;
        e
    }

    /// 403 `forbidden`: the caller is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The status of this reply.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 `validation_failed` with field errors.
    pub fn invalid(message: impl Into<String>, errors: Vec<FieldError>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "validation_failed", message);
        e.body.field_errors = errors;
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.challenge {
            return (
                self.status,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                Json(self.body),
            )
                .into_response();
        }
        (self.status, Json(self.body)).into_response()
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        let message = e.to_string();
        match e {
            RepoError::Invalid { kind, errors } => Self::invalid(
                format!(
                    "the {} is invalid: {} problem(s)",
                    kind.words(),
                    errors.errors.len()
                ),
                errors.errors,
            ),
            RepoError::NotFound { .. } => Self::not_found(message),
            RepoError::NameTaken { .. }
            | RepoError::Duplicate(_)
            | RepoError::Referenced { .. } => Self::new(StatusCode::CONFLICT, "conflict", message),
            RepoError::PreconditionFailed { .. } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                message,
            ),
            RepoError::BadRequest(_) => Self::bad_request(message),
            RepoError::Forbidden(_) => Self::forbidden(message),
            RepoError::Contention | RepoError::Store(_) => {
                tracing::warn!(error = %message, "store unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            RepoError::Corrupt { .. } => {
                tracing::error!(error = %message, "corrupt data in the store");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        RepoError::Store(e).into()
    }
}

impl From<crate::accounts::AccountError> for ApiError {
    fn from(e: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError as E;
        let message = e.to_string();
        match e {
            E::Invalid(errors) => Self::invalid("the input is invalid", errors.errors),
            E::NotFound(_) => Self::not_found(message),
            E::Exists(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            E::Store(s) => RepoError::Store(s).into(),
            E::Random | E::Corrupt(_) => {
                tracing::error!(error = %message, "account operation failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}
