//! The browser's WebCrypto AES-GCM as the cipher of RFC 8188 bodies (feature `webcrypto`,
//! wasm32 only).
//!
//! [`WebCryptoEncryptor`] and [`WebCryptoDecryptor`] produce and accept exactly the bytes of
//! [`Encryptor`] and [`Decryptor`], with the same validation, errors and stream rules: the
//! header, record splitting, sequence numbers, nonces, delimiters and order rules are the
//! crate's one implementation of them, shared by both engines; only the AES-GCM calls differ.
//! Bodies written by one are read by the other, and parts of one body may even be sealed by
//! both. WebCrypto is much faster than AES compiled to wasm (see `docs/FORMAT.md`, section 8),
//! mainly because all the records of a part are handed to it at once and then awaited together.
//!
//! WebCrypto exists only in secure contexts (HTTPS, or `http://localhost` and `127.0.0.1`):
//! check [`webcrypto_available`] and fall back to the synchronous types otherwise. It is looked
//! up on the global object, so everything here works in a window and in a dedicated worker.
//! The content-encryption key is imported once per body as a non-extractable `CryptoKey`.
//!
//! Records are handed to WebCrypto as views of wasm memory, which it copies before returning:
//! no extra copy, but it requires an unshared memory (a wasm build without threads).
//!
//! Every WebCrypto call answers with a new `ArrayBuffer`: a part's worth of them per part.
//! Once their bytes are copied into wasm memory they are freed at once with [`release`],
//! not left to the garbage collector, which lets tens of megabytes of them pile up per
//! thread before it runs (V8 collects on external-memory growth, not on each buffer).

use std::fmt;

use js_sys::{Array, ArrayBuffer, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AesGcmParams, CryptoKey, SubtleCrypto};

#[cfg(doc)]
use crate::Decryptor;
use crate::framing::{Batch, RecordReader, SealedRecord};
use crate::layout::RECORDS_PER_PART;
use crate::{ContentKey, Encryptor, Error};

/// WebCrypto's name of the algorithm. Its default tag length, 128 bits, is RFC 8188's.
const AES_GCM: &str = "AES-GCM";

/// Records a decryptor hands to WebCrypto at once: a part's worth, which bounds the memory in
/// flight to about one part however much is pushed.
const RECORDS_IN_FLIGHT: usize = RECORDS_PER_PART as usize;

/// Frees `buffer`'s bytes now rather than at the next garbage collection: it is detached with
/// `ArrayBuffer.prototype.transfer(0)` (ES2024), so every view of it then has length 0. For
/// buffers the caller is done with, such as a part's plaintext or ciphertext once copied or
/// sent. Does nothing where the browser cannot transfer buffers, on a buffer already detached,
/// and on a wasm memory's buffer (which cannot be detached).
pub fn release(buffer: &ArrayBuffer) {
    // A detached buffer has no bytes: skip it rather than have transfer() throw.
    if buffer.byte_length() == 0 {
        return;
    }
    if let Ok(transfer) = Reflect::get(buffer, &JsValue::from_str("transfer"))
        && let Some(transfer) = transfer.dyn_ref::<js_sys::Function>()
    {
        let _ = transfer.call1(buffer, &JsValue::from_f64(0.0));
    }
}

/// `crypto.subtle` of the current global object (window or worker), if there is one.
fn subtle() -> Option<SubtleCrypto> {
    let crypto = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).ok()?;
    if !crypto.is_object() {
        return None;
    }
    let subtle = Reflect::get(&crypto, &JsValue::from_str("subtle")).ok()?;
    subtle.dyn_into::<SubtleCrypto>().ok()
}

/// Whether WebCrypto can be used here: `false` where `crypto.subtle` is undefined, as on a
/// page served over plain HTTP from anywhere but localhost.
pub fn webcrypto_available() -> bool {
    subtle().is_some()
}

/// Imports `cek` as a non-extractable AES-GCM key usable only for `usage`.
async fn import_key(subtle: &SubtleCrypto, cek: &[u8; 16], usage: &str) -> Result<CryptoKey, ()> {
    let raw = Uint8Array::new_with_length(16);
    raw.copy_from(cek);
    let usages = Array::of1(&JsValue::from_str(usage));
    let promise = subtle.import_key_with_str("raw", &raw, AES_GCM, false, &usages);
    // importKey has copied the bytes before returning: wipe the JavaScript copy at once.
    raw.fill(0, 0, 16);
    let key = JsFuture::from(promise.map_err(drop)?).await.map_err(drop)?;
    key.dyn_into::<CryptoKey>().map_err(drop)
}

/// `{name: "AES-GCM", iv: nonce}`.
fn params(nonce: &[u8; 12]) -> AesGcmParams {
    AesGcmParams::new(AES_GCM, &Uint8Array::from(nonce.as_slice()))
}

/// Awaits every promise of `promises`; fails as soon as one does.
async fn all(promises: &Array) -> Result<Array, ()> {
    let results = JsFuture::from(Promise::all(promises)).await.map_err(drop)?;
    results.dyn_into::<Array>().map_err(drop)
}

/// The `ArrayBuffer` WebCrypto resolved with.
fn result_buffer(value: JsValue) -> Result<ArrayBuffer, ()> {
    value.dyn_into::<ArrayBuffer>().map_err(drop)
}

/// [`release`]s every `ArrayBuffer` of `results`, once their bytes are copied or when the
/// batch failed part way through.
fn release_all(results: &Array) {
    for value in results.iter() {
        if let Some(buffer) = value.dyn_ref::<ArrayBuffer>() {
            release(buffer);
        }
    }
}

/// [`Encryptor`] with WebCrypto as the cipher: the same parts, byte for byte.
///
/// Cheap to clone; parts may be encrypted in any order or concurrently, exactly as with
/// [`Encryptor`] (same nonce-reuse warning: one encryptor per file).
#[derive(Clone)]
pub struct WebCryptoEncryptor {
    encryptor: Encryptor,
    subtle: SubtleCrypto,
    key: CryptoKey,
}

impl WebCryptoEncryptor {
    /// Imports `encryptor`'s content-encryption key into WebCrypto (once, non-extractable).
    /// Fails with [`Error::WebCrypto`] if WebCrypto is unavailable or refuses the key.
    pub async fn new(encryptor: &Encryptor) -> Result<Self, Error> {
        let subtle = subtle().ok_or(Error::WebCrypto)?;
        let key = import_key(&subtle, encryptor.expose_cek(), "encrypt")
            .await
            .map_err(|()| Error::WebCrypto)?;
        Ok(Self {
            encryptor: encryptor.clone(),
            subtle,
            key,
        })
    }

    /// The synchronous encryptor of the same body (salt, record size, part size).
    pub fn encryptor(&self) -> &Encryptor {
        &self.encryptor
    }

    /// Encrypts part `index` of the body: exactly [`Encryptor::encrypt_part`], with the same
    /// checks and [`Error::InvalidPart`]. All the part's records are sealed concurrently.
    /// Fails with [`Error::WebCrypto`] if WebCrypto refuses an operation.
    pub async fn encrypt_part(
        &self,
        index: u64,
        plaintext: &[u8],
        is_last: bool,
    ) -> Result<Vec<u8>, Error> {
        let plan = self.encryptor.plan_part(index, plaintext.len(), is_last)?;
        let mut out = vec![0; plan.output_len().ok_or(Error::InvalidPart)?];
        if let Some(header) = plan.header() {
            out[..header.len()].copy_from_slice(header);
        }
        let records: Vec<_> = plan.records(self.encryptor.nonces()).collect();
        let promises = Array::new();
        for record in &records {
            // Stage `chunk || delimiter` where its sealed form will go, and hand WebCrypto a
            // view of it: encrypt() copies its input before returning.
            let staged = &mut out[record.offset..][..record.chunk.len() + 1];
            let (chunk, delimiter) = staged.split_at_mut(record.chunk.len());
            chunk.copy_from_slice(&plaintext[record.chunk.clone()]);
            delimiter[0] = record.delimiter;
            let promise = self
                .subtle
                .encrypt_with_object_and_u8_array(&params(&record.nonce), &self.key, staged)
                .map_err(|_| Error::WebCrypto)?;
            promises.push(&promise);
        }
        let sealed = all(&promises).await.map_err(|()| Error::WebCrypto)?;
        let copied = (0u32..).zip(&records).try_for_each(|(i, record)| {
            let buffer = result_buffer(sealed.get(i))?;
            let bytes = Uint8Array::new(&buffer);
            let target = &mut out[record.sealed_range()];
            if bytes.length() as usize != target.len() {
                return Err(());
            }
            bytes.copy_to(target);
            Ok(())
        });
        release_all(&sealed);
        copied.map_err(|()| Error::WebCrypto)?;
        Ok(out)
    }
}

impl fmt::Debug for WebCryptoEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebCryptoEncryptor")
            .field("rs", &self.encryptor.record_size())
            .finish_non_exhaustive()
    }
}

/// [`Decryptor`] with WebCrypto as the cipher: the same semantics, call for call.
///
/// [`WebCryptoDecryptor::push`] returns the plaintext of every record it could complete;
/// **[`WebCryptoDecryptor::finish`] is mandatory** and alone proves the body was not
/// truncated. Every failure is [`Error::Decrypt`] and poisons the decryptor, and so does
/// dropping a `push` before it completes.
pub struct WebCryptoDecryptor {
    subtle: SubtleCrypto,
    /// Header, record splitting and order rules: the same as [`Decryptor`]'s.
    reader: RecordReader,
    /// Imported once the header is known.
    key: Option<CryptoKey>,
}

impl WebCryptoDecryptor {
    /// A decryptor for a body encrypted under `key` (a [`ContentKey`] or the
    /// [`crate::FileKeys`] holding one). Fails with [`Error::WebCrypto`] if WebCrypto is
    /// unavailable.
    pub fn new(key: &impl AsRef<ContentKey>) -> Result<Self, Error> {
        Ok(Self {
            subtle: subtle().ok_or(Error::WebCrypto)?,
            reader: RecordReader::new(key.as_ref().clone()),
            key: None,
        })
    }

    /// Feeds the next bytes of the body and returns the plaintext of every record completed
    /// by them (possibly none), like [`Decryptor::push`].
    pub async fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let result = self.push_inner(input).await;
        if result.is_err() {
            self.fail();
        }
        result
    }

    async fn push_inner(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut batch = self.reader.push(input)?;
        if let Some(cek) = batch.take_cek() {
            let key = import_key(&self.subtle, &cek, "decrypt").await;
            self.key = Some(key.map_err(|()| Error::Decrypt)?);
        }
        self.open(&batch).await
    }

    /// Opens the batch's records, a part's worth at a time, and returns their content.
    async fn open(&mut self, batch: &Batch<'_>) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(batch.sealed_len());
        if batch.is_empty() {
            return Ok(out);
        }
        let key = self.key.clone().ok_or(Error::Decrypt)?;
        let records: Vec<SealedRecord<'_>> = batch.records().collect();
        for window in records.chunks(RECORDS_IN_FLIGHT) {
            let promises = Array::new();
            for record in window {
                let promise = self
                    .subtle
                    .decrypt_with_object_and_u8_array(&params(&record.nonce), &key, record.bytes)
                    .map_err(|_| Error::Decrypt)?;
                promises.push(&promise);
            }
            let opened = all(&promises).await.map_err(|()| Error::Decrypt)?;
            let accepted = (0u32..).zip(window).try_for_each(|(i, record)| {
                let buffer = result_buffer(opened.get(i)).map_err(|()| Error::Decrypt)?;
                let padded = Uint8Array::new(&buffer);
                let start = out.len();
                out.resize(start + padded.length() as usize, 0);
                padded.copy_to(&mut out[start..]);
                let content_len = self.reader.accept(record, &out[start..])?;
                out.truncate(start + content_len);
                Ok(())
            });
            release_all(&opened);
            accepted?;
        }
        Ok(out)
    }

    fn fail(&mut self) {
        self.reader.fail();
        self.key = None;
    }

    /// Ends the stream, like [`Decryptor::finish`]: opens the buffered final record, if any,
    /// and returns its plaintext. Fails unless the header was complete, exactly one final
    /// record was seen and nothing follows it. Mandatory.
    #[must_use = "finish() returns the final record's plaintext and reports truncation"]
    pub async fn finish(mut self) -> Result<Vec<u8>, Error> {
        let batch = self.reader.end()?;
        let out = self.open(&batch).await?;
        self.reader.check_complete()?;
        Ok(out)
    }
}

impl fmt::Debug for WebCryptoDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebCryptoDecryptor")
            .field("state", &self.reader.state())
            .finish_non_exhaustive()
    }
}
