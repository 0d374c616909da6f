//! Runs the committed test vectors of `tests/vectors/`: natively from the directory, in the
//! browser from a compiled-in list that a native test keeps equal to the directory, and there,
//! with the `webcrypto` feature, the `ok_*` and `fail_*` bodies through the WebCrypto engine
//! too. Natively it also checks that the files are exactly what `support/generate.rs` produces
//! and, with the `native-ring` feature, runs every body through the ring engine.

use crypto_wasm::{ContentKey, Decryptor, Encryptor, Error, FileKeys, KdfParams, Metadata, Secret};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

#[cfg(not(target_arch = "wasm32"))]
#[path = "support/generate.rs"]
mod generate;

/// Every vector file, compiled in so the wasm build (which has no file system) runs them too.
macro_rules! cases {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("vectors/", $name)))),*]
    };
}

const CASES: &[(&str, &str)] = cases![
    "fail_bit_flip.txt",
    "fail_duplicated_record.txt",
    "fail_empty.txt",
    "fail_full_record_after_final.txt",
    "fail_missing_final_record.txt",
    "fail_no_delimiter.txt",
    "fail_record_size_too_small.txt",
    "fail_reordered_parts.txt",
    "fail_reordered_records.txt",
    "fail_short_header.txt",
    "fail_short_keyid.txt",
    "fail_trailing_garbage.txt",
    "fail_truncated.txt",
    "fail_two_final_records.txt",
    "fail_wrong_key.txt",
    "kdf_no_password.txt",
    "kdf_password.txt",
    "ok_empty_plaintext.txt",
    "ok_exact_multiple.txt",
    "ok_four_parts.txt",
    "ok_many_records.txt",
    "ok_one_record.txt",
    "ok_padding_and_keyid.txt",
];

/// A parsed vector: `key: value` lines, `#` comments ignored.
struct Case<'a> {
    name: &'a str,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Case<'a> {
    fn parse(name: &'a str, text: &'a str) -> Self {
        let fields = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                line.split_once(": ")
                    .or_else(|| line.strip_suffix(':').map(|key| (key, "")))
                    .unwrap_or_else(|| panic!("{name}: malformed line {line:?}"))
            })
            .collect();
        Self { name, fields }
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn str(&self, key: &str) -> &'a str {
        self.get(key)
            .unwrap_or_else(|| panic!("{}: missing field {key}", self.name))
    }

    fn hex(&self, key: &str) -> Vec<u8> {
        hex::decode(self.str(key)).unwrap_or_else(|_| panic!("{}: {key} is not hex", self.name))
    }
}

/// Pushes `body` in `chunk`-byte pieces, then finishes.
fn decrypt_chunked(key: &ContentKey, body: &[u8], chunk: usize) -> Result<Vec<u8>, Error> {
    let mut decryptor = Decryptor::new(key);
    let mut plaintext = Vec::new();
    for piece in body.chunks(chunk) {
        plaintext.extend(decryptor.push(piece)?);
    }
    plaintext.extend(decryptor.finish()?);
    Ok(plaintext)
}

/// Decrypts whole and in several chunkings; every way must give `expected`.
fn check_decrypt(name: &str, key: &ContentKey, body: &[u8], expected: &Result<Vec<u8>, Error>) {
    assert_eq!(
        &crypto_wasm::decrypt(key, body),
        expected,
        "{name}: whole body"
    );
    for chunk in [1, 2, 17, 21, 64, 1000] {
        assert_eq!(
            &decrypt_chunked(key, body, chunk),
            expected,
            "{name}: pushed in {chunk}-byte chunks"
        );
    }
}

/// A canonical body must be exactly what the crate's encryptor writes, whole and part by part
/// (parts encrypted in reverse order, which must not matter).
fn check_reencrypt(name: &str, key: &ContentKey, plaintext: &[u8], body: &[u8]) {
    let salt: [u8; 16] = body[..16].try_into().unwrap();
    let rs = u32::from_be_bytes(body[16..20].try_into().unwrap());
    let encryptor = Encryptor::with_salt_and_rs(key, salt, rs).unwrap();
    assert_eq!(
        encryptor.encrypt_body(plaintext),
        body,
        "{name}: re-encryption"
    );
    let per_part = usize::try_from(encryptor.plaintext_per_part()).unwrap();
    let pieces: Vec<&[u8]> = if plaintext.is_empty() {
        vec![plaintext]
    } else {
        plaintext.chunks(per_part).collect()
    };
    let mut parts: Vec<Vec<u8>> = vec![Vec::new(); pieces.len()];
    for (index, piece) in pieces.iter().enumerate().rev() {
        let is_last = index + 1 == pieces.len();
        parts[index] = encryptor
            .encrypt_part(index as u64, piece, is_last)
            .unwrap();
    }
    assert_eq!(parts.concat(), body, "{name}: re-encryption part by part");
}

/// What an `ok_*` or `fail_*` vector promises: its key, its body, the result of decrypting it
/// and whether the body is what a BitStratus writer produces.
struct ContentCase {
    key: ContentKey,
    body: Vec<u8>,
    expected: Result<Vec<u8>, Error>,
    canonical: bool,
}

impl ContentCase {
    fn parse(case: &Case<'_>) -> Self {
        let key = ContentKey::from_ikm(&case.hex("ikm")).unwrap();
        let body = case.hex("body");
        if case.name.starts_with("ok_") {
            let canonical = match case.str("canonical") {
                "yes" => true,
                "no" => false,
                other => panic!("{}: canonical must be yes or no, not {other}", case.name),
            };
            let expected = Ok(case.hex("plaintext"));
            Self {
                key,
                body,
                expected,
                canonical,
            }
        } else {
            assert!(
                case.get("plaintext").is_none(),
                "{}: has a plaintext",
                case.name
            );
            let expected = Err(Error::Decrypt);
            Self {
                key,
                body,
                expected,
                canonical: false,
            }
        }
    }
}

fn check_content(case: &Case<'_>) {
    let content = ContentCase::parse(case);
    check_decrypt(case.name, &content.key, &content.body, &content.expected);
    if let (true, Ok(plaintext)) = (content.canonical, &content.expected) {
        check_reencrypt(case.name, &content.key, plaintext, &content.body);
    }
}

fn check_kdf(case: &Case<'_>) {
    let name = case.name;
    let secret = Secret::from_base64url(case.str("secret")).unwrap();
    assert_eq!(
        secret.to_base64url(),
        case.str("secret"),
        "{name}: secret round trip"
    );
    let kdf: Option<KdfParams> = serde_json::from_str(case.str("kdf")).unwrap();
    assert_eq!(
        serde_json::to_string(&kdf).unwrap(),
        case.str("kdf"),
        "{name}: kdf JSON round trip"
    );
    let password = case.get("password");
    assert_eq!(
        password.is_some(),
        kdf.is_some(),
        "{name}: password without kdf"
    );
    let keys = FileKeys::derive(&secret, password.zip(kdf.as_ref())).unwrap();
    assert_eq!(
        keys.content_key().expose_ikm(),
        case.hex("content_ikm"),
        "{name}: content_ikm"
    );
    assert_eq!(
        keys.expose_metadata_key().as_slice(),
        case.hex("meta_key"),
        "{name}: meta_key"
    );
    assert_eq!(
        keys.auth_token().as_slice(),
        case.hex("auth_token"),
        "{name}: auth_token"
    );
    assert_eq!(
        keys.auth_token_base64url(),
        case.str("auth_token_base64url"),
        "{name}"
    );
    let expected = Metadata {
        name: case.str("metadata_name").to_owned(),
        size: case.str("metadata_size").parse().unwrap(),
        mime: case.str("metadata_type").to_owned(),
    };
    assert_eq!(
        keys.open_metadata(&case.hex("metadata_blob")),
        Ok(expected),
        "{name}: metadata"
    );
    let body = case.hex("body");
    let plaintext = case.hex("plaintext");
    check_decrypt(name, keys.content_key(), &body, &Ok(plaintext.clone()));
    check_reencrypt(name, keys.content_key(), &plaintext, &body);
    // Without the password (or with another one) nothing opens.
    if let Some(kdf) = &kdf {
        for wrong in [None, Some(("wrong password", kdf))] {
            let wrong = FileKeys::derive(&secret, wrong).unwrap();
            assert_eq!(
                wrong.open_metadata(&case.hex("metadata_blob")),
                Err(Error::Decrypt)
            );
            assert_eq!(crypto_wasm::decrypt(&wrong, &body), Err(Error::Decrypt));
        }
    }
}

/// Runs one vector file; panics naming the file on any mismatch.
fn run_case(name: &str, text: &str) {
    let case = Case::parse(name, text);
    if name.starts_with("ok_") || name.starts_with("fail_") {
        check_content(&case);
    } else if name.starts_with("kdf_") {
        check_kdf(&case);
    } else {
        panic!("{name}: unknown vector kind");
    }
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen_test::wasm_bindgen_test]
fn vectors_pass_in_browser() {
    for (name, text) in CASES {
        run_case(name, text);
    }
}

/// The same `ok_*` and `fail_*` cases through the WebCrypto engine: every body decrypts (or
/// fails) exactly as with the synchronous decryptor, and every canonical body is exactly what
/// the WebCrypto encryptor writes.
#[cfg(all(target_arch = "wasm32", feature = "webcrypto"))]
mod webcrypto {
    use crypto_wasm::webcrypto::{WebCryptoDecryptor, WebCryptoEncryptor};
    use crypto_wasm::{ContentKey, Encryptor, Error};

    use super::{CASES, Case, ContentCase};

    /// Pushes `body` in `chunk`-byte pieces through WebCrypto, then finishes.
    async fn decrypt_chunked(
        key: &ContentKey,
        body: &[u8],
        chunk: usize,
    ) -> Result<Vec<u8>, Error> {
        let mut decryptor = WebCryptoDecryptor::new(key).unwrap();
        let mut plaintext = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            plaintext.extend(decryptor.push(piece).await?);
        }
        plaintext.extend(decryptor.finish().await?);
        Ok(plaintext)
    }

    /// Part by part, in reverse order, like `check_reencrypt`.
    async fn reencrypt(key: &ContentKey, plaintext: &[u8], body: &[u8]) -> Vec<u8> {
        let salt: [u8; 16] = body[..16].try_into().unwrap();
        let rs = u32::from_be_bytes(body[16..20].try_into().unwrap());
        let encryptor = Encryptor::with_salt_and_rs(key, salt, rs).unwrap();
        let encryptor = WebCryptoEncryptor::new(&encryptor).await.unwrap();
        let per_part = usize::try_from(encryptor.encryptor().plaintext_per_part()).unwrap();
        let pieces: Vec<&[u8]> = if plaintext.is_empty() {
            vec![plaintext]
        } else {
            plaintext.chunks(per_part).collect()
        };
        let mut parts: Vec<Vec<u8>> = vec![Vec::new(); pieces.len()];
        for (index, piece) in pieces.iter().enumerate().rev() {
            let is_last = index + 1 == pieces.len();
            parts[index] = encryptor
                .encrypt_part(index as u64, piece, is_last)
                .await
                .unwrap();
        }
        parts.concat()
    }

    #[wasm_bindgen_test::wasm_bindgen_test]
    async fn vectors_pass_through_webcrypto() {
        let mut checked = 0;
        for (name, text) in CASES {
            if !(name.starts_with("ok_") || name.starts_with("fail_")) {
                continue;
            }
            let case = Case::parse(name, text);
            let content = ContentCase::parse(&case);
            for chunk in [content.body.len(), 1, 17, 21, 64, 1000] {
                assert_eq!(
                    decrypt_chunked(&content.key, &content.body, chunk).await,
                    content.expected,
                    "{name}: WebCrypto, pushed in {chunk}-byte chunks"
                );
            }
            if let (true, Ok(plaintext)) = (content.canonical, &content.expected) {
                assert!(
                    reencrypt(&content.key, plaintext, &content.body).await == content.body,
                    "{name}: WebCrypto re-encryption part by part"
                );
            }
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} content vectors");
    }
}

/// Every body of the vectors (`ok_*`, `fail_*` and the `kdf_*` files' bodies) through the ring
/// engine: each decrypts (or fails) exactly as the vector says, pushed whole and in chunks and
/// by random access, and every canonical body is exactly what the ring encryptor writes, whole
/// and part by part.
#[cfg(all(not(target_arch = "wasm32"), feature = "native-ring"))]
mod ring {
    use crypto_wasm::ring::{RingDecryptor, RingEncryptor, RingRecordAccess};
    use crypto_wasm::{ContentKey, Encryptor, Error, FileKeys, KdfParams, Secret};

    use super::{CASES, Case, ContentCase};

    /// Pushes `body` in `chunk`-byte pieces through ring, then finishes.
    fn decrypt_chunked(key: &ContentKey, body: &[u8], chunk: usize) -> Result<Vec<u8>, Error> {
        let mut decryptor = RingDecryptor::new(key);
        let mut plaintext = Vec::new();
        for piece in body.chunks(chunk.max(1)) {
            plaintext.extend(decryptor.push(piece)?);
        }
        plaintext.extend(decryptor.finish()?);
        Ok(plaintext)
    }

    /// Every record at once by random access. Only meaningful for bodies without padding in
    /// a non-final record, which random access rejects by design.
    fn open_all(key: &ContentKey, body: &[u8]) -> Result<Vec<u8>, Error> {
        let access = RingRecordAccess::new(key, body, body.len() as u64)?;
        let range = access
            .body_range(0, access.record_count() - 1)
            .ok_or(Error::Decrypt)?;
        let start = usize::try_from(range.start).unwrap();
        access.open(0, &body[start..])
    }

    /// Part by part in reverse order, then whole.
    fn reencrypt(name: &str, key: &ContentKey, plaintext: &[u8], body: &[u8]) {
        let salt: [u8; 16] = body[..16].try_into().unwrap();
        let rs = u32::from_be_bytes(body[16..20].try_into().unwrap());
        let encryptor = RingEncryptor::new(&Encryptor::with_salt_and_rs(key, salt, rs).unwrap());
        let per_part = usize::try_from(encryptor.encryptor().plaintext_per_part()).unwrap();
        let pieces: Vec<&[u8]> = if plaintext.is_empty() {
            vec![plaintext]
        } else {
            plaintext.chunks(per_part).collect()
        };
        let mut parts: Vec<Vec<u8>> = vec![Vec::new(); pieces.len()];
        for (index, piece) in pieces.iter().enumerate().rev() {
            let is_last = index + 1 == pieces.len();
            parts[index] = encryptor
                .encrypt_part(index as u64, piece, is_last)
                .unwrap();
        }
        assert!(
            parts.concat() == body,
            "{name}: ring re-encryption part by part"
        );
        assert!(
            encryptor.encrypt_body(plaintext) == body,
            "{name}: ring re-encryption"
        );
    }

    fn check(name: &str, content: &ContentCase) {
        for chunk in [content.body.len(), 1, 2, 17, 21, 64, 1000] {
            assert_eq!(
                decrypt_chunked(&content.key, &content.body, chunk),
                content.expected,
                "{name}: ring, pushed in {chunk}-byte chunks"
            );
        }
        // Random access accepts exactly the canonical bodies, and rejects every failing one.
        if content.canonical || content.expected.is_err() {
            assert_eq!(
                open_all(&content.key, &content.body),
                content.expected,
                "{name}: ring, random access"
            );
        }
        if let (true, Ok(plaintext)) = (content.canonical, &content.expected) {
            reencrypt(name, &content.key, plaintext, &content.body);
        }
    }

    #[test]
    fn vectors_pass_through_ring() {
        let mut checked = 0;
        for (name, text) in CASES {
            let case = Case::parse(name, text);
            if name.starts_with("ok_") || name.starts_with("fail_") {
                check(name, &ContentCase::parse(&case));
            } else {
                let secret = Secret::from_base64url(case.str("secret")).unwrap();
                let kdf: Option<KdfParams> = serde_json::from_str(case.str("kdf")).unwrap();
                let password = case.get("password");
                let keys = FileKeys::derive(&secret, password.zip(kdf.as_ref())).unwrap();
                let content = ContentCase {
                    key: keys.content_key().clone(),
                    body: case.hex("body"),
                    expected: Ok(case.hex("plaintext")),
                    canonical: true,
                };
                check(name, &content);
            }
            checked += 1;
        }
        assert!(checked >= 23, "only {checked} vectors");
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::{CASES, generate, run_case};

    fn vector_dir() -> PathBuf {
        // Found at run time: checkouts sharing a target dir share compiled tests.
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("tests/vectors")
    }

    /// Every file of the vector directory, by name.
    fn vector_files() -> BTreeMap<String, String> {
        std::fs::read_dir(vector_dir())
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect()
    }

    #[test]
    fn vectors_pass() {
        let files = vector_files();
        assert!(files.len() >= 20, "vector directory looks empty");
        for (name, text) in &files {
            run_case(name, text);
        }
    }

    /// The wasm build only sees `CASES`: it must name every file, so none is silently skipped.
    #[test]
    fn compiled_in_list_matches_directory() {
        let listed: Vec<&str> = CASES.iter().map(|(name, _)| *name).collect();
        let files = vector_files();
        let on_disk: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(listed, on_disk);
    }

    /// The committed files are exactly what the generator produces from its fixed inputs.
    /// `BITSTRATUS_WRITE_VECTORS=1` rewrites them instead.
    #[test]
    fn vectors_are_reproducible() {
        let generated: BTreeMap<String, String> = generate::all().into_iter().collect();
        if std::env::var_os("BITSTRATUS_WRITE_VECTORS").is_some() {
            for (name, text) in &generated {
                std::fs::write(vector_dir().join(name), text).unwrap();
            }
        }
        let files = vector_files();
        assert_eq!(
            generated.keys().collect::<Vec<_>>(),
            files.keys().collect::<Vec<_>>(),
            "vector file names differ from the generator's"
        );
        for (name, text) in &generated {
            assert!(
                files[name] == *text,
                "{name} differs from the generator's output"
            );
        }
    }
}
