//! RFC 8188 `aes128gcm` bodies with RustCrypto's AES-128-GCM: the part-oriented
//! [`Encryptor`], the streaming [`Decryptor`] and the random-access [`RecordAccess`].
//!
//! The format's rules (header, key schedule, record splitting, sequence numbers, nonces,
//! delimiters, order rules) live in [`crate::framing`], shared with the WebCrypto engine; this
//! module only adds the cipher. Its sealing loop ([`seal_records`]), streaming opener
//! ([`StreamOpener`]) and random-access opener ([`RecordOpener`]) are generic over the
//! [`Cipher`], so that the `native-ring` engine reuses them as they are.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::framing::{
    self, Batch, BodyKeys, NonceBase, PartPlan, RecordMap, RecordReader, SealedRecord,
};
use crate::layout::{
    HEADER_SIZE, MAX_RECORD_SIZE, MIN_RECORD_SIZE, RECORD_SIZE, plaintext_per_part_for,
};
use crate::primitives::{Aead, Cipher, TAG_LEN, random_array};
use crate::{ContentKey, Error};

/// The keys of one body and the cipher keyed with its CEK.
struct RecordKeys {
    aead: Aead,
    body: BodyKeys,
}

/// Encrypts one body, part by part, in any order.
///
/// Record `j` of part `n` is sealed with sequence number `n * RECORDS_PER_PART + j`, so parts
/// are independent: they may be encrypted in any order, in parallel (the type is `Send + Sync`
/// and cheap to clone), or again after a failed upload, always producing the same bytes.
/// Concatenating the parts in order gives exactly [`Encryptor::encrypt_body`] of the whole
/// plaintext.
///
/// Never encrypt two different plaintexts for the same part with one `Encryptor`: that reuses
/// AES-GCM nonces. A fresh [`Encryptor::new`] per file (fresh salt, fresh keys) rules it out.
#[derive(Clone)]
pub struct Encryptor {
    keys: Arc<RecordKeys>,
    salt: [u8; 16],
    rs: u32,
}

impl Encryptor {
    /// An encryptor with a fresh random salt and `rs = RECORD_SIZE`.
    ///
    /// # Panics
    ///
    /// Panics if the platform has no random source.
    pub fn new(key: &impl AsRef<ContentKey>) -> Self {
        Self::build(key.as_ref(), random_array(), RECORD_SIZE)
    }

    /// An encryptor with a chosen salt and record size, for reproducible test vectors.
    /// `rs` must lie in `18..=16 MiB`. Never reuse a salt with the same key for real data.
    pub fn with_salt_and_rs(
        key: &impl AsRef<ContentKey>,
        salt: [u8; 16],
        rs: u32,
    ) -> Result<Self, Error> {
        if !(MIN_RECORD_SIZE..=MAX_RECORD_SIZE).contains(&rs) {
            return Err(Error::InvalidRecordSize);
        }
        Ok(Self::build(key.as_ref(), salt, rs))
    }

    fn build(key: &ContentKey, salt: [u8; 16], rs: u32) -> Self {
        let body = BodyKeys::derive(key, &salt);
        let aead = Aead::new(body.expose_cek());
        Self {
            keys: Arc::new(RecordKeys { aead, body }),
            salt,
            rs,
        }
    }

    /// The body's salt (public: it is the first 16 bytes of the body).
    pub fn salt(&self) -> &[u8; 16] {
        &self.salt
    }

    /// The record size `rs`.
    pub fn record_size(&self) -> u32 {
        self.rs
    }

    /// The 21-byte header `salt || rs || 0x00` that starts part 0.
    pub fn header(&self) -> [u8; HEADER_SIZE] {
        framing::header(&self.salt, self.rs)
    }

    /// Plaintext bytes in a full part: `RECORDS_PER_PART * (rs - 17)`.
    pub fn plaintext_per_part(&self) -> u64 {
        plaintext_per_part_for(self.rs)
    }

    /// Encrypts part `index` of the body.
    ///
    /// `plaintext` must be exactly [`Encryptor::plaintext_per_part`] bytes unless `is_last`,
    /// in which case it may be shorter but not empty (only a lone part 0 may be empty: the
    /// empty file). Part 0's output starts with the header. Fails with [`Error::InvalidPart`]
    /// otherwise, or if `index` is so large that the record counter would overflow.
    pub fn encrypt_part(
        &self,
        index: u64,
        plaintext: &[u8],
        is_last: bool,
    ) -> Result<Vec<u8>, Error> {
        let plan = self.plan_part(index, plaintext.len(), is_last)?;
        Ok(seal_records(
            &self.keys.aead,
            self.nonces(),
            &plan,
            plaintext,
        ))
    }

    /// Encrypts a whole plaintext into one body (header and every record).
    pub fn encrypt_body(&self, plaintext: &[u8]) -> Vec<u8> {
        seal_records(
            &self.keys.aead,
            self.nonces(),
            &self.plan_body(plaintext.len()),
            plaintext,
        )
    }

    /// The records of part `index`, after the length and index checks of
    /// [`Encryptor::encrypt_part`].
    pub(crate) fn plan_part(
        &self,
        index: u64,
        plaintext_len: usize,
        is_last: bool,
    ) -> Result<PartPlan, Error> {
        PartPlan::part(&self.salt, self.rs, index, plaintext_len, is_last)
    }

    /// The records of a whole body of `plaintext_len` bytes.
    pub(crate) fn plan_body(&self, plaintext_len: usize) -> PartPlan {
        PartPlan::body(&self.salt, self.rs, plaintext_len)
    }

    /// The body's nonce base, for sealing its records (with this or another engine).
    pub(crate) fn nonces(&self) -> &NonceBase {
        self.keys.body.nonces()
    }

    /// The raw content-encryption key, only to key another AES-GCM engine with it (the
    /// browser's WebCrypto, or ring). Whoever holds it can read the whole body: never log,
    /// store or send it.
    #[cfg(any(
        all(feature = "webcrypto", target_arch = "wasm32"),
        all(feature = "native-ring", not(target_arch = "wasm32"))
    ))]
    pub(crate) fn expose_cek(&self) -> &[u8; 16] {
        self.keys.body.expose_cek()
    }
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("rs", &self.rs)
            .finish_non_exhaustive()
    }
}

/// Seals the planned records with `cipher`: the header (part 0 only), then
/// `AES-128-GCM[CEK, nonce](chunk || delimiter) || tag` for each record, in order.
pub(crate) fn seal_records<C: Cipher>(
    cipher: &C,
    nonces: &NonceBase,
    plan: &PartPlan,
    plaintext: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(plan.output_len().unwrap_or(0));
    if let Some(header) = plan.header() {
        out.extend_from_slice(header);
    }
    for record in plan.records(nonces) {
        let start = out.len();
        let sealed = record.sealed_range();
        debug_assert_eq!(start, sealed.start);
        out.extend_from_slice(&plaintext[record.chunk]);
        out.push(record.delimiter);
        let tag = cipher.seal_in_place(&record.nonce, b"", &mut out[start..]);
        out.extend_from_slice(&tag);
        debug_assert_eq!(out.len(), sealed.end);
    }
    out
}

/// Encrypts a whole plaintext with a fresh random salt and `rs = RECORD_SIZE`.
///
/// # Panics
///
/// Panics if the platform has no random source.
pub fn encrypt(key: &impl AsRef<ContentKey>, plaintext: &[u8]) -> Vec<u8> {
    Encryptor::new(key).encrypt_body(plaintext)
}

/// Decrypts a whole body: [`Decryptor::push`] everything, then [`Decryptor::finish`].
pub fn decrypt(key: &impl AsRef<ContentKey>, body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut decryptor = Decryptor::new(key);
    let mut plaintext = decryptor.push(body)?;
    plaintext.extend_from_slice(&decryptor.finish()?);
    Ok(plaintext)
}

/// Decrypts an RFC 8188 `aes128gcm` body fed in chunks of any size.
///
/// Accepts any record size in `18..=16 MiB`, any keyid (ignored: the caller chooses the key)
/// and RFC 8188 padding. [`Decryptor::push`] returns the plaintext of every record it could
/// complete; a record shorter than `rs` can only be the last one, so the decryptor cannot know
/// it is complete until told the input has ended, and [`Decryptor::finish`] returns it.
///
/// **Calling [`Decryptor::finish`] is mandatory.** Until it returns `Ok`, nothing proves the
/// stream was not truncated: plaintext already returned by `push` is authentic but may be
/// incomplete. Any failure is reported as [`Error::Decrypt`] and poisons the decryptor: every
/// later call fails too.
pub struct Decryptor(StreamOpener<Aead>);

impl Decryptor {
    /// A decryptor for a body encrypted under `key` (a [`ContentKey`] or the
    /// [`crate::FileKeys`] holding one).
    pub fn new(key: &impl AsRef<ContentKey>) -> Self {
        Self(StreamOpener::new(key.as_ref()))
    }

    /// Feeds the next bytes of the body and returns the plaintext of every record completed
    /// by them (possibly none). See the type's documentation for why the last record waits
    /// for [`Decryptor::finish`].
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.push(input)
    }

    /// Ends the stream: opens the buffered final record, if any, and returns its plaintext.
    ///
    /// Fails unless the header was complete, exactly one final (0x02) record was seen and
    /// nothing follows it. Mandatory: see the type's documentation.
    #[must_use = "finish() returns the final record's plaintext and reports truncation"]
    pub fn finish(self) -> Result<Vec<u8>, Error> {
        self.0.finish()
    }

    /// Resumes a body part-way: after the header (pushed, and nothing more), the next bytes
    /// pushed are taken as record `record` onwards. For handing a long decryption over to a
    /// fresh decryptor at a record boundary; the records skipped must have been decrypted
    /// and checked by another. Later records are still bound to their places by their nonces,
    /// and [`Decryptor::finish`] still proves the end. Fails with [`Error::Decrypt`], and
    /// poisons the decryptor, unless the header is complete and nothing follows it yet.
    pub fn skip_to(&mut self, record: u64) -> Result<(), Error> {
        self.0.skip_to(record)
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor")
            .field("state", &self.0.state())
            .finish_non_exhaustive()
    }
}

/// The streaming decryption behind [`Decryptor`], for any synchronous [`Cipher`]: the
/// [`RecordReader`] splits and checks, the cipher opens.
pub(crate) struct StreamOpener<C> {
    /// Header, record splitting and order rules.
    reader: RecordReader,
    /// Keyed once the header is known. Boxed: a key schedule can be large, and boxing keeps
    /// it from being copied around.
    cipher: Option<Box<C>>,
}

impl<C: Cipher> StreamOpener<C> {
    pub(crate) fn new(key: &ContentKey) -> Self {
        Self {
            reader: RecordReader::new(key.clone()),
            cipher: None,
        }
    }

    /// See [`Decryptor::push`].
    pub(crate) fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let result = self.push_inner(input);
        if result.is_err() {
            self.fail();
        }
        result
    }

    fn push_inner(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut batch = self.reader.push(input)?;
        if let Some(cek) = batch.take_cek() {
            self.cipher = Some(Box::new(C::new(&cek)));
        }
        self.open(&batch)
    }

    /// Opens the batch's records in order and returns their content.
    fn open(&mut self, batch: &Batch<'_>) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(batch.sealed_len());
        if batch.is_empty() {
            return Ok(out);
        }
        let cipher = self.cipher.as_deref().ok_or(Error::Decrypt)?;
        for record in batch.records() {
            open_record(cipher, &record, &mut out, |padded| {
                self.reader.accept(&record, padded)
            })?;
        }
        Ok(out)
    }

    fn fail(&mut self) {
        self.reader.fail();
        self.cipher = None;
    }

    /// See [`Decryptor::skip_to`].
    pub(crate) fn skip_to(&mut self, record: u64) -> Result<(), Error> {
        let result = self.reader.skip_to(record);
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// See [`Decryptor::finish`].
    pub(crate) fn finish(mut self) -> Result<Vec<u8>, Error> {
        let batch = self.reader.end()?;
        let out = self.open(&batch)?;
        self.reader.check_complete()?;
        Ok(out)
    }

    /// Where the stream is: `header`, `records`, `ended` or `failed`.
    pub(crate) fn state(&self) -> &'static str {
        self.reader.state()
    }
}

/// Opens `record` onto the end of `out`, lets `accept` check its padded plaintext and keeps
/// only the content length it returns.
fn open_record<C: Cipher>(
    cipher: &C,
    record: &SealedRecord<'_>,
    out: &mut Vec<u8>,
    accept: impl FnOnce(&[u8]) -> Result<usize, Error>,
) -> Result<(), Error> {
    let tag_at = record
        .bytes
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(Error::Decrypt)?;
    let (ciphertext, tag) = record.bytes.split_at(tag_at);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Decrypt)?;
    let start = out.len();
    out.extend_from_slice(ciphertext);
    cipher.open_in_place(&record.nonce, b"", &mut out[start..], tag)?;
    let content_len = accept(&out[start..])?;
    out.truncate(start + content_len);
    Ok(())
}

/// Random access to the records of one body whose total length is known: seeking, e.g. to
/// answer an HTTP Range request for audio or video by fetching and opening only the records
/// that cover it.
///
/// Record `i` (from 0) holds plaintext bytes `[i * chunk_len, (i + 1) * chunk_len)` and lies at
/// [`RecordAccess::body_range`]`(i, i)` in the body. That mapping needs records without
/// padding: [`RecordAccess::open`] rejects a record before the last whose content is not
/// exactly `rs - 17` bytes, so a body with padding in a non-final record (which BitStratus never
/// writes, but [`Decryptor`] accepts) cannot be seeked. It enforces the rules of
/// [`Decryptor`] by position: a record before the last is exactly `rs` bytes with delimiter
/// `0x01`; the record at index `record_count() - 1` carries `0x02`. Every record is bound to its
/// index by its nonce. Trust in `body_size` matters: it decides which index is the last, so a
/// wrong size makes the final record's check fail rather than return wrong plaintext.
pub struct RecordAccess(RecordOpener<Aead>);

impl RecordAccess {
    /// Random access to a body encrypted under `key`, from `header` (at least its header bytes,
    /// `21 + idlen`; more is ignored) and `body_size`, its total length in bytes.
    ///
    /// Fails with [`Error::Decrypt`] on a short header, an `rs` outside `18..=16 MiB`, or a
    /// `body_size` no body with this header can have (at least one record, the last one
    /// `17..=rs` bytes).
    pub fn new(key: &impl AsRef<ContentKey>, header: &[u8], body_size: u64) -> Result<Self, Error> {
        RecordOpener::new(key.as_ref(), header, body_size).map(Self)
    }

    /// Length of the header, keyid included: `21 + idlen`.
    pub fn header_len(&self) -> u64 {
        self.0.header_len()
    }

    /// The record size `rs` from the header.
    pub fn record_size(&self) -> u32 {
        self.0.record_size()
    }

    /// Number of records in the body (at least 1).
    pub fn record_count(&self) -> u64 {
        self.0.record_count()
    }

    /// Plaintext bytes in every record but the last: `rs - 17`.
    pub fn chunk_len(&self) -> u64 {
        self.0.chunk_len()
    }

    /// The body bytes `[start, end)` of records `first..=last`, or `None` unless
    /// `first <= last < record_count()`.
    pub fn body_range(&self, first: u64, last: u64) -> Option<Range<u64>> {
        self.0.body_range(first, last)
    }

    /// Opens consecutive whole records starting at index `first` and returns their plaintext
    /// concatenated. `bytes` must be exactly records `first..=k` for some `k`, as located by
    /// [`RecordAccess::body_range`]. Fails with [`Error::Decrypt`] on any other length, any tag
    /// failure (tampering, records from another index or body) or any record breaking the rules
    /// of its position (see the type's documentation).
    pub fn open(&self, first: u64, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.open(first, bytes)
    }
}

impl fmt::Debug for RecordAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug_fields(&mut f.debug_struct("RecordAccess"))
    }
}

/// The random access behind [`RecordAccess`], for any synchronous [`Cipher`]: the
/// [`RecordMap`] locates and checks, the cipher opens.
pub(crate) struct RecordOpener<C> {
    map: RecordMap,
    cipher: C,
}

impl<C: Cipher> RecordOpener<C> {
    /// See [`RecordAccess::new`].
    pub(crate) fn new(key: &ContentKey, header: &[u8], body_size: u64) -> Result<Self, Error> {
        let (map, cek) = RecordMap::new(key, header, body_size)?;
        Ok(Self {
            map,
            cipher: C::new(&cek),
        })
    }

    pub(crate) fn header_len(&self) -> u64 {
        self.map.header_len()
    }

    pub(crate) fn record_size(&self) -> u32 {
        // RecordMap::new only accepts rs up to MAX_RECORD_SIZE.
        u32::try_from(self.map.record_size()).unwrap_or(MAX_RECORD_SIZE)
    }

    pub(crate) fn record_count(&self) -> u64 {
        self.map.record_count()
    }

    pub(crate) fn chunk_len(&self) -> u64 {
        self.map.chunk_len()
    }

    pub(crate) fn body_range(&self, first: u64, last: u64) -> Option<Range<u64>> {
        self.map.body_range(first, last)
    }

    /// See [`RecordAccess::open`].
    pub(crate) fn open(&self, first: u64, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(bytes.len());
        for record in self.map.records(first, bytes)? {
            open_record(&self.cipher, &record, &mut out, |padded| {
                self.map.accept(&record, padded)
            })?;
        }
        Ok(out)
    }

    /// The public fields of a `Debug` representation (never a key).
    pub(crate) fn debug_fields(&self, f: &mut fmt::DebugStruct<'_, '_>) -> fmt::Result {
        f.field("header_len", &self.header_len())
            .field("rs", &self.record_size())
            .field("record_count", &self.record_count())
            .finish_non_exhaustive()
    }
}
