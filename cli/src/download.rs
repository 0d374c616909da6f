//! `bitstratus download LINK [-o PATH|-]`: public info, the sealed metadata (auth token), one
//! download ticket, then the parts in order with a few fetched ahead, decrypted and written as
//! they arrive.
//!
//! **Where it writes.** Without `-o`, or with `-o` naming an existing directory (or ending in
//! `/`), the file goes beneath that directory under its sealed name, which may hold folders
//! (`photos/a.jpg`, from a folder upload): the name is sanitised first and refused if it is
//! absolute or holds `..`, `.` or empty components, so nothing is ever written outside that
//! directory. Any other `-o` is the file's path. `-o -` streams to stdout. An existing file is
//! not overwritten without `--force`.
//!
//! **Verification.** Data goes to `<name>.bitstratus-partial` and is renamed to its final name
//! only once every record is authenticated, the stream is complete (`RingDecryptor::finish`, which
//! detects truncation) and the length matches the sealed metadata. Plaintext written to stdout
//! is authentic as it goes, but only exit code 0 proves it complete.
//!
//! **Resuming.** After each part the partial file is flushed to disk and the state is saved
//! under the configuration directory (`downloads/<key>.json`, keyed by server, id and `-o`):
//! the ticket (valid 24 hours, so a resumed download is not counted again and still works when
//! it took the last download), the layout, the metadata, the body's header and how many parts
//! and plaintext bytes are written. Running the same command again truncates the partial file
//! to that point and continues with `crypto_wasm::ring::RingRecordAccess`, which opens each remaining
//! record at its own index (the nonce binds it) and requires the record at the body's last
//! index to be the final one, so reordering, substitution and truncation are still detected
//! for the remaining parts; the parts before were authenticated by the interrupted run. With
//! an expired ticket the download starts over (and counts again).

use std::fs;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use crypto_wasm::ring::{RingDecryptor, RingRecordAccess};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::Context;
use crate::api::Api;
use crate::error::{Error, Result};
use crate::link;
use crate::store;
use crate::util::{self, PasswordSource};

/// Parts fetched ahead of the one being decrypted.
const AHEAD: usize = 3;
/// A ticket with less than this many seconds left is not used to resume.
const TICKET_MARGIN: i64 = 300;
/// Suffix of the file being written.
const PARTIAL_SUFFIX: &str = ".bitstratus-partial";

/// Options of one `download` command.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) output: Option<PathBuf>,
    pub(crate) password: PasswordSource,
    pub(crate) force: bool,
}

/// The state of an interrupted download (`downloads/<key>.json`).
#[derive(Debug, Serialize, Deserialize)]
struct Partial {
    id: String,
    final_path: PathBuf,
    name: String,
    /// Plaintext bytes, from the sealed metadata.
    size: u64,
    body_size: u64,
    first_part_size: u64,
    part_size: u64,
    kdf: Option<crypto_wasm::KdfParams>,
    /// SHA-256 (hex) of the auth token, to recognise the same password.
    auth_sha256: String,
    ticket: String,
    ticket_expires_at: i64,
    /// The body's header (hex), once part 0 arrived.
    header: Option<String>,
    parts_done: u64,
    written: u64,
}

impl Partial {
    fn layout(&self) -> Result<crypto_wasm::Layout> {
        Ok(crypto_wasm::Layout::new(
            self.body_size,
            self.first_part_size,
            self.part_size,
        )?)
    }
}

/// What decrypts the parts: a stream from the start, or random access when resuming. Both use
/// ring's AES-GCM (`crypto_wasm::ring`), which reads exactly the browser's bytes several times
/// faster than the portable engine.
enum Opener {
    Stream(RingDecryptor),
    /// Boxed: the AES key schedule inside is large.
    Seek(Box<RingRecordAccess>),
}

/// Where the plaintext goes.
enum Sink {
    File(fs::File, PathBuf),
    Stdout,
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Self::File(file, path) => file
                .write_all(bytes)
                .map_err(|e| Error::io("could not write", path, e)),
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)
                    .and_then(|()| out.flush())
                    .map_err(|e| Error::io("could not write", Path::new("<stdout>"), e))
            }
        }
    }

    fn sync(&self) -> Result<()> {
        match self {
            Self::File(file, path) => file
                .sync_data()
                .map_err(|e| Error::io("could not write", path, e)),
            Self::Stdout => Ok(()),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    id: &'a str,
    name: &'a str,
    path: String,
    size: u64,
    /// Plaintext bytes already on disk when this run started (0 unless resumed).
    resumed_from: u64,
}

fn integrity() -> Error {
    Error::Integrity(
        "the downloaded data failed verification: it is damaged or was tampered with".into(),
    )
}

/// Turns a sealed name into a relative path that stays beneath the output directory, or
/// refuses it.
pub(crate) fn sanitize_name(name: &str) -> Result<PathBuf> {
    let refuse =
        |why: &str| Error::Output(format!("refusing to write the file name {name:?}: {why}"));
    if name.is_empty() {
        return Err(refuse("it is empty"));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(refuse("it is an absolute path"));
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(refuse("it has an empty, '.' or '..' component"));
        }
        if part.contains(['\\', '\0']) || (cfg!(windows) && part.contains(':')) {
            return Err(refuse("it holds a character not allowed in file names"));
        }
        path.push(part);
    }
    // Belt and braces: what the platform parsed must be plain names only.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refuse("it is not a plain relative path"));
    }
    Ok(path)
}

/// The final path for a file named `name`, given `-o` (or none).
fn resolve_output(output: Option<&Path>, name: &str) -> Result<PathBuf> {
    match output {
        Some(path) if !(path.is_dir() || path.to_string_lossy().ends_with('/')) => {
            Ok(path.to_owned())
        }
        Some(dir) => Ok(dir.join(sanitize_name(name)?)),
        None => Ok(sanitize_name(name)?),
    }
}

fn partial_path(final_path: &Path) -> PathBuf {
    let mut name = final_path.file_name().unwrap_or_default().to_owned();
    name.push(PARTIAL_SUFFIX);
    final_path.with_file_name(name)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn derive_keys(
    secret: &crypto_wasm::Secret,
    kdf: Option<&crypto_wasm::KdfParams>,
    password: &PasswordSource,
) -> Result<crypto_wasm::FileKeys> {
    let password = match kdf {
        Some(kdf) => {
            kdf.validate().map_err(|_| {
                Error::Integrity("the server sent unsafe password parameters; refusing".into())
            })?;
            Some((password.required()?, kdf.clone()))
        }
        None => None,
    };
    let secret = secret.clone();
    let keys = tokio::task::spawn_blocking(move || match &password {
        Some((password, kdf)) => crypto_wasm::FileKeys::derive(&secret, Some((password, kdf))),
        None => crypto_wasm::FileKeys::derive(&secret, None),
    })
    .await??;
    Ok(keys)
}

/// Runs `download`.
pub(crate) async fn run(ctx: &Context, link_text: &str, options: &Options) -> Result<()> {
    let link = link::parse(link_text)?;
    let api = ctx.api(&link.server)?;
    let to_stdout = options.output.as_deref() == Some(Path::new("-"));
    if to_stdout {
        return to_stdout_run(ctx, &api, &link, options).await;
    }
    let target = match &options.output {
        Some(path) => std::path::absolute(path),
        None => std::env::current_dir(),
    }
    .map_err(|e| Error::io("could not resolve", Path::new("."), e))?;
    let key = store::key_of(&[
        "download",
        &link.server,
        &link.id,
        &target.to_string_lossy(),
    ]);
    let state_path = ctx.store.path("downloads", &format!("{key}.json"))?;
    if let Some(partial) = store::read_json::<Partial>(&state_path)? {
        if partial.ticket_expires_at > util::now() + TICKET_MARGIN {
            return resume(ctx, &api, &link, options, partial, &state_path).await;
        }
        store::remove(&partial_path(&partial.final_path))?;
        store::remove(&state_path)?;
        if !ctx.quiet {
            eprintln!("The interrupted download's ticket has expired; starting over.");
        }
    }

    let info = api.public_info(&link.id).await?;
    let keys = derive_keys(&link.secret, info.kdf.as_ref(), &options.password).await?;
    let auth = keys.auth_token_base64url();
    let sealed = api.metadata(&link.id, &auth).await?;
    let meta = open_metadata(&keys, &sealed.metadata)?;
    let layout = crypto_wasm::Layout::new(sealed.size, sealed.first_part_size, sealed.part_size)?;
    let final_path = resolve_output(options.output.as_deref(), &meta.name)?;
    let final_path = std::path::absolute(&final_path)
        .map_err(|e| Error::io("could not resolve", &final_path, e))?;
    if final_path.exists() && !options.force {
        return Err(Error::Output(format!(
            "{} already exists; pass --force to overwrite it",
            final_path.display()
        )));
    }
    if let Some(parent) = final_path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("could not create", parent, e))?;
    }
    let partial_file = partial_path(&final_path);
    let file = fs::File::create(&partial_file)
        .map_err(|e| Error::io("could not create", &partial_file, e))?;
    // Local problems show up above, before a download is counted.
    let ticket = match api.start_download(&link.id, &auth).await {
        Ok(ticket) => ticket,
        Err(e) => {
            store::remove(&partial_file)?;
            return Err(e);
        }
    };
    let mut partial = Partial {
        id: link.id.clone(),
        final_path,
        name: meta.name,
        size: meta.size,
        body_size: layout.size(),
        first_part_size: layout.first_part_size(),
        part_size: layout.part_size(),
        kdf: info.kdf,
        auth_sha256: sha256_hex(keys.auth_token()),
        ticket: ticket.ticket,
        ticket_expires_at: ticket.expires_at,
        header: None,
        parts_done: 0,
        written: 0,
    };
    store::write_json(&state_path, &partial)?;
    let opener = Opener::Stream(RingDecryptor::new(&keys));
    let sink = Sink::File(file, partial_file);
    let result = transfer(ctx, &api, &mut partial, Some(&state_path), opener, sink).await;
    settle(ctx, result, &partial, &state_path, 0)
}

/// Finishes a transfer: on success the file gets its final name; when it can never succeed
/// (the file is gone, or its data fails verification) the partial file and state are
/// removed; otherwise (network, local trouble) they stay for the next run to resume.
fn settle(
    ctx: &Context,
    result: Result<()>,
    partial: &Partial,
    state_path: &Path,
    resumed_from: u64,
) -> Result<()> {
    match result {
        Ok(()) => finish(ctx, partial, state_path, resumed_from),
        Err(e @ (Error::NotFound | Error::Integrity(_))) => {
            store::remove(&partial_path(&partial.final_path))?;
            store::remove(state_path)?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn open_metadata(keys: &crypto_wasm::FileKeys, blob: &str) -> Result<crypto_wasm::Metadata> {
    let blob = URL_SAFE_NO_PAD
        .decode(blob)
        .map_err(|_| Error::Integrity("the server sent malformed metadata".into()))?;
    keys.open_metadata(&blob)
        .map_err(|_| Error::Integrity("the file's metadata failed verification".into()))
}

/// `-o -`: straight to stdout with the streaming decryptor; nothing to resume.
async fn to_stdout_run(
    ctx: &Context,
    api: &Api,
    link: &link::Link,
    options: &Options,
) -> Result<()> {
    let info = api.public_info(&link.id).await?;
    let keys = derive_keys(&link.secret, info.kdf.as_ref(), &options.password).await?;
    let auth = keys.auth_token_base64url();
    let sealed = api.metadata(&link.id, &auth).await?;
    let meta = open_metadata(&keys, &sealed.metadata)?;
    let layout = crypto_wasm::Layout::new(sealed.size, sealed.first_part_size, sealed.part_size)?;
    let ticket = api.start_download(&link.id, &auth).await?;
    let mut partial = Partial {
        id: link.id.clone(),
        final_path: PathBuf::from("-"),
        name: meta.name,
        size: meta.size,
        body_size: layout.size(),
        first_part_size: layout.first_part_size(),
        part_size: layout.part_size(),
        kdf: None,
        auth_sha256: String::new(),
        ticket: ticket.ticket,
        ticket_expires_at: ticket.expires_at,
        header: None,
        parts_done: 0,
        written: 0,
    };
    let opener = Opener::Stream(RingDecryptor::new(&keys));
    transfer(ctx, api, &mut partial, None, opener, Sink::Stdout).await?;
    if !ctx.quiet && !ctx.json {
        eprintln!(
            "{} ({}) written to stdout.",
            partial.name,
            util::format_bytes(partial.size)
        );
    }
    Ok(())
}

/// Continues an interrupted download with its saved ticket.
async fn resume(
    ctx: &Context,
    api: &Api,
    link: &link::Link,
    options: &Options,
    mut partial: Partial,
    state_path: &Path,
) -> Result<()> {
    let keys = derive_keys(&link.secret, partial.kdf.as_ref(), &options.password).await?;
    if sha256_hex(keys.auth_token()) != partial.auth_sha256 {
        return Err(Error::BadKey(
            "that is not the password of the interrupted download".into(),
        ));
    }
    let layout = partial.layout()?;
    let partial_file = partial_path(&partial.final_path);
    // Where to continue: after the last part flushed to disk, if that part ends on a record
    // boundary (always, for BitStratus bodies); otherwise from the start.
    let header = partial.header.as_deref().and_then(|h| hex::decode(h).ok());
    let access = header
        .as_deref()
        .and_then(|h| RingRecordAccess::new(&keys, h, layout.size()).ok());
    let seek = match access {
        Some(access) if partial.parts_done > 0 => {
            first_record(&access, &layout, partial.parts_done)
                .filter(|first| first * access.chunk_len() == partial.written)
                .map(|_| access)
        }
        _ => None,
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&partial_file)
        .map_err(|e| Error::io("could not open", &partial_file, e))?;
    let on_disk = file
        .metadata()
        .map_err(|e| Error::io("could not read", &partial_file, e))?
        .len();
    let opener = match seek {
        Some(access) if on_disk >= partial.written => Opener::Seek(Box::new(access)),
        _ => {
            partial.parts_done = 0;
            partial.written = 0;
            Opener::Stream(RingDecryptor::new(&keys))
        }
    };
    file.set_len(partial.written)
        .map_err(|e| Error::io("could not truncate", &partial_file, e))?;
    let mut file = file;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(partial.written))
        .map_err(|e| Error::io("could not seek", &partial_file, e))?;
    let resumed_from = partial.written;
    if !ctx.quiet && !ctx.json {
        eprintln!(
            "Resuming the download of {} at {} of {}.",
            partial.name,
            util::format_bytes(partial.written),
            util::format_bytes(partial.size)
        );
    }
    let sink = Sink::File(file, partial_file);
    let result = transfer(ctx, api, &mut partial, Some(state_path), opener, sink).await;
    settle(ctx, result, &partial, state_path, resumed_from)
}

/// The index of the first record of part `n`, if the part starts on a record boundary.
fn first_record(access: &RingRecordAccess, layout: &crypto_wasm::Layout, n: u64) -> Option<u64> {
    let start = layout.part_range(n)?.start;
    let offset = start.checked_sub(access.header_len())?;
    let rs = u64::from(access.record_size());
    (offset % rs == 0).then_some(offset / rs)
}

/// Fetches parts `partial.parts_done..`, decrypts them in order and writes the plaintext,
/// saving the state after each part when `state_path` is given.
async fn transfer(
    ctx: &Context,
    api: &Api,
    partial: &mut Partial,
    state_path: Option<&Path>,
    mut opener: Opener,
    mut sink: Sink,
) -> Result<()> {
    let layout = partial.layout()?;
    let count = layout.part_count();
    let bar = util::progress_bar(ctx.show_progress(), partial.size, &partial.name);
    bar.set_position(partial.written);
    let from = partial.parts_done;
    let mut fetches = futures::stream::iter(from..count)
        .map(|n| {
            let (api, id, ticket) = (api.clone(), partial.id.clone(), partial.ticket.clone());
            tokio::spawn(async move { api.get_part(&id, &ticket, n).await })
        })
        .buffered(AHEAD + 1);
    let mut n = from;
    while let Some(fetched) = fetches.next().await {
        let bytes = fetched??;
        if Some(bytes.len() as u64) != layout.part_len(n) {
            return Err(integrity());
        }
        if n == 0 {
            let idlen = usize::from(
                *bytes
                    .get(crypto_wasm::HEADER_SIZE - 1)
                    .ok_or_else(integrity)?,
            );
            let header = bytes
                .get(..crypto_wasm::HEADER_SIZE + idlen)
                .ok_or_else(integrity)?;
            partial.header = Some(hex::encode(header));
        }
        let first = match &opener {
            Opener::Seek(access) => Some(first_record(access, &layout, n).ok_or_else(integrity)?),
            Opener::Stream(_) => None,
        };
        let (back_opener, back_sink, len) = tokio::task::spawn_blocking(move || {
            let plaintext = open_part(&mut opener, n, first, &bytes)?;
            sink.write(&plaintext)?;
            sink.sync()?;
            Ok::<_, Error>((opener, sink, plaintext.len() as u64))
        })
        .await??;
        opener = back_opener;
        sink = back_sink;
        partial.written += len;
        partial.parts_done = n + 1;
        bar.set_position(partial.written);
        if let Some(state_path) = state_path {
            store::write_json(state_path, &*partial)?;
        }
        n += 1;
        util::crash_hook(n - from);
    }
    if let Opener::Stream(decryptor) = opener {
        let rest = tokio::task::spawn_blocking(move || {
            let rest = decryptor.finish().map_err(|_| integrity())?;
            sink.write(&rest)?;
            sink.sync()?;
            Ok::<_, Error>(rest.len() as u64)
        })
        .await??;
        partial.written += rest;
    }
    bar.finish_and_clear();
    if partial.written != partial.size {
        return Err(Error::Integrity(format!(
            "the file decrypted to {} bytes where its metadata promises {}",
            partial.written, partial.size
        )));
    }
    Ok(())
}

/// Decrypts one part; `first` is the index of its first record when seeking.
fn open_part(opener: &mut Opener, n: u64, first: Option<u64>, bytes: &Bytes) -> Result<Vec<u8>> {
    match opener {
        Opener::Stream(decryptor) => decryptor.push(bytes).map_err(|_| integrity()),
        Opener::Seek(access) => {
            let skip = if n == 0 {
                usize::try_from(access.header_len()).map_err(|_| integrity())?
            } else {
                0
            };
            let records = bytes.get(skip..).ok_or_else(integrity)?;
            access
                .open(first.unwrap_or(0), records)
                .map_err(|_| integrity())
        }
    }
}

/// Moves the verified file to its final name and forgets the state.
fn finish(ctx: &Context, partial: &Partial, state_path: &Path, resumed_from: u64) -> Result<()> {
    let partial_file = partial_path(&partial.final_path);
    fs::rename(&partial_file, &partial.final_path)
        .map_err(|e| Error::io("could not rename", &partial_file, e))?;
    store::remove(state_path)?;
    let report = Report {
        id: &partial.id,
        name: &partial.name,
        path: partial.final_path.display().to_string(),
        size: partial.size,
        resumed_from,
    };
    if ctx.json {
        let line = serde_json::to_string(&report)
            .map_err(|e| Error::Internal(format!("could not encode the report: {e}")))?;
        println!("{line}");
    } else if !ctx.quiet {
        println!(
            "Saved {} ({}).",
            report.path,
            util::format_bytes(report.size)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizer_keeps_relative_names() {
        assert_eq!(sanitize_name("a.txt").unwrap(), PathBuf::from("a.txt"));
        assert_eq!(
            sanitize_name("photos/2024/a b.jpg").unwrap(),
            Path::new("photos").join("2024").join("a b.jpg")
        );
        assert_eq!(sanitize_name("..a").unwrap(), PathBuf::from("..a"));
    }

    #[test]
    fn sanitizer_refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "..",
            ".",
            "\\\\server\\share",
            "a\\..\\..\\x",
            "nul\0byte",
        ] {
            assert!(sanitize_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn output_paths_stay_under_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = resolve_output(Some(dir.path()), "f/g.txt").unwrap();
        assert_eq!(out, dir.path().join("f").join("g.txt"));
        assert!(resolve_output(Some(dir.path()), "../g.txt").is_err());
        let named = dir.path().join("chosen.bin");
        assert_eq!(resolve_output(Some(&named), "../evil").unwrap(), named);
        assert_eq!(
            partial_path(&named),
            dir.path().join("chosen.bin.bitstratus-partial")
        );
    }
}
