//! BitStratus crypto core: key derivation, metadata sealing and RFC 8188 `aes128gcm` bodies,
//! for native targets and `wasm32-unknown-unknown` alike.
//!
//! This crate does no I/O: it turns bytes into bytes. The byte format is specified in
//! `docs/FORMAT.md`; the notation below follows it.
//!
//! ```text
//! secret      32 random bytes, base64url in the URL fragment            (Secret)
//! pw          = Argon2id[kdf](password)                  optional, 32 bytes (KdfParams)
//! PRK         = HKDF-SHA256-Extract["BitStratus v1"](secret || pw)
//! content_ikm = HKDF-SHA256-Expand[PRK, "bitstratus v1 content"](32)     (ContentKey)
//! meta_key    = HKDF-SHA256-Expand[PRK, "bitstratus v1 metadata"](16)    (seal_metadata)
//! auth_token  = HKDF-SHA256-Expand[PRK, "bitstratus v1 auth"](32)        (auth_token)
//! body        = RFC 8188 aes128gcm[content_ikm, random salt, rs = 65536](plaintext)
//! ```
//!
//! The cipher of file bodies is RustCrypto's AES-128-GCM ([`Encryptor`], [`Decryptor`],
//! [`RecordAccess`]). Two optional engines offer the same operations with a faster AES-GCM,
//! producing and accepting the same bytes: with the `webcrypto` feature, on wasm32, the
//! `webcrypto` module uses the browser's WebCrypto; with the `native-ring` feature, on native
//! targets, the `ring` module uses ring's assembly AES-GCM (the command-line client's engine).
//! All engines follow one implementation of the format's record rules; only the AES-GCM seal
//! and open calls differ.
//!
//! # Example
//!
//! ```
//! use crypto_wasm::{Decryptor, Encryptor, FileKeys, Metadata, Secret};
//!
//! let secret = Secret::generate();
//! let keys = FileKeys::derive(&secret, None)?;
//! let meta = Metadata { name: "a.txt".into(), size: 5, mime: "text/plain".into() };
//! let blob = keys.seal_metadata(&meta)?;
//!
//! let encryptor = Encryptor::new(&keys);
//! let body = encryptor.encrypt_part(0, b"hello", true)?;
//!
//! // The downloader, holding only the secret from the link:
//! let keys = FileKeys::derive(&Secret::from_base64url(&secret.to_base64url())?, None)?;
//! assert_eq!(keys.open_metadata(&blob)?, meta);
//! let mut decryptor = Decryptor::new(&keys);
//! let mut plaintext = decryptor.push(&body)?;
//! plaintext.extend(decryptor.finish()?); // mandatory: detects truncation
//! assert_eq!(plaintext, b"hello");
//! # Ok::<(), crypto_wasm::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod ece;
mod error;
mod framing;
mod keys;
mod layout;
mod metadata;
mod primitives;
#[cfg(all(feature = "native-ring", not(target_arch = "wasm32")))]
pub mod ring;
#[cfg(all(feature = "webcrypto", target_arch = "wasm32"))]
pub mod webcrypto;

pub use ece::{Decryptor, Encryptor, RecordAccess, decrypt, encrypt};
pub use error::Error;
pub use keys::{ContentKey, FileKeys, KdfParams, SECRET_BASE64_LEN, SECRET_LEN, Secret};
pub use layout::{
    HEADER_SIZE, Layout, MAX_RECORD_SIZE, MIN_RECORD_SIZE, RECORD_OVERHEAD, RECORD_SIZE,
    RECORDS_PER_PART, body_size, first_part_size, part_plaintext_range, part_size,
    plaintext_per_part,
};
pub use metadata::{MAX_METADATA_BLOB, Metadata};
