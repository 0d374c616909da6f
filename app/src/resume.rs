//! What this browser remembers about unfinished uploads, so that choosing the same file again
//! resumes it instead of starting over: the file's id, owner token, link secret and body salt,
//! and the SHA-256 of every part's *plaintext* this browser has encrypted.
//!
//! **Why the plaintext hashes:** resuming re-encrypts missing parts under the same key and
//! nonces. That is safe only if the bytes are the same as before: a part whose ciphertext may
//! have left the page (even partly, in a failed request) must not be encrypted again from
//! different plaintext, or two ciphertexts under one (key, nonce) would reveal the XOR of the
//! plaintexts. So each part's plaintext hash is recorded before its ciphertext is sent, and a
//! resumed part whose plaintext hash differs is refused.
//!
//! The record lives in `localStorage` under a key derived from the file's name, size and
//! modification time; it holds secrets, like the links the page shows, and is deleted as soon
//! as the upload completes. The part hashes are kept in blocks of [`BLOCK`] parts under keys of
//! their own, so recording one part rewrites one block, not every hash so far: a 10 GB file
//! has 2,560 parts, and rewriting the whole record for each would serialise and store about
//! 250 MB in all. Blocks are small because each write leaves its text behind as garbage until
//! the page's next collection: blocks of 256 parts meant strings of up to 19 KiB per part, and
//! the page's memory grew with the file (probed during uploads: its ArrayBuffer and external
//! memory ended at 2.4 MiB for 1 GiB against 0.1 MiB for 100 MiB, and 0.25 MiB for 1 GiB with
//! blocks of 16). 16 parts keep every write under 1.3 KiB, while a 100 GB file (25,600 parts)
//! still needs only about 2 million characters of local storage, where browsers allow about 5
//! million.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::util;

/// One unfinished upload.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Unfinished {
    pub(crate) id: String,
    pub(crate) owner_token: String,
    /// The link secret, base64url.
    pub(crate) secret: String,
    /// The body's RFC 8188 salt, hex.
    pub(crate) salt: String,
    pub(crate) kdf: Option<crypto_wasm::KdfParams>,
    /// SHA-256 (hex) of the auth token: tells a wrong password apart before anything is sent.
    pub(crate) auth_sha256: String,
    pub(crate) part_count: u64,
    /// Parts whose hashes share one storage entry: [`BLOCK`] for records made now; records
    /// made before this field existed used 256 and keep it until they are done.
    #[serde(default = "block_of_older_records")]
    pub(crate) block: u64,
    /// Part number → SHA-256 (hex) of the plaintext that was encrypted for it.
    pub(crate) plaintext_sha256: BTreeMap<u64, String>,
}

/// Parts whose hashes share one storage entry, in a record made now (see the module's
/// documentation).
pub(crate) const BLOCK: u64 = 16;

fn block_of_older_records() -> u64 {
    256
}

/// The storage key for `file`: its name, size and modification time, hashed.
fn key(file: &web_sys::File) -> String {
    let fingerprint = format!("{}\n{}\n{}", file.name(), file.size(), file.last_modified());
    format!(
        "bitstratus.unfinished.v2.{}",
        hex::encode(sha2::Sha256::digest(fingerprint.as_bytes()))
    )
}

/// The storage key of the hashes in block `block` (parts `block * size ..`, with the record's
/// block size) of the record under `key`.
fn block_key(key: &str, block: u64) -> String {
    format!("{key}.parts.{block}")
}

/// How many blocks `unfinished` has.
fn blocks(unfinished: &Unfinished) -> u64 {
    unfinished.part_count.div_ceil(unfinished.block)
}

fn storage() -> Option<web_sys::Storage> {
    util::window().local_storage().ok().flatten()
}

/// The unfinished upload of `file`, if this browser has one.
pub(crate) fn load(file: &web_sys::File) -> Option<Unfinished> {
    let storage = storage()?;
    let key = key(file);
    let text = storage.get_item(&key).ok()??;
    let mut unfinished: Unfinished = serde_json::from_str(&text).ok()?;
    // A block size of 0 was never written: such a record is damaged, not resumable.
    if unfinished.block == 0 {
        return None;
    }
    for block in 0..blocks(&unfinished) {
        let Some(text) = storage.get_item(&block_key(&key, block)).ok().flatten() else {
            continue;
        };
        let hashes: BTreeMap<u64, String> = serde_json::from_str(&text).ok()?;
        unfinished.plaintext_sha256.extend(hashes);
    }
    Some(unfinished)
}

/// Records the unfinished upload of `file` with every part hash it holds. Fails when the
/// browser refuses to store it (storage full or disabled): the upload must then not send
/// anything it could not resume safely.
pub(crate) fn save(file: &web_sys::File, unfinished: &Unfinished) -> Result<(), String> {
    let head = Unfinished {
        plaintext_sha256: BTreeMap::new(),
        ..unfinished.clone()
    };
    let text = serde_json::to_string(&head).expect("the record serialises");
    put(&key(file), &text)?;
    for block in 0..blocks(unfinished) {
        save_block(file, unfinished, block)?;
    }
    Ok(())
}

/// Records the hash of part `n` of `unfinished` (already in it), rewriting only its block.
pub(crate) fn save_part(
    file: &web_sys::File,
    unfinished: &Unfinished,
    n: u64,
) -> Result<(), String> {
    save_block(file, unfinished, n / unfinished.block)
}

fn save_block(file: &web_sys::File, unfinished: &Unfinished, block: u64) -> Result<(), String> {
    let size = unfinished.block;
    let hashes: BTreeMap<&u64, &String> = unfinished
        .plaintext_sha256
        .range(block * size..(block + 1) * size)
        .collect();
    let text = serde_json::to_string(&hashes).expect("the hashes serialise");
    put(&block_key(&key(file), block), &text)
}

fn put(key: &str, text: &str) -> Result<(), String> {
    storage()
        .ok_or_else(|| "This browser does not allow local storage.".to_owned())?
        .set_item(key, text)
        .map_err(|_| "This browser refused to remember the upload (storage full?).".to_owned())
}

/// Forgets the upload of `file` (it completed, or can no longer be resumed).
pub(crate) fn forget(file: &web_sys::File) {
    let Some(storage) = storage() else { return };
    let key = key(file);
    if let Some(unfinished) = storage
        .get_item(&key)
        .ok()
        .flatten()
        .and_then(|text| serde_json::from_str::<Unfinished>(&text).ok())
    {
        for block in 0..blocks(&unfinished) {
            let _ = storage.remove_item(&block_key(&key, block));
        }
    }
    let _ = storage.remove_item(&key);
    // A record in the format before blocks (its key ends the same), left by an older version.
    let _ = storage.remove_item(&key.replace(".v2.", ".v1."));
}
