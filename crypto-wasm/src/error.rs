//! The crate's one error type.

/// Everything that can go wrong in this crate.
///
/// Decryption failures are deliberately coarse: a wrong key, a wrong password, a flipped bit,
/// a truncated, reordered, duplicated or extended stream and a malformed header all surface as
/// the single [`Error::Decrypt`] variant, so that an attacker who feeds crafted ciphertext to a
/// decryptor learns nothing beyond "rejected" (no padding-style oracle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The ciphertext was rejected: wrong key or password, or corrupted, truncated, reordered or
    /// extended data. Deliberately carries no detail.
    #[error("decryption failed: wrong key or password, or damaged data")]
    Decrypt,

    /// A link secret was not 43 characters of unpadded, canonical base64url encoding 32 bytes.
    #[error("invalid secret: expected 43 characters of base64url")]
    InvalidSecret,

    /// Key material was unusable (for example an empty RFC 8188 IKM).
    #[error("invalid key material")]
    InvalidKey,

    /// Password KDF parameters were malformed, too weak or absurdly expensive.
    #[error("unsupported or unsafe password key-derivation parameters")]
    InvalidKdfParams,

    /// The metadata plaintext does not fit the 4096-byte sealed blob limit.
    #[error("file metadata too large (name or type too long)")]
    MetadataTooLarge,

    /// A metadata blob authenticated correctly but its JSON is not valid version-1 metadata.
    ///
    /// Only a buggy writer holding the key can produce this, so it reveals nothing to an attacker.
    #[error("file metadata is malformed")]
    InvalidMetadata,

    /// A record size outside the accepted range (18 bytes to 16 MiB).
    #[error("record size out of range")]
    InvalidRecordSize,

    /// A part passed to the encryptor has the wrong length for its position, or its index
    /// overflows the record counter.
    #[error("part plaintext has the wrong length for its position")]
    InvalidPart,

    /// Part layout sizes that cannot describe a body (a zero part size, for instance).
    #[error("invalid part layout")]
    InvalidLayout,

    /// The browser's WebCrypto is unavailable (no `crypto.subtle`: the page is not a secure
    /// context) or refused to import a key or encrypt. Only the `webcrypto` feature produces
    /// it; its decryptor reports every failure as [`Error::Decrypt`].
    #[cfg(feature = "webcrypto")]
    #[error("WebCrypto is unavailable or failed")]
    WebCrypto,
}
