//! Link secrets, the optional password KDF, and the derivation of every per-file key:
//! `content_ikm` (the RFC 8188 input keying material), `meta_key` and `auth_token`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;
use crate::primitives::{Prk, random_array};

/// Length of a link secret in bytes.
pub const SECRET_LEN: usize = 32;

/// Length of a link secret in base64url characters (no padding).
pub const SECRET_BASE64_LEN: usize = 43;

/// Salt of the root extract step: `PRK = HKDF-SHA256-Extract("BitStratus v1", ikm)`. Frozen.
const ROOT_SALT: &[u8] = b"BitStratus v1";
/// HKDF label of `content_ikm`. Frozen.
const LABEL_CONTENT: &[u8] = b"bitstratus v1 content";
/// HKDF label of `meta_key`. Frozen.
const LABEL_METADATA: &[u8] = b"bitstratus v1 metadata";
/// HKDF label of `auth_token`. Frozen.
const LABEL_AUTH: &[u8] = b"bitstratus v1 auth";

/// The 32-byte random link secret that travels in the URL fragment and never reaches the server.
///
/// Wiped from memory on drop; its `Debug` output never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Draws a fresh secret from the platform CSPRNG.
    ///
    /// # Panics
    ///
    /// Panics if the platform has no random source.
    pub fn generate() -> Self {
        Self(random_array())
    }

    /// Wraps existing secret bytes (for test vectors and tools).
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the fragment encoding: exactly 43 characters of unpadded base64url
    /// (RFC 4648 section 5) in canonical form, so every secret has exactly one spelling.
    pub fn from_base64url(text: &str) -> Result<Self, Error> {
        if text.len() != SECRET_BASE64_LEN {
            return Err(Error::InvalidSecret);
        }
        let mut bytes = Zeroizing::new([0u8; SECRET_LEN]);
        match URL_SAFE_NO_PAD.decode_slice(text, bytes.as_mut()) {
            Ok(SECRET_LEN) => Ok(Self(*bytes)),
            _ => Err(Error::InvalidSecret),
        }
    }

    /// The fragment encoding: unpadded base64url, 43 characters.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Argon2id parameters of the optional password, stored next to the file by the server.
///
/// Serialised exactly as the API's `kdf` object:
/// `{"alg":"argon2id","m_cost":19456,"t_cost":2,"p_cost":1,"salt":"<22 chars base64url>"}`.
/// Parsing checks the shape only; the cost policy is enforced by [`KdfParams::validate`], which
/// [`FileKeys::derive`] calls before doing any work, so a hostile server cannot make a client
/// derive with weak or absurd parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "KdfParamsJson", into = "KdfParamsJson")]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub m_cost: u32,
    /// Number of passes.
    pub t_cost: u32,
    /// Degree of parallelism (lanes).
    pub p_cost: u32,
    /// Random Argon2 salt. Public: the server stores it.
    pub salt: [u8; 16],
}

impl KdfParams {
    /// Default memory cost: 19 MiB (OWASP's Argon2id baseline). Also the minimum accepted.
    pub const DEFAULT_M_COST: u32 = 19_456;
    /// Default number of passes. Also the minimum accepted.
    pub const DEFAULT_T_COST: u32 = 2;
    /// The only accepted parallelism: the browser computes Argon2 on a single thread.
    pub const DEFAULT_P_COST: u32 = 1;
    /// Largest accepted memory cost: 1 GiB.
    pub const MAX_M_COST: u32 = 1024 * 1024;
    /// Largest accepted number of passes (8 times the default), bounding the work a hostile
    /// server can impose on a downloader.
    pub const MAX_T_COST: u32 = 16;

    /// The default costs with a fresh random 16-byte salt.
    ///
    /// # Panics
    ///
    /// Panics if the platform has no random source.
    pub fn generate() -> Self {
        Self {
            m_cost: Self::DEFAULT_M_COST,
            t_cost: Self::DEFAULT_T_COST,
            p_cost: Self::DEFAULT_P_COST,
            salt: random_array(),
        }
    }

    /// Checks the cost policy: `19456 <= m_cost <= 1 GiB`, `2 <= t_cost <= 16`, `p_cost == 1`.
    pub fn validate(&self) -> Result<(), Error> {
        let m_ok = (Self::DEFAULT_M_COST..=Self::MAX_M_COST).contains(&self.m_cost);
        let t_ok = (Self::DEFAULT_T_COST..=Self::MAX_T_COST).contains(&self.t_cost);
        if m_ok && t_ok && self.p_cost == Self::DEFAULT_P_COST {
            Ok(())
        } else {
            Err(Error::InvalidKdfParams)
        }
    }

    /// `pw = Argon2id[salt, m, t, p](password)`, 32 bytes, after [`KdfParams::validate`].
    fn derive(&self, password: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
        self.validate()?;
        let params = argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(32))
            .map_err(|_| Error::InvalidKdfParams)?;
        let argon2 =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut pw = Zeroizing::new([0u8; 32]);
        argon2
            .hash_password_into(password.as_bytes(), &self.salt, pw.as_mut())
            .map_err(|_| Error::InvalidKdfParams)?;
        Ok(pw)
    }
}

/// The JSON shape of [`KdfParams`]; kept private so the public type holds decoded bytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfParamsJson {
    alg: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

/// The only algorithm name version 1 knows.
const KDF_ALG: &str = "argon2id";

impl TryFrom<KdfParamsJson> for KdfParams {
    type Error = Error;

    fn try_from(json: KdfParamsJson) -> Result<Self, Error> {
        if json.alg != KDF_ALG || json.salt.len() != 22 {
            return Err(Error::InvalidKdfParams);
        }
        let mut salt = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(&json.salt, &mut salt) {
            Ok(16) => Ok(Self {
                m_cost: json.m_cost,
                t_cost: json.t_cost,
                p_cost: json.p_cost,
                salt,
            }),
            _ => Err(Error::InvalidKdfParams),
        }
    }
}

impl From<KdfParams> for KdfParamsJson {
    fn from(params: KdfParams) -> Self {
        Self {
            alg: KDF_ALG.to_owned(),
            m_cost: params.m_cost,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
            salt: URL_SAFE_NO_PAD.encode(params.salt),
        }
    }
}

/// RFC 8188 input keying material: what `aes128gcm` calls IKM, from which each body derives
/// its content-encryption key and nonce base with the body's salt.
///
/// For BitStratus files this is `content_ikm` (see [`FileKeys::content_key`]); any other IKM,
/// such as the RFC 8188 examples', can be wrapped with [`ContentKey::from_ikm`].
/// Wiped from memory on drop; its `Debug` output never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ContentKey(Vec<u8>);

impl ContentKey {
    /// Wraps an arbitrary-length IKM. Fails only for an empty one, which is never a real key.
    pub fn from_ikm(ikm: &[u8]) -> Result<Self, Error> {
        if ikm.is_empty() {
            return Err(Error::InvalidKey);
        }
        Ok(Self(ikm.to_vec()))
    }

    /// The raw IKM, for handing to another RFC 8188 implementation (interoperability, test
    /// vectors). Treat the result as a key: whoever holds it can read the file.
    pub fn expose_ikm(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<ContentKey> for ContentKey {
    fn as_ref(&self) -> &ContentKey {
        self
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey([REDACTED])")
    }
}

/// Every key of one file, derived from the link secret and the optional password:
///
/// ```text
/// ikm         = secret || Argon2id[kdf](password)      (just secret without a password)
/// PRK         = HKDF-SHA256-Extract["BitStratus v1"](ikm)
/// content_ikm = HKDF-SHA256-Expand[PRK, "bitstratus v1 content"](32)
/// meta_key    = HKDF-SHA256-Expand[PRK, "bitstratus v1 metadata"](16)
/// auth_token  = HKDF-SHA256-Expand[PRK, "bitstratus v1 auth"](32)
/// ```
///
/// Wiped from memory on drop; its `Debug` output never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct FileKeys {
    content: ContentKey,
    pub(crate) meta_key: [u8; 16],
    auth_token: [u8; 32],
}

impl FileKeys {
    /// Derives the file's keys. With a password, first checks `kdf` against the cost policy
    /// ([`KdfParams::validate`]) and then runs Argon2id, which takes a noticeable fraction of a
    /// second by design. The password is used as its UTF-8 bytes, without normalisation.
    pub fn derive(secret: &Secret, password: Option<(&str, &KdfParams)>) -> Result<Self, Error> {
        let mut ikm = Zeroizing::new([0u8; SECRET_LEN + 32]);
        ikm[..SECRET_LEN].copy_from_slice(&secret.0);
        let ikm_len = match password {
            None => SECRET_LEN,
            Some((password, kdf)) => {
                ikm[SECRET_LEN..].copy_from_slice(kdf.derive(password)?.as_ref());
                SECRET_LEN + 32
            }
        };
        let prk = Prk::extract(ROOT_SALT, &ikm[..ikm_len]);
        let content = prk.expand::<32>(LABEL_CONTENT);
        Ok(Self {
            content: ContentKey(content.to_vec()),
            meta_key: *prk.expand::<16>(LABEL_METADATA),
            auth_token: *prk.expand::<32>(LABEL_AUTH),
        })
    }

    /// `content_ikm`, the RFC 8188 IKM of the file body.
    pub fn content_key(&self) -> &ContentKey {
        &self.content
    }

    /// `auth_token`: proves to the server that the caller knows the secret (and password).
    /// The server stores only its SHA-256.
    pub fn auth_token(&self) -> &[u8; 32] {
        &self.auth_token
    }

    /// `auth_token` as sent in `Authorization: Bearer`: unpadded base64url, 43 characters.
    pub fn auth_token_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.auth_token)
    }

    /// The raw `meta_key`, for test vectors and other implementations. Treat it as a key.
    pub fn expose_metadata_key(&self) -> &[u8; 16] {
        &self.meta_key
    }
}

impl AsRef<ContentKey> for FileKeys {
    fn as_ref(&self) -> &ContentKey {
        &self.content
    }
}

impl fmt::Debug for FileKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKeys([REDACTED])")
    }
}
