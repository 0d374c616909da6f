//! The client's errors and the exit code each one maps to.
//!
//! Every failure ends the process with one sentence on stderr and a code scripts can test:
//! see [`Error::exit_code`] and the table in the crate documentation.

use std::path::{Path, PathBuf};

/// Exit code: success.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit code: any failure not listed below.
pub(crate) const EXIT_OTHER: u8 = 1;
/// Exit code: the command line was wrong (clap uses it too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code: the server could not be reached, even after retries.
pub(crate) const EXIT_NETWORK: u8 = 3;
/// Exit code: the file is unknown, expired, deleted or has no downloads left.
pub(crate) const EXIT_NOT_FOUND: u8 = 4;
/// Exit code: wrong link key or password, or too many wrong attempts.
pub(crate) const EXIT_BAD_KEY: u8 = 5;
/// Exit code: the server refused the request.
pub(crate) const EXIT_REFUSED: u8 = 6;
/// Exit code: a local file could not be read or written, or changed since an interrupted upload.
pub(crate) const EXIT_LOCAL: u8 = 7;

/// Everything that can go wrong, phrased for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The command line or the configuration is unusable.
    #[error("{0}")]
    Usage(String),

    /// No answer from the server after every retry.
    #[error("could not reach the server at {url}: {reason}")]
    Network {
        /// The request's URL.
        url: String,
        /// What the HTTP client reported, as a sentence fragment.
        reason: String,
    },

    /// The server's same-404: unknown, expired, deleted or exhausted.
    #[error("the file was not found: it may have expired, been deleted or used up its downloads")]
    NotFound,

    /// The server refused the auth token (`401 bad_token`), or the keys do not open the data.
    #[error("{0}")]
    BadKey(String),

    /// Too many wrong tokens: the server locked the file's checks for a while.
    #[error("the server locked this file's key checks: {0}")]
    TooManyAttempts(String),

    /// Any other error answer of the server.
    #[error("the server refused the request (HTTP {status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error code, or `http` without an error envelope.
        code: String,
        /// The server's message.
        message: String,
    },

    /// A local file or directory could not be used.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "could not read".
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// A file changed since its interrupted upload, or its resume record cannot vouch for it.
    #[error("{0}")]
    Changed(String),

    /// A download would write somewhere it must not, or over an existing file.
    #[error("{0}")]
    Output(String),

    /// The link is malformed.
    #[error("not a BitStratus link: {0}")]
    BadLink(String),

    /// The downloaded data failed authentication, or the server answered nonsense.
    #[error("{0}")]
    Integrity(String),

    /// A background task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),

    /// The crypto core refused an operation.
    #[error("encryption error: {0}")]
    Crypto(#[from] crypto_wasm::Error),
}

impl Error {
    /// Wraps an I/O error with what was being done and where.
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// A stable name for this kind of error, for `--json` output (see [`Error::to_json`]).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Usage(_) => "usage",
            Self::Network { .. } => "network",
            Self::NotFound => "not_found",
            Self::BadKey(_) => "bad_key",
            Self::TooManyAttempts(_) => "too_many_attempts",
            Self::Refused { .. } => "refused",
            Self::Io { .. } => "local_io",
            Self::Changed(_) => "changed",
            Self::Output(_) => "output",
            Self::BadLink(_) => "bad_link",
            Self::Integrity(_) => "integrity",
            Self::Internal(_) => "internal",
            Self::Crypto(_) => "crypto",
        }
    }

    /// This error as the one JSON object `--json` prints for it on stdout:
    /// `{"error": {"kind", "exit_code", "message"}}`, plus the server's `status` and `code`
    /// for a refusal, the `url` for a network error and the `path` for a local file.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "kind": self.kind(),
            "exit_code": self.exit_code(),
            "message": self.to_string(),
        });
        match self {
            Self::Refused { status, code, .. } => {
                error["status"] = (*status).into();
                error["code"] = code.as_str().into();
            }
            Self::Network { url, .. } => error["url"] = url.as_str().into(),
            Self::Io { path, .. } => error["path"] = path.display().to_string().into(),
            _ => {}
        }
        serde_json::json!({ "error": error })
    }

    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Network { .. } => EXIT_NETWORK,
            Self::NotFound => EXIT_NOT_FOUND,
            Self::BadKey(_) | Self::TooManyAttempts(_) => EXIT_BAD_KEY,
            Self::Refused { .. } => EXIT_REFUSED,
            Self::Io { .. } | Self::Changed(_) | Self::Output(_) => EXIT_LOCAL,
            Self::BadLink(_) | Self::Integrity(_) | Self::Internal(_) | Self::Crypto(_) => {
                EXIT_OTHER
            }
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("a worker task failed: {e}"))
    }
}

/// The client's result type.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_documented_exit_code() {
        let refused = Error::Refused {
            status: 409,
            code: "part_conflict".into(),
            message: "x".into(),
        };
        assert_eq!(refused.exit_code(), 6);
        assert_eq!(Error::NotFound.exit_code(), 4);
        assert_eq!(Error::BadKey(String::new()).exit_code(), 5);
        assert_eq!(Error::TooManyAttempts(String::new()).exit_code(), 5);
        let network = Error::Network {
            url: String::new(),
            reason: String::new(),
        };
        assert_eq!(network.exit_code(), 3);
        assert_eq!(Error::Changed(String::new()).exit_code(), 7);
        assert_eq!(Error::Usage(String::new()).exit_code(), 2);
        assert_eq!(Error::Integrity(String::new()).exit_code(), 1);
    }

    #[test]
    fn json_errors_carry_kind_exit_code_message_and_the_servers_code() {
        let refused = Error::Refused {
            status: 409,
            code: "part_conflict".into(),
            message: "part 3 differs".into(),
        };
        let json = refused.to_json();
        assert_eq!(json["error"]["kind"], "refused");
        assert_eq!(json["error"]["exit_code"], 6);
        assert_eq!(json["error"]["status"], 409);
        assert_eq!(json["error"]["code"], "part_conflict");
        assert_eq!(json["error"]["message"], refused.to_string());
        assert_eq!(Error::NotFound.to_json()["error"]["kind"], "not_found");
    }
}
