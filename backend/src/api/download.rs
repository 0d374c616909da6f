//! Download routes: public info, sealed metadata (auth token), download tickets (counted
//! atomically against the limit), and ciphertext reads by part or by byte range (ticket).
//! Auth-token checks are throttled per file against password guessing; ticket reads are not.

use std::collections::HashMap;
use std::ops::Range;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::upload::kdf_json;
use super::{Path, bearer, live_file, part_number, public_file};
use crate::db::{self, AuthOutcome, FileRow, STATE_COMPLETE};
use crate::error::ApiError;
use crate::{AppState, ids};

/// How long a download ticket authorises part reads.
pub(crate) const TICKET_TTL_SECS: i64 = 24 * 3600;

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PublicInfo {
    id: String,
    /// The password KDF parameters, or null without a password.
    #[schema(value_type = Option<super::upload::Kdf>)]
    kdf: Option<serde_json::Value>,
    expires_at: i64,
    downloads_remaining: Option<u64>,
}

/// `GET /api/v1/files/{id}`: what the download page needs before it can derive keys.
#[utoipa::path(
    get,
    path = "/files/{id}",
    tag = "download",
    params(("id" = super::openapi::FileId, Path, description = "The file's id.")),
    responses(
        (status = 200, description = "A live, complete file.", body = PublicInfo),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = super::openapi::NotFound),
        (status = 500, response = super::openapi::Internal),
    ),
)]
pub(crate) async fn info(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let file = public_file(&state, &id, db::now()).await?;
    Ok(axum::Json(PublicInfo {
        kdf: kdf_json(file.kdf.as_deref())?,
        expires_at: file.expires_at,
        downloads_remaining: file.downloads_remaining(),
        id: file.id,
    }))
}

/// Checks the auth token (derived from the link secret and password) in constant time,
/// under the file's guess throttle: while the file's auth checks are locked the answer is
/// `429 too_many_attempts` and the token is not even looked at, so a guess sent then learns
/// nothing. Every checked token is recorded (failures counted, a success resets the count)
/// by a conditional write that re-checks the lock, so concurrent guesses cannot slip past a
/// lock another one just set: the recorded outcome, not the comparison, decides the answer.
async fn check_auth_token(
    state: &AppState,
    file: &FileRow,
    headers: &HeaderMap,
    now: i64,
) -> Result<(), ApiError> {
    if file.auth_locked_until > now {
        return Err(too_many_attempts(file.auth_locked_until, now));
    }
    let right = bearer(headers).is_some_and(|token| ids::verify(&token, &file.auth_token_hash));
    let outcome = if right {
        state.db.auth_succeeded(&file.id, now).await?
    } else {
        state.db.auth_failed(&file.id, now).await?
    };
    match outcome {
        AuthOutcome::Accepted => Ok(()),
        AuthOutcome::Rejected => Err(ApiError::BadAuthToken),
        AuthOutcome::Locked(until) => {
            if !right {
                tracing::info!(id = %file.id, until, "wrong auth tokens; file's auth checks locked");
            }
            Err(too_many_attempts(until, now))
        }
        AuthOutcome::Gone => Err(ApiError::NotFound),
    }
}

fn too_many_attempts(until: i64, now: i64) -> ApiError {
    ApiError::TooManyAttempts {
        retry_after: db::to_u64(until.saturating_sub(now)).max(1),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct MetadataResponse {
    metadata: String,
    size: u64,
    first_part_size: u64,
    part_size: u64,
    part_count: u64,
}

/// `GET /api/v1/files/{id}/metadata`: the sealed metadata and layout; not a download.
#[utoipa::path(
    get,
    path = "/files/{id}/metadata",
    tag = "download",
    params(("id" = super::openapi::FileId, Path, description = "The file's id.")),
    responses(
        (status = 200, description = "Sealed metadata and the body's layout.", body = MetadataResponse),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::BadToken),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyAttempts),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("auth_token" = [])),
)]
pub(crate) async fn metadata(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let now = db::now();
    let file = public_file(&state, &id, now).await?;
    check_auth_token(&state, &file, &headers, now).await?;
    let layout = file.layout();
    Ok(axum::Json(MetadataResponse {
        metadata: ids::encode(&file.metadata),
        size: layout.size,
        first_part_size: layout.first_part_size,
        part_size: layout.part_size,
        part_count: layout.part_count(),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct TicketResponse {
    ticket: String,
    expires_at: i64,
    downloads_remaining: Option<u64>,
}

/// `POST /api/v1/files/{id}/downloads`: counts one download and issues a read ticket.
#[utoipa::path(
    post,
    path = "/files/{id}/downloads",
    tag = "download",
    params(
        ("id" = super::openapi::FileId, Path, description = "The file's id."),
        ("Idempotency-Key" = Option<String>, Header, description = "Names this request (1 to 255 visible ASCII characters; a random 128-bit value is recommended), so that a retry after a lost answer counts no second download: a repeat with the same key for the same file, while the first ticket lives, gets a new ticket expiring with the first one."),
    ),
    responses(
        (status = 200, description = "One download counted (or, for a repeat of a named request, none); the ticket reads its parts for 24 h.", body = TicketResponse),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::BadToken),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyAttempts),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("auth_token" = [])),
)]
pub(crate) async fn downloads(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let now = db::now();
    let request_key = idempotency_key(&headers)?;
    let file = match request_key {
        None => public_file(&state, &id, now).await?,
        // A repeat may find the file exhausted by its own original.
        Some(_) => live_file(&state, &id, now).await?,
    };
    if file.is_public(now) {
        check_auth_token(&state, &file, &headers, now).await?;
    } else {
        // Only a repeat of a named request goes on from here (the database refuses anything
        // else); everyone else gets the public's 404, a wrong token included, so this path
        // reveals nothing and needs no guess throttling.
        let right = bearer(&headers).is_some_and(|t| ids::verify(&t, &file.auth_token_hash));
        if !right {
            return Err(ApiError::NotFound);
        }
    }
    let (ticket, ticket_hash) = ids::new_token();
    // The count is taken by one conditional UPDATE: of N concurrent requests for the last
    // download, exactly one gets a row back; the rest see the same 404 as the public.
    let started = state
        .db
        .start_download(
            &id,
            &ticket_hash,
            now + TICKET_TTL_SECS,
            request_key.as_ref().map(|k| k.as_slice()),
            now,
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    if !started.counted {
        tracing::debug!(%id, "repeated download request; not counted again");
    }
    Ok(axum::Json(TicketResponse {
        ticket,
        expires_at: started.expires_at,
        downloads_remaining: started.file.downloads_remaining(),
    }))
}

/// The hash of the request's `Idempotency-Key`, if it has one; a key that is empty, longer
/// than 255 characters or not visible ASCII is refused.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<[u8; 32]>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.as_bytes();
    if key.is_empty() || key.len() > 255 || !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(Some(ids::hash(key)))
}

/// A complete, live file whose download ticket the request carries. Exhausted files still
/// serve their outstanding tickets. A bad ticket answers 401 only if the file is public.
async fn ticket_file(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    now: i64,
) -> Result<FileRow, ApiError> {
    let file = live_file(state, id, now).await?;
    if file.state != STATE_COMPLETE {
        return Err(ApiError::NotFound);
    }
    let valid = match bearer(headers) {
        Some(ticket) => state.db.ticket_valid(id, &ids::hash(&ticket), now).await?,
        None => false,
    };
    match valid {
        true => Ok(file),
        false if file.is_public(now) => Err(ApiError::BadAuthToken),
        false => Err(ApiError::NotFound),
    }
}

fn octets(status: StatusCode, len: u64, body: Body) -> Response {
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `GET /api/v1/files/{id}/parts/{n}`: one part's ciphertext.
#[utoipa::path(
    get,
    path = "/files/{id}/parts/{n}",
    tag = "download",
    params(
        ("id" = super::openapi::FileId, Path, description = "The file's id."),
        ("n" = u64, Path, description = "Part number, from 0."),
    ),
    responses(
        (status = 200, description = "The part's ciphertext.", body = super::openapi::Octets, content_type = "application/octet-stream"),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::BadToken),
        (status = 404, response = super::openapi::NotFound),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("ticket" = [])),
)]
pub(crate) async fn get_part(
    State(state): State<AppState>,
    Path((id, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = ticket_file(&state, &id, &headers, db::now()).await?;
    let n = part_number(&n, &file)?;
    let len = file.layout().part_len(n).unwrap_or(0);
    let row = state
        .db
        .get_part(&id, n)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("complete file {id} lacks part {n}")))?;
    let key = object_store::path::Path::from(row.object_key);
    // Opened before answering, so a missing object is a clean 500 rather than a cut body.
    let stream = state.storage.get_range(&key, 0..len).await?;
    Ok(octets(StatusCode::OK, len, Body::from_stream(stream)))
}

/// Parses a `Range` header against a body of `size` bytes. Only one `bytes=` range is
/// supported (`a-b`, `a-`, `-n`); anything else is unsatisfiable.
pub(crate) fn parse_range(value: &str, size: u64) -> Option<Range<u64>> {
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix range: the last n bytes.
        if !digits(last) {
            return None;
        }
        let n: u64 = last.parse().ok()?;
        if n == 0 || size == 0 {
            return None;
        }
        return Some(size - n.min(size)..size);
    }
    if !digits(first) {
        return None;
    }
    let start: u64 = first.parse().ok()?;
    if start >= size {
        return None;
    }
    let end = if last.is_empty() {
        size
    } else {
        if !digits(last) {
            return None;
        }
        let last: u64 = last.parse().ok()?;
        if last < start {
            return None;
        }
        last.saturating_add(1).min(size)
    };
    Some(start..end)
}

/// `GET /api/v1/files/{id}/content`: the whole body (200) or one byte range (206) of it,
/// streamed part after part.
#[utoipa::path(
    get,
    path = "/files/{id}/content",
    tag = "download",
    params(
        ("id" = super::openapi::FileId, Path, description = "The file's id."),
        ("Range" = Option<String>, Header, description = "One range, `bytes=start-end`, `bytes=start-` or `bytes=-suffix`."),
    ),
    responses(
        (status = 200, description = "The whole ciphertext body.", body = super::openapi::Octets, content_type = "application/octet-stream"),
        (status = 206, description = "The requested range of it (`Content-Range`).", body = super::openapi::Octets, content_type = "application/octet-stream"),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::BadToken),
        (status = 404, response = super::openapi::NotFound),
        (status = 416, response = super::openapi::RangeNotSatisfiable),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("ticket" = [])),
)]
pub(crate) async fn content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = ticket_file(&state, &id, &headers, db::now()).await?;
    let layout = file.layout();
    let size = layout.size;
    let (status, range) = match headers.get(header::RANGE) {
        None => (StatusCode::OK, 0..size),
        Some(value) => {
            let range = value
                .to_str()
                .ok()
                .and_then(|v| parse_range(v, size))
                .ok_or(ApiError::RangeNotSatisfiable { size })?;
            (StatusCode::PARTIAL_CONTENT, range)
        }
    };
    let keys: HashMap<u64, String> = state
        .db
        .list_parts(&id)
        .await?
        .into_iter()
        .map(|p| (db::to_u64(p.n), p.object_key))
        .collect();
    let mut pieces = Vec::new();
    for (n, within) in layout.segments(range.clone()) {
        let key = keys
            .get(&n)
            .ok_or_else(|| ApiError::Internal(format!("complete file {id} lacks part {n}")))?;
        pieces.push((object_store::path::Path::from(key.as_str()), within));
    }
    let len = range.end - range.start;
    let mut res = octets(
        status,
        len,
        Body::from_stream(state.storage.concat_ranges(pieces)),
    );
    let h = res.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {}-{}/{size}", range.start, range.end - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).map_err(ApiError::internal)?,
        );
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Some(90..100));
        assert_eq!(parse_range("bytes=90-500", 100), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Some(90..100));
        assert_eq!(parse_range("bytes=-500", 100), Some(0..100));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-4", 100), None);
        assert_eq!(parse_range("bytes=-0", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=a-b", 100), None);
        assert_eq!(parse_range("bytes=-", 100), None);
        assert_eq!(parse_range("bytes=+1-2", 100), None);
    }
}
