//! `bitstratus upload`: files and folders, encrypted part by part and sent several parts at a
//! time, exactly as the browser does (same layout, metadata and links).
//!
//! **Folders** upload as their regular files, one upload (and one link) per file, each sealed
//! with its path relative to the folder's parent, `/`-separated (`photos/2024/a.jpg`): the
//! browser shows that name and `bitstratus download` recreates the folders beneath its output
//! directory. Symbolic links inside folders are skipped.
//!
//! **Resuming.** Before any ciphertext leaves, the upload is recorded under the configuration
//! directory (`pending/<key>.json`, keyed by server and canonical path): the file's size and
//! modification time, id, owner token, link secret, body salt, KDF parameters and the SHA-256
//! of the auth token. Then, before each part is sent, the SHA-256 of its *ciphertext* (computed
//! anyway for `X-Content-SHA256`) is appended to `pending/<key>.parts` and flushed. Sealing is
//! deterministic for a given key, salt and part number, so that hash stands for the plaintext
//! just as well, and each byte is hashed once instead of twice. Running the same command again
//! re-derives the same keys and salt, asks the server which parts it holds, re-encrypts those
//! parts of the local file and compares their hashes, and sends only the missing ones.
//! Re-encrypting uses the same nonces as before, which is safe only for the same plaintext; so
//! a file whose size or modification time changed, or any part whose sealed hash differs from
//! the record, is refused (exit 7) without sending anything, and
//! `--restart` deletes the interrupted upload and starts a new one with fresh keys. A resumed
//! upload keeps the name, expiry and download limit it was created with (they are sealed or
//! stored at creation); a password is asked for again and must be the same.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use crypto_wasm::ring::RingEncryptor;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::Context;
use crate::api::{Api, CreateFile};
use crate::error::{Error, Result};
use crate::store::{self, UploadRecord};
use crate::util::{self, PasswordSource};

/// Options of one `upload` command.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) expires_in: u64,
    pub(crate) download_limit: Option<u64>,
    pub(crate) password: PasswordSource,
    pub(crate) parallel: usize,
    pub(crate) restart: bool,
}

/// One file to upload and the name it is sealed under.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    name: String,
}

/// What identifies the local file's contents cheaply: size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    size: u64,
    mtime_secs: i64,
    mtime_nanos: u32,
}

/// The record of an interrupted upload (`pending/<key>.json`).
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    server: String,
    path: PathBuf,
    identity: Identity,
    name: String,
    id: String,
    owner_token: String,
    /// The link secret, base64url.
    secret: String,
    /// The body's RFC 8188 salt, hex.
    salt: String,
    kdf: Option<crypto_wasm::KdfParams>,
    /// SHA-256 (hex) of the auth token, to recognise the same password.
    auth_sha256: String,
    part_count: u64,
    download_limit: Option<u64>,
}

/// One local file about to be uploaded, and where its resume record lives.
#[derive(Debug)]
struct Target<'a> {
    server: &'a str,
    canonical: PathBuf,
    identity: Identity,
    /// The sealed name.
    name: &'a str,
    state_path: PathBuf,
    journal_path: PathBuf,
}

/// Where one file's upload starts from.
struct Plan {
    pending: Pending,
    /// ring's AES-GCM (`crypto_wasm::ring`): the browser's bytes, several times faster than the
    /// portable engine.
    encryptor: RingEncryptor,
    /// Parts the server already holds.
    stored: BTreeSet<u64>,
    /// Part number → ciphertext SHA-256 (hex) recorded before it was sent.
    journal: BTreeMap<u64, String>,
    resumed: bool,
}

/// The result of one file, as printed.
#[derive(Debug, Serialize)]
struct Report<'a> {
    name: &'a str,
    path: String,
    id: &'a str,
    size: u64,
    share_link: String,
    manage_link: String,
    expires_at: i64,
    download_limit: Option<u64>,
    resumed: bool,
    parts_sent: u64,
    parts_skipped: u64,
}

/// Uploads every file of `paths` (folders recursively), one after the other.
pub(crate) async fn run(ctx: &Context, paths: &[PathBuf], options: &Options) -> Result<()> {
    let server = ctx.server()?;
    let api = ctx.api(&server)?;
    let mut sources = Vec::new();
    for path in paths {
        collect(path, &mut sources)?;
    }
    if sources.is_empty() {
        return Err(Error::Usage(
            "nothing to upload: the folders are empty".into(),
        ));
    }
    for source in &sources {
        upload_one(ctx, &api, &server, source, options).await?;
    }
    Ok(())
}

/// Adds `path` (a file, or a folder's files) to `out`.
fn collect(path: &Path, out: &mut Vec<Source>) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| Error::io("could not read", path, e))?;
    if meta.is_dir() {
        let canonical = fs::canonicalize(path).map_err(|e| Error::io("could not read", path, e))?;
        let base = canonical
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("folder")
            .to_owned();
        let start = out.len();
        walk(&canonical, &base, out)?;
        out[start..].sort_by(|a, b| a.name.cmp(&b.name));
        return Ok(());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| not_utf8(path))?;
    out.push(Source {
        path: path.to_owned(),
        name: name.to_owned(),
    });
    Ok(())
}

fn not_utf8(path: &Path) -> Error {
    Error::io(
        "cannot upload",
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the name is not valid UTF-8",
        ),
    )
}

/// Adds the regular files under `dir`, named `prefix/relative/path`.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<Source>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("could not list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("could not list", dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| Error::io("could not read", &path, e))?;
        let file_name = entry.file_name();
        let file_name = file_name.to_str().ok_or_else(|| not_utf8(&path))?;
        let name = format!("{prefix}/{file_name}");
        if kind.is_dir() {
            walk(&path, &name, out)?;
        } else if kind.is_file() {
            out.push(Source { path, name });
        }
    }
    Ok(())
}

fn identity_of(path: &Path) -> Result<Identity> {
    let meta = fs::metadata(path).map_err(|e| Error::io("could not read", path, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            "cannot upload",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    let mtime = meta
        .modified()
        .map_err(|e| Error::io("could not read", path, e))?;
    let (mtime_secs, mtime_nanos) = match mtime.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => (
            -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            e.duration().subsec_nanos(),
        ),
    };
    Ok(Identity {
        size: meta.len(),
        mtime_secs,
        mtime_nanos,
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Reads the plaintext of part `n` of a file of `size` bytes.
fn read_part(path: &Path, size: u64, n: u64) -> Result<Vec<u8>> {
    let range = crypto_wasm::part_plaintext_range(size, n)
        .ok_or_else(|| Error::Internal(format!("part {n} is outside the file")))?;
    let mut file = fs::File::open(path).map_err(|e| Error::io("could not read", path, e))?;
    let len = usize::try_from(range.end - range.start)
        .map_err(|_| Error::Internal("part too large for memory".into()))?;
    let mut buf = vec![0; len];
    file.seek(SeekFrom::Start(range.start))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| Error::io("could not read", path, e))?;
    Ok(buf)
}

fn changed(path: &Path, what: &str) -> Error {
    Error::Changed(format!(
        "{} {what} since its interrupted upload, so resuming could expose its contents; nothing \
         was sent. Run the upload again with --restart to upload it as a new file",
        path.display()
    ))
}

/// Derives the file keys off the async threads (Argon2id is slow on purpose).
async fn derive_keys(
    secret: &crypto_wasm::Secret,
    password: Option<(zeroize::Zeroizing<String>, crypto_wasm::KdfParams)>,
) -> Result<crypto_wasm::FileKeys> {
    let secret = secret.clone();
    let keys = tokio::task::spawn_blocking(move || match &password {
        Some((password, kdf)) => crypto_wasm::FileKeys::derive(&secret, Some((password, kdf))),
        None => crypto_wasm::FileKeys::derive(&secret, None),
    })
    .await??;
    Ok(keys)
}

async fn upload_one(
    ctx: &Context,
    api: &Api,
    server: &str,
    source: &Source,
    options: &Options,
) -> Result<()> {
    let path = &source.path;
    let canonical = fs::canonicalize(path).map_err(|e| Error::io("could not read", path, e))?;
    let identity = identity_of(&canonical)?;
    let key = store::key_of(&[server, &canonical.to_string_lossy()]);
    let state_path = ctx.store.path("pending", &format!("{key}.json"))?;
    let journal_path = state_path.with_extension("parts");
    let target = Target {
        server,
        canonical: canonical.clone(),
        identity,
        name: &source.name,
        state_path: state_path.clone(),
        journal_path: journal_path.clone(),
    };
    let mut existing: Option<Pending> = store::read_json(&state_path)?;
    if options.restart
        && let Some(old) = existing.take()
    {
        // Best effort: the server collects abandoned uploads anyway.
        let _ = api.delete(&old.id, &old.owner_token).await;
        store::remove(&journal_path)?;
        store::remove(&state_path)?;
    }
    let resumed = match existing {
        Some(pending) => resume_plan(ctx, api, &target, pending, options).await?,
        None => None,
    };
    let plan = match resumed {
        Some(plan) => plan,
        None => fresh_plan(api, &target, options).await?,
    };

    let size = identity.size;
    let layout = crypto_wasm::Layout::for_plaintext_len(size);
    let count = layout.part_count();
    let missing: Vec<u64> = (0..count).filter(|n| !plan.stored.contains(n)).collect();
    let stored_bytes: u64 = plan.stored.iter().filter_map(|&n| layout.part_len(n)).sum();
    let bar = util::progress_bar(ctx.show_progress(), layout.size(), &source.name);
    bar.set_position(stored_bytes);

    let journal_file = store::private_file(&journal_path, false)?;
    let journal = Arc::new(Mutex::new((journal_file, plan.journal)));
    let encryptor = plan.encryptor.clone();
    let (id, owner) = (plan.pending.id.as_str(), plan.pending.owner_token.as_str());
    let mut parts = futures::stream::iter(missing.iter().copied())
        .map(|n| {
            let (journal, encryptor) = (Arc::clone(&journal), encryptor.clone());
            let (canonical, journal_path) = (canonical.clone(), journal_path.clone());
            async move {
                let sealed = tokio::task::spawn_blocking(move || {
                    seal_part(
                        &canonical,
                        size,
                        n,
                        count,
                        &encryptor,
                        &journal,
                        &journal_path,
                    )
                })
                .await??;
                let len = sealed.0.len() as u64;
                api.put_part(id, owner, n, sealed.0, sealed.1).await?;
                Ok::<u64, Error>(len)
            }
        })
        .buffer_unordered(options.parallel.max(1));
    let mut sent = 0;
    while let Some(result) = parts.next().await {
        bar.inc(result?);
        sent += 1;
        util::crash_hook(sent);
    }
    drop(parts);
    // A file modified while it was read could mix two versions across parts.
    if identity_of(&canonical)? != identity {
        bar.abandon();
        return Err(changed(path, "changed during the upload"));
    }
    let info = api.complete(id, owner).await?;
    bar.finish_and_clear();

    let pending = &plan.pending;
    let record = UploadRecord {
        id: pending.id.clone(),
        server: server.to_owned(),
        owner_token: pending.owner_token.clone(),
        secret: pending.secret.clone(),
        name: pending.name.clone(),
        size,
        created_at: info.created_at,
        expires_at: info.expires_at,
        download_limit: info.download_limit,
        password: pending.kdf.is_some(),
    };
    ctx.store.add_upload(record.clone())?;
    store::remove(&journal_path)?;
    store::remove(&state_path)?;

    let report = Report {
        name: &record.name,
        path: path.display().to_string(),
        id: &record.id,
        size,
        share_link: record.share_link(),
        manage_link: record.manage_link(),
        expires_at: record.expires_at,
        download_limit: record.download_limit,
        resumed: plan.resumed,
        parts_sent: sent,
        parts_skipped: count - missing.len() as u64,
    };
    if ctx.json {
        let line = serde_json::to_string(&report)
            .map_err(|e| Error::Internal(format!("could not encode the report: {e}")))?;
        println!("{line}");
    } else {
        println!("{}", report.name);
        println!("  share:  {}", report.share_link);
        println!("  manage: {}", report.manage_link);
    }
    Ok(())
}

/// Reads part `n` and seals it; returns its ciphertext and the ciphertext's SHA-256.
fn sealed_part(
    path: &Path,
    size: u64,
    n: u64,
    count: u64,
    encryptor: &RingEncryptor,
) -> Result<(Vec<u8>, String)> {
    let plaintext = read_part(path, size, n)?;
    let ciphertext = encryptor.encrypt_part(n, &plaintext, n + 1 == count)?;
    let sha = sha256_hex(&ciphertext);
    Ok((ciphertext, sha))
}

/// Reads, encrypts and records part `n`; returns its ciphertext and the ciphertext's SHA-256.
/// The record is durable before the ciphertext is returned, so before it can leave.
fn seal_part(
    path: &Path,
    size: u64,
    n: u64,
    count: u64,
    encryptor: &RingEncryptor,
    journal: &Mutex<(fs::File, BTreeMap<u64, String>)>,
    journal_path: &Path,
) -> Result<(Bytes, String)> {
    let (ciphertext, hash) = sealed_part(path, size, n, count, encryptor)?;
    {
        let mut guard = journal
            .lock()
            .map_err(|_| Error::Internal("the part journal lock was poisoned".into()))?;
        let (file, recorded) = &mut *guard;
        match recorded.get(&n) {
            Some(earlier) if *earlier != hash => return Err(changed(path, "changed")),
            Some(_) => {}
            None => {
                // Recorded durably before the ciphertext can leave: see the module docs.
                file.write_all(format!("{n} {hash}\n").as_bytes())
                    .and_then(|()| file.sync_data())
                    .map_err(|e| Error::io("could not write", journal_path, e))?;
                recorded.insert(n, hash.clone());
            }
        }
    }
    Ok((Bytes::from(ciphertext), hash))
}

/// A new upload: fresh secret, password salt and body salt, the sealed metadata, the
/// server's id, and the resume record written before anything else is sent.
async fn fresh_plan(api: &Api, target: &Target<'_>, options: &Options) -> Result<Plan> {
    let (identity, name) = (target.identity, target.name);
    let secret = crypto_wasm::Secret::generate();
    let password = options.password.for_upload()?;
    let kdf = password
        .as_ref()
        .map(|_| crypto_wasm::KdfParams::generate());
    let keys = derive_keys(&secret, password.zip(kdf.clone())).await?;
    let metadata = crypto_wasm::Metadata {
        name: name.to_owned(),
        size: identity.size,
        mime: util::guess_mime(name),
    };
    let sealed = keys.seal_metadata(&metadata)?;
    let layout = crypto_wasm::Layout::for_plaintext_len(identity.size);
    let created = api
        .create(&CreateFile {
            metadata: URL_SAFE_NO_PAD.encode(sealed),
            auth_token: keys.auth_token_base64url(),
            kdf: kdf.as_ref(),
            size: layout.size(),
            first_part_size: layout.first_part_size(),
            part_size: layout.part_size(),
            expires_in: options.expires_in,
            download_limit: options.download_limit,
        })
        .await?;
    // The layout is ours: a server answering another part count would make us seal an early
    // part as the last one.
    if created.part_count != layout.part_count() {
        return Err(Error::Integrity(
            "the server proposed a different layout for this file; nothing was uploaded".into(),
        ));
    }
    let encryptor = RingEncryptor::new(&crypto_wasm::Encryptor::new(&keys));
    let pending = Pending {
        server: target.server.to_owned(),
        path: target.canonical.clone(),
        identity,
        name: name.to_owned(),
        id: created.id,
        owner_token: created.owner_token,
        secret: secret.to_base64url(),
        salt: hex::encode(encryptor.encryptor().salt()),
        kdf,
        auth_sha256: sha256_hex(keys.auth_token()),
        part_count: layout.part_count(),
        download_limit: options.download_limit,
    };
    store::private_file(&target.journal_path, true)?;
    store::write_json(&target.state_path, &pending)?;
    Ok(Plan {
        pending,
        encryptor,
        stored: BTreeSet::new(),
        journal: BTreeMap::new(),
        resumed: false,
    })
}

/// Picks up an interrupted upload of the same file: same secret, salt and keys, and only the
/// parts the server is missing. `Ok(None)` when the server no longer has it.
async fn resume_plan(
    ctx: &Context,
    api: &Api,
    target: &Target<'_>,
    pending: Pending,
    options: &Options,
) -> Result<Option<Plan>> {
    let (canonical, identity) = (target.canonical.as_path(), target.identity);
    let journal_path = target.journal_path.as_path();
    if pending.identity != identity {
        return Err(changed(
            canonical,
            "changed (size or modification time differ)",
        ));
    }
    let damaged = || {
        Error::Changed(format!(
            "the record of the interrupted upload of {} is damaged; run again with --restart",
            canonical.display()
        ))
    };
    let secret = crypto_wasm::Secret::from_base64url(&pending.secret).map_err(|_| damaged())?;
    let salt: [u8; 16] = hex::decode(&pending.salt)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(damaged)?;
    let password = match &pending.kdf {
        Some(kdf) => Some((options.password.required()?, kdf.clone())),
        None => None,
    };
    let keys = derive_keys(&secret, password).await?;
    if sha256_hex(keys.auth_token()) != pending.auth_sha256 {
        return Err(Error::BadKey(
            "that is not the password of the interrupted upload; give the same password to \
             resume it, or --restart"
                .into(),
        ));
    }
    let stored = match api.list_parts(&pending.id, &pending.owner_token).await {
        Ok(parts) => parts.into_iter().map(|p| p.n).collect::<BTreeSet<_>>(),
        Err(Error::NotFound) => {
            if !ctx.quiet {
                eprintln!(
                    "The server no longer has the interrupted upload of {}; starting anew.",
                    canonical.display()
                );
            }
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let journal = match fs::read_to_string(journal_path) {
        Ok(text) => store::parse_journal(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(Error::io("could not read", journal_path, e)),
    };
    let encryptor = RingEncryptor::new(&crypto_wasm::Encryptor::with_salt_and_rs(
        &keys,
        salt,
        crypto_wasm::RECORD_SIZE,
    )?);
    // The parts already stored came from the file as it was then: compare every one, sealed
    // again exactly as it was (same key, salt and part number).
    for &n in &stored {
        let earlier = journal.get(&n).cloned().ok_or_else(damaged)?;
        let path = canonical.to_owned();
        let (size, count, encryptor) = (identity.size, pending.part_count, encryptor.clone());
        let now = tokio::task::spawn_blocking(move || {
            sealed_part(&path, size, n, count, &encryptor).map(|(_, sha)| sha)
        })
        .await??;
        if now != earlier {
            return Err(changed(canonical, "changed"));
        }
    }
    Ok(Some(Plan {
        pending,
        encryptor,
        stored,
        journal,
        resumed: true,
    }))
}
