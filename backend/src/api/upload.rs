//! Upload routes: create a file, PUT its parts (streamed, size-capped, hash-checked, durable
//! before acknowledged), list stored parts for resuming, and complete.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::manage::ManageInfo;
use super::{Json, Path, owner_file, part_number};
use crate::db::{self, CompleteOutcome, NewFile, STATE_COMPLETE, STATE_UPLOADING};
use crate::error::ApiError;
use crate::layout::Layout;
use crate::storage::{PutOutcome, part_key};
use crate::{AppState, ids};

/// Decoded metadata blobs above this are refused (the contract's cap).
pub(crate) const MAX_METADATA_BYTES: usize = 4096;
/// Shortest allowed lifetime.
pub(crate) const MIN_EXPIRES_IN: u64 = 3600;
/// Longest allowed lifetime (30 days).
pub(crate) const MAX_EXPIRES_IN: u64 = 2_592_000;
/// A layout with more parts than this is refused: it would only mean absurdly small parts.
pub(crate) const MAX_PART_COUNT: u64 = 1 << 20;

/// Password KDF parameters, stored and returned verbatim for the downloader.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Kdf {
    #[schema(pattern = "^argon2id$", example = "argon2id")]
    alg: String,
    /// Memory cost in KiB.
    #[schema(minimum = 1)]
    m_cost: u32,
    #[schema(minimum = 1)]
    t_cost: u32,
    #[schema(minimum = 1)]
    p_cost: u32,
    /// 16 bytes, base64url.
    #[schema(pattern = "^[A-Za-z0-9_-]{22}$")]
    salt: String,
}

impl Kdf {
    fn validate(&self) -> Result<(), ApiError> {
        if self.alg != "argon2id" {
            return Err(ApiError::BadRequest("kdf.alg must be \"argon2id\"".into()));
        }
        if self.m_cost == 0 || self.t_cost == 0 || self.p_cost == 0 {
            return Err(ApiError::BadRequest("kdf costs must be positive".into()));
        }
        if ids::decode(&self.salt).is_none_or(|s| s.len() != 16) {
            return Err(ApiError::BadRequest(
                "kdf.salt must be 16 bytes, base64url without padding".into(),
            ));
        }
        Ok(())
    }
}

/// Parses the stored KDF JSON back for responses.
pub(crate) fn kdf_json(stored: Option<&str>) -> Result<Option<serde_json::Value>, ApiError> {
    stored
        .map(serde_json::from_str)
        .transpose()
        .map_err(ApiError::internal)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    /// Sealed metadata, 1..=4096 bytes, base64url.
    #[schema(pattern = "^[A-Za-z0-9_-]+$", min_length = 2, max_length = 5462)]
    metadata: String,
    /// The auth token downloaders will prove (32 bytes, base64url); only its hash is kept.
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    auth_token: String,
    /// Password KDF parameters for downloaders, or null without a password.
    kdf: Option<Kdf>,
    /// Ciphertext body length in bytes (at most the server's --max-file-size).
    #[schema(minimum = 1)]
    size: u64,
    /// Bytes in part 0 (at most the server's --max-part-size).
    #[schema(minimum = 1)]
    first_part_size: u64,
    /// Bytes in every later part but the last (at most --max-part-size).
    #[schema(minimum = 1)]
    part_size: u64,
    /// Lifetime in seconds.
    #[schema(minimum = 3600, maximum = 2592000)]
    expires_in: u64,
    /// Downloads allowed, or null for no limit.
    #[schema(minimum = 1)]
    download_limit: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CreateResponse {
    id: String,
    /// Returned only here, once: keep it to upload, complete and manage.
    owner_token: String,
    part_count: u64,
    expires_at: i64,
}

/// Checks an `expires_in` value against the allowed window.
pub(crate) fn check_expires_in(secs: u64) -> Result<i64, ApiError> {
    if (MIN_EXPIRES_IN..=MAX_EXPIRES_IN).contains(&secs) {
        Ok(db::to_i64(secs))
    } else {
        Err(ApiError::BadRequest(format!(
            "expires_in must be between {MIN_EXPIRES_IN} and {MAX_EXPIRES_IN} seconds"
        )))
    }
}

/// Checks a download limit (at least one download).
pub(crate) fn check_download_limit(limit: Option<u64>) -> Result<Option<i64>, ApiError> {
    match limit {
        Some(0) => Err(ApiError::BadRequest(
            "download_limit must be at least 1 (or null for no limit)".into(),
        )),
        other => Ok(other.map(db::to_i64)),
    }
}

/// `POST /api/v1/files`: registers an upload and returns the owner token, once.
#[utoipa::path(
    post,
    path = "/files",
    tag = "upload",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Registered; send the parts next.", body = CreateResponse),
        (status = 400, response = super::openapi::BadRequest),
        (status = 413, response = super::openapi::TooLarge),
        (status = 500, response = super::openapi::Internal),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let cfg = &state.config;
    let metadata = ids::decode(&req.metadata)
        .filter(|m| !m.is_empty() && m.len() <= MAX_METADATA_BYTES)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "metadata must be 1..={MAX_METADATA_BYTES} bytes, base64url without padding"
            ))
        })?;
    let auth_token = ids::decode(&req.auth_token)
        .filter(|t| t.len() == ids::TOKEN_BYTES)
        .ok_or_else(|| {
            ApiError::BadRequest("auth_token must be 32 bytes, base64url without padding".into())
        })?;
    let kdf = match &req.kdf {
        Some(kdf) => {
            kdf.validate()?;
            Some(serde_json::to_string(kdf).map_err(ApiError::internal)?)
        }
        None => None,
    };
    let expires_in = check_expires_in(req.expires_in)?;
    let download_limit = check_download_limit(req.download_limit)?;
    if req.size == 0 {
        return Err(ApiError::BadRequest("size must be positive".into()));
    }
    if req.size > cfg.max_file_size {
        return Err(ApiError::FileTooLarge {
            max: cfg.max_file_size,
        });
    }
    for (name, value) in [
        ("first_part_size", req.first_part_size),
        ("part_size", req.part_size),
    ] {
        if value == 0 || value > cfg.max_part_size {
            return Err(ApiError::BadRequest(format!(
                "{name} must be between 1 and {} bytes",
                cfg.max_part_size
            )));
        }
    }
    let layout = Layout {
        size: req.size,
        first_part_size: req.first_part_size,
        part_size: req.part_size,
    };
    if layout.part_count() > MAX_PART_COUNT {
        return Err(ApiError::BadRequest(format!(
            "the layout has more than {MAX_PART_COUNT} parts; use larger parts"
        )));
    }

    let now = db::now();
    let id = ids::new_id();
    let (owner_token, owner_token_hash) = ids::new_token();
    let expires_at = now + expires_in;
    state
        .db
        .insert_file(&NewFile {
            id: id.clone(),
            owner_token_hash: owner_token_hash.to_vec(),
            auth_token_hash: ids::hash(&auth_token).to_vec(),
            metadata,
            kdf,
            layout,
            created_at: now,
            expires_at,
            download_limit,
        })
        .await?;
    tracing::info!(%id, size = req.size, parts = layout.part_count(), "upload created");
    Ok((
        StatusCode::CREATED,
        axum::Json(CreateResponse {
            id,
            owner_token,
            part_count: layout.part_count(),
            expires_at,
        }),
    ))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PartAck {
    part: u64,
    size: u64,
}

/// Reads `X-Content-SHA256` (64 hex digits).
fn announced_hash(headers: &HeaderMap) -> Result<[u8; 32], ApiError> {
    let bad = || ApiError::BadRequest("X-Content-SHA256 must be 64 hex digits".into());
    let value = headers
        .get("x-content-sha256")
        .ok_or_else(bad)?
        .to_str()
        .map_err(|_| bad())?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(value.trim(), &mut out).map_err(|_| bad())?;
    Ok(out)
}

/// `PUT /api/v1/files/{id}/parts/{n}`: stores one part.
///
/// The body is streamed and capped at the layout's exact size for part n, hashed while read
/// (and on local disk written to a staging file as it arrives, see [`crate::storage`]), and
/// only once whole and hash-checked stored under its name (create-only, fsynced on local
/// disk) and recorded. A body that is short, long, cut off or mis-hashed leaves no object and
/// no row behind.
#[utoipa::path(
    put,
    path = "/files/{id}/parts/{n}",
    tag = "upload",
    params(
        ("id" = super::openapi::FileId, Path, description = "The file's id."),
        ("n" = u64, Path, description = "Part number, from 0."),
        ("X-Content-SHA256" = String, Header, description = "SHA-256 of the body, 64 hex digits."),
    ),
    request_body(
        content = super::openapi::Octets,
        content_type = "application/octet-stream",
        description = "Exactly the part's bytes of the ciphertext body.",
    ),
    responses(
        (status = 200, description = "Stored durably and recorded (also when the same bytes already were).", body = PartAck),
        (status = 400, response = super::openapi::BadRequest),
        (status = 403, response = super::openapi::OwnerOnly),
        (status = 404, response = super::openapi::NotFound),
        (status = 408, response = super::openapi::Timeout),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::TooLarge),
        (status = 500, response = super::openapi::Internal),
        (status = 503, response = super::openapi::ServerBusy),
    ),
    security(("owner_token" = [])),
)]
pub(crate) async fn put_part(
    State(state): State<AppState>,
    Path((id, n)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let file = owner_file(&state, &id, &headers, db::now()).await?;
    if file.state == STATE_COMPLETE {
        return Err(ApiError::AlreadyComplete);
    }
    let n = part_number(&n, &file)?;
    let expected = file.layout().part_len(n).unwrap_or(0);
    let want = announced_hash(&headers)?;

    // Refuse early on a declared length that cannot be right, without reading the body.
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > expected {
            return Err(ApiError::PartTooLarge { n, expected });
        }
        if len < expected {
            return Err(ApiError::PartSizeMismatch {
                n,
                expected,
                got: len,
            });
        }
    }

    // A part in progress holds at most --max-part-size (checked at create) of memory or, on
    // local disk, of staging file; it gets a name in the store only once whole and checked.
    // A permit is taken first, without queueing, and held until the part is stored or dropped:
    // at most --max-concurrent-parts are in progress at once, so they never hold more than
    // max_concurrent_parts × max_part_size. A refused client retries (the answer carries
    // Retry-After), which is cheaper than holding its connection in a queue.
    let _permit = state
        .part_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::ServerBusy)?;
    let key = part_key(&id, n);
    let cap = usize::try_from(expected).map_err(ApiError::internal)?;
    let mut part = state.storage.part_writer(&key, cap);
    let mut stream = body.into_data_stream();
    // The idle timer restarts with every chunk: a slow but steady client is fine, a stalled one
    // would otherwise hold its permit and buffer forever. Returning drops what was read.
    let idle = state.config.part_idle_timeout;
    let read_body = async {
        loop {
            let Ok(next) = tokio::time::timeout(idle, stream.next()).await else {
                tracing::info!(%id, n, ?idle, "part body stalled; abandoned");
                return Err(ApiError::Timeout { n, idle });
            };
            let Some(chunk) = next else { break };
            let got = part.len();
            // A body error is the client going away mid-part: a truncated upload.
            let chunk = chunk.map_err(|_| ApiError::PartSizeMismatch { n, expected, got })?;
            if got + chunk.len() as u64 > expected {
                return Err(ApiError::PartTooLarge { n, expected });
            }
            part.write(chunk).await?;
        }
        Ok(())
    };
    // Whether the part is already recorded (a retry) is looked up while the body arrives.
    let (recorded, ()) = tokio::try_join!(state.db.get_part(&id, n), read_body)?;
    let got = part.len();
    if got != expected {
        return Err(ApiError::PartSizeMismatch { n, expected, got });
    }
    let digest = part.finish().await?;
    if digest != want {
        return Err(ApiError::HashMismatch);
    }
    let ack = || axum::Json(PartAck { part: n, size: got });

    // A retry of a part already recorded: same bytes are fine, different bytes are refused
    // (they would mean a nonce reused for other plaintext). A row recorded meanwhile by a
    // concurrent PUT is caught below: the store then holds an object under this key.
    if let Some(row) = recorded {
        return if row.sha256 == digest {
            Ok(ack())
        } else {
            Err(ApiError::PartConflict(n))
        };
    }

    let created = match part.commit().await? {
        PutOutcome::Conflict => return Err(ApiError::PartConflict(n)),
        PutOutcome::Created => true,
        PutOutcome::AlreadyStored => false,
    };
    if state
        .db
        .insert_part(&id, n, got, &digest, key.as_ref(), db::now())
        .await?
    {
        // The row went in while the file was uploading, so a later purge will see the object.
        // Still, a file deleted meanwhile is answered as gone, and its object removed now.
        if file_is_gone(&state, &id).await? {
            state.storage.delete(&key).await?;
            return Err(ApiError::NotFound);
        }
        return Ok(ack());
    }
    // No row was inserted: either a concurrent PUT of the same part won, or the upload stopped
    // being in progress (completed, deleted or collected) while we were storing. The file's
    // state decides, not the part row: a deleted file's rows outlive its objects for a moment
    // (the purge removes objects first), so a row found then says nothing about the object.
    if file_is_gone(&state, &id).await? {
        // Whatever we created would be an orphan the purge may already have missed. An object
        // we did not create is left alone: it is someone else's, and the purge's to delete.
        if created {
            state.storage.delete(&key).await?;
        }
        return Err(ApiError::NotFound);
    }
    match state.db.get_part(&id, n).await? {
        Some(row) if row.sha256 == digest => Ok(ack()),
        Some(_) => Err(ApiError::PartConflict(n)),
        None => {
            // Only a purge removes part rows, so the file was deleted after the check above
            // and that purge deleted the objects after we stored ours. Cleaning up is harmless.
            if created {
                state.storage.delete(&key).await?;
            }
            Err(ApiError::NotFound)
        }
    }
}

/// Whether the file is deleted or its row purged: anything but uploading or complete.
async fn file_is_gone(state: &AppState, id: &str) -> Result<bool, ApiError> {
    Ok(state
        .db
        .get_file(id)
        .await?
        .is_none_or(|f| f.state != STATE_UPLOADING && f.state != STATE_COMPLETE))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PartInfo {
    n: u64,
    size: u64,
    /// Lowercase hex.
    sha256: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PartList {
    parts: Vec<PartInfo>,
}

/// `GET /api/v1/files/{id}/parts`: the parts stored so far, for resuming.
#[utoipa::path(
    get,
    path = "/files/{id}/parts",
    tag = "upload",
    params(("id" = super::openapi::FileId, Path, description = "The file's id.")),
    responses(
        (status = 200, description = "The parts stored so far.", body = PartList),
        (status = 400, response = super::openapi::BadRequest),
        (status = 403, response = super::openapi::OwnerOnly),
        (status = 404, response = super::openapi::NotFound),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("owner_token" = [])),
)]
pub(crate) async fn list_parts(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    owner_file(&state, &id, &headers, db::now()).await?;
    let parts = state
        .db
        .list_parts(&id)
        .await?
        .into_iter()
        .map(|p| PartInfo {
            n: db::to_u64(p.n),
            size: db::to_u64(p.size),
            sha256: hex::encode(p.sha256),
        })
        .collect();
    Ok(axum::Json(PartList { parts }))
}

/// `POST /api/v1/files/{id}/complete`: makes the file visible once every part is stored.
#[utoipa::path(
    post,
    path = "/files/{id}/complete",
    tag = "upload",
    params(("id" = super::openapi::FileId, Path, description = "The file's id.")),
    responses(
        (status = 200, description = "Complete (also when it already was).", body = ManageInfo),
        (status = 400, response = super::openapi::BadRequest),
        (status = 403, response = super::openapi::OwnerOnly),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("owner_token" = [])),
)]
pub(crate) async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let now = db::now();
    owner_file(&state, &id, &headers, now).await?;
    match state.db.complete(&id, now).await? {
        CompleteOutcome::Completed => tracing::info!(%id, "upload complete"),
        CompleteOutcome::AlreadyComplete => {}
        CompleteOutcome::Missing(missing) => return Err(ApiError::MissingParts(missing)),
        CompleteOutcome::Gone => return Err(ApiError::NotFound),
    }
    let file = state.db.get_file(&id).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(ManageInfo::from_row(&file)?))
}
