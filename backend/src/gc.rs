//! Garbage collection: deletes the objects and rows of abandoned uploads, expired, deleted
//! and exhausted files, and drops expired tickets.
//!
//! Each pass first *marks* files deleted with conditional UPDATEs (so it cannot race a
//! completing upload, a download or a patch: whichever statement runs first wins), then purges
//! every file marked deleted: objects first, rows last, so a pass cut short is simply redone by
//! the next one. A part PUT racing the purge cannot leave an orphan: its row insert requires
//! the file to be uploading, and when that fails on a deleted or purged file it deletes the
//! object it created (its rows may outlive the objects for a moment, so it goes by the file's
//! state, not by whether a part row exists).

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::AppState;
use crate::db::{self, Marked};
use crate::error::ApiError;

/// What one GC pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Files newly marked for deletion, by reason.
    pub marked: Marked,
    /// Expired tickets dropped.
    pub tickets_removed: u64,
    /// Files whose objects and rows were purged.
    pub files_purged: u64,
    /// Objects deleted.
    pub objects_deleted: u64,
}

impl GcReport {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Deletes one deleted file's objects, then its rows. Idempotent.
pub async fn purge_file(state: &AppState, id: &str) -> Result<u64, ApiError> {
    let objects = state.storage.delete_file_objects(id).await?;
    state.db.purge_rows(id).await?;
    Ok(objects)
}

/// One full pass. Safe to run at any time, concurrently with requests or another pass.
pub async fn run_once(state: &AppState) -> Result<GcReport, ApiError> {
    let now = db::now();
    let ttl = i64::try_from(state.config.upload_ttl.as_secs()).unwrap_or(i64::MAX);
    let marked = state.db.mark_garbage(now, now.saturating_sub(ttl)).await?;
    let tickets_removed = state.db.delete_expired_tickets(now).await?;
    let mut report = GcReport {
        marked,
        tickets_removed,
        ..GcReport::default()
    };
    for id in state.db.deleted_file_ids().await? {
        // One file failing (say, a store hiccup) must not stop the others.
        match purge_file(state, &id).await {
            Ok(objects) => {
                report.files_purged += 1;
                report.objects_deleted += objects;
            }
            Err(e) => tracing::warn!(%id, error = %e, "purge failed; will retry next pass"),
        }
    }
    Ok(report)
}

/// Runs [`run_once`] every `--gc-interval` until the task is aborted.
pub fn spawn(state: AppState) -> JoinHandle<()> {
    let period = state.config.gc_interval.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match run_once(&state).await {
                Ok(report) if !report.is_empty() => tracing::info!(?report, "gc pass"),
                Ok(_) => tracing::debug!("gc pass: nothing to do"),
                Err(e) => tracing::error!(error = %e, "gc pass failed"),
            }
        }
    })
}
