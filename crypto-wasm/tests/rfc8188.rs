//! The two worked examples of RFC 8188 section 3 must decrypt, whole and in small chunks.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crypto_wasm::{ContentKey, Decryptor, Error, decrypt};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn b64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// Section 3.1: rs = 4096, empty keyid, one record.
const IKM_3_1: &str = "yqdlZ-tYemfogSmv7Ws5PQ";
const BODY_3_1: &str = "I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-ly8Thjg";

/// Section 3.2: rs = 25, keyid "a1", two records, the first one padded.
const IKM_3_2: &str = "BO3ZVPxUlnLORbVGMpbT1Q";
const BODY_3_2: &str = "uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA";

fn check(ikm: &str, body: &str) {
    let key = ContentKey::from_ikm(&b64(ikm)).unwrap();
    let body = b64(body);
    assert_eq!(decrypt(&key, &body).unwrap(), b"I am the walrus");
    for chunk in 1..body.len() {
        let mut decryptor = Decryptor::new(&key);
        let mut plaintext = Vec::new();
        for piece in body.chunks(chunk) {
            plaintext.extend(decryptor.push(piece).unwrap());
        }
        plaintext.extend(decryptor.finish().unwrap());
        assert_eq!(plaintext, b"I am the walrus", "chunk size {chunk}");
    }
    // The same body under the other example's key is rejected.
    let other = if ikm == IKM_3_1 { IKM_3_2 } else { IKM_3_1 };
    let other = ContentKey::from_ikm(&b64(other)).unwrap();
    assert_eq!(decrypt(&other, &body), Err(Error::Decrypt));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rfc8188_section_3_1_decrypts() {
    check(IKM_3_1, BODY_3_1);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rfc8188_section_3_2_decrypts() {
    check(IKM_3_2, BODY_3_2);
}

/// Our encryptor reproduces section 3.1 exactly from its salt and rs.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rfc8188_section_3_1_encrypts() {
    let key = ContentKey::from_ikm(&b64(IKM_3_1)).unwrap();
    let body = b64(BODY_3_1);
    let salt: [u8; 16] = body[..16].try_into().unwrap();
    let encryptor = crypto_wasm::Encryptor::with_salt_and_rs(&key, salt, 4096).unwrap();
    assert_eq!(encryptor.encrypt_body(b"I am the walrus"), body);
}
