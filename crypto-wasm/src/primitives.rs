//! Thin wrappers over the RustCrypto primitives: the OS random source, HKDF-SHA256 and
//! AES-128-GCM with detached tags, and [`Cipher`], what an AES-128-GCM engine provides to the
//! record framing. Nothing here knows about files, parts or JSON.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of an AES-GCM authentication tag in bytes.
pub(crate) const TAG_LEN: usize = 16;

/// Returns `N` bytes from the operating system's CSPRNG (`crypto.getRandomValues` in browsers).
///
/// # Panics
///
/// Panics if the platform has no usable random source. There is no safe way to continue
/// without randomness, and every supported platform (Linux, macOS, Windows, browsers) has one.
pub(crate) fn random_array<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("the platform random source failed");
    bytes
}

/// `HKDF-SHA256[salt](ikm)`: the extract step, kept as a value so that several labels can be
/// expanded from one pseudorandom key.
///
/// hkdf 0.12 cannot wipe its HMAC state, so the PRK outlives this value in freed memory. We
/// accept that rather than hand-write HKDF: it is dropped as soon as the file keys are derived,
/// and a reader of the tab's memory could read the link secret just as well.
pub(crate) struct Prk(Hkdf<Sha256>);

impl Prk {
    /// `PRK = HKDF-SHA256-Extract(salt, ikm)`.
    pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Self {
        Self(Hkdf::<Sha256>::new(Some(salt), ikm))
    }

    /// `HKDF-SHA256-Expand(PRK, info, N)`.
    pub(crate) fn expand<const N: usize>(&self, info: &[u8]) -> Zeroizing<[u8; N]> {
        let mut okm = Zeroizing::new([0u8; N]);
        // Every caller asks for at most 32 bytes, far below HKDF's 255 * 32 limit.
        self.0
            .expand(info, okm.as_mut())
            .expect("HKDF output length is a small constant");
        okm
    }
}

/// An AES-128-GCM implementation keyed with one key: the only thing that differs between the
/// crate's synchronous engines (RustCrypto's [`Aead`] and, with the `native-ring` feature,
/// ring's). The record framing is written once against this trait.
pub(crate) trait Cipher {
    /// Expands `key` into a cipher instance.
    fn new(key: &[u8; 16]) -> Self;

    /// Replaces `buf` with `AES-128-GCM-Encrypt[key, nonce, aad](buf)` and returns the tag.
    fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];

    /// Verifies `tag` over `buf` and, only if it is valid, decrypts `buf` in place. On failure
    /// ([`crate::Error::Decrypt`]) the contents of `buf` are unspecified and must be discarded.
    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), crate::Error>;
}

/// An AES-128-GCM key, expanded once and reused for many messages.
///
/// The expanded key schedule and the GHASH key are wiped on drop (the "zeroize" features of
/// `aes` and `polyval`), except H on native x86 with CLMUL, which polyval 0.6 never drops.
#[derive(Clone)]
pub(crate) struct Aead(Aes128Gcm);

impl Aead {
    /// Expands `key` into a cipher instance.
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        Self(Aes128Gcm::new(key.into()))
    }

    /// Replaces `buf` with `AES-128-GCM-Encrypt[key, nonce, aad](buf)` and returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> [u8; TAG_LEN] {
        // Encryption only fails for messages longer than 2^36 bytes; records are at most 16 MiB
        // and metadata at most 4 KiB.
        self.0
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf)
            .expect("AES-GCM message length is bounded")
            .into()
    }

    /// Verifies `tag` over `buf` and, only if it is valid, decrypts `buf` in place.
    ///
    /// On failure the contents of `buf` are unspecified and must be discarded; the caller learns
    /// nothing but the failure.
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), crate::Error> {
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
            .map_err(|_| crate::Error::Decrypt)
    }
}

impl Cipher for Aead {
    fn new(key: &[u8; 16]) -> Self {
        Aead::new(key)
    }

    fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        Aead::seal_in_place(self, nonce, aad, buf)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), crate::Error> {
        Aead::open_in_place(self, nonce, aad, buf, tag)
    }
}
