//! The one API error type and its JSON envelope `{"error":{"code","message"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Every way a request can fail. Client errors carry a stable snake_case code; server errors
/// are logged with their details and answered with a generic message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad JSON, a bad field value, a bad header.
    #[error("{0}")]
    BadRequest(String),
    /// Unknown, deleted, expired, exhausted or not-yet-complete: deliberately indistinguishable.
    #[error("no such file")]
    NotFound,
    /// A wrong or missing auth token or download ticket (proves nothing about the file).
    #[error("wrong key or password")]
    BadAuthToken,
    /// A wrong or missing owner token on a file the caller may otherwise see.
    #[error("wrong owner token")]
    BadOwnerToken,
    /// The declared total size is above the server's cap.
    #[error("file is larger than this server accepts ({max} bytes)")]
    FileTooLarge {
        /// The configured cap.
        max: u64,
    },
    /// More bytes arrived than part n may hold.
    #[error("part {n} must be exactly {expected} bytes; more were sent")]
    PartTooLarge {
        /// Part number.
        n: u64,
        /// Its size from the layout.
        expected: u64,
    },
    /// Fewer bytes arrived than part n must hold (short body or a dropped connection).
    #[error("part {n} must be exactly {expected} bytes; {got} arrived")]
    PartSizeMismatch {
        /// Part number.
        n: u64,
        /// Its size from the layout.
        expected: u64,
        /// What arrived before the body ended.
        got: u64,
    },
    /// The body's SHA-256 is not the one the client announced.
    #[error("the part's SHA-256 does not match X-Content-SHA256")]
    HashMismatch,
    /// The part was already stored with different bytes.
    #[error("part {0} was already uploaded with different content")]
    PartConflict(u64),
    /// The upload was already completed; its parts are frozen.
    #[error("the upload is already complete")]
    AlreadyComplete,
    /// The part number is not a number or is past the last part.
    #[error("part number must be below {part_count}")]
    BadPartNumber {
        /// Number of parts in the layout.
        part_count: u64,
    },
    /// Complete was asked before every part arrived.
    #[error("{}", missing_message(.0))]
    MissingParts(Vec<u64>),
    /// The Range header names nothing inside the body (or more than one range).
    #[error("range not satisfiable (body is {size} bytes)")]
    RangeNotSatisfiable {
        /// Total body size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// A JSON body larger than allowed.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Every part-upload slot (`--max-concurrent-parts`) is taken; retry shortly.
    #[error("the server is busy with other uploads; retry shortly")]
    ServerBusy,
    /// A part body delivered nothing for `--part-idle-timeout`; nothing was stored.
    #[error("part {n} stalled: no data arrived for {idle:?}; nothing was stored")]
    Timeout {
        /// Part number.
        n: u64,
        /// The configured idle timeout.
        idle: std::time::Duration,
    },
    /// Too many consecutive wrong auth tokens for this file: its auth checks are locked and
    /// the token was not looked at.
    #[error("Too many wrong passwords or keys for this file. Try again in {} second{}.",
        .retry_after, if *.retry_after == 1 { "" } else { "s" })]
    TooManyAttempts {
        /// Seconds until the lock ends (at least 1), also sent as `Retry-After`.
        retry_after: u64,
    },
    /// The route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Anything that is our fault; the details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

fn missing_message(parts: &[u64]) -> String {
    const SHOWN: usize = 20;
    let list: Vec<String> = parts.iter().take(SHOWN).map(u64::to_string).collect();
    let more = parts.len().saturating_sub(SHOWN);
    if more > 0 {
        format!("missing parts: {} and {more} more", list.join(", "))
    } else {
        format!("missing parts: {}", list.join(", "))
    }
}

impl ApiError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_)
            | Self::PartSizeMismatch { .. }
            | Self::HashMismatch
            | Self::BadPartNumber { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadAuthToken => StatusCode::UNAUTHORIZED,
            Self::BadOwnerToken => StatusCode::FORBIDDEN,
            Self::FileTooLarge { .. } | Self::PartTooLarge { .. } | Self::PayloadTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::PartConflict(_) | Self::AlreadyComplete | Self::MissingParts(_) => {
                StatusCode::CONFLICT
            }
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::ServerBusy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound => "not_found",
            Self::BadAuthToken | Self::BadOwnerToken => "bad_token",
            Self::FileTooLarge { .. } => "file_too_large",
            Self::PartTooLarge { .. } => "part_too_large",
            Self::PartSizeMismatch { .. } => "part_size_mismatch",
            Self::HashMismatch => "hash_mismatch",
            Self::PartConflict(_) => "part_conflict",
            Self::AlreadyComplete => "already_complete",
            Self::BadPartNumber { .. } => "bad_part_number",
            Self::MissingParts(_) => "missing_parts",
            Self::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Self::PayloadTooLarge => "payload_too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::ServerBusy => "server_busy",
            Self::Timeout { .. } => "timeout",
            Self::TooManyAttempts { .. } => "too_many_attempts",
            Self::Internal(_) => "internal",
        }
    }

    /// Wraps a server-side failure; the text is only ever logged.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Self::Internal(err.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::Internal(format!("database: {err}"))
    }
}

impl From<sqlx::migrate::MigrateError> for ApiError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Internal(format!("migration: {err}"))
    }
}

impl From<object_store::Error> for ApiError {
    fn from(err: object_store::Error) -> Self {
        Self::Internal(format!("object store: {err}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(err: std::io::Error) -> Self {
        Self::Internal(format!("io: {err}"))
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
            "internal server error".to_owned()
        } else {
            self.to_string()
        };
        let mut res = (
            status,
            Json(Envelope {
                error: Body {
                    code: self.code(),
                    message,
                },
            }),
        )
            .into_response();
        match self {
            Self::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    res.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            // Slots free up as soon as any part finishes, so one second is a fair first wait;
            // the web app adds its own backoff on top.
            Self::ServerBusy => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::TooManyAttempts { retry_after } => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        res
    }
}
