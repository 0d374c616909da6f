//! Ciphertext object storage over `object_store`: a local directory or an S3-compatible bucket.
//!
//! Objects are immutable: a part is written with create-only semantics, so an existing object
//! is never overwritten with different bytes. On local disk the file and its directories are
//! fsynced before a part is acknowledged.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutMode, PutPayload};

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
        let mut path = root.clone();
        for part in key.parts() {
            path.push(part.as_ref());
        }
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&path)?.sync_all()?;
            let mut dir = path.parent();
            while let Some(d) = dir {
                std::fs::File::open(d)?.sync_all()?;
                if d == root {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
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

    /// Deletes every object of file `id`; returns how many were deleted.
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
