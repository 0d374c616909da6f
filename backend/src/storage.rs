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
//!
//! Local staging files are written with `O_DIRECT` where the file system allows it, from two
//! aligned buffers per part taken from a bounded pool: the bytes go from our buffer to the
//! disk without a copy into the page cache (on a VM, filling fresh page cache cost more CPU
//! than hashing, measured) nor a flood of dirty pages for the fsync to write back; the server
//! does not read a part again soon after storing it anyway. [`Storage::put_part`] takes the
//! same path on local disk. Local objects are read back in chunks of 256 KiB.

use std::io::{ErrorKind, Read as _, Seek as _, SeekFrom, Write as _};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

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
    /// Whether local parts are written with `O_DIRECT` where the file system allows it.
    direct_io: bool,
    /// Write buffers of local part writers, reused from part to part.
    buffers: BufferPool,
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
            // A part in progress holds at most two buffers at once (see `PartWriter`).
            StorageKind::Local => {
                Self::local(config.objects_dir(), 2 * config.max_concurrent_parts)
            }
            StorageKind::S3 => Self::s3(config),
        }
    }

    /// A directory on local disk, created if missing. Up to `pooled_buffers` write buffers of
    /// [`WRITE_BATCH`] bytes are kept for reuse once allocated.
    pub fn local(root: PathBuf, pooled_buffers: usize) -> Result<Self, ApiError> {
        std::fs::create_dir_all(&root)?;
        let root = std::fs::canonicalize(&root)?;
        // Automatic cleanup removes a file's empty directory once its last part is deleted.
        let store = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            local_root: Some(root),
            direct_io: true,
            buffers: BufferPool::new(pooled_buffers),
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
            direct_io: false,
            buffers: BufferPool::new(0),
        })
    }

    /// Any store (tests may pass an in-memory one); writes are not fsynced.
    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
            direct_io: false,
            buffers: BufferPool::new(0),
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
            Some(root) => self.staged(root, key, len),
            None => Sink::Buffer(BytesMut::with_capacity(len)),
        };
        PartWriter {
            storage: self.clone(),
            key: key.clone(),
            len: 0,
            hasher: Some(Sha256::new()),
            digest: None,
            sink,
        }
    }

    /// A local part writer's sink for a part of `len` bytes: its staging file, created in
    /// the background, and a buffer no larger than the part needs.
    fn staged(&self, root: &std::path::Path, key: &Path, len: usize) -> Sink {
        let path = self.local_path(root, key);
        let direct = self.direct_io;
        Sink::Staged(Staged {
            opening: Some(tokio::task::spawn_blocking(move || {
                create_staging(&path, direct)
            })),
            idle: None,
            busy: None,
            fill: self.buffers.take(len.clamp(1, WRITE_BATCH)),
            spare: None,
            staging: None,
            root: root.to_path_buf(),
            pool: self.buffers.clone(),
        })
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
    /// On local disk it takes the very path of a part received over HTTP (a staging file,
    /// then a create-only link), minus the hashing.
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
        if let Some(root) = &self.local_root {
            let mut writer = PartWriter {
                storage: self.clone(),
                key: key.clone(),
                len: 0,
                hasher: None,
                digest: Some(*sha256),
                sink: self.staged(root, key, data.len()),
            };
            writer.write(data).await?;
            let digest = writer.finish().await?;
            return writer.link(digest).await;
        }
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
        Ok(self.open_range(key.clone(), range).await?)
    }

    /// Opens `range` of the object at `key` for streaming. On local disk the file is read in
    /// chunks of [`READ_CHUNK`] (`object_store` reads 8 KiB per blocking task).
    async fn open_range(
        &self,
        key: Path,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        match &self.local_root {
            Some(root) => {
                let path = self.local_path(root, &key);
                read_local(path, key, range).await
            }
            None => {
                let opts = GetOptions {
                    range: Some(range.into()),
                    ..GetOptions::default()
                };
                Ok(self.store.get_opts(&key, opts).await?.into_stream())
            }
        }
    }

    /// Streams several `(key, range)` pieces back to back, opening each only when the
    /// previous one is drained, so memory stays at one chunk whatever the total length.
    pub fn concat_ranges(
        &self,
        pieces: Vec<(Path, Range<u64>)>,
    ) -> BoxStream<'static, object_store::Result<Bytes>> {
        let storage = self.clone();
        futures::stream::iter(pieces)
            .then(move |(key, range)| {
                let storage = storage.clone();
                async move { storage.open_range(key, range).await }
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
/// The caller enforces the size. Memory: on local disk two buffers of at most [`WRITE_BATCH`]
/// bytes (one being written, one being filled); elsewhere the part itself.
#[derive(Debug)]
pub struct PartWriter {
    storage: Storage,
    key: Path,
    len: u64,
    /// Hashes every chunk as it arrives, on the request's task, while the previous batch is
    /// being written on the blocking pool (measured faster than hashing there too). `None`
    /// when the caller already knows the hash ([`Storage::put_part`]).
    hasher: Option<Sha256>,
    digest: Option<[u8; 32]>,
    sink: Sink,
}

/// Bytes gathered before they are handed to the blocking pool to be written: the size of each
/// of a local part writer's two buffers.
pub const WRITE_BATCH: usize = 512 << 10;

/// The alignment `O_DIRECT` asks of buffer addresses, lengths and file offsets: the device's
/// logical block size, which is 512 or 4096 bytes on every common disk.
const DIRECT_ALIGN: usize = 4096;

// Every full batch keeps the file offset aligned, so only a part's last write can be ragged.
const _: () = assert!(WRITE_BATCH.is_multiple_of(DIRECT_ALIGN));

#[derive(Debug)]
enum Sink {
    /// A remote (or test) store: the part in memory, stored with one create-only PUT.
    Buffer(BytesMut),
    /// Local disk: a staging file, written on the blocking pool as the body arrives.
    Staged(Staged),
}

type Opening = JoinHandle<std::io::Result<(StagingFile, PathBuf)>>;
type Writing = JoinHandle<std::io::Result<(StagingFile, AlignedBuf)>>;

#[derive(Debug)]
struct Staged {
    /// The staging file being created, until the first write waits for it.
    opening: Option<Opening>,
    /// The staging file, while no write is in flight.
    idle: Option<StagingFile>,
    /// The write in flight, which hands the file and its buffer back.
    busy: Option<Writing>,
    /// The buffer being filled with the bytes not yet handed to a write.
    fill: AlignedBuf,
    /// The other buffer, while no write holds it (allocated when first needed).
    spare: Option<AlignedBuf>,
    /// The staging file's path, once created and until it is linked or removed.
    staging: Option<PathBuf>,
    root: PathBuf,
    /// Where the buffers go back when the part is done.
    pool: BufferPool,
}

/// Full-size write buffers ([`WRITE_BATCH`] bytes) kept for the next parts, up to a fixed
/// count. Allocated once and then reused, they keep the server's memory at the same level
/// however many parts it receives, instead of leaving it to the allocator to find room for
/// half-MiB buffers again and again (in whichever per-thread arena is at hand).
#[derive(Debug, Clone)]
struct BufferPool {
    free: Arc<Mutex<Vec<AlignedBuf>>>,
    keep: usize,
}

impl BufferPool {
    fn new(keep: usize) -> Self {
        Self {
            free: Arc::new(Mutex::new(Vec::new())),
            keep,
        }
    }

    /// A buffer for up to `capacity` bytes: a pooled one if it is full-size.
    fn take(&self, capacity: usize) -> AlignedBuf {
        let pooled = if capacity.next_multiple_of(DIRECT_ALIGN) == WRITE_BATCH {
            self.free.lock().ok().and_then(|mut free| free.pop())
        } else {
            None
        };
        pooled.unwrap_or_else(|| AlignedBuf::new(capacity))
    }

    /// Keeps a full-size buffer for later, while the pool has room; drops any other.
    fn give(&self, mut buf: AlignedBuf) {
        if buf.capacity != WRITE_BATCH {
            return;
        }
        buf.clear();
        if let Ok(mut free) = self.free.lock()
            && free.len() < self.keep
        {
            free.push(buf);
        }
    }
}

/// A staging file being written from its start, and how it was opened.
#[derive(Debug)]
struct StagingFile {
    file: std::fs::File,
    /// Opened with `O_DIRECT`: writes go from our buffer to the disk, bypassing the page
    /// cache, so every write must be aligned (see [`DIRECT_ALIGN`]).
    direct: bool,
    /// Bytes written so far: the file's length once the last write is done.
    len: u64,
}

/// A write buffer whose first byte is aligned to [`DIRECT_ALIGN`], holding up to its capacity
/// (a multiple of the alignment, at most [`WRITE_BATCH`]). Its storage never moves: it is
/// allocated once, with room for the alignment and the padding of a ragged last write.
#[derive(Debug)]
struct AlignedBuf {
    /// `start` bytes of alignment, then the data.
    bytes: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl AlignedBuf {
    /// A buffer for up to `capacity` bytes, rounded up to the alignment.
    fn new(capacity: usize) -> Self {
        let capacity = capacity.next_multiple_of(DIRECT_ALIGN);
        let mut bytes = Vec::<u8>::with_capacity(capacity + DIRECT_ALIGN);
        let addr = bytes.as_ptr().addr();
        let start = addr.next_multiple_of(DIRECT_ALIGN) - addr;
        bytes.resize(start, 0);
        Self {
            bytes,
            start,
            capacity,
        }
    }

    /// A buffer without storage, holding nothing (a placeholder).
    fn empty() -> Self {
        Self {
            bytes: Vec::new(),
            start: 0,
            capacity: 0,
        }
    }

    fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    fn room(&self) -> usize {
        self.capacity - self.len()
    }

    /// Appends `data`, which must fit in [`AlignedBuf::room`] (so the storage never moves).
    fn extend(&mut self, data: &[u8]) {
        debug_assert!(data.len() <= self.room(), "aligned buffer overflow");
        self.bytes.extend_from_slice(data);
    }

    /// Pads the data with zeros up to `len` bytes, which is at most the capacity.
    fn pad_to(&mut self, len: usize) {
        debug_assert!(
            len <= self.capacity,
            "aligned buffer padded past its capacity"
        );
        self.bytes.resize(self.start + len, 0);
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    fn clear(&mut self) {
        self.bytes.truncate(self.start);
    }
}

impl StagingFile {
    /// Appends the buffer's data to the file and empties the buffer. With `O_DIRECT`, a ragged
    /// length (only a part's last write has one) is padded with zeros to the alignment and
    /// the file then cut back to its real length; nobody sees the padding, as the file is
    /// not named yet.
    fn append(&mut self, buf: &mut AlignedBuf) -> std::io::Result<()> {
        let len = buf.len();
        let ragged = self.direct && !len.is_multiple_of(DIRECT_ALIGN);
        if ragged {
            buf.pad_to(len.next_multiple_of(DIRECT_ALIGN));
        }
        self.file.write_all(buf.data())?;
        self.len += len as u64;
        if ragged {
            self.file.set_len(self.len)?;
        }
        buf.clear();
        Ok(())
    }
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
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&chunk);
        }
        match &mut self.sink {
            Sink::Buffer(buf) => buf.extend_from_slice(&chunk),
            Sink::Staged(staged) => staged.write(&chunk).await?,
        }
        Ok(())
    }

    /// Waits until everything written is in the staging file (on local disk) and returns the
    /// SHA-256 of it all. Nothing may be written after it.
    pub async fn finish(&mut self) -> Result<[u8; 32], ApiError> {
        if let Sink::Staged(staged) = &mut self.sink {
            staged.finish().await?;
        }
        if let Some(hasher) = self.hasher.take() {
            self.digest = Some(hasher.finalize().into());
        }
        self.digest
            .ok_or_else(|| ApiError::internal("part writer without a hash"))
    }

    /// Stores the part under its key like [`Storage::put_part`]: never over different bytes,
    /// and durable (file and directories fsynced on local disk) before it returns.
    pub async fn commit(mut self) -> Result<PutOutcome, ApiError> {
        let digest = self.finish().await?;
        if let Sink::Buffer(buf) = &mut self.sink {
            let data = std::mem::take(buf).freeze();
            return self.storage.put_part(&self.key, data, &digest).await;
        }
        self.link(digest).await
    }

    /// Gives the finished staging file its name, create-only and durably.
    async fn link(mut self, digest: [u8; 32]) -> Result<PutOutcome, ApiError> {
        let Sink::Staged(staged) = &mut self.sink else {
            return Err(ApiError::internal("only a staged part can be linked"));
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
    /// Copies `data` into the buffer being filled, handing each full buffer to a write.
    /// Nothing may be written after [`Staged::finish`].
    async fn write(&mut self, mut data: &[u8]) -> Result<(), ApiError> {
        if self.fill.capacity == 0 && !data.is_empty() {
            return Err(ApiError::internal("part writer written after finish"));
        }
        while !data.is_empty() {
            // A full buffer is written once more bytes come, so that the last one is written
            // by `finish`, which needs no buffer to replace it.
            if self.fill.room() == 0 {
                self.flush(false).await?;
            }
            let (now, rest) = data.split_at(data.len().min(self.fill.room()));
            self.fill.extend(now);
            data = rest;
        }
        Ok(())
    }

    /// Writes what is left in the buffer and waits for every write: the staging file then
    /// holds all the bytes, and is idle again.
    async fn finish(&mut self) -> Result<(), ApiError> {
        self.flush(true).await?;
        let file = self.settle().await?;
        self.idle = Some(file);
        Ok(())
    }

    /// Hands the buffer being filled to the blocking pool, once the previous write is done;
    /// the other buffer takes its place, unless this is the `last` write.
    async fn flush(&mut self, last: bool) -> Result<(), ApiError> {
        if self.fill.len() == 0 {
            return Ok(());
        }
        let mut file = self.settle().await?;
        let capacity = self.fill.capacity;
        let next = if last {
            AlignedBuf::empty()
        } else {
            match self.spare.take() {
                Some(spare) => spare,
                None => self.pool.take(capacity),
            }
        };
        let mut buf = std::mem::replace(&mut self.fill, next);
        self.busy = Some(tokio::task::spawn_blocking(move || {
            file.append(&mut buf)?;
            Ok((file, buf))
        }));
        Ok(())
    }

    /// Waits for the staging file to exist and for the write in flight, if any; takes the file.
    async fn settle(&mut self) -> Result<StagingFile, ApiError> {
        if let Some(opening) = self.opening.take() {
            let (file, staging) = opening.await.map_err(ApiError::internal)??;
            self.staging = Some(staging);
            self.idle = Some(file);
        }
        if let Some(busy) = self.busy.take() {
            let (file, buf) = busy.await.map_err(ApiError::internal)??;
            if let Some(unused) = self.spare.replace(buf) {
                self.pool.give(unused);
            }
            self.idle = Some(file);
        }
        self.idle
            .take()
            .ok_or_else(|| ApiError::internal("part writer lost its file after a failed write"))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let fill = std::mem::replace(&mut self.fill, AlignedBuf::empty());
        self.pool.give(fill);
        if let Some(spare) = self.spare.take() {
            self.pool.give(spare);
        }
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

/// Bytes per chunk when streaming a local object.
const READ_CHUNK: usize = 256 << 10;

/// Streams `range` of the local file at `path` (the object `key`), one chunk per blocking
/// read. Each chunk's buffer is allocated on the runtime's worker thread before the read, so
/// it comes from the workers' malloc arenas rather than from one arena per blocking thread.
async fn read_local(
    path: PathBuf,
    key: Path,
    range: Range<u64>,
) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
    let io_error = move |key: &Path, e: std::io::Error| match e.kind() {
        ErrorKind::NotFound => object_store::Error::NotFound {
            path: key.to_string(),
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: "local",
            source: Box::new(e),
        },
    };
    let start = range.start;
    let opened = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(file)
    })
    .await;
    let file = match opened {
        Ok(Ok(file)) => file,
        Ok(Err(e)) => return Err(io_error(&key, e)),
        Err(e) => return Err(io_error(&key, std::io::Error::other(e))),
    };
    let remaining = range.end.saturating_sub(range.start);
    let chunks = futures::stream::try_unfold((file, remaining), move |(mut file, remaining)| {
        let key = key.clone();
        async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = usize::try_from(remaining).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
            let mut buf = Vec::with_capacity(want);
            let read = tokio::task::spawn_blocking(move || {
                (&mut file).take(want as u64).read_to_end(&mut buf)?;
                Ok((file, buf))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            let (file, buf) = read.map_err(|e| io_error(&key, e))?;
            if buf.is_empty() {
                // The object is shorter than the range: the length promised cannot be sent.
                let short = std::io::Error::from(ErrorKind::UnexpectedEof);
                return Err(io_error(&key, short));
            }
            let left = remaining - buf.len() as u64;
            Ok(Some((Bytes::from(buf), (file, left))))
        }
    });
    Ok(chunks.boxed())
}

/// Removes a staging file, then its directories while empty.
fn remove_staging(staging: &std::path::Path, root: &std::path::Path) {
    let _ = std::fs::remove_file(staging);
    remove_empty_dirs(staging, root);
}

/// Creates a new staging file `<path>#<n>` (the smallest free n) and any missing directories,
/// with `O_DIRECT` if `direct` and the file system supports it.
fn create_staging(path: &std::path::Path, direct: bool) -> std::io::Result<(StagingFile, PathBuf)> {
    let mut n = 1u32;
    let mut direct = direct && cfg!(target_os = "linux");
    loop {
        let mut staging = path.as_os_str().to_owned();
        staging.push(format!("#{n}"));
        let staging = PathBuf::from(staging);
        let mut options = std::fs::File::options();
        options.write(true).create_new(true);
        #[cfg(target_os = "linux")]
        if direct {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.custom_flags(libc::O_DIRECT);
        }
        match options.open(&staging) {
            Ok(file) => {
                return Ok((
                    StagingFile {
                        file,
                        direct,
                        len: 0,
                    },
                    staging,
                ));
            }
            // A file system without O_DIRECT (tmpfs before Linux 6.6, some FUSE ones) refuses
            // it only after creating the file: remove that, and write through the page cache.
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = std::fs::remove_file(&staging);
                direct = false;
            }
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
    file: StagingFile,
    staging: &std::path::Path,
    path: &std::path::Path,
    root: &std::path::Path,
) -> std::io::Result<Linked> {
    // The data first: a name that survives a crash then always has all of its bytes.
    let synced = file.file.sync_all();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes that differ from position to position.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8 ^ seed)
            .collect()
    }

    /// Receives `len` bytes in uneven chunks through a local part writer, commits them, and
    /// checks the object, the absence of staging files, a read of it back and the pool.
    async fn round_trip(direct: bool, len: usize) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut storage = Storage::local(dir.path().to_path_buf(), 2).expect("local storage");
        storage.direct_io = direct;
        let data = pattern(len, 0);
        let key = part_key("roundtrip", 0);
        let mut writer = storage.part_writer(&key, len);
        let mut rest = &data[..];
        for size in [1, 3000, 70_000, 300_000].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(size.min(rest.len()));
            writer
                .write(Bytes::copy_from_slice(head))
                .await
                .expect("write");
            rest = tail;
        }
        assert_eq!(
            writer.finish().await.expect("finish"),
            crate::ids::hash(&data)
        );
        assert_eq!(writer.commit().await.expect("commit"), PutOutcome::Created);

        let what = format!("direct={direct} len={len}");
        let object_dir = dir.path().join("files").join("roundtrip");
        let stored = std::fs::read(object_dir.join("00000000")).expect("stored object");
        assert!(stored == data, "{what}: stored bytes differ");
        let names: Vec<_> = std::fs::read_dir(&object_dir)
            .expect("object dir")
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        assert_eq!(names, ["00000000"], "{what}");

        let from = len / 3;
        let read: Vec<u8> = storage
            .get_range(&key, from as u64..len as u64)
            .await
            .expect("open range")
            .try_collect::<Vec<Bytes>>()
            .await
            .expect("read range")
            .concat();
        assert!(read == data[from..], "{what}: read back differs");

        // A part of more than one batch used both buffers and gave both back; a smaller one
        // used one buffer, kept only if full-size.
        let pooled = storage.buffers.free.lock().expect("pool").len();
        let expected = match len {
            _ if len > WRITE_BATCH => 2,
            _ if len.next_multiple_of(DIRECT_ALIGN) == WRITE_BATCH => 1,
            _ => 0,
        };
        assert_eq!(pooled, expected, "{what}: pooled buffers");
    }

    #[tokio::test]
    async fn staged_parts_keep_their_exact_bytes_with_and_without_direct_io() {
        for direct in [true, false] {
            for len in [
                1,
                DIRECT_ALIGN - 1,
                DIRECT_ALIGN,
                DIRECT_ALIGN + 1,
                WRITE_BATCH - 1,
                WRITE_BATCH,
                WRITE_BATCH + 1,
                2 * WRITE_BATCH + 12_345,
            ] {
                round_trip(direct, len).await;
            }
        }
    }

    #[tokio::test]
    async fn put_part_on_local_disk_is_create_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = Storage::local(dir.path().to_path_buf(), 2).expect("local storage");
        let key = part_key("direct", 3);
        let (first, other) = (pattern(WRITE_BATCH + 99, 0), pattern(WRITE_BATCH + 99, 1));
        let (first_hash, other_hash) = (crate::ids::hash(&first), crate::ids::hash(&other));
        let put = |data: &Vec<u8>, hash| {
            let data = Bytes::from(data.clone());
            let storage = storage.clone();
            let key = key.clone();
            async move { storage.put_part(&key, data, &hash).await.expect("put") }
        };
        assert_eq!(put(&first, first_hash).await, PutOutcome::Created);
        assert_eq!(put(&first, first_hash).await, PutOutcome::AlreadyStored);
        assert_eq!(put(&other, other_hash).await, PutOutcome::Conflict);
        let stored = std::fs::read(dir.path().join("files/direct/00000003")).expect("object");
        assert!(stored == first, "the first bytes were replaced");
    }

    #[test]
    fn aligned_buffers_start_aligned_and_pad_within_their_storage() {
        for capacity in [1, DIRECT_ALIGN, WRITE_BATCH] {
            let mut buf = AlignedBuf::new(capacity);
            assert!(buf.data().as_ptr().addr().is_multiple_of(DIRECT_ALIGN));
            let storage = buf.bytes.as_ptr();
            buf.extend(&[7]);
            buf.pad_to(buf.capacity);
            assert_eq!(buf.bytes.as_ptr(), storage, "the storage moved");
            assert_eq!(buf.data().len(), buf.capacity);
            assert!(buf.capacity.is_multiple_of(DIRECT_ALIGN));
        }
    }
}
