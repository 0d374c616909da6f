//! The crypto worker: a Web Worker that encrypts parts off the page's main thread, so the page
//! stays responsive and several parts are encrypted at once (one worker per core).
//!
//! Protocol (plain JS objects, see `app/src/workers.rs` for the other side):
//! - on start it posts `{ready: true}`;
//! - `{job, op: "encrypt", ikm, salt, part, last, data}` → `{job, data, sha256, plain_sha256}`
//!   where `data` is the part's ciphertext (an `ArrayBuffer`, transferred, not copied),
//!   `sha256` its lowercase hex digest and `plain_sha256` the plaintext's, or `{job, error}`
//!   with a sentence;
//! - `{job, op: "hash", data}` → `{job, plain_sha256}`, to check a file against an earlier
//!   attempt before resuming it;
//! - in both, the request's `data` is the part's slice of the file (a `Blob`), which the
//!   worker reads itself, so the plaintext never passes through the page; the worker frees
//!   (detaches) the bytes it read as soon as it has used them, so that parts do not pile up
//!   here waiting for the garbage collector. A slice the browser cannot read (the file was
//!   moved or deleted) is answered with `{job, error, unreadable: true}`;
//! - `{job, op: "bench", ...}` → `{job, ms, bytes}`: see [`bench`].
//!
//! The worker holds key material only while a job runs; the page sends it with each job.
//!
//! The same bundle also serves the download service worker (`app/sw.js`), which loads it for
//! [`StreamDecryptor`] only; there `main` does nothing.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, ArrayBuffer, Object, Reflect, Uint8Array};
use sha2::Digest as _;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

/// The size of this module's wasm memory in bytes. The memory benchmark
/// (`e2e/bench/memory.mjs`) reads it through DevTools, which is lighter than searching the heap
/// for `WebAssembly.Memory` objects. It says nothing about the data.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
pub fn wasm_memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size(0) * 65536) as f64
}

/// The name the download page gives the download fetcher (`app/fetcher.js`) when it starts it.
const DOWNLOAD_WORKER_NAME: &str = "bitstratus-download";

fn main() {
    let Ok(scope) = js_sys::global().dyn_into::<DedicatedWorkerGlobalScope>() else {
        // Loaded by the service worker: no jobs to serve.
        return;
    };
    if scope.name() == DOWNLOAD_WORKER_NAME {
        // Loaded by the download fetcher (`app/fetcher.js`) for `StreamDecryptor`: it serves
        // its own messages.
        return;
    }
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|event: MessageEvent| {
        wasm_bindgen_futures::spawn_local(async move {
            let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
            let request = event.data();
            let reply = Object::new();
            set(&reply, "job", &get(&request, "job"));
            if get(&request, "op").as_string().as_deref() == Some("bench") {
                match bench(&request).await {
                    Ok((ms, bytes)) => {
                        set(&reply, "ms", &JsValue::from_f64(ms));
                        set(&reply, "bytes", &JsValue::from_f64(bytes));
                    }
                    Err(message) => set(&reply, "error", &JsValue::from_str(&message)),
                }
                let _ = scope.post_message(&reply);
                return;
            }
            let result = match get(&request, "op").as_string().as_deref() {
                Some("hash") => hash(&request).await.map(|plain_sha256| {
                    set(&reply, "plain_sha256", &JsValue::from_str(&plain_sha256));
                    None
                }),
                Some("encrypt") => encrypt(&request).await.map(|sealed| {
                    let buffer = sealed.ciphertext.buffer();
                    set(&reply, "data", &buffer);
                    set(&reply, "sha256", &JsValue::from_str(&sealed.sha256));
                    set(
                        &reply,
                        "plain_sha256",
                        &JsValue::from_str(&sealed.plain_sha256),
                    );
                    Some(buffer)
                }),
                _ => Err(JobFailure::Other("unknown operation".into())),
            };
            // A reply the browser refuses to post has nowhere else to go.
            let _ = match result {
                Ok(Some(buffer)) => scope.post_message_with_transfer(&reply, &Array::of1(&buffer)),
                Ok(None) => scope.post_message(&reply),
                Err(failure) => {
                    let message = match failure {
                        JobFailure::Unreadable => {
                            set(&reply, "unreadable", &JsValue::TRUE);
                            "the file could not be read".to_owned()
                        }
                        JobFailure::Other(message) => message,
                    };
                    set(&reply, "error", &JsValue::from_str(&message));
                    scope.post_message(&reply)
                }
            };
        });
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    on_message.forget();
    let ready = Object::new();
    set(&ready, "ready", &JsValue::TRUE);
    let _ = scope.post_message(&ready);
}

/// Why a job failed.
enum JobFailure {
    /// The browser could not read the part from the file (moved, deleted or changed on disk).
    Unreadable,
    Other(String),
}

impl From<String> for JobFailure {
    fn from(message: String) -> Self {
        Self::Other(message)
    }
}

impl From<&str> for JobFailure {
    fn from(message: &str) -> Self {
        Self::Other(message.to_owned())
    }
}

/// Reads the job's plaintext from `data`, the part's slice of the file.
async fn read_plaintext(request: &JsValue) -> Result<ArrayBuffer, JobFailure> {
    let slice: web_sys::Blob = get(request, "data").dyn_into().map_err(|_| "bad data")?;
    let read = wasm_bindgen_futures::JsFuture::from(slice.array_buffer()).await;
    read.map(JsCast::unchecked_into)
        .map_err(|_| JobFailure::Unreadable)
}

/// The SHA-256 (hex) of the job's plaintext.
async fn hash(request: &JsValue) -> Result<String, JobFailure> {
    let buffer = read_plaintext(request).await?;
    // Kept for the `sha2` fallback, should WebCrypto's digest fail.
    let plaintext = Uint8Array::new(&buffer).to_vec();
    let started = start_sha256(&buffer);
    crypto_wasm::webcrypto::release(&buffer);
    Ok(finish_sha256(started, &plaintext).await)
}

/// One sealed part and its digests (lowercase hex).
struct Sealed {
    ciphertext: Uint8Array,
    sha256: String,
    plain_sha256: String,
}

/// Encrypts one part as asked, with WebCrypto when the context has it (any secure context)
/// and with the wasm AES-GCM otherwise (plain http off localhost); both give the same bytes.
async fn encrypt(request: &JsValue) -> Result<Sealed, JobFailure> {
    let ikm = bytes(&get(request, "ikm"));
    let salt: [u8; 16] = bytes(&get(request, "salt"))
        .try_into()
        .map_err(|_| "bad salt")?;
    let part = get(request, "part").as_f64().ok_or("bad part number")? as u64;
    let last = get(request, "last").as_bool().unwrap_or(false);
    let buffer = read_plaintext(request).await?;
    let plaintext = Uint8Array::new(&buffer).to_vec();
    // digest() has copied the plaintext when it returns, so its buffer can go before the part
    // is encrypted, and the hash is computed meanwhile.
    let plain_sha256 = start_sha256(&buffer);
    crypto_wasm::webcrypto::release(&buffer);

    let key = crypto_wasm::ContentKey::from_ikm(&ikm).map_err(|e| e.to_string())?;
    let encryptor = crypto_wasm::Encryptor::with_salt_and_rs(&key, salt, crypto_wasm::RECORD_SIZE)
        .map_err(|e| e.to_string())?;
    let ciphertext = if crypto_wasm::webcrypto::webcrypto_available() {
        crypto_wasm::webcrypto::WebCryptoEncryptor::new(&encryptor)
            .await
            .map_err(|e| e.to_string())?
            .encrypt_part(part, &plaintext, last)
            .await
    } else {
        encryptor.encrypt_part(part, &plaintext, last)
    }
    .map_err(|e| e.to_string())?;
    let out = Uint8Array::new_with_length(ciphertext.len() as u32);
    out.copy_from(&ciphertext);
    let sha256 = sha256_hex(&out, &ciphertext).await;
    let plain_sha256 = finish_sha256(plain_sha256, &plaintext).await;
    Ok(Sealed {
        ciphertext: out,
        sha256,
        plain_sha256,
    })
}

/// SHA-256 of `data` (a JS buffer holding the same bytes as `bytes`) in lowercase hex, with
/// WebCrypto's digest when it is there (several times the wasm speed), else with `sha2`.
async fn sha256_hex(data: &JsValue, bytes: &[u8]) -> String {
    finish_sha256(start_sha256(data), bytes).await
}

/// Starts WebCrypto's SHA-256 of the JS buffer `data`, when the context has WebCrypto.
/// digest() copies its input before it returns: `data` may be freed at once.
fn start_sha256(data: &JsValue) -> Option<js_sys::Promise> {
    let subtle = get(&get(&js_sys::global(), "crypto"), "subtle");
    let digest = get(&subtle, "digest").dyn_into::<js_sys::Function>().ok()?;
    let promise = digest.call2(&subtle, &JsValue::from_str("SHA-256"), data);
    promise.ok().map(js_sys::Promise::from)
}

/// The lowercase hex SHA-256 of `bytes`: what `started` ([`start_sha256`] of the same bytes)
/// resolves to, or computed with `sha2` when WebCrypto is missing or failed.
async fn finish_sha256(started: Option<js_sys::Promise>, bytes: &[u8]) -> String {
    if let Some(promise) = started
        && let Ok(hash) = wasm_bindgen_futures::JsFuture::from(promise).await
    {
        return hex::encode(Uint8Array::new(&hash).to_vec());
    }
    hex::encode(sha2::Sha256::digest(bytes))
}

fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(key), value);
}

fn bytes(value: &JsValue) -> Vec<u8> {
    value
        .dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .unwrap_or_default()
}

/// RFC 8188 streaming decryption for the download service worker (`app/sw.js`), which streams
/// a file to disk through the browser's download manager without holding it in memory.
/// The same rules as [`crypto_wasm::Decryptor`]: `finish` is mandatory and fails on truncation.
/// It uses WebCrypto where the context has it, else the wasm AES-GCM.
#[wasm_bindgen]
#[derive(Debug)]
pub struct StreamDecryptor {
    /// Taken out while a call awaits WebCrypto, so a second call meanwhile fails cleanly.
    inner: Rc<RefCell<Option<Engine>>>,
}

#[derive(Debug)]
enum Engine {
    Web(Box<crypto_wasm::webcrypto::WebCryptoDecryptor>),
    Wasm(crypto_wasm::Decryptor),
}

#[wasm_bindgen]
impl StreamDecryptor {
    /// A decryptor for the body whose RFC 8188 input key is `ikm`.
    #[wasm_bindgen(constructor)]
    pub fn new(ikm: &[u8]) -> Result<StreamDecryptor, JsError> {
        let key = crypto_wasm::ContentKey::from_ikm(ikm)?;
        let engine = if crypto_wasm::webcrypto::webcrypto_available() {
            Engine::Web(Box::new(crypto_wasm::webcrypto::WebCryptoDecryptor::new(
                &key,
            )?))
        } else {
            Engine::Wasm(crypto_wasm::Decryptor::new(&key))
        };
        Ok(StreamDecryptor {
            inner: Rc::new(RefCell::new(Some(engine))),
        })
    }

    /// Feeds the next bytes of the body; resolves to the plaintext (`Uint8Array`) of the
    /// records they complete, in one buffer. With WebCrypto the records are read straight
    /// from `bytes` (see [`crypto_wasm::webcrypto::WebCryptoDecryptor::push_buffer`]), which
    /// must stay as it is until the promise settles. Await each call before the next.
    pub fn push(&self, bytes: Uint8Array) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        wasm_bindgen_futures::future_to_promise(async move {
            let mut engine = inner
                .borrow_mut()
                .take()
                .ok_or_else(|| JsError::new("busy or finished"))?;
            let result = match &mut engine {
                Engine::Web(d) => d.push_buffer(&bytes).await,
                Engine::Wasm(d) => d
                    .push(&bytes.to_vec())
                    .map(|plaintext| Uint8Array::from(&plaintext[..])),
            };
            *inner.borrow_mut() = Some(engine);
            Ok(result.map_err(JsError::from)?.into())
        })
    }

    /// Ends the body: resolves to the last record's plaintext, or fails if it was truncated.
    pub fn finish(&self) -> js_sys::Promise {
        let inner = Rc::clone(&self.inner);
        wasm_bindgen_futures::future_to_promise(async move {
            let engine = inner
                .borrow_mut()
                .take()
                .ok_or_else(|| JsError::new("busy or finished"))?;
            let result = match engine {
                Engine::Web(d) => d.finish().await,
                Engine::Wasm(d) => d.finish(),
            };
            Ok(Uint8Array::from(&result.map_err(JsError::from)?[..]).into())
        })
    }

    /// Resumes the body at record `record`: call it once the header alone has been pushed
    /// (and its promise settled); the next bytes pushed are then that record onwards. For a
    /// download handed over to a fresh fetcher at a part boundary: the records skipped were
    /// checked by the one before. Fails, and poisons the decryptor, anywhere else.
    pub fn skip_to(&self, record: f64) -> Result<(), JsError> {
        let mut inner = self.inner.borrow_mut();
        let engine = inner
            .as_mut()
            .ok_or_else(|| JsError::new("busy or finished"))?;
        let record = record as u64;
        match engine {
            Engine::Web(d) => d.skip_to(record),
            Engine::Wasm(d) => d.skip_to(record),
        }
        .map_err(JsError::from)
    }
}

/// Random access to a body's records for playing media in the page (`app/sw.js` answers a
/// player's range requests with it). Every record is checked against its place in the file.
#[wasm_bindgen]
#[derive(Debug)]
pub struct MediaReader {
    inner: crypto_wasm::RecordAccess,
}

#[wasm_bindgen]
impl MediaReader {
    /// A reader for the body keyed by `ikm`, given its first bytes (`header`, at least the
    /// RFC 8188 header) and its total length.
    #[wasm_bindgen(constructor)]
    pub fn new(ikm: &[u8], header: &[u8], body_size: f64) -> Result<MediaReader, JsError> {
        let key = crypto_wasm::ContentKey::from_ikm(ikm)?;
        Ok(MediaReader {
            inner: crypto_wasm::RecordAccess::new(&key, header, body_size as u64)?,
        })
    }

    /// Plaintext bytes in every record but the last.
    pub fn chunk_len(&self) -> f64 {
        self.inner.chunk_len() as f64
    }

    /// `[start, end)` within the body of records `first..=last`.
    pub fn body_range(&self, first: f64, last: f64) -> Result<Vec<f64>, JsError> {
        let range = self
            .inner
            .body_range(first as u64, last as u64)
            .ok_or_else(|| JsError::new("records out of range"))?;
        Ok(vec![range.start as f64, range.end as f64])
    }

    /// Decrypts the whole records starting at index `first` held in `bytes`.
    pub fn open(&self, first: f64, bytes: &[u8]) -> Result<Vec<u8>, JsError> {
        Ok(self.inner.open(first as u64, bytes)?)
    }
}

/// `{op: "bench", engine: "webcrypto"|"wasm", direction: "encrypt"|"decrypt", rs, bytes}`:
/// times one engine on about `bytes` of data in records of `rs` bytes, part by part as the app
/// does, in this worker; answers `{ms, bytes}` (`cargo xtask bench browser-crypto`).
async fn bench(request: &JsValue) -> Result<(f64, f64), String> {
    let web = match get(request, "engine").as_string().as_deref() {
        Some("webcrypto") => true,
        Some("wasm") => false,
        _ => return Err("engine must be webcrypto or wasm".into()),
    };
    let decrypt = get(request, "direction").as_string().as_deref() == Some("decrypt");
    let rs = get(request, "rs").as_f64().ok_or("bad rs")? as u32;
    let wanted = get(request, "bytes").as_f64().ok_or("bad bytes")?;
    let key = crypto_wasm::ContentKey::from_ikm(&[7; 32]).map_err(|e| e.to_string())?;
    let encryptor =
        crypto_wasm::Encryptor::with_salt_and_rs(&key, [1; 16], rs).map_err(|e| e.to_string())?;
    let per_part = encryptor.plaintext_per_part() as usize;
    let parts = ((wanted / per_part as f64).ceil() as u64).max(1);
    let plaintext = vec![0x5a; per_part];
    let web_encryptor = if web {
        Some(
            crypto_wasm::webcrypto::WebCryptoEncryptor::new(&encryptor)
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let e = |x: crypto_wasm::Error| x.to_string();
    let mut body = Vec::new();
    let started = now_ms();
    for n in 0..parts {
        let last = n + 1 == parts;
        let part = match &web_encryptor {
            Some(w) => w.encrypt_part(n, &plaintext, last).await.map_err(e)?,
            None => encryptor.encrypt_part(n, &plaintext, last).map_err(e)?,
        };
        if decrypt {
            body.push(part);
        }
    }
    let mut ms = now_ms() - started;
    if decrypt {
        // The WebCrypto engine reads each part from a JavaScript buffer, as the download
        // service worker has it.
        let js_body: Vec<_> = if web {
            body.iter()
                .map(|part| Uint8Array::from(&part[..]))
                .collect()
        } else {
            Vec::new()
        };
        let started = now_ms();
        if web {
            let mut d = crypto_wasm::webcrypto::WebCryptoDecryptor::new(&key).map_err(e)?;
            for part in &js_body {
                d.push_buffer(part).await.map_err(e)?;
            }
            d.finish().await.map_err(e)?;
        } else {
            let mut d = crypto_wasm::Decryptor::new(&key);
            for part in &body {
                d.push(part).map_err(e)?;
            }
            d.finish().map_err(e)?;
        }
        ms = now_ms() - started;
    }
    Ok((ms, (parts as usize * per_part) as f64))
}

/// Milliseconds from the worker's clock.
fn now_ms() -> f64 {
    let performance = get(&js_sys::global(), "performance");
    get(&performance, "now")
        .dyn_into::<js_sys::Function>()
        .ok()
        .and_then(|now| now.call0(&performance).ok())
        .and_then(|t| t.as_f64())
        .unwrap_or(0.0)
}
