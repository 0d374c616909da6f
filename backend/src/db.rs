//! The SQL side: pool setup, migrations, and every query the server runs.
//!
//! Queries are runtime-checked (`sqlx::query`), so building needs no database. Every state
//! change that must not race is a single conditional statement or a transaction that starts
//! with its write, so SQLite takes the write lock up front (and a later PostgreSQL port keeps
//! the same semantics).

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};

use crate::config::Config;
use crate::error::ApiError;
use crate::layout::Layout;

/// Current time as unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Upload state as stored in `files.state`.
pub const STATE_UPLOADING: &str = "uploading";
/// Upload state as stored in `files.state`.
pub const STATE_COMPLETE: &str = "complete";
/// Upload state as stored in `files.state`.
pub const STATE_DELETED: &str = "deleted";

/// One row of `files`.
#[derive(Debug, Clone, FromRow)]
pub struct FileRow {
    /// Public id.
    pub id: String,
    /// SHA-256 of the owner token.
    pub owner_token_hash: Vec<u8>,
    /// SHA-256 of the auth token.
    pub auth_token_hash: Vec<u8>,
    /// Sealed metadata blob (opaque).
    pub metadata: Vec<u8>,
    /// KDF parameters as JSON, when a password protects the file.
    pub kdf: Option<String>,
    /// Total body bytes.
    pub size: i64,
    /// Bytes in part 0.
    pub first_part_size: i64,
    /// Bytes in later parts.
    pub part_size: i64,
    /// Number of parts.
    pub part_count: i64,
    /// `uploading`, `complete` or `deleted`.
    pub state: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry time.
    pub expires_at: i64,
    /// Download limit, if any.
    pub download_limit: Option<i64>,
    /// Downloads granted so far.
    pub download_count: i64,
    /// Wrong auth tokens since the last right one.
    pub auth_failures: i64,
    /// Until then (unix seconds) auth tokens are not checked at all: 429.
    pub auth_locked_until: i64,
}

impl FileRow {
    /// Neither deleted nor expired: the owner can still see it. An upload in progress does
    /// not expire (its lifetime starts at completion); the upload TTL bounds it instead.
    pub fn is_live(&self, now: i64) -> bool {
        match self.state.as_str() {
            STATE_UPLOADING => true,
            STATE_COMPLETE => self.expires_at > now,
            _ => false,
        }
    }

    /// Every download the limit allows was already granted.
    pub fn is_exhausted(&self) -> bool {
        self.download_limit
            .is_some_and(|limit| self.download_count >= limit)
    }

    /// Complete, live and not exhausted: anyone with the id can see it exists.
    pub fn is_public(&self, now: i64) -> bool {
        self.state == STATE_COMPLETE && self.is_live(now) && !self.is_exhausted()
    }

    /// The part layout.
    pub fn layout(&self) -> Layout {
        Layout {
            size: to_u64(self.size),
            first_part_size: to_u64(self.first_part_size),
            part_size: to_u64(self.part_size),
        }
    }

    /// Downloads left, `None` when unlimited.
    pub fn downloads_remaining(&self) -> Option<u64> {
        self.download_limit
            .map(|limit| to_u64(limit.saturating_sub(self.download_count)))
    }
}

/// One row of `parts`.
#[derive(Debug, Clone, FromRow)]
pub struct PartRow {
    /// Part number.
    pub n: i64,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the bytes.
    pub sha256: Vec<u8>,
    /// Where the bytes live in the object store.
    pub object_key: String,
}

/// What a new `files` row holds.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// Public id.
    pub id: String,
    /// SHA-256 of the owner token.
    pub owner_token_hash: Vec<u8>,
    /// SHA-256 of the auth token.
    pub auth_token_hash: Vec<u8>,
    /// Sealed metadata.
    pub metadata: Vec<u8>,
    /// KDF JSON.
    pub kdf: Option<String>,
    /// Layout.
    pub layout: Layout,
    /// Creation time.
    pub created_at: i64,
    /// Expiry time.
    pub expires_at: i64,
    /// Download limit.
    pub download_limit: Option<i64>,
}

/// Result of trying to complete an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteOutcome {
    /// This call completed it.
    Completed,
    /// It was complete already (a retried request).
    AlreadyComplete,
    /// These parts are still missing.
    Missing(Vec<u64>),
    /// The file is gone (deleted or collected meanwhile).
    Gone,
}

/// What the garbage collector marked in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marked {
    /// Incomplete uploads past the upload TTL.
    pub abandoned: u64,
    /// Files past their expiry.
    pub expired: u64,
    /// Exhausted files whose last ticket expired.
    pub exhausted: u64,
}

/// Consecutive wrong auth tokens that cost nothing.
pub const FREE_AUTH_FAILURES: i64 = 5;
/// The longest a file's auth checks are ever locked, in seconds.
pub const MAX_AUTH_LOCK_SECS: i64 = 3600;
/// Smallest `k - FREE_AUTH_FAILURES` whose `2^` reaches the cap (12 for an hour).
const AUTH_LOCK_CAP_EXP: i64 = {
    let mut e = 0;
    while (1i64 << e) < MAX_AUTH_LOCK_SECS {
        e += 1;
    }
    e
};

/// How long the `failures`-th consecutive wrong auth token locks the file's auth checks:
/// nothing for the first [`FREE_AUTH_FAILURES`], then `min(2^(failures - 5), 3600)` seconds.
/// [`Db::auth_failed`] computes the same in SQL.
pub fn auth_lock_secs(failures: i64) -> i64 {
    let over = failures.saturating_sub(FREE_AUTH_FAILURES);
    if over <= 0 {
        0
    } else if over >= AUTH_LOCK_CAP_EXP {
        MAX_AUTH_LOCK_SECS
    } else {
        (1i64 << over).min(MAX_AUTH_LOCK_SECS)
    }
}

/// What recording one auth-token check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// A right token, accepted; the failure count is back at zero.
    Accepted,
    /// A wrong token, counted; the file is not locked (yet).
    Rejected,
    /// The file's auth checks are locked until then (unix seconds): either this failure
    /// started the lock, or another request's did first and this check was not counted.
    Locked(i64),
    /// The file row is gone.
    Gone,
}

/// A download [`Db::start_download`] granted.
#[derive(Debug)]
pub struct StartedDownload {
    /// The file, with its count after this request.
    pub file: FileRow,
    /// When the new ticket expires (a repeat's: with its original's).
    pub expires_at: i64,
    /// Whether this request counted a download (false for a repeat of a named request).
    pub counted: bool,
}

/// Saturating i64 to u64 for values the schema keeps non-negative.
pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Saturating u64 to i64 (sizes are capped far below i64::MAX by validation).
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The database handle: a pool plus the queries.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
}

const FILE_COLUMNS: &str = "id, owner_token_hash, auth_token_hash, metadata, kdf, size, \
     first_part_size, part_size, part_count, state, created_at, expires_at, download_limit, \
     download_count, auth_failures, auth_locked_until";

/// Connections in the SQLite pool: two per core, 4 to 16. SQLite lets one connection write at
/// a time, and most requests write (a part's row, a download's count), so connections beyond
/// what the cores can serve only wait on SQLite's lock, in its busy handler's sleeps, where
/// they would otherwise wait in the pool's queue. Each also costs a thread and its memory: with
/// a fixed 8 the pool held 5-6 connections at the memory peak of browser uploads, and in one
/// memory-bench run with 4 the server had 14 threads at the 4 GiB upload's plateau against 17
/// (2026-12-05).
fn sqlite_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores * 2).unwrap_or(u32::MAX).clamp(4, 16)
}

impl Db {
    /// Opens (creating if needed) the database in WAL mode and runs the migrations.
    pub async fn connect(config: &Config) -> Result<Self, ApiError> {
        let options = match &config.database_url {
            Some(url) => SqliteConnectOptions::from_str(url)?,
            None => SqliteConnectOptions::new().filename(config.default_database_path()),
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL makes every commit durable: a part is acknowledged only after its row is.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(sqlite_connections())
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool (tests use it to age rows).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Inserts a new upload.
    pub async fn insert_file(&self, f: &NewFile) -> Result<(), ApiError> {
        sqlx::query(
            "INSERT INTO files (id, owner_token_hash, auth_token_hash, metadata, kdf, size, \
             first_part_size, part_size, part_count, state, created_at, expires_at, \
             download_limit, download_count) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
        )
        .bind(&f.id)
        .bind(&f.owner_token_hash)
        .bind(&f.auth_token_hash)
        .bind(&f.metadata)
        .bind(&f.kdf)
        .bind(to_i64(f.layout.size))
        .bind(to_i64(f.layout.first_part_size))
        .bind(to_i64(f.layout.part_size))
        .bind(to_i64(f.layout.part_count()))
        .bind(STATE_UPLOADING)
        .bind(f.created_at)
        .bind(f.expires_at)
        .bind(f.download_limit)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Loads a file row in any state.
    pub async fn get_file(&self, id: &str) -> Result<Option<FileRow>, ApiError> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?");
        Ok(sqlx::query_as::<_, FileRow>(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Loads one part row.
    pub async fn get_part(&self, id: &str, n: u64) -> Result<Option<PartRow>, ApiError> {
        Ok(sqlx::query_as::<_, PartRow>(
            "SELECT n, size, sha256, object_key FROM parts WHERE file_id = ? AND n = ?",
        )
        .bind(id)
        .bind(to_i64(n))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// All part rows of a file, in order.
    pub async fn list_parts(&self, id: &str) -> Result<Vec<PartRow>, ApiError> {
        Ok(sqlx::query_as::<_, PartRow>(
            "SELECT n, size, sha256, object_key FROM parts WHERE file_id = ? ORDER BY n",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a stored part, but only while the file is still uploading and the part is new.
    /// Returns whether a row was inserted; one atomic statement, so it cannot race complete
    /// or the garbage collector.
    pub async fn insert_part(
        &self,
        id: &str,
        n: u64,
        size: u64,
        sha256: &[u8],
        object_key: &str,
        now: i64,
    ) -> Result<bool, ApiError> {
        let res = sqlx::query(
            "INSERT INTO parts (file_id, n, size, sha256, object_key, created_at) \
             SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS \
               (SELECT 1 FROM files WHERE id = ? AND state = 'uploading') \
             ON CONFLICT (file_id, n) DO NOTHING",
        )
        .bind(id)
        .bind(to_i64(n))
        .bind(to_i64(size))
        .bind(sha256)
        .bind(object_key)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Completes an upload in one transaction: the state flips to complete only if every
    /// part row exists; otherwise reports which are missing. The lifetime starts now.
    pub async fn complete(&self, id: &str, now: i64) -> Result<CompleteOutcome, ApiError> {
        let mut tx = self.pool.begin().await?;
        // The write comes first so the transaction holds the write lock for its whole life.
        let done = sqlx::query(
            "UPDATE files SET state = 'complete', expires_at = ? + (expires_at - created_at) \
             WHERE id = ? AND state = 'uploading' \
               AND (SELECT COUNT(*) FROM parts WHERE parts.file_id = files.id) = files.part_count",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 1 {
            tx.commit().await?;
            return Ok(CompleteOutcome::Completed);
        }
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT state, part_count FROM files WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let outcome = match row {
            Some((state, _)) if state == STATE_COMPLETE => CompleteOutcome::AlreadyComplete,
            Some((state, part_count)) if state == STATE_UPLOADING => {
                let have: Vec<(i64,)> =
                    sqlx::query_as("SELECT n FROM parts WHERE file_id = ? ORDER BY n")
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                let have: std::collections::BTreeSet<u64> =
                    have.into_iter().map(|(n,)| to_u64(n)).collect();
                let missing = (0..to_u64(part_count))
                    .filter(|n| !have.contains(n))
                    .collect();
                CompleteOutcome::Missing(missing)
            }
            _ => CompleteOutcome::Gone,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records a wrong auth token, unless the file's auth checks are locked: one conditional
    /// UPDATE counts the failure and, past the free ones, sets the lock (see
    /// [`auth_lock_secs`]), so concurrent failures are each counted exactly once and none is
    /// counted, or answered as a plain 401, once another has locked the file.
    pub async fn auth_failed(&self, id: &str, now: i64) -> Result<AuthOutcome, ApiError> {
        let sql = format!(
            "UPDATE files SET auth_failures = auth_failures + 1, \
               auth_locked_until = CASE \
                 WHEN auth_failures + 1 <= {free} THEN auth_locked_until \
                 WHEN auth_failures + 1 - {free} >= {cap_exp} THEN ? + {max} \
                 ELSE ? + (1 << (auth_failures + 1 - {free})) END \
             WHERE id = ? AND auth_locked_until <= ? \
             RETURNING auth_locked_until",
            free = FREE_AUTH_FAILURES,
            cap_exp = AUTH_LOCK_CAP_EXP,
            max = MAX_AUTH_LOCK_SECS,
        );
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64,)> = sqlx::query_as(&sql)
            .bind(now)
            .bind(now)
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match row {
            Some((until,)) if until > now => AuthOutcome::Locked(until),
            Some(_) => AuthOutcome::Rejected,
            None => Self::auth_state(&mut tx, id, now).await?,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records a right auth token, unless the file's auth checks are locked: the failure
    /// count goes back to zero. Like [`Db::auth_failed`] it decides in a transaction that
    /// starts with its write, so a lock set by a concurrent failure is never skipped; an
    /// UPDATE that changes nothing (no failures to forget, the common case) writes nothing.
    pub async fn auth_succeeded(&self, id: &str, now: i64) -> Result<AuthOutcome, ApiError> {
        let mut tx = self.pool.begin().await?;
        let reset = sqlx::query(
            "UPDATE files SET auth_failures = 0, auth_locked_until = 0 \
             WHERE id = ? AND auth_locked_until <= ? AND auth_failures <> 0",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let outcome = if reset == 1 {
            AuthOutcome::Accepted
        } else {
            match Self::auth_state(&mut tx, id, now).await? {
                // Nothing to reset: no failure since the last right token.
                AuthOutcome::Rejected => AuthOutcome::Accepted,
                other => other,
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Inside an auth transaction whose conditional UPDATE matched nothing: `Locked` while
    /// the lock holds, `Gone` without a row, else `Rejected` (for the caller to interpret).
    async fn auth_state(
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        id: &str,
        now: i64,
    ) -> Result<AuthOutcome, ApiError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT auth_locked_until FROM files WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
        Ok(match row {
            Some((until,)) if until > now => AuthOutcome::Locked(until),
            Some(_) => AuthOutcome::Rejected,
            None => AuthOutcome::Gone,
        })
    }

    /// Grants one download if the file is still public: one conditional UPDATE counts it (so
    /// concurrent requests can never exceed the limit) and the ticket is inserted in the same
    /// transaction. With `request_key_hash` (the hash of the request's `Idempotency-Key`), a
    /// repeat of a request already granted, while its ticket lives, counts nothing and gets a
    /// ticket expiring with the first one. Returns the grant, or `None` when nothing was
    /// granted.
    pub async fn start_download(
        &self,
        id: &str,
        ticket_hash: &[u8],
        ticket_expires_at: i64,
        request_key_hash: Option<&[u8]>,
        now: i64,
    ) -> Result<Option<StartedDownload>, ApiError> {
        let mut tx = self.pool.begin().await?;
        // A named request is new unless the same name has a live row for this file: then it is
        // a repeat, which counts nothing and gets a ticket expiring with the first one. The
        // upsert is this transaction's first write, and SQLite admits one writer at a time, so
        // a repeat racing its original waits for the original's transaction to end.
        let repeat_of = match request_key_hash {
            None => None,
            Some(key_hash) => {
                let claimed = sqlx::query(
                    "INSERT INTO download_requests (file_id, key_hash, expires_at) VALUES (?, ?, ?) \
                     ON CONFLICT (file_id, key_hash) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE download_requests.expires_at <= ?",
                )
                .bind(id)
                .bind(key_hash)
                .bind(ticket_expires_at)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                match claimed {
                    1 => None,
                    _ => {
                        let (expires_at,): (i64,) = sqlx::query_as(
                            "SELECT expires_at FROM download_requests \
                             WHERE file_id = ? AND key_hash = ?",
                        )
                        .bind(id)
                        .bind(key_hash)
                        .fetch_one(&mut *tx)
                        .await?;
                        Some(expires_at)
                    }
                }
            }
        };
        let row = match repeat_of {
            // The count was taken by the original; the file needs only to be still there.
            Some(_) => {
                let sql = format!(
                    "SELECT {FILE_COLUMNS} FROM files \
                     WHERE id = ? AND state = 'complete' AND expires_at > ?"
                );
                sqlx::query_as::<_, FileRow>(&sql)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => {
                let sql = format!(
                    "UPDATE files SET download_count = download_count + 1 \
                     WHERE id = ? AND state = 'complete' AND expires_at > ? \
                       AND (download_limit IS NULL OR download_count < download_limit) \
                     RETURNING {FILE_COLUMNS}"
                );
                sqlx::query_as::<_, FileRow>(&sql)
                    .bind(id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let Some(file) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let expires_at = repeat_of.unwrap_or(ticket_expires_at);
        sqlx::query("INSERT INTO tickets (token_hash, file_id, expires_at) VALUES (?, ?, ?)")
            .bind(ticket_hash)
            .bind(id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(StartedDownload {
            file,
            expires_at,
            counted: repeat_of.is_none(),
        }))
    }

    /// Whether a ticket with this hash authorises reads of this file right now.
    pub async fn ticket_valid(
        &self,
        id: &str,
        ticket_hash: &[u8],
        now: i64,
    ) -> Result<bool, ApiError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM tickets WHERE token_hash = ? AND file_id = ? AND expires_at > ?",
        )
        .bind(ticket_hash)
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Changes the lifetime and/or the download limit of a live file; returns whether it was
    /// live. A new lifetime counts from now, or from completion for an upload in progress.
    /// `download_limit`: `None` leaves it, `Some(None)` removes it, `Some(Some(n))` sets it.
    pub async fn patch(
        &self,
        id: &str,
        expires_in: Option<i64>,
        download_limit: Option<Option<i64>>,
        now: i64,
    ) -> Result<bool, ApiError> {
        let res = sqlx::query(
            "UPDATE files SET \
               expires_at = CASE WHEN ? IS NULL THEN expires_at \
                                 WHEN state = 'uploading' THEN created_at + ? \
                                 ELSE ? + ? END, \
               download_limit = CASE WHEN ? THEN ? ELSE download_limit END \
             WHERE id = ? AND (state = 'uploading' OR (state = 'complete' AND expires_at > ?))",
        )
        .bind(expires_in)
        .bind(expires_in)
        .bind(now)
        .bind(expires_in)
        .bind(download_limit.is_some())
        .bind(download_limit.flatten())
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Marks a live file deleted (it answers 404 from now on) and drops its tickets; the
    /// objects and rows go with the next purge. Returns whether it was live.
    pub async fn mark_deleted(&self, id: &str, now: i64) -> Result<bool, ApiError> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE files SET state = 'deleted' \
             WHERE id = ? AND (state = 'uploading' OR (state = 'complete' AND expires_at > ?))",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM tickets WHERE file_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// Marks everything collectable as deleted: abandoned uploads (no activity since
    /// `upload_cutoff`: neither created nor sent a part after it), expired files, and
    /// exhausted files with no live ticket left. Each is one conditional UPDATE, so it cannot
    /// race complete, a part upload, a download or a patch.
    pub async fn mark_garbage(&self, now: i64, upload_cutoff: i64) -> Result<Marked, ApiError> {
        let abandoned = sqlx::query(
            "UPDATE files SET state = 'deleted' \
             WHERE state = 'uploading' AND created_at <= ? \
               AND NOT EXISTS (SELECT 1 FROM parts \
                               WHERE parts.file_id = files.id AND parts.created_at > ?)",
        )
        .bind(upload_cutoff)
        .bind(upload_cutoff)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let expired = sqlx::query(
            "UPDATE files SET state = 'deleted' WHERE state = 'complete' AND expires_at <= ?",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let exhausted = sqlx::query(
            "UPDATE files SET state = 'deleted' \
             WHERE state = 'complete' AND download_limit IS NOT NULL \
               AND download_count >= download_limit \
               AND NOT EXISTS (SELECT 1 FROM tickets \
                               WHERE tickets.file_id = files.id AND tickets.expires_at > ?)",
        )
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Marked {
            abandoned,
            expired,
            exhausted,
        })
    }

    /// Drops expired tickets (and expired download request names); returns how many tickets.
    pub async fn delete_expired_tickets(&self, now: i64) -> Result<u64, ApiError> {
        sqlx::query("DELETE FROM download_requests WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query("DELETE FROM tickets WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Ids of files marked deleted whose objects and rows are still around.
    pub async fn deleted_file_ids(&self) -> Result<Vec<String>, ApiError> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM files WHERE state = 'deleted'")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Removes the rows of a deleted file (after its objects are gone).
    pub async fn purge_rows(&self, id: &str) -> Result<bool, ApiError> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM files WHERE id = ? AND state = 'deleted'")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Explicit, not only ON DELETE CASCADE, so nothing depends on the foreign-key pragma.
        sqlx::query(
            "DELETE FROM parts WHERE file_id = ? AND NOT EXISTS (SELECT 1 FROM files WHERE id = ?)",
        )
        .bind(id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM tickets WHERE file_id = ? AND NOT EXISTS (SELECT 1 FROM files WHERE id = ?)")
            .bind(id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(gone == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_lock_doubles_after_five_failures_up_to_an_hour() {
        let locks: Vec<i64> = (0..=20).map(auth_lock_secs).collect();
        assert_eq!(
            locks,
            [
                0, 0, 0, 0, 0, 0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600, 3600,
                3600
            ]
        );
        assert_eq!(auth_lock_secs(i64::MAX), MAX_AUTH_LOCK_SECS);
        assert_eq!(auth_lock_secs(-1), 0);
    }
}
