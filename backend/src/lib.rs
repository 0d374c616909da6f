//! BitStratus server: the JSON API over SQL metadata and object-stored ciphertext, plus the
//! static web app. It never sees a key, a file name or plaintext.
//!
//! [`app`] builds the whole HTTP service from an [`AppState`]; the `bitstratus-server` binary
//! adds configuration parsing, the GC loop and graceful shutdown.

pub mod api;
pub mod config;
pub mod db;
pub mod error;
pub mod gc;
pub mod ids;
pub mod layout;
pub mod security;
pub mod static_files;
pub mod storage;

use std::sync::Arc;

use axum::Router;
use tokio::sync::Semaphore;

pub use config::Config;
pub use error::ApiError;

use db::Db;
use security::SecurityHeaders;
use static_files::StaticFiles;
use storage::Storage;

/// Everything a request handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// The database.
    pub db: Db,
    /// The object store.
    pub storage: Storage,
    /// One permit per part body being read (`--max-concurrent-parts`). Each read buffers up
    /// to `--max-part-size`, so this bounds part-buffer memory to their product.
    part_permits: Arc<Semaphore>,
    security: Arc<SecurityHeaders>,
    static_files: Option<StaticFiles>,
}

impl AppState {
    /// Opens the database (running migrations), the object store and the static dir, and
    /// computes the CSP from the static dir's index.html.
    pub async fn new(config: Config) -> Result<Self, ApiError> {
        std::fs::create_dir_all(&config.data_dir)?;
        let db = Db::connect(&config).await?;
        let storage = Storage::from_config(&config)?;
        Self::with_parts(config, db, storage)
    }

    /// Builds the state from an already-open database and store.
    pub fn with_parts(config: Config, db: Db, storage: Storage) -> Result<Self, ApiError> {
        let index_html = match config.index_html() {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(html) => Some(html),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "no readable index.html in the static dir; CSP allows no inline script");
                    None
                }
            },
            None => None,
        };
        let csp = security::content_security_policy(index_html.as_deref());
        let static_files = config.static_dir.as_deref().map(StaticFiles::new);
        // Semaphore::new panics above MAX_PERMITS; no real limit comes near it anyway.
        let permits = config.max_concurrent_parts.min(Semaphore::MAX_PERMITS);
        let part_permits = Arc::new(Semaphore::new(permits));
        Ok(Self {
            config: Arc::new(config),
            db,
            storage,
            part_permits,
            security: Arc::new(SecurityHeaders::new(&csp)),
            static_files,
        })
    }

    /// The same database and store under a different configuration (tests use it to run
    /// the garbage collector with another TTL). The part-upload permits are shared too, so
    /// `max_concurrent_parts` keeps the value the state was built with.
    pub fn with_config(&self, config: Config) -> Self {
        Self {
            config: Arc::new(config),
            ..self.clone()
        }
    }

    /// How many more part bodies could be read right now (tests and diagnostics).
    pub fn part_permits_available(&self) -> usize {
        self.part_permits.available_permits()
    }

    /// The security headers every response carries.
    pub fn security_headers(&self) -> &SecurityHeaders {
        &self.security
    }
}

/// Blocking-pool threads the server needs besides those of part uploads.
///
/// Local disk I/O runs on tokio's blocking pool, one task at a time per request: a part upload
/// has at most one open, write or fsync in flight, a download one read. Tokio starts a new
/// thread whenever none is idle, up to 512 by default, and each keeps its stack and, with
/// glibc, possibly a malloc arena of its own: under a steady stream of short tasks the pool
/// creeps up over time, and memory with it. This many threads serve everything that is not
/// a part upload (downloads, deletions, the collector) at disk speed; more tasks queue.
pub const SHARED_BLOCKING_THREADS: usize = 8;

/// The blocking-pool size for `config`: one thread per part that may be in progress
/// (`--max-concurrent-parts`) plus [`SHARED_BLOCKING_THREADS`].
pub fn max_blocking_threads(config: &Config) -> usize {
    config
        .max_concurrent_parts
        .saturating_add(SHARED_BLOCKING_THREADS)
}

/// The complete HTTP service: `/api/v1`, the static app with SPA fallback, security headers
/// on everything.
pub fn app(state: AppState) -> Router {
    api::router(state)
}

/// The most a connection reads from its socket at once, and so the largest read buffer it
/// keeps. Hyper's default lets each connection's buffer grow to about 400 KiB as a body
/// streams in, and keeps it: a browser holds six or more connections, so the server's memory
/// crept up over a long upload as one connection after another reached the maximum
/// (heaptrack, 2 GiB browser upload: 3.8 MiB of read buffers at the peak, the largest item).
/// With 64 KiB, the memory bench's server peaks went from 14.3-20.5 MiB (100 MiB file) and
/// 21.0-23.0 MiB (4 GiB) to 13.4-15.0 and 17.7-18.5 MiB, and server-ingest's API side kept its
/// speed (0.95-1.06 s per GiB against 0.93-1.11 s), all on 2026-12-05. 64 KiB reads are still
/// few (16 per MiB), and every body chunk is copied into the part's write buffer anyway.
pub const READ_BUFFER: usize = 64 << 10;

/// Serves `router` on `listener` until `shutdown` resolves, then lets the connections finish
/// what they are doing. `axum::serve`, with the one setting it does not expose:
/// [`READ_BUFFER`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(READ_BUFFER);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
