//! Ciphertext object storage over `object_store`: a local directory or an S3-compatible bucket.
//!
//! Objects are immutable: a part is written with create-only semantics, so an existing object
//! is never overwritten with different bytes. On local disk the file and its directories are
//! fsynced before a part is acknowledged.
//!
//! A part arriving over HTTP goes through a [`PartWriter`], which hashes it as it arrives.
//! On local disk the writer also writes it, as it arrives, to a private staging file beside
//! the object (`<object>#<n>`, a name the store never lists), so the disk write overlaps the
//! network and no part is ever held in memory whole; only after the whole body is there and
//! its hash checked does [`PartWriter::commit`] give it its name, create-only and durably.
//! Elsewhere the writer keeps the part in memory and stores it with one create-only PUT.

use std::io::{ErrorKind, Write as _};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMode, PutPayload};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::config::{Config, StorageKind};
use crate::error::ApiError;

/// What happened to a part write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call wrote the object; the bytes are durably stored.
    Created,
    /// An object with the same bytes was already there; nothing was written.
    AlreadyStored,
    /// An object with different bytes already holds that key; nothing was changed.
    Conflict,
}

/// The object store plus what we need to make local writes durable.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Canonical root directory for the local backend; `None` for remote stores.
    local_root: Option<PathBuf>,
}

/// Object key of part `n` of file `id`: `files/{id}/{n:08}`.
pub fn part_key(id: &str, n: u64) -> Path {
    Path::from(format!("files/{id}/{n:08}"))
}

fn file_prefix(id: &str) -> Path {
    Path::from(format!("files/{id}"))
}

impl Storage {
    /// Builds the configured backend.
    pub fn from_config(config: &Config) -> Result<Self, ApiError> {
        match config.storage {
            StorageKind::Local => Self::local(config.objects_dir()),
            StorageKind::S3 => Self::s3(config),
        }
    }

    /// A directory on local disk, created if missing.
    pub fn local(root: PathBuf) -> Result<Self, ApiError> {
        std::fs::create_dir_all(&root)?;
        let root = std::fs::canonicalize(&root)?;
        // Automatic cleanup removes a file's empty directory once its last part is deleted.
        let store = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            local_root: Some(root),
        })
    }

    /// An S3-compatible bucket.
    pub fn s3(config: &Config) -> Result<Self, ApiError> {
        let bucket = config
            .s3_bucket
            .as_deref()
            .ok_or_else(|| ApiError::internal("--s3-bucket is required with --storage s3"))?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&config.s3_region)
            .with_allow_http(config.s3_allow_http)
            .with_virtual_hosted_style_request(!config.s3_path_style);
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &config.s3_access_key {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.s3_secret_key {
            builder = builder.with_secret_access_key(&secret.0);
        }
        Ok(Self {
            store: Arc::new(builder.build()?),
            local_root: None,
        })
    }

    /// Any store (tests may pass an in-memory one); writes are not fsynced.
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
        }
    }

    /// The local root directory, if this is the local backend.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local_root.as_deref()
    }

    /// Starts receiving the part of `len` bytes to be stored under `key`; see [`PartWriter`].
    /// On local disk the staging file is created in the background: the first bytes can
    /// arrive meanwhile.
    pub fn part_writer(&self, key: &Path, len: usize) -> PartWriter {
        let sink = match &self.local_root {
            Some(root) => {
                let path = self.local_path(root, key);
                Sink::Staged(Staged {
                    opening: Some(tokio::task::spawn_blocking(move || create_staging(&path))),
                    idle: None,
                    busy: None,
                    batch: Vec::new(),
                    batch_len: 0,
                    staging: None,
                    root: root.clone(),
                })
            }
            None => Sink::Buffer(BytesMut::with_capacity(len)),
        };
        PartWriter {
            storage: self.clone(),
            key: key.clone(),
            len: 0,
            hasher: Sha256::new(),
            digest: None,
            sink,
        }
    }

    /// The local file of `key` under `root`.
    fn local_path(&self, root: &std::path::Path, key: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        for part in key.parts() {
            path.push(part.as_ref());
        }
        path
    }

    /// Stores a part's bytes under `key` without ever replacing different bytes. `sha256` is
    /// the hash of `data`, used to recognise an identical existing object (a retried upload).
    ///
    /// On S3 `PutMode::Create` is a PUT with `If-None-Match: *`, which an existing key answers
    /// with 412 (`AlreadyExists` here); the S3 integration tests check this against a real
    /// server (`s3s-fs`). The store must make that check atomic with the write, as AWS S3,
    /// MinIO and R2 do, for two concurrent writers of one key to be told apart.
    pub async fn put_part(
        &self,
        key: &Path,
        data: Bytes,
        sha256: &[u8; 32],
    ) -> Result<PutOutcome, ApiError> {
        let payload = PutPayload::from_bytes(data.clone());
        let outcome = match self
            .store
            .put_opts(key, payload, PutMode::Create.into())
            .await
        {
            Ok(_) => PutOutcome::Created,
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => self.existing(key, sha256).await?,
            Err(object_store::Error::NotImplemented) => {
                // A store without conditional writes: check first, then write. Two racing
                // writers of one part could still interleave here, but only the one whose row
                // is inserted is acknowledged, and its bytes are re-checked on conflict.
                match self.store.head(key).await {
                    Ok(_) => self.existing(key, sha256).await?,
                    Err(object_store::Error::NotFound { .. }) => {
                        self.store.put(key, PutPayload::from_bytes(data)).await?;
                        PutOutcome::Created
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if outcome != PutOutcome::Conflict {
            self.sync(key).await?;
        }
        Ok(outcome)
    }

    /// An object already holds `key`: the same bytes, or a conflict.
    async fn existing(&self, key: &Path, sha256: &[u8; 32]) -> Result<PutOutcome, ApiError> {
        Ok(if self.same_bytes(key, sha256).await? {
            PutOutcome::AlreadyStored
        } else {
            PutOutcome::Conflict
        })
    }

    async fn same_bytes(&self, key: &Path, sha256: &[u8; 32]) -> Result<bool, ApiError> {
        let existing = self.store.get(key).await?.bytes().await?;
        Ok(crate::ids::hash(&existing) == *sha256)
    }

    /// Makes a local object durable: fsync the file, then each directory up to the root so
    /// the new directory entries survive a crash too. A no-op for remote stores, which
    /// acknowledge a PUT only once it is durable.
    async fn sync(&self, key: &Path) -> Result<(), ApiError> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        let path = self.local_path(&root, key);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&path)?.sync_all()?;
            sync_dirs(&path, &root)
        })
        .await
        .map_err(ApiError::internal)??;
        Ok(())
    }

    /// Streams `range` (bytes within the object) of the object at `key`.
    pub async fn get_range(
        &self,
        key: &Path,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, object_store::Result<Bytes>>, ApiError> {
        let opts = GetOptions {
            range: Some(range.into()),
            ..GetOptions::default()
        };
        Ok(self.store.get_opts(key, opts).await?.into_stream())
    }

    /// Streams several `(key, range)` pieces back to back, opening each only when the
    /// previous one is drained, so memory stays at one chunk whatever the total length.
    pub fn concat_ranges(
        &self,
        pieces: Vec<(Path, Range<u64>)>,
    ) -> BoxStream<'static, object_store::Result<Bytes>> {
        let store = Arc::clone(&self.store);
        futures::stream::iter(pieces)
            .then(move |(key, range)| {
                let store = Arc::clone(&store);
                async move {
                    let opts = GetOptions {
                        range: Some(range.into()),
                        ..GetOptions::default()
                    };
                    Ok::<_, object_store::Error>(store.get_opts(&key, opts).await?.into_stream())
                }
            })
            .try_flatten()
            .boxed()
    }

    /// Deletes one object; a missing object is fine (deletion is idempotent).
    pub async fn delete(&self, key: &Path) -> Result<(), ApiError> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object of file `id`; returns how many were deleted. On local disk it also
    /// removes the file's staging files: a PUT still receiving a part of this (deleted) file
    /// then answers 404, and one a crash cut short leaves nothing behind for good.
    pub async fn delete_file_objects(&self, id: &str) -> Result<u64, ApiError> {
        let prefix = file_prefix(id);
        let keys: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        let mut deleted = 0;
        for key in keys {
            self.delete(&key).await?;
            deleted += 1;
        }
        if let Some(root) = self.local_root.clone() {
            let dir = self.local_path(&root, &prefix);
            tokio::task::spawn_blocking(move || remove_staging_files(&dir, &root))
                .await
                .map_err(ApiError::internal)??;
        }
        Ok(deleted)
    }

    /// Keys of every stored object of file `id` (tests and diagnostics).
    pub async fn list_file_objects(&self, id: &str) -> Result<Vec<String>, ApiError> {
        let prefix = file_prefix(id);
        let mut keys: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }
}

/// A part being received (see the module docs): feed it the body with [`PartWriter::write`],
/// then [`PartWriter::finish`] for the SHA-256 of everything written, then, if that is the
/// hash announced, [`PartWriter::commit`]. Dropped before `commit`, it leaves nothing behind.
///
/// The caller enforces the size. Memory: on local disk at most two batches of
/// [`WRITE_BATCH`] bytes (one being written, one being gathered) plus a chunk; elsewhere the
/// part itself.
#[derive(Debug)]
pub struct PartWriter {
    storage: Storage,
    key: Path,
    len: u64,
    /// Hashes every chunk as it arrives, on the request's task, while the previous batch is
    /// being written on the blocking pool (measured faster than hashing there too).
    hasher: Sha256,
    digest: Option<[u8; 32]>,
    sink: Sink,
}

/// Bytes gathered before they are handed to the blocking pool to be written.
pub const WRITE_BATCH: usize = 512 << 10;

#[derive(Debug)]
enum Sink {
    /// A remote (or test) store: the part in memory, stored with one create-only PUT.
    Buffer(BytesMut),
    /// Local disk: a staging file, written on the blocking pool as the body arrives.
    Staged(Staged),
}

type Opening = JoinHandle<std::io::Result<(std::fs::File, PathBuf)>>;

#[derive(Debug)]
struct Staged {
    /// The staging file being created, until the first write waits for it.
    opening: Option<Opening>,
    /// The staging file, while no write is in flight.
    idle: Option<std::fs::File>,
    /// The write in flight, which hands the file back.
    busy: Option<JoinHandle<std::io::Result<std::fs::File>>>,
    /// Chunks not yet handed to a write.
    batch: Vec<Bytes>,
    batch_len: usize,
    /// The staging file's path, once created and until it is linked or removed.
    staging: Option<PathBuf>,
    root: PathBuf,
}

impl PartWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the next piece of the body.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), ApiError> {
        self.len += chunk.len() as u64;
        self.hasher.update(&chunk);
        match &mut self.sink {
            Sink::Buffer(buf) => buf.extend_from_slice(&chunk),
            Sink::Staged(staged) => {
                staged.batch_len += chunk.len();
                staged.batch.push(chunk);
                if staged.batch_len >= WRITE_BATCH {
                    staged.flush().await?;
                }
            }
        }
        Ok(())
    }

    /// Waits until everything written is in the staging file (on local disk) and returns the
    /// SHA-256 of it all.
    pub async fn finish(&mut self) -> Result<[u8; 32], ApiError> {
        if let Some(digest) = self.digest {
            return Ok(digest);
        }
        if let Sink::Staged(staged) = &mut self.sink {
            staged.flush().await?;
            let file = staged.settle().await?;
            staged.idle = Some(file);
        }
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        self.digest = Some(digest);
        Ok(digest)
    }

    /// Stores the part under its key like [`Storage::put_part`]: never over different bytes,
    /// and durable (file and directories fsynced on local disk) before it returns.
    pub async fn commit(mut self) -> Result<PutOutcome, ApiError> {
        let digest = self.finish().await?;
        let staged = match &mut self.sink {
            Sink::Buffer(buf) => {
                let data = std::mem::take(buf).freeze();
                return self.storage.put_part(&self.key, data, &digest).await;
            }
            Sink::Staged(staged) => staged,
        };
        let (Some(file), Some(staging)) = (staged.idle.take(), staged.staging.take()) else {
            return Err(ApiError::internal("part writer committed without its file"));
        };
        let root = staged.root.clone();
        let path = self.storage.local_path(&root, &self.key);
        let linked = tokio::task::spawn_blocking(move || link_staged(file, &staging, &path, &root))
            .await
            .map_err(ApiError::internal)??;
        match linked {
            Linked::Created => return Ok(PutOutcome::Created),
            // Only the purge of a deleted file removes staging files.
            Linked::StagingGone => return Err(ApiError::NotFound),
            Linked::Exists => {}
        }
        let outcome = self.storage.existing(&self.key, &digest).await?;
        if outcome != PutOutcome::Conflict {
            self.storage.sync(&self.key).await?;
        }
        Ok(outcome)
    }
}

impl Staged {
    /// Hands the gathered chunks to the blocking pool, once the previous write is done.
    async fn flush(&mut self) -> Result<(), ApiError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut file = self.settle().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        self.busy = Some(tokio::task::spawn_blocking(move || {
            for chunk in &batch {
                file.write_all(chunk)?;
            }
            Ok(file)
        }));
        Ok(())
    }

    /// Waits for the staging file to exist and for the write in flight, if any; takes the file.
    async fn settle(&mut self) -> Result<std::fs::File, ApiError> {
        if let Some(opening) = self.opening.take() {
            let (file, staging) = opening.await.map_err(ApiError::internal)??;
            self.staging = Some(staging);
            self.idle = Some(file);
        }
        if let Some(busy) = self.busy.take() {
            self.idle = Some(busy.await.map_err(ApiError::internal)??);
        }
        self.idle
            .take()
            .ok_or_else(|| ApiError::internal("part writer lost its file after a failed write"))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // A write still in flight keeps the file open: removing the name is enough, the space
        // is freed when that write ends. A file still being created is removed once it is.
        let root = self.root.clone();
        match (self.opening.take(), self.staging.take()) {
            (None, None) => {}
            (None, Some(staging)) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    drop(runtime.spawn_blocking(move || remove_staging(&staging, &root)))
                }
                Err(_) => remove_staging(&staging, &root),
            },
            (Some(opening), _) => {
                // Only a runtime could have started the creation, so there is one to finish it.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Ok(Ok((file, staging))) = opening.await {
                            drop(file);
                            let _ = tokio::task::spawn_blocking(move || {
                                remove_staging(&staging, &root)
                            })
                            .await;
                        }
                    });
                }
            }
        }
    }
}

/// Removes a staging file, then its directories while empty.
fn remove_staging(staging: &std::path::Path, root: &std::path::Path) {
    let _ = std::fs::remove_file(staging);
    remove_empty_dirs(staging, root);
}

/// Creates a new staging file `<path>#<n>` (the smallest free n) and any missing directories.
fn create_staging(path: &std::path::Path) -> std::io::Result<(std::fs::File, PathBuf)> {
    let mut n = 1u32;
    loop {
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        match std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&staging)
        {
            Ok(file) => return Ok((file, staging)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
            // A directory is missing (or was just removed as empty): create it, try again.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let parent = path.parent().ok_or(e)?;
                std::fs::create_dir_all(parent)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What [`link_staged`] did.
enum Linked {
    /// The staging file is now the object.
    Created,
    /// An object already had that name; nothing changed.
    Exists,
    /// The staging file was removed meanwhile (its file was purged); nothing changed.
    StagingGone,
}

/// Makes the staging file durable, then gives it its name only if the name is free, and makes
/// that durable too. The staging name is removed in every case.
fn link_staged(
    file: std::fs::File,
    staging: &std::path::Path,
    path: &std::path::Path,
    root: &std::path::Path,
) -> std::io::Result<Linked> {
    // The data first: a name that survives a crash then always has all of its bytes.
    let synced = file.sync_all();
    drop(file);
    let linked = synced.and_then(|()| std::fs::hard_link(staging, path));
    let _ = std::fs::remove_file(staging);
    match linked {
        Ok(()) => {
            sync_dirs(path, root)?;
            Ok(Linked::Created)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Linked::Exists),
        Err(e) => {
            remove_empty_dirs(staging, root);
            if e.kind() == ErrorKind::NotFound {
                Ok(Linked::StagingGone)
            } else {
                Err(e)
            }
        }
    }
}

/// Whether `name` is a staging file's (`<object>#<digits>`, never listed by the store).
fn is_staging_name(name: &str) -> bool {
    name.split_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the staging files directly in `dir`, then `dir` and its parents below `root` while
/// empty. A missing `dir` is fine.
fn remove_staging_files(dir: &std::path::Path, root: &std::path::Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(is_staging_name) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    // `remove_empty_dirs` starts at the parent of what it is given.
    remove_empty_dirs(&dir.join("_"), root);
    Ok(())
}

/// Fsyncs each directory from `path`'s parent up to `root`, so new entries survive a crash.
fn sync_dirs(path: &std::path::Path, root: &std::path::Path) -> std::io::Result<()> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Removes `path`'s parent directories below `root` while they are empty, as the store's
/// automatic cleanup does after a delete.
fn remove_empty_dirs(path: &std::path::Path, root: &std::path::Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}
