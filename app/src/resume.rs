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
//! as the upload completes.

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
    /// Part number → SHA-256 (hex) of the plaintext that was encrypted for it.
    pub(crate) plaintext_sha256: BTreeMap<u64, String>,
}

/// The storage key for `file`: its name, size and modification time, hashed.
fn key(file: &web_sys::File) -> String {
    let fingerprint = format!("{}\n{}\n{}", file.name(), file.size(), file.last_modified());
    format!(
        "bitstratus.unfinished.v1.{}",
        hex::encode(sha2::Sha256::digest(fingerprint.as_bytes()))
    )
}

fn storage() -> Option<web_sys::Storage> {
    util::window().local_storage().ok().flatten()
}

/// The unfinished upload of `file`, if this browser has one.
pub(crate) fn load(file: &web_sys::File) -> Option<Unfinished> {
    let text = storage()?.get_item(&key(file)).ok()??;
    serde_json::from_str(&text).ok()
}

/// Records (or updates) the unfinished upload of `file`. Fails when the browser refuses to
/// store it (storage full or disabled): the upload must then not send anything it could not
/// resume safely.
pub(crate) fn save(file: &web_sys::File, unfinished: &Unfinished) -> Result<(), String> {
    let text = serde_json::to_string(unfinished).expect("the record serialises");
    storage()
        .ok_or_else(|| "This browser does not allow local storage.".to_owned())?
        .set_item(&key(file), &text)
        .map_err(|_| "This browser refused to remember the upload (storage full?).".to_owned())
}

/// Forgets the upload of `file` (it completed, or can no longer be resumed).
pub(crate) fn forget(file: &web_sys::File) {
    if let Some(storage) = storage() {
        let _ = storage.remove_item(&key(file));
    }
}
