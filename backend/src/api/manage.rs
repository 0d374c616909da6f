//! Owner routes: view a file's state, change its expiry or download limit, delete it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Deserializer, Serialize};

use super::upload::{check_download_limit, check_expires_in, kdf_json};
use super::{Json, Path, owner_file};
use crate::db::{self, FileRow};
use crate::error::ApiError;
use crate::{AppState, gc, ids};

/// What the owner sees about a file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ManageInfo {
    id: String,
    /// `uploading` or `complete`.
    state: String,
    #[schema(value_type = Option<super::upload::Kdf>)]
    kdf: Option<serde_json::Value>,
    metadata: String,
    size: u64,
    expires_at: i64,
    download_limit: Option<u64>,
    download_count: u64,
    created_at: i64,
}

impl ManageInfo {
    pub(crate) fn from_row(f: &FileRow) -> Result<Self, ApiError> {
        Ok(Self {
            id: f.id.clone(),
            state: f.state.clone(),
            kdf: kdf_json(f.kdf.as_deref())?,
            metadata: ids::encode(&f.metadata),
            size: db::to_u64(f.size),
            expires_at: f.expires_at,
            download_limit: f.download_limit.map(db::to_u64),
            download_count: db::to_u64(f.download_count),
            created_at: f.created_at,
        })
    }
}

/// `GET /api/v1/files/{id}/manage`.
#[utoipa::path(
    get,
    path = "/files/{id}/manage",
    tag = "manage",
    params(("id" = super::openapi::FileId, Path, description = "The file's id.")),
    responses(
        (status = 200, description = "The owner's view, also while uploading or exhausted.", body = ManageInfo),
        (status = 400, response = super::openapi::BadRequest),
        (status = 403, response = super::openapi::OwnerOnly),
        (status = 404, response = super::openapi::NotFound),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("owner_token" = [])),
)]
pub(crate) async fn manage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let file = owner_file(&state, &id, &headers, db::now()).await?;
    Ok(axum::Json(ManageInfo::from_row(&file)?))
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchRequest {
    /// New lifetime in seconds counted from now (from completion while still uploading).
    #[schema(minimum = 3600, maximum = 2592000)]
    expires_in: Option<u64>,
    /// Absent: unchanged; null: no limit; a number: that limit (may already be reached).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1)]
    download_limit: Option<Option<u64>>,
}

/// `PATCH /api/v1/files/{id}`: new lifetime (from now; from completion while uploading)
/// and/or download limit.
#[utoipa::path(
    patch,
    path = "/files/{id}",
    tag = "manage",
    params(("id" = super::openapi::FileId, Path, description = "The file's id.")),
    request_body = PatchRequest,
    responses(
        (status = 200, description = "Changed.", body = ManageInfo),
        (status = 400, response = super::openapi::BadRequest),
        (status = 403, response = super::openapi::OwnerOnly),
        (status = 404, response = super::openapi::NotFound),
        (status = 413, response = super::openapi::TooLarge),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("owner_token" = [])),
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<PatchRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let now = db::now();
    owner_file(&state, &id, &headers, now).await?;
    let expires_in = req.expires_in.map(check_expires_in).transpose()?;
    let download_limit = req.download_limit.map(check_download_limit).transpose()?;
    if !state.db.patch(&id, expires_in, download_limit, now).await? {
        return Err(ApiError::NotFound);
    }
    let file = state.db.get_file(&id).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(ManageInfo::from_row(&file)?))
}

/// `DELETE /api/v1/files/{id}`: the file answers 404 at once; its objects and rows are
/// purged in the background now, and by the GC should that fail.
#[utoipa::path(
    delete,
    path = "/files/{id}",
    tag = "manage",
    params(("id" = super::openapi::FileId, Path, description = "The file's id.")),
    responses(
        (status = 204, description = "Deleted: the file answers 404 from now on."),
        (status = 400, response = super::openapi::BadRequest),
        (status = 403, response = super::openapi::OwnerOnly),
        (status = 404, response = super::openapi::NotFound),
        (status = 500, response = super::openapi::Internal),
    ),
    security(("owner_token" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let now = db::now();
    owner_file(&state, &id, &headers, now).await?;
    if !state.db.mark_deleted(&id, now).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(%id, "file deleted by owner");
    tokio::spawn(async move {
        if let Err(e) = gc::purge_file(&state, &id).await {
            tracing::warn!(%id, error = %e, "purge after delete failed; the GC will retry");
        }
    });
    Ok(StatusCode::NO_CONTENT)
}
