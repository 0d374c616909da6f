//! The server's `/api/v1` (docs/API.md) over reqwest: typed requests and answers, the error
//! envelope mapped onto [`Error`], and retries with exponential backoff for failures that may
//! pass (network errors, 408, 429 other than the password throttle, 5xx), honouring
//! `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The first pause before a retry; it doubles after each attempt.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest pause between two attempts, also the cap on a `Retry-After` we wait for.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// A client for one server.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    /// `<server>/api/v1`, without a trailing slash.
    base: String,
    /// Attempts after the first for transient failures.
    retries: u32,
}

/// What a request carries.
#[derive(Debug, Clone)]
enum Body {
    Empty,
    /// No body; the request is named with this `Idempotency-Key`, so that a retry after a lost
    /// answer is not taken as a second request.
    Named(String),
    Json(Bytes),
    Octets {
        bytes: Bytes,
        sha256_hex: String,
    },
}

/// One failed attempt: final, or worth another try after the pause the server asked for.
enum Attempt {
    Final(Error),
    Transient(Error, Option<Duration>),
}

#[derive(Deserialize)]
struct Envelope {
    error: EnvelopeBody,
}

#[derive(Deserialize)]
struct EnvelopeBody {
    code: String,
    message: String,
}

/// `POST /files` request.
#[derive(Debug, Serialize)]
pub(crate) struct CreateFile<'a> {
    pub(crate) metadata: String,
    pub(crate) auth_token: String,
    pub(crate) kdf: Option<&'a crypto_wasm::KdfParams>,
    pub(crate) size: u64,
    pub(crate) first_part_size: u64,
    pub(crate) part_size: u64,
    pub(crate) expires_in: u64,
    pub(crate) download_limit: Option<u64>,
}

/// `POST /files` answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Created {
    pub(crate) id: String,
    pub(crate) owner_token: String,
    pub(crate) part_count: u64,
}

/// One part the server holds (`GET /files/{id}/parts`).
#[derive(Debug, Deserialize)]
pub(crate) struct StoredPart {
    pub(crate) n: u64,
}

#[derive(Deserialize)]
struct StoredParts {
    parts: Vec<StoredPart>,
}

/// `GET /files/{id}`: what anyone may know before proving the key.
#[derive(Debug, Deserialize)]
pub(crate) struct PublicInfo {
    pub(crate) kdf: Option<crypto_wasm::KdfParams>,
}

/// `GET /files/{id}/metadata`: the sealed metadata and the body's layout.
#[derive(Debug, Deserialize)]
pub(crate) struct Sealed {
    pub(crate) metadata: String,
    pub(crate) size: u64,
    pub(crate) first_part_size: u64,
    pub(crate) part_size: u64,
}

/// `POST /files/{id}/downloads`: a ticket for the part reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Ticket {
    pub(crate) ticket: String,
    pub(crate) expires_at: i64,
}

/// The owner's view (`GET .../manage`, `PATCH`, `POST .../complete`).
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct ManageInfo {
    pub(crate) id: String,
    pub(crate) state: String,
    pub(crate) kdf: Option<crypto_wasm::KdfParams>,
    pub(crate) metadata: String,
    pub(crate) size: u64,
    pub(crate) expires_at: i64,
    pub(crate) download_limit: Option<u64>,
    pub(crate) download_count: u64,
    pub(crate) created_at: i64,
}

/// `PATCH /files/{id}` body: only the lifetime.
#[derive(Debug, Serialize)]
struct PatchExpiry {
    expires_in: u64,
}

impl Api {
    /// A client for `server` (scheme, host and optional path prefix, no trailing slash).
    pub(crate) fn new(server: &str, retries: u32) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            // Per read, not per request: a slow but steady transfer never trips it.
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("bitstratus-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Usage(format!("could not set up the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: format!("{}/api/v1", server.trim_end_matches('/')),
            retries,
        })
    }

    /// `POST /files`.
    pub(crate) async fn create(&self, request: &CreateFile<'_>) -> Result<Created> {
        let body = Body::Json(to_json(request)?);
        self.json(Method::POST, "/files", None, body).await
    }

    /// `PUT /files/{id}/parts/{n}`; every attempt sends the same ciphertext.
    pub(crate) async fn put_part(
        &self,
        id: &str,
        owner: &str,
        n: u64,
        bytes: Bytes,
        sha256_hex: String,
    ) -> Result<()> {
        let path = format!("/files/{id}/parts/{n}");
        let body = Body::Octets { bytes, sha256_hex };
        self.send(Method::PUT, &path, Some(owner), body)
            .await
            .map(drop)
    }

    /// `GET /files/{id}/parts`.
    pub(crate) async fn list_parts(&self, id: &str, owner: &str) -> Result<Vec<StoredPart>> {
        let path = format!("/files/{id}/parts");
        let list: StoredParts = self
            .json(Method::GET, &path, Some(owner), Body::Empty)
            .await?;
        Ok(list.parts)
    }

    /// `POST /files/{id}/complete` (completing twice is harmless, so it is retried too).
    pub(crate) async fn complete(&self, id: &str, owner: &str) -> Result<ManageInfo> {
        let path = format!("/files/{id}/complete");
        self.json(Method::POST, &path, Some(owner), Body::Empty)
            .await
    }

    /// `GET /files/{id}`.
    pub(crate) async fn public_info(&self, id: &str) -> Result<PublicInfo> {
        self.json(Method::GET, &format!("/files/{id}"), None, Body::Empty)
            .await
    }

    /// `GET /files/{id}/metadata` with the auth token.
    pub(crate) async fn metadata(&self, id: &str, auth: &str) -> Result<Sealed> {
        let path = format!("/files/{id}/metadata");
        self.json(Method::GET, &path, Some(auth), Body::Empty).await
    }

    /// `POST /files/{id}/downloads` with the auth token: counts one download. The request is
    /// named with a random `Idempotency-Key`, so it is retried like any other: a retry after
    /// a lost answer gets a ticket without counting a second download.
    pub(crate) async fn start_download(&self, id: &str, auth: &str) -> Result<Ticket> {
        let path = format!("/files/{id}/downloads");
        let mut key = [0u8; 16];
        getrandom::getrandom(&mut key)
            .map_err(|e| Error::Internal(format!("no random source: {e}")))?;
        let key = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, key);
        self.json(Method::POST, &path, Some(auth), Body::Named(key))
            .await
    }

    /// `GET /files/{id}/parts/{n}` with the ticket: the part's ciphertext.
    pub(crate) async fn get_part(&self, id: &str, ticket: &str, n: u64) -> Result<Bytes> {
        let path = format!("/files/{id}/parts/{n}");
        self.send(Method::GET, &path, Some(ticket), Body::Empty)
            .await
    }

    /// `GET /files/{id}/manage` with the owner token.
    pub(crate) async fn manage(&self, id: &str, owner: &str) -> Result<ManageInfo> {
        let path = format!("/files/{id}/manage");
        self.json(Method::GET, &path, Some(owner), Body::Empty)
            .await
    }

    /// `PATCH /files/{id}` setting a new lifetime from now.
    pub(crate) async fn set_expiry(
        &self,
        id: &str,
        owner: &str,
        expires_in: u64,
    ) -> Result<ManageInfo> {
        let body = Body::Json(to_json(&PatchExpiry { expires_in })?);
        self.json(Method::PATCH, &format!("/files/{id}"), Some(owner), body)
            .await
    }

    /// `DELETE /files/{id}`.
    pub(crate) async fn delete(&self, id: &str, owner: &str) -> Result<()> {
        self.send(
            Method::DELETE,
            &format!("/files/{id}"),
            Some(owner),
            Body::Empty,
        )
        .await
        .map(drop)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Body,
    ) -> Result<T> {
        let bytes = self.send(method, path, bearer, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Integrity(format!(
                "the server's answer to {} could not be read: {e}",
                self.url(path)
            ))
        })
    }

    /// Sends a request, retrying transient failures, and returns the answer's body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Body,
    ) -> Result<Bytes> {
        let mut delay = FIRST_DELAY;
        let mut attempt = 0;
        loop {
            let outcome = match self.attempt(method.clone(), path, bearer, &body).await {
                Ok(response) => match response.bytes().await {
                    Ok(bytes) => return Ok(bytes),
                    Err(e) => Attempt::Transient(self.network(path, &e), None),
                },
                Err(outcome) => outcome,
            };
            match outcome {
                Attempt::Transient(_, asked) if attempt < self.retries => {
                    let pause = asked.map_or(delay, |asked| asked.max(delay)).min(MAX_DELAY);
                    tokio::time::sleep(pause).await;
                    delay = (delay * 2).min(MAX_DELAY);
                    attempt += 1;
                }
                Attempt::Transient(e, _) | Attempt::Final(e) => return Err(e),
            }
        }
    }

    /// One attempt: a successful response, or the error and whether to try again.
    async fn attempt(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: &Body,
    ) -> Result<reqwest::Response, Attempt> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::Empty => request,
            Body::Named(key) => request.header("Idempotency-Key", key.as_str()),
            Body::Json(json) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json.clone()),
            Body::Octets { bytes, sha256_hex } => request
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header("X-Content-SHA256", sha256_hex.as_str())
                .body(bytes.clone()),
        };
        let response = request
            .send()
            .await
            .map_err(|e| Attempt::Transient(self.network(path, &e), None))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let envelope = response
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Envelope>(&b).ok())
            .map(|e| e.error);
        let (code, message) = match envelope {
            Some(EnvelopeBody { code, message }) => (code, message),
            None => (
                "http".to_owned(),
                format!("unexpected answer {status} without an error message"),
            ),
        };
        Err(classify(status, code, message, retry_after))
    }

    fn network(&self, path: &str, error: &reqwest::Error) -> Error {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(inner) = source {
            reason = format!("{reason}: {inner}");
            source = inner.source();
        }
        Error::Network {
            url: self.url(path),
            reason,
        }
    }
}

/// Maps an error answer onto [`Error`] and decides whether it may pass on a retry.
fn classify(
    status: StatusCode,
    code: String,
    message: String,
    retry_after: Option<Duration>,
) -> Attempt {
    let s = status.as_u16();
    if s == 404 {
        return Attempt::Final(Error::NotFound);
    }
    if s == 401 && code == "bad_token" {
        return Attempt::Final(Error::BadKey(format!(
            "the server refused the key ({message}): check the password and that the link is \
             complete"
        )));
    }
    if code == "too_many_attempts" {
        return Attempt::Final(Error::TooManyAttempts(message));
    }
    let error = Error::Refused {
        status: s,
        code,
        message,
    };
    if s == 408 || s == 429 || status.is_server_error() {
        Attempt::Transient(error, retry_after)
    } else {
        Attempt::Final(error)
    }
}

fn to_json(value: &impl Serialize) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Integrity(format!("could not encode the request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(attempt: Attempt) -> (bool, u8) {
        match attempt {
            Attempt::Final(e) => (false, e.exit_code()),
            Attempt::Transient(e, _) => (true, e.exit_code()),
        }
    }

    #[test]
    fn classifies_answers_as_the_exit_codes_promise() {
        let c = |s: u16, code: &str| {
            kind(classify(
                StatusCode::from_u16(s).unwrap(),
                code.into(),
                "m".into(),
                None,
            ))
        };
        assert_eq!(c(404, "not_found"), (false, 4));
        assert_eq!(c(401, "bad_token"), (false, 5));
        assert_eq!(c(429, "too_many_attempts"), (false, 5));
        assert_eq!(c(409, "part_conflict"), (false, 6));
        assert_eq!(c(403, "bad_token"), (false, 6));
        assert_eq!(c(503, "server_busy"), (true, 6));
        assert_eq!(c(408, "timeout"), (true, 6));
        assert_eq!(c(500, "internal"), (true, 6));
    }
}
