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
//! Records are handed to WebCrypto as views of the memory they are in, which it copies before
//! returning: wasm memory (which requires an unshared memory, a wasm build without threads),
//! or, with [`WebCryptoDecryptor::push_buffer`], the JavaScript buffer a part was fetched
//! into, so a download's ciphertext never enters wasm memory.
//!
//! Every WebCrypto call answers with a new `ArrayBuffer`: a part's worth of them per part.
//! Once their bytes are copied (ciphertext into wasm memory when encrypting; plaintext into
//! one JavaScript buffer per push when decrypting, of which only each record's last bytes
//! enter wasm memory, to check its delimiter) they are freed at once with [`release`], not
//! left to the garbage collector, which lets tens of megabytes of them pile up per thread
//! before it runs (V8 collects on external-memory growth, not on each buffer).

use std::fmt;
use std::ops::Range;

use js_sys::{Array, ArrayBuffer, Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AesGcmParams, CryptoKey, SubtleCrypto};

#[cfg(doc)]
use crate::Decryptor;
use crate::framing::{Batch, RecordReader};
use crate::layout::RECORDS_PER_PART;
use crate::{ContentKey, Encryptor, Error};

/// WebCrypto's name of the algorithm. Its default tag length, 128 bits, is RFC 8188's.
const AES_GCM: &str = "AES-GCM";

/// Records a decryptor hands to WebCrypto at once (then awaits, then copies out): an eighth of
/// a part. It bounds the memory in flight however much is pushed, and it keeps each stretch of
/// work on the calling thread short. That mattered while the download service worker decrypted
/// on the thread that also feeds the download manager (1 GiB: 7.9 s in eighths, 9.0 s a part
/// at a time); in the download fetcher (`app/fetcher.js`), which now decrypts, a whole part at
/// a time measured the same as eighths (8.0 s against 8.2-8.9 s, within the noise).
const RECORDS_IN_FLIGHT: usize = RECORDS_PER_PART as usize / 8;

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

/// One `{name: "AES-GCM", iv}` object for a batch of records, its `iv` rewritten for each.
///
/// WebCrypto reads the algorithm (and copies the iv) before `encrypt()`/`decrypt()` returns,
/// so one object serves every call. Two fresh objects per record were most of the garbage a
/// crypto worker left per part (64 records), which piles up in a long upload until the
/// collector runs.
struct Params {
    params: AesGcmParams,
    iv: Uint8Array,
}

impl Params {
    fn new() -> Self {
        let iv = Uint8Array::new_with_length(12);
        Self {
            params: AesGcmParams::new(AES_GCM, &iv),
            iv,
        }
    }

    /// The parameters with `nonce` as the iv, for the next call only.
    fn with_nonce(&self, nonce: &[u8; 12]) -> &AesGcmParams {
        self.iv.copy_from(nonce);
        &self.params
    }
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
        let params = Params::new();
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
                .encrypt_with_object_and_u8_array(
                    params.with_nonce(&record.nonce),
                    &self.key,
                    staged,
                )
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
    /// by them (possibly none), like [`Decryptor::push`]. The same as
    /// [`WebCryptoDecryptor::push_buffer`], for bytes in this crate's memory.
    pub async fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let plaintext = self.push_buffer(&Uint8Array::from(input)).await?;
        Ok(plaintext.to_vec())
    }

    /// Feeds the next bytes of the body, held in a JavaScript buffer, and returns the plaintext
    /// of every record completed by them (possibly none) in one new buffer, like
    /// [`Decryptor::push`]. Whole records are handed to WebCrypto as views of `input` and
    /// their plaintext is copied once, from WebCrypto's results into the returned buffer: only
    /// the header, the start of a record left over from the previous push and the start of
    /// one for the next come into this crate's memory. `input` must stay as it is until the
    /// future completes; it may be reused or freed then.
    pub async fn push_buffer(&mut self, input: &Uint8Array) -> Result<Uint8Array, Error> {
        let result = self.push_buffer_inner(input).await;
        if result.is_err() {
            self.fail();
        }
        result
    }

    async fn push_buffer_inner(&mut self, input: &Uint8Array) -> Result<Uint8Array, Error> {
        let len = input.length() as usize;
        let view = |range: Range<usize>| input.subarray(range.start as u32, range.end as u32);
        // The plaintext of the records completed now is shorter than their sealed bytes: those
        // carried over from earlier pushes and `input`.
        let capacity = u32::try_from(self.reader.buffered() + len).map_err(|_| Error::Decrypt)?;
        let mut out = Output::new(capacity);
        // Complete the header, or a record begun by the previous push, from copied bytes.
        let mut at = 0;
        while at < len && self.reader.to_boundary() > 0 {
            let take = self.reader.to_boundary().min(len - at);
            let bytes = view(at..at + take).to_vec();
            at += take;
            let mut batch = self.reader.push(&bytes)?;
            self.key_from(&mut batch).await?;
            self.open(Sealed::batch(&batch), &mut out).await?;
        }
        if at < len {
            // Whole records, straight from `input`.
            let slots = self.reader.push_whole(len - at)?;
            let records = slots.iter().map(|slot| Sealed {
                seq: slot.seq,
                nonce: slot.nonce,
                len: slot.range.len(),
                bytes: Bytes::Js(view(at + slot.range.start..at + slot.range.end)),
            });
            self.open(records.collect(), &mut out).await?;
            at += slots.byte_len();
        }
        // The start of the next record, kept for the next push (it completes none). Pushed even
        // when empty: the reader refuses any input after a failure or an abandoned push.
        let rest = view(at..len).to_vec();
        let batch = self.reader.push(&rest)?;
        self.open(Sealed::batch(&batch), &mut out).await?;
        Ok(out.into_buffer())
    }

    /// Imports the body's key if `batch` completed the header.
    async fn key_from(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        if let Some(cek) = batch.take_cek() {
            let key = import_key(&self.subtle, &cek, "decrypt").await;
            self.key = Some(key.map_err(|()| Error::Decrypt)?);
        }
        Ok(())
    }

    /// Opens `records`, [`RECORDS_IN_FLIGHT`] at a time, checks each one with the reader in
    /// order and appends its content to `out`.
    async fn open(&mut self, records: Vec<Sealed<'_>>, out: &mut Output) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let key = self.key.clone().ok_or(Error::Decrypt)?;
        let params = Params::new();
        for window in records.chunks(RECORDS_IN_FLIGHT) {
            let promises = Array::new();
            for record in window {
                let params = params.with_nonce(&record.nonce);
                let promise = match &record.bytes {
                    Bytes::Wasm(bytes) => self
                        .subtle
                        .decrypt_with_object_and_u8_array(params, &key, bytes),
                    Bytes::Js(bytes) => self
                        .subtle
                        .decrypt_with_object_and_js_u8_array(params, &key, bytes),
                };
                let promise = promise.map_err(|_| Error::Decrypt)?;
                promises.push(&promise);
            }
            let opened = all(&promises).await.map_err(|()| Error::Decrypt)?;
            let accepted = (0u32..).zip(window).try_for_each(|(i, record)| {
                let buffer = result_buffer(opened.get(i)).map_err(|()| Error::Decrypt)?;
                let padded_len = buffer.byte_length() as usize;
                let tail = padded_tail(&buffer);
                let content_len = self
                    .reader
                    .accept_tail(record.seq, record.len, padded_len, &tail)?;
                out.append(&buffer, content_len)
            });
            release_all(&opened);
            accepted?;
        }
        Ok(())
    }

    fn fail(&mut self) {
        self.reader.fail();
        self.key = None;
    }

    /// Resumes a body part-way, like [`crate::Decryptor::skip_to`]: after the header (pushed,
    /// and nothing more), the next bytes pushed are taken as record `record` onwards.
    pub fn skip_to(&mut self, record: u64) -> Result<(), Error> {
        let result = self.reader.skip_to(record);
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// Ends the stream, like [`Decryptor::finish`]: opens the buffered final record, if any,
    /// and returns its plaintext. Fails unless the header was complete, exactly one final
    /// record was seen and nothing follows it. Mandatory.
    #[must_use = "finish() returns the final record's plaintext and reports truncation"]
    pub async fn finish(mut self) -> Result<Vec<u8>, Error> {
        let batch = self.reader.end()?;
        let mut out = Output::new(u32::try_from(batch.sealed_len()).map_err(|_| Error::Decrypt)?);
        self.open(Sealed::batch(&batch), &mut out).await?;
        self.reader.check_complete()?;
        Ok(out.into_buffer().to_vec())
    }
}

/// A sealed record to open: its place in the body, its length and where its bytes are.
struct Sealed<'b> {
    seq: u64,
    nonce: [u8; 12],
    len: usize,
    bytes: Bytes<'b>,
}

enum Bytes<'b> {
    /// In this crate's memory (handed to WebCrypto as a view of it).
    Wasm(&'b [u8]),
    /// A view of a JavaScript buffer.
    Js(Uint8Array),
}

impl<'b> Sealed<'b> {
    /// The records of a batch of bytes in this crate's memory.
    fn batch(batch: &'b Batch<'_>) -> Vec<Self> {
        batch
            .records()
            .map(|record| Sealed {
                seq: record.seq,
                nonce: record.nonce,
                len: record.bytes.len(),
                bytes: Bytes::Wasm(record.bytes),
            })
            .collect()
    }
}

/// Bytes of a padded plaintext read to find its delimiter: a record's content is followed by
/// its delimiter and (rarely) zeros, so its last bytes nearly always suffice. (The vector
/// `ok_padding_and_keyid`, with 27 bytes of padding, takes the other way too.)
const TAIL_LEN: u32 = 16;

/// The end of the padded plaintext in `buffer` that [`RecordReader::accept_tail`] needs: its
/// last [`TAIL_LEN`] bytes, or all of it when those are zeros (padding longer than that).
fn padded_tail(buffer: &ArrayBuffer) -> Vec<u8> {
    let len = buffer.byte_length();
    let short = len.min(TAIL_LEN);
    let tail = Uint8Array::new_with_byte_offset_and_length(buffer, len - short, short).to_vec();
    if tail.iter().all(|&byte| byte == 0) && short < len {
        return Uint8Array::new(buffer).to_vec();
    }
    tail
}

/// The plaintext of one push, assembled in one JavaScript buffer allocated once.
struct Output {
    buffer: Uint8Array,
    written: u32,
}

impl Output {
    /// An output of at most `capacity` bytes.
    fn new(capacity: u32) -> Self {
        Self {
            buffer: Uint8Array::new_with_length(capacity),
            written: 0,
        }
    }

    /// Appends the first `len` bytes of `opened` (a record's content).
    fn append(&mut self, opened: &ArrayBuffer, len: usize) -> Result<(), Error> {
        let len = u32::try_from(len).map_err(|_| Error::Decrypt)?;
        let end = self.written.checked_add(len).ok_or(Error::Decrypt)?;
        if end > self.buffer.length() || len > opened.byte_length() {
            return Err(Error::Decrypt);
        }
        let content = Uint8Array::new_with_byte_offset_and_length(opened, 0, len);
        self.buffer.set(&content, self.written);
        self.written = end;
        Ok(())
    }

    /// The bytes written.
    fn into_buffer(self) -> Uint8Array {
        self.buffer.subarray(0, self.written)
    }
}

impl fmt::Debug for WebCryptoDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebCryptoDecryptor")
            .field("state", &self.reader.state())
            .finish_non_exhaustive()
    }
}
