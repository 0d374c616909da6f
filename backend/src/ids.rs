//! Random ids and tokens, their base64url form, hashing, and constant-time verification.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Bytes in a file id.
pub const ID_BYTES: usize = 16;
/// Bytes in an owner token, auth token or download ticket.
pub const TOKEN_BYTES: usize = 32;
/// Characters in an encoded file id (16 bytes, base64url without padding).
pub const ID_CHARS: usize = 22;

fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // An OS without a working CSPRNG cannot run this server safely at all.
    getrandom::getrandom(&mut buf).expect("operating system random number generator failed");
    buf
}

/// A fresh file id: 16 random bytes, base64url.
pub fn new_id() -> String {
    encode(&random::<ID_BYTES>())
}

/// A fresh secret token: returns its base64url form (sent once) and its hash (stored).
pub fn new_token() -> (String, [u8; 32]) {
    let raw = random::<TOKEN_BYTES>();
    (encode(&raw), hash(&raw))
}

/// base64url without padding, the only encoding the API speaks.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// SHA-256, the server's one hash: tokens are stored only as hashes.
pub fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Whether `token` hashes to `stored_hash`, compared in constant time so the comparison
/// leaks nothing about how many bytes matched.
pub fn verify(token: &[u8], stored_hash: &[u8]) -> bool {
    let h = hash(token);
    h.len() == stored_hash.len() && bool::from(h.as_slice().ct_eq(stored_hash))
}

/// Whether `s` looks like an id we could have issued (cheap filter before touching the db).
pub fn is_valid_id(s: &str) -> bool {
    s.len() == ID_CHARS && decode(s).is_some_and(|b| b.len() == ID_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tokens_have_the_contract_shape() {
        let id = new_id();
        assert_eq!(id.len(), ID_CHARS);
        assert!(is_valid_id(&id));
        assert_ne!(id, new_id());
        let (tok, h) = new_token();
        assert_eq!(tok.len(), 43);
        assert!(verify(&decode(&tok).unwrap(), &h));
        assert!(!verify(b"nope", &h));
        assert!(!verify(&decode(&tok).unwrap(), &h[..31]));
        assert!(!is_valid_id("short"));
        assert!(!is_valid_id("!!!!!!!!!!!!!!!!!!!!!!"));
    }
}
