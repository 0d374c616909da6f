//! The sealed metadata blob: file name, size and type, padded and encrypted under `meta_key`.

use serde::{Deserialize, Serialize};

use crate::primitives::{Aead, TAG_LEN, random_array};
use crate::{Error, FileKeys};

/// Largest sealed metadata blob in bytes (before base64url), as capped by the server.
pub const MAX_METADATA_BLOB: usize = 4096;

/// First byte of every metadata blob. Frozen.
const METADATA_VERSION: u8 = 1;
/// Value of the `"v"` JSON field. Frozen.
const METADATA_JSON_VERSION: u8 = 1;
/// Associated data of the metadata AEAD. Frozen.
const METADATA_AAD: &[u8] = b"bitstratus v1 metadata";
/// The JSON is padded with spaces to a multiple of this, hiding the name's exact length.
const METADATA_PAD: usize = 64;
/// `version (1) || nonce (12) || tag (16)`: the blob's fixed overhead.
const METADATA_OVERHEAD: usize = 1 + 12 + TAG_LEN;

/// What the downloader learns about a file before fetching its body.
///
/// Its own serde form is `{"name","size","type"}`; the sealed JSON adds `"v":1`
/// (see `docs/FORMAT.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// File name as chosen by the uploader (not a path).
    pub name: String,
    /// Plaintext size in bytes.
    pub size: u64,
    /// MIME type, or empty when unknown.
    #[serde(rename = "type")]
    pub mime: String,
}

/// The sealed JSON, written in exactly this field order.
#[derive(Serialize)]
struct SealedJsonOut<'a> {
    v: u8,
    name: &'a str,
    size: u64,
    #[serde(rename = "type")]
    mime: &'a str,
}

/// The sealed JSON as read back: every field required, nothing unknown allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedJsonIn {
    v: u8,
    name: String,
    size: u64,
    #[serde(rename = "type")]
    mime: String,
}

impl FileKeys {
    /// `0x01 || nonce || AES-128-GCM[meta_key, nonce, "bitstratus v1 metadata"](pad64(json))`
    /// with a fresh random 12-byte nonce.
    ///
    /// Fails with [`Error::MetadataTooLarge`] if the blob would exceed
    /// [`MAX_METADATA_BLOB`] bytes (a padded JSON of more than 4032 bytes).
    ///
    /// # Panics
    ///
    /// Panics if the platform has no random source.
    pub fn seal_metadata(&self, metadata: &Metadata) -> Result<Vec<u8>, Error> {
        self.seal_metadata_with_nonce(metadata, random_array())
    }

    /// [`FileKeys::seal_metadata`] with a caller-chosen nonce.
    ///
    /// Reusing a nonce under the same key destroys AES-GCM's security, so this stays private
    /// to the crate's own tests.
    pub(crate) fn seal_metadata_with_nonce(
        &self,
        metadata: &Metadata,
        nonce: [u8; 12],
    ) -> Result<Vec<u8>, Error> {
        let json = serde_json::to_vec(&SealedJsonOut {
            v: METADATA_JSON_VERSION,
            name: &metadata.name,
            size: metadata.size,
            mime: &metadata.mime,
        })
        .map_err(|_| Error::InvalidMetadata)?;
        let padded_len = json.len().div_ceil(METADATA_PAD) * METADATA_PAD;
        if METADATA_OVERHEAD + padded_len > MAX_METADATA_BLOB {
            return Err(Error::MetadataTooLarge);
        }
        let mut blob = Vec::with_capacity(METADATA_OVERHEAD + padded_len);
        blob.push(METADATA_VERSION);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&json);
        blob.resize(1 + 12 + padded_len, b' ');
        let tag = Aead::new(&self.meta_key).seal_in_place(&nonce, METADATA_AAD, &mut blob[13..]);
        blob.extend_from_slice(&tag);
        Ok(blob)
    }

    /// Opens a blob made by [`FileKeys::seal_metadata`].
    ///
    /// A wrong key or password, a damaged blob or an unknown version byte all give
    /// [`Error::Decrypt`]; [`Error::InvalidMetadata`] means the blob is authentic but its JSON
    /// is not version-1 metadata. Trailing spaces are accepted whatever their number.
    pub fn open_metadata(&self, blob: &[u8]) -> Result<Metadata, Error> {
        if blob.len() < METADATA_OVERHEAD
            || blob.len() > MAX_METADATA_BLOB
            || blob[0] != METADATA_VERSION
        {
            return Err(Error::Decrypt);
        }
        let nonce: [u8; 12] = blob[1..13].try_into().map_err(|_| Error::Decrypt)?;
        let (ciphertext, tag) = blob[13..].split_at(blob.len() - 13 - TAG_LEN);
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Decrypt)?;
        let mut json = ciphertext.to_vec();
        Aead::new(&self.meta_key).open_in_place(&nonce, METADATA_AAD, &mut json, &tag)?;
        let text = std::str::from_utf8(&json).map_err(|_| Error::InvalidMetadata)?;
        let parsed: SealedJsonIn =
            serde_json::from_str(text.trim_end_matches(' ')).map_err(|_| Error::InvalidMetadata)?;
        if parsed.v != METADATA_JSON_VERSION {
            return Err(Error::InvalidMetadata);
        }
        Ok(Metadata {
            name: parsed.name,
            size: parsed.size,
            mime: parsed.mime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    /// The value of `key: value` line `key` in a vector file.
    fn field<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
            .unwrap()
    }

    /// The writer must produce the vectors' metadata blobs byte for byte (same JSON field
    /// order, escaping and padding), not merely something the reader accepts.
    #[test]
    fn seal_reproduces_vector_blobs() {
        for text in [
            include_str!("../tests/vectors/kdf_no_password.txt"),
            include_str!("../tests/vectors/kdf_password.txt"),
        ] {
            let secret = Secret::from_base64url(field(text, "secret")).unwrap();
            let kdf: Option<crate::KdfParams> = serde_json::from_str(field(text, "kdf")).unwrap();
            let password = text
                .lines()
                .find_map(|line| line.strip_prefix("password: "));
            let keys = FileKeys::derive(&secret, password.zip(kdf.as_ref())).unwrap();
            let blob = hex::decode(field(text, "metadata_blob")).unwrap();
            let metadata = Metadata {
                name: field(text, "metadata_name").to_owned(),
                size: field(text, "metadata_size").parse().unwrap(),
                mime: field(text, "metadata_type").to_owned(),
            };
            let nonce: [u8; 12] = blob[1..13].try_into().unwrap();
            assert_eq!(
                keys.seal_metadata_with_nonce(&metadata, nonce).unwrap(),
                blob
            );
        }
    }
}
