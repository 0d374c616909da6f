//! The HTTP routes: the router, shared extractors and the file lookups that enforce the
//! "same 404 for everything a caller may not see" rule.

mod download;
mod manage;
pub mod openapi;
mod upload;

use axum::Router;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use tower_http::trace::TraceLayer;

use crate::db::FileRow;
use crate::error::ApiError;
use crate::{AppState, ids};

/// Builds the whole router (see [`crate::app`]).
pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/files", post(upload::create))
        .route(
            "/files/{id}",
            get(download::info)
                .patch(manage::patch)
                .delete(manage::delete),
        )
        .route("/files/{id}/parts", get(upload::list_parts))
        .route(
            "/files/{id}/parts/{n}",
            // The part handler caps the body itself at the layout's exact size, streaming.
            put(upload::put_part)
                .get(download::get_part)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/files/{id}/complete", post(upload::complete))
        .route("/files/{id}/metadata", get(download::metadata))
        .route("/files/{id}/downloads", post(download::downloads))
        .route("/files/{id}/content", get(download::content))
        .route("/files/{id}/manage", get(manage::manage))
        .route("/openapi.json", get(openapi::serve))
        .fallback(api_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Nothing under /api may be cached: tickets, tokens and counters are all live.
        .layer(map_response(no_store));

    let security = state.security.clone();
    Router::new()
        .nest("/api/v1", api)
        .fallback(fallback)
        .layer(from_fn_with_state(
            security,
            crate::security::add_security_headers,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn api_not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Everything outside `/api/v1`: unknown API paths get the JSON 404, the rest is the web app.
async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        return no_store(ApiError::NotFound.into_response()).await;
    }
    match &state.static_files {
        Some(files) => files.serve(req).await,
        None => ApiError::NotFound.into_response(),
    }
}

/// `axum::Json` whose rejection (bad JSON, wrong content type, wrong field types) answers
/// in our error envelope as 400 `bad_request` with serde's reason.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// `axum::extract::Path` with its rejection in our envelope.
#[derive(Debug, Clone)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

/// The decoded bytes of an `Authorization: Bearer <base64url>` header, if well formed.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    ids::decode(token.trim())
}

/// A file the owner may still manage: exists, not deleted, not expired.
async fn live_file(state: &AppState, id: &str, now: i64) -> Result<FileRow, ApiError> {
    if !ids::is_valid_id(id) {
        return Err(ApiError::NotFound);
    }
    match state.db.get_file(id).await? {
        Some(file) if file.is_live(now) => Ok(file),
        _ => Err(ApiError::NotFound),
    }
}

/// A file anyone with its id may see: complete, live and not exhausted.
async fn public_file(state: &AppState, id: &str, now: i64) -> Result<FileRow, ApiError> {
    let file = live_file(state, id, now).await?;
    if file.is_public(now) {
        Ok(file)
    } else {
        Err(ApiError::NotFound)
    }
}

/// A live file whose owner token the request carries. A wrong token answers 403 only when
/// the file is public anyway; otherwise 404, so it reveals nothing the public cannot see.
async fn owner_file(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    now: i64,
) -> Result<FileRow, ApiError> {
    let file = live_file(state, id, now).await?;
    match bearer(headers) {
        Some(token) if ids::verify(&token, &file.owner_token_hash) => Ok(file),
        _ if file.is_public(now) => Err(ApiError::BadOwnerToken),
        _ => Err(ApiError::NotFound),
    }
}

/// Parses a part number against the file's layout.
fn part_number(raw: &str, file: &FileRow) -> Result<u64, ApiError> {
    let part_count = file.layout().part_count();
    match raw.parse::<u64>() {
        Ok(n) if n < part_count => Ok(n),
        _ => Err(ApiError::BadPartNumber { part_count }),
    }
}
