//! Local state under the configuration directory (`--config-dir`, `$BITSTRATUS_CONFIG_DIR`,
//! `$XDG_CONFIG_HOME/bitstratus` or `~/.config/bitstratus`; `%APPDATA%\bitstratus` on
//! Windows):
//!
//! - `config.json`: settings (`{"server": "https://..."}`);
//! - `uploads.json`: the completed uploads `ls`, `info`, `rm` and `set-expiry` work on, with
//!   their owner tokens and link secrets;
//! - `pending/<key>.json` and `pending/<key>.parts`: an interrupted upload (see
//!   [`crate::upload`]);
//! - `downloads/<key>.json`: an interrupted download (see [`crate::download`]).
//!
//! Every file holds secrets, so the directory is created `0700` and every file is written
//! `0600`, atomically (a temporary file of its own renamed over the old one). Changes to
//! `uploads.json` are made under an exclusive lock on `uploads.lock`, so that two commands
//! running at once (two uploads in two terminals, an upload and an `rm`) both keep their
//! changes instead of the last writer dropping the other's entry and its owner token.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// The configuration directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

/// `config.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Config {
    /// The default server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server: Option<String>,
}

/// One completed upload in `uploads.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    pub(crate) id: String,
    pub(crate) server: String,
    pub(crate) owner_token: String,
    /// The link secret, base64url (the manage link holds it too).
    pub(crate) secret: String,
    pub(crate) name: String,
    /// Plaintext bytes.
    pub(crate) size: u64,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) download_limit: Option<u64>,
    pub(crate) password: bool,
}

impl UploadRecord {
    /// The share link.
    pub(crate) fn share_link(&self) -> String {
        crate::link::share(&self.server, &self.id, &self.secret)
    }

    /// The manage link.
    pub(crate) fn manage_link(&self) -> String {
        crate::link::manage(&self.server, &self.id, &self.owner_token, &self.secret)
    }
}

/// `uploads.json`: completed uploads, oldest first.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Uploads {
    pub(crate) uploads: Vec<UploadRecord>,
}

/// The default configuration directory from the environment.
fn default_dir() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if cfg!(windows) {
        return non_empty("APPDATA").map(|d| PathBuf::from(d).join("bitstratus"));
    }
    if let Some(xdg) = non_empty("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(xdg).join("bitstratus"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".config").join("bitstratus"))
}

/// A short stable file name for a set of strings.
pub(crate) fn key_of(parts: &[&str]) -> String {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

impl Store {
    /// The store at `dir`, or at the default place.
    pub(crate) fn open(dir: Option<PathBuf>) -> Result<Self> {
        let dir = dir.or_else(default_dir).ok_or_else(|| {
            Error::Usage(
                "no configuration directory: set HOME, XDG_CONFIG_HOME or --config-dir".into(),
            )
        })?;
        Ok(Self { dir })
    }

    /// The directory itself.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the store, its directory created `0700`.
    pub(crate) fn path(&self, sub: &str, name: &str) -> Result<PathBuf> {
        let dir = if sub.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(sub)
        };
        create_private_dir(&self.dir)?;
        create_private_dir(&dir)?;
        Ok(dir.join(name))
    }

    /// `config.json`, or the defaults when it does not exist.
    pub(crate) fn config(&self) -> Result<Config> {
        Ok(read_json(&self.dir.join("config.json"))?.unwrap_or_default())
    }

    /// Writes `config.json`.
    pub(crate) fn save_config(&self, config: &Config) -> Result<()> {
        write_json(&self.path("", "config.json")?, config)
    }

    /// `uploads.json`, or an empty list.
    pub(crate) fn uploads(&self) -> Result<Uploads> {
        Ok(read_json(&self.dir.join("uploads.json"))?.unwrap_or_default())
    }

    /// Reads `uploads.json`, lets `change` edit it and writes it back, holding the store's
    /// lock on the list throughout (waiting for it if another command holds it).
    pub(crate) fn update_uploads<T>(&self, change: impl FnOnce(&mut Uploads) -> T) -> Result<T> {
        let lock_path = self.path("", "uploads.lock")?;
        let lock = private_file(&lock_path, false)?;
        lock.lock()
            .map_err(|e| Error::io("could not lock", &lock_path, e))?;
        let mut uploads = self.uploads()?;
        // Test hook: widens the read-modify-write window, which the lock must cover.
        if let Some(ms) = std::env::var("BITSTRATUS_TEST_STORE_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let changed = change(&mut uploads);
        write_json(&self.path("", "uploads.json")?, &uploads)?;
        // Closing the file (dropping `lock`) releases the lock.
        Ok(changed)
    }

    /// Adds a completed upload to `uploads.json`, or updates it in place.
    pub(crate) fn add_upload(&self, record: UploadRecord) -> Result<()> {
        self.update_uploads(|uploads| {
            match uploads
                .uploads
                .iter_mut()
                .find(|u| u.id == record.id && u.server == record.server)
            {
                Some(existing) => *existing = record,
                None => uploads.uploads.push(record),
            }
        })
    }
}

/// Creates `dir` (and parents) with mode `0700` where it is new.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| Error::io("could not create", dir, e))
}

/// Reads a JSON file; `None` when it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("could not read", path, e)),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        Error::io(
            "could not parse",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

/// Writes `value` as JSON to `path` atomically, mode `0600`, flushed to disk.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| {
        Error::io(
            "could not encode",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    // A name of this write's own (process id, then a count within the process): two writers
    // of the same file at once must not write into one temporary file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}-{count}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut file = private_file(&tmp, true)?;
    let written = file
        .write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("could not write", &tmp, e))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io("could not write", path, e)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Opens `path` for writing with mode `0600` (created if missing), truncating or appending.
pub(crate) fn private_file(path: &Path, truncate: bool) -> Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| Error::io("could not write", path, e))
}

/// Removes a file; a missing file is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("could not remove", path, e)),
    }
}

/// Parses the append-only `n sha256` lines of a part journal. A torn last line (a crash while
/// appending) is ignored: its part was not sent, since sending waits for the append.
pub(crate) fn parse_journal(text: &str) -> BTreeMap<u64, String> {
    text.lines()
        .filter_map(|line| {
            let (n, hash) = line.split_once(' ')?;
            let valid = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
            Some((n.parse().ok()?, hash.to_owned())).filter(|_| valid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_ignores_a_torn_line() {
        let hash = "ab".repeat(32);
        let text = format!("0 {hash}\n2 {hash}\n3 {}", &hash[..10]);
        let parsed = parse_journal(&text);
        assert_eq!(parsed.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn keys_separate_their_parts() {
        assert_ne!(key_of(&["ab", "c"]), key_of(&["a", "bc"]));
        assert_eq!(key_of(&["x"]).len(), 32);
    }
}
