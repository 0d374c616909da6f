//! The app's client for the server's `/api/v1` (see `docs/API.md`): JSON in and out, raw
//! octets for parts, and the error envelope turned into sentences a person can act on.

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
}

impl ApiError {
    fn network() -> ApiError {
        ApiError {
            status: 0,
            code: "network".into(),
            message: "Could not reach the server. Check your connection and try again.".into(),
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
    Json(String),
    Octets { bytes: &'a [u8], sha256_hex: String },
}

/// Sends one request; any non-2xx answer becomes an [`ApiError`] from the server's envelope.
async fn send(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Body<'_>,
) -> Result<web_sys::Response, ApiError> {
    let headers = web_sys::Headers::new().map_err(|_| ApiError::network())?;
    if let Some(token) = bearer {
        let _ = headers.set("Authorization", &format!("Bearer {token}"));
    }
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    match body {
        Body::Empty => {}
        Body::Json(json) => {
            let _ = headers.set("Content-Type", "application/json");
            init.set_body(&JsValue::from_str(&json));
        }
        Body::Octets { bytes, sha256_hex } => {
            let _ = headers.set("Content-Type", "application/octet-stream");
            let _ = headers.set("X-Content-SHA256", &sha256_hex);
            init.set_body(&util::to_js_bytes(bytes));
        }
    }
    init.set_headers(&headers);
    let request =
        web_sys::Request::new_with_str_and_init(url, &init).map_err(|_| ApiError::network())?;
    let response: web_sys::Response = JsFuture::from(util::window().fetch_with_request(&request))
        .await
        .map_err(|_| ApiError::network())?
        .unchecked_into();
    if response.ok() {
        return Ok(response);
    }
    let status = response.status();
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
        },
        None => ApiError {
            status,
            code: "http".into(),
            message: format!("The server answered with an unexpected error (HTTP {status})."),
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

/// `PUT /files/{id}/parts/{n}`, retried with backoff while the failure looks transient.
pub(crate) async fn put_part(id: &str, owner: &str, n: u64, bytes: &[u8]) -> Result<(), ApiError> {
    use sha2::Digest;
    let sha256_hex = hex::encode(sha2::Sha256::digest(bytes));
    let mut delay = 500;
    let mut attempt = 1;
    loop {
        let body = Body::Octets {
            bytes,
            sha256_hex: sha256_hex.clone(),
        };
        match send(
            "PUT",
            &url(&format!("/files/{id}/parts/{n}")),
            Some(owner),
            body,
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && attempt < 6 => {
                util::sleep_ms(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

pub(crate) async fn complete(id: &str, owner: &str) -> Result<(), ApiError> {
    send(
        "POST",
        &url(&format!("/files/{id}/complete")),
        Some(owner),
        Body::Empty,
    )
    .await?;
    Ok(())
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
pub(crate) async fn start_download(id: &str, auth: &str) -> Result<Ticket, ApiError> {
    json(
        send(
            "POST",
            &url(&format!("/files/{id}/downloads")),
            Some(auth),
            Body::Empty,
        )
        .await?,
    )
    .await
}

/// `GET /files/{id}/parts/{n}`, retried with backoff while the failure looks transient.
pub(crate) async fn get_part(id: &str, ticket: &str, n: u64) -> Result<Vec<u8>, ApiError> {
    let mut delay = 500;
    let mut attempt = 1;
    loop {
        let result = match send(
            "GET",
            &url(&format!("/files/{id}/parts/{n}")),
            Some(ticket),
            Body::Empty,
        )
        .await
        {
            Ok(response) => octets(response).await,
            Err(e) => Err(e),
        };
        match result {
            Err(e) if e.is_transient() && attempt < 6 => {
                util::sleep_ms(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
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

/// `PATCH /files/{id}`: new expiry (seconds from now) and download limit.
pub(crate) async fn update(
    id: &str,
    owner: &str,
    expires_in: u64,
    download_limit: Option<u64>,
) -> Result<ManageInfo, ApiError> {
    let body = serde_json::json!({ "expires_in": expires_in, "download_limit": download_limit })
        .to_string();
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
