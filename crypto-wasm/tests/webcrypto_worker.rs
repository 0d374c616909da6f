//! The WebCrypto engine in a dedicated worker, where the app runs its crypto: `crypto.subtle`
//! is found on the worker's global object and gives the synchronous engine's bytes.
#![cfg(all(target_arch = "wasm32", feature = "webcrypto"))]

use crypto_wasm::webcrypto::{WebCryptoDecryptor, WebCryptoEncryptor, webcrypto_available};
use crypto_wasm::{ContentKey, Encryptor, decrypt};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

#[wasm_bindgen_test]
async fn webcrypto_works_in_a_dedicated_worker() {
    let global = js_sys::global();
    let has = |name: &str| js_sys::Reflect::has(&global, &JsValue::from_str(name)).unwrap();
    assert!(
        has("importScripts") && !has("document"),
        "not running in a worker"
    );
    assert!(webcrypto_available());

    let key = ContentKey::from_ikm(&[7; 32]).unwrap();
    let sync = Encryptor::with_salt_and_rs(&key, [3; 16], 1000).unwrap();
    let web = WebCryptoEncryptor::new(&sync).await.unwrap();
    let plaintext: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let per_part = sync.plaintext_per_part() as usize;
    let pieces: Vec<&[u8]> = plaintext.chunks(per_part).collect();
    let mut body = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        let is_last = index + 1 == pieces.len();
        let part = web
            .encrypt_part(index as u64, piece, is_last)
            .await
            .unwrap();
        assert!(part == sync.encrypt_part(index as u64, piece, is_last).unwrap());
        body.extend(part);
    }
    assert!(decrypt(&key, &body).unwrap() == plaintext);

    let mut decryptor = WebCryptoDecryptor::new(&key).unwrap();
    let mut opened = decryptor.push(&body).await.unwrap();
    opened.extend(decryptor.finish().await.unwrap());
    assert!(opened == plaintext);
}
