//! The app's client for the server's `/api/v1` (see `docs/API.md`): JSON in and out, raw
//! octets for parts, and the error envelope turned into sentences a person can act on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::util;

/// A failed call, already phrased for the page.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    /// The HTTP status, or 0 when the request never got an answer.
    pub(crate) status: u16,
    /// The server's machine-readable code (`not_found`, `bad_token`, ...), or `network`.
    pub(crate) code: String,
    /// A sentence for the user.
    pub(crate) message: String,
    /// The server's `Retry-After`, in seconds, when it sent one.
    pub(crate) retry_after: Option<u32>,
}

impl ApiError {
    fn network() -> ApiError {
        ApiError {
            status: 0,
            code: "network".into(),
            message: "Could not reach the server. Check your connection and try again.".into(),
            retry_after: None,
        }
    }

    /// Whether trying the same request again may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self.status, 0 | 408 | 429) || self.status >= 500
    }
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

/// What a request carries.
pub(crate) enum Body<'a> {
    Empty,
    /// No body; the request is named with this `Idempotency-Key` (a retry is then not taken
    /// as a second request).
    Named(&'a str),
    Json(String),
    Octets {
        bytes: &'a js_sys::Uint8Array,
        sha256_hex: &'a str,
    },
}

/// Sends one request; any non-2xx answer becomes an [`ApiError`] from the server's envelope.
async fn send(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Body<'_>,
) -> Result<web_sys::Response, ApiError> {
    fetch(request(method, url, bearer, body)?).await
}

/// Builds a request. It holds its own copy of the body (the Fetch standard copies a buffer
/// when a request is made), so the caller's buffer may be freed as soon as this returns.
fn request(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Body<'_>,
) -> Result<web_sys::Request, ApiError> {
    let headers = web_sys::Headers::new().map_err(|_| ApiError::network())?;
    if let Some(token) = bearer {
        let _ = headers.set("Authorization", &format!("Bearer {token}"));
    }
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    match body {
        Body::Empty => {}
        Body::Named(key) => {
            let _ = headers.set("Idempotency-Key", key);
        }
        Body::Json(json) => {
            let _ = headers.set("Content-Type", "application/json");
            init.set_body(&JsValue::from_str(&json));
        }
        Body::Octets { bytes, sha256_hex } => {
            let _ = headers.set("Content-Type", "application/octet-stream");
            let _ = headers.set("X-Content-SHA256", sha256_hex);
            init.set_body(bytes);
        }
    }
    init.set_headers(&headers);
    web_sys::Request::new_with_str_and_init(url, &init).map_err(|_| ApiError::network())
}

/// Sends `request`; any non-2xx answer becomes an [`ApiError`] from the server's envelope.
async fn fetch(request: web_sys::Request) -> Result<web_sys::Response, ApiError> {
    let response: web_sys::Response = JsFuture::from(util::window().fetch_with_request(&request))
        .await
        .map_err(|_| ApiError::network())?
        .unchecked_into();
    if response.ok() {
        return Ok(response);
    }
    let status = response.status();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse().ok());
    let text = match response.text() {
        Ok(promise) => JsFuture::from(promise)
            .await
            .ok()
            .and_then(|v| v.as_string()),
        Err(_) => None,
    };
    let envelope = text
        .as_deref()
        .and_then(|t| serde_json::from_str::<Envelope>(t).ok());
    Err(match envelope {
        Some(Envelope { error }) => ApiError {
            status,
            code: error.code,
            message: error.message,
            retry_after,
        },
        None => ApiError {
            status,
            code: "http".into(),
            message: format!("The server answered with an unexpected error (HTTP {status})."),
            retry_after,
        },
    })
}

async fn json<T: DeserializeOwned>(response: web_sys::Response) -> Result<T, ApiError> {
    let promise = response.text().map_err(|_| ApiError::network())?;
    let text = JsFuture::from(promise)
        .await
        .map_err(|_| ApiError::network())?;
    let text = text.as_string().unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| ApiError {
        status: response.status(),
        code: "bad_response".into(),
        message: format!("The server's answer could not be read: {e}."),
        retry_after: None,
    })
}

async fn octets(response: web_sys::Response) -> Result<Vec<u8>, ApiError> {
    let promise = response.array_buffer().map_err(|_| ApiError::network())?;
    let buffer = JsFuture::from(promise)
        .await
        .map_err(|_| ApiError::network())?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

fn url(path: &str) -> String {
    format!("{}/api/v1{path}", util::origin())
}

/// `POST /files`: reserves an id for an upload.
#[derive(Serialize)]
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

#[derive(Deserialize)]
pub(crate) struct Created {
    pub(crate) id: String,
    pub(crate) owner_token: String,
    pub(crate) part_count: u64,
}

pub(crate) async fn create_file(request: &CreateFile<'_>) -> Result<Created, ApiError> {
    let body = serde_json::to_string(request).expect("the request serialises");
    json(send("POST", &url("/files"), None, Body::Json(body)).await?).await
}

/// Attempts a request at most this many times while its failures look transient.
const ATTEMPTS: u32 = 10;
/// The longest pause between two attempts, in milliseconds.
const MAX_DELAY_MS: i32 = 30_000;

/// When to try a failed request again: pauses growing from half a second to 30 s (about three
/// minutes in all over [`ATTEMPTS`]), longer when the server's `Retry-After` asks for it.
#[derive(Debug)]
pub(crate) struct Backoff {
    attempt: u32,
    delay: i32,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            attempt: 1,
            delay: 500,
        }
    }

    /// After attempt failed with `error`: waits and returns `true` if another attempt may
    /// succeed, else returns `false` at once.
    pub(crate) async fn retry(&mut self, error: &ApiError) -> bool {
        if !error.is_transient() || self.attempt >= ATTEMPTS {
            return false;
        }
        let asked = error.retry_after.map_or(0, |s| s.saturating_mul(1000)) as i32;
        util::sleep_ms(self.delay.max(asked).min(MAX_DELAY_MS)).await;
        self.delay = (self.delay * 2).min(MAX_DELAY_MS);
        self.attempt += 1;
        true
    }
}

/// Runs `request` until it succeeds, fails for good, or its [`Backoff`] gives up.
async fn with_retries<T, F, Fut>(mut request: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match request().await {
            Err(e) if backoff.retry(&e).await => {}
            other => return other,
        }
    }
}

/// One attempt at `PUT /files/{id}/parts/{n}` with the part's ciphertext, which is freed as
/// soon as the request holds its copy: the tab keeps one copy of each part in flight, not two.
/// A retry therefore seals the part again (the caller's loop, with [`Backoff`]), which gives
/// the same bytes from the same plaintext; the caller checks the plaintext is the same.
pub(crate) async fn put_part_once(
    id: &str,
    owner: &str,
    n: u64,
    part: crate::workers::SealedPart,
) -> Result<(), ApiError> {
    let url = url(&format!("/files/{id}/parts/{n}"));
    let body = Body::Octets {
        bytes: &part.ciphertext,
        sha256_hex: &part.sha256_hex,
    };
    let request = request("PUT", &url, Some(owner), body)?;
    drop(part);
    fetch(request).await.map(drop)
}

/// One part the server holds, from `GET /files/{id}/parts`.
#[derive(Deserialize, Clone, Debug)]
pub(crate) struct StoredPart {
    pub(crate) n: u64,
    pub(crate) size: u64,
}

#[derive(Deserialize)]
struct StoredParts {
    parts: Vec<StoredPart>,
}

/// `GET /files/{id}/parts`: the parts of an unfinished upload the server already holds.
pub(crate) async fn list_parts(id: &str, owner: &str) -> Result<Vec<StoredPart>, ApiError> {
    let url = url(&format!("/files/{id}/parts"));
    let list: StoredParts =
        with_retries(|| async { json(send("GET", &url, Some(owner), Body::Empty).await?).await })
            .await?;
    Ok(list.parts)
}

/// `POST /files/{id}/complete`, retried (completing twice is harmless).
pub(crate) async fn complete(id: &str, owner: &str) -> Result<(), ApiError> {
    let url = url(&format!("/files/{id}/complete"));
    with_retries(|| async { send("POST", &url, Some(owner), Body::Empty).await.map(drop) }).await
}

/// `GET /files/{id}`: what anyone with the link may know before proving the key.
#[derive(Deserialize, Clone)]
pub(crate) struct PublicInfo {
    pub(crate) kdf: Option<crypto_wasm::KdfParams>,
    pub(crate) expires_at: i64,
    pub(crate) downloads_remaining: Option<u64>,
}

pub(crate) async fn public_info(id: &str) -> Result<PublicInfo, ApiError> {
    json(send("GET", &url(&format!("/files/{id}")), None, Body::Empty).await?).await
}

/// `GET /files/{id}/metadata`: the sealed metadata and the part layout, for key holders.
#[derive(Deserialize, Clone)]
pub(crate) struct Sealed {
    pub(crate) metadata: String,
    /// The ciphertext body's length and its cutting into parts (docs/API.md, "Parts").
    pub(crate) size: u64,
    pub(crate) first_part_size: u64,
    pub(crate) part_size: u64,
    pub(crate) part_count: u64,
}

pub(crate) async fn metadata(id: &str, auth: &str) -> Result<Sealed, ApiError> {
    json(
        send(
            "GET",
            &url(&format!("/files/{id}/metadata")),
            Some(auth),
            Body::Empty,
        )
        .await?,
    )
    .await
}

#[derive(Deserialize)]
pub(crate) struct Ticket {
    pub(crate) ticket: String,
}

/// `POST /files/{id}/downloads`: counts one download and returns the ticket that reads it.
/// The request is named with a random `Idempotency-Key` and retried while the failure looks
/// transient: a retry after a lost answer gets a ticket without counting a second download.
pub(crate) async fn start_download(id: &str, auth: &str) -> Result<Ticket, ApiError> {
    let url = url(&format!("/files/{id}/downloads"));
    let Some(key) = random_name() else {
        // Unnamed, a retry could count a second download: one attempt only.
        return json(send("POST", &url, Some(auth), Body::Empty).await?).await;
    };
    with_retries(|| async { json(send("POST", &url, Some(auth), Body::Named(&key)).await?).await })
        .await
}

/// 128 random bits, base64url: a name for one request (`None` without a random source).
fn random_name() -> Option<String> {
    let bytes = js_sys::Uint8Array::new_with_length(16);
    util::window()
        .crypto()
        .and_then(|c| c.get_random_values_with_array_buffer_view(&bytes))
        .ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes.to_vec()))
}

/// `GET /files/{id}/parts/{n}`, retried while the failure looks transient.
pub(crate) async fn get_part(id: &str, ticket: &str, n: u64) -> Result<Vec<u8>, ApiError> {
    let url = url(&format!("/files/{id}/parts/{n}"));
    with_retries(|| async { octets(send("GET", &url, Some(ticket), Body::Empty).await?).await })
        .await
}

/// `GET /files/{id}/manage`: the owner's view.
#[derive(Deserialize, Clone)]
pub(crate) struct ManageInfo {
    pub(crate) state: String,
    pub(crate) kdf: Option<crypto_wasm::KdfParams>,
    pub(crate) metadata: String,
    pub(crate) size: u64,
    pub(crate) expires_at: i64,
    pub(crate) download_limit: Option<u64>,
    pub(crate) download_count: u64,
}

pub(crate) async fn manage_info(id: &str, owner: &str) -> Result<ManageInfo, ApiError> {
    json(
        send(
            "GET",
            &url(&format!("/files/{id}/manage")),
            Some(owner),
            Body::Empty,
        )
        .await?,
    )
    .await
}

/// `PATCH /files/{id}`: a new expiry (seconds from now; `None` keeps it) and download limit.
pub(crate) async fn update(
    id: &str,
    owner: &str,
    expires_in: Option<u64>,
    download_limit: Option<u64>,
) -> Result<ManageInfo, ApiError> {
    // An absent `expires_in` keeps the current expiry; a `null` limit means unlimited.
    let mut body = serde_json::json!({ "download_limit": download_limit });
    if let Some(seconds) = expires_in {
        body["expires_in"] = seconds.into();
    }
    let body = body.to_string();
    json(
        send(
            "PATCH",
            &url(&format!("/files/{id}")),
            Some(owner),
            Body::Json(body),
        )
        .await?,
    )
    .await
}

pub(crate) async fn delete(id: &str, owner: &str) -> Result<(), ApiError> {
    send(
        "DELETE",
        &url(&format!("/files/{id}")),
        Some(owner),
        Body::Empty,
    )
    .await?;
    Ok(())
}
