//! RFC 8188 `aes128gcm` bodies: the header, per-body record keys, the part-oriented
//! [`Encryptor`] and the streaming [`Decryptor`].

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroize;

use crate::layout::{
    HEADER_SIZE, MAX_RECORD_SIZE, MIN_RECORD_SIZE, RECORD_OVERHEAD, RECORD_SIZE, RECORDS_PER_PART,
    body_size_for, plaintext_per_part_for, record_plaintext,
};
use crate::primitives::{Aead, Prk, TAG_LEN, random_array};
use crate::{ContentKey, Error};

/// HKDF label of the content-encryption key (RFC 8188 section 2.2). Frozen.
const CEK_INFO: &[u8] = b"Content-Encoding: aes128gcm\0";
/// HKDF label of the nonce base (RFC 8188 section 2.3). Frozen.
const NONCE_INFO: &[u8] = b"Content-Encoding: nonce\0";
/// Delimiter of every record but the last.
const DELIMITER_RECORD: u8 = 0x01;
/// Delimiter of the last record.
const DELIMITER_FINAL: u8 = 0x02;

/// The keys of one body, fixed by its IKM and salt:
///
/// ```text
/// PRK   = HKDF-SHA256-Extract[salt](IKM)
/// CEK   = HKDF-SHA256-Expand[PRK, "Content-Encoding: aes128gcm\0"](16)
/// NONCE = HKDF-SHA256-Expand[PRK, "Content-Encoding: nonce\0"](12)
/// ```
struct RecordKeys {
    aead: Aead,
    nonce_base: [u8; 12],
}

impl Drop for RecordKeys {
    fn drop(&mut self) {
        self.nonce_base.zeroize();
    }
}

impl RecordKeys {
    fn derive(key: &ContentKey, salt: &[u8; 16]) -> Self {
        let prk = Prk::extract(salt, key.expose_ikm());
        Self {
            aead: Aead::new(&prk.expand::<16>(CEK_INFO)),
            nonce_base: *prk.expand::<12>(NONCE_INFO),
        }
    }

    /// `NONCE XOR seq`, with `seq` as a 96-bit big-endian integer.
    fn nonce(&self, seq: u64) -> [u8; 12] {
        let mut nonce = self.nonce_base;
        for (byte, counter) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *byte ^= counter;
        }
        nonce
    }

    /// Appends `AES-128-GCM[CEK, NONCE XOR seq](chunk || delimiter) || tag` to `out`.
    fn seal(&self, seq: u64, chunk: &[u8], delimiter: u8, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(chunk);
        out.push(delimiter);
        let tag = self
            .aead
            .seal_in_place(&self.nonce(seq), b"", &mut out[start..]);
        out.extend_from_slice(&tag);
    }

    /// Authenticates and decrypts one record, appends its content (delimiter and padding
    /// removed) to `out` and returns its delimiter.
    fn open(&self, seq: u64, record: &[u8], out: &mut Vec<u8>) -> Result<u8, Error> {
        if record.len() < RECORD_OVERHEAD as usize {
            return Err(Error::Decrypt);
        }
        let (ciphertext, tag) = record.split_at(record.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| Error::Decrypt)?;
        let start = out.len();
        out.extend_from_slice(ciphertext);
        if let Err(err) = self
            .aead
            .open_in_place(&self.nonce(seq), b"", &mut out[start..], tag)
        {
            out.truncate(start);
            return Err(err);
        }
        // RFC 8188 padding is zero bytes after the delimiter; the delimiter is the last
        // non-zero byte, and a record without one is invalid.
        let delimiter_at = out[start..].iter().rposition(|&byte| byte != 0);
        let Some(delimiter_at) = delimiter_at else {
            out.truncate(start);
            return Err(Error::Decrypt);
        };
        let delimiter = out[start + delimiter_at];
        out.truncate(start + delimiter_at);
        match delimiter {
            DELIMITER_RECORD | DELIMITER_FINAL => Ok(delimiter),
            _ => Err(Error::Decrypt),
        }
    }
}

/// `salt (16) || rs (u32 big-endian) || idlen (0)`.
fn header(salt: &[u8; 16], rs: u32) -> [u8; HEADER_SIZE] {
    let mut header = [0u8; HEADER_SIZE];
    header[..16].copy_from_slice(salt);
    header[16..20].copy_from_slice(&rs.to_be_bytes());
    header
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
        Self {
            keys: Arc::new(RecordKeys::derive(key, &salt)),
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
        header(&self.salt, self.rs)
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
        let per_part = self.plaintext_per_part();
        let len = plaintext.len() as u64;
        let length_ok = if is_last {
            len <= per_part && (len > 0 || index == 0)
        } else {
            len == per_part
        };
        let first_seq = index.checked_mul(u64::from(RECORDS_PER_PART));
        let seq_ok = first_seq.and_then(|seq| seq.checked_add(u64::from(RECORDS_PER_PART)));
        let (true, Some(first_seq), Some(_)) = (length_ok, first_seq, seq_ok) else {
            return Err(Error::InvalidPart);
        };
        let mut out = Vec::with_capacity(self.part_capacity(len, index == 0));
        if index == 0 {
            out.extend_from_slice(&self.header());
        }
        self.seal_records(first_seq, plaintext, is_last, &mut out);
        Ok(out)
    }

    /// Encrypts a whole plaintext into one body (header and every record).
    pub fn encrypt_body(&self, plaintext: &[u8]) -> Vec<u8> {
        let capacity = body_size_for(plaintext.len() as u64, self.rs);
        let mut out = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        out.extend_from_slice(&self.header());
        self.seal_records(0, plaintext, true, &mut out);
        out
    }

    /// Output length of a part, used only to size its buffer.
    fn part_capacity(&self, plaintext_len: u64, with_header: bool) -> usize {
        let records = plaintext_len.div_ceil(record_plaintext(self.rs)).max(1);
        let header = if with_header { HEADER_SIZE as u64 } else { 0 };
        let len = plaintext_len + records * u64::from(RECORD_OVERHEAD) + header;
        usize::try_from(len).unwrap_or(0)
    }

    /// Seals `plaintext` as consecutive records starting at `first_seq`, the last of them
    /// with the final delimiter if `is_last`. No padding is written.
    fn seal_records(&self, first_seq: u64, plaintext: &[u8], is_last: bool, out: &mut Vec<u8>) {
        let chunk_len = (self.rs - RECORD_OVERHEAD) as usize;
        if plaintext.is_empty() {
            self.keys.seal(first_seq, &[], DELIMITER_FINAL, out);
            return;
        }
        let count = plaintext.len().div_ceil(chunk_len);
        for (j, chunk) in plaintext.chunks(chunk_len).enumerate() {
            let delimiter = if is_last && j + 1 == count {
                DELIMITER_FINAL
            } else {
                DELIMITER_RECORD
            };
            self.keys.seal(first_seq + j as u64, chunk, delimiter, out);
        }
    }
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("rs", &self.rs)
            .finish_non_exhaustive()
    }
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
pub struct Decryptor {
    state: State,
    /// Header bytes, or the start of a record, carried over between pushes. Never more than
    /// `rs - 1` bytes (or 21 + 255 for a header).
    buf: Vec<u8>,
}

/// Where a [`Decryptor`] is in the body.
enum State {
    /// Collecting the header; the key is kept only until the salt is known.
    Header(ContentKey),
    /// Boxed: the key schedule is large, and boxing keeps it from being copied around.
    Body(Box<Body>),
    /// A failure was reported; every later call fails too.
    Failed,
}

/// Position within the records of a body.
struct Body {
    keys: RecordKeys,
    rs: usize,
    seq: u64,
    /// Whether the final (0x02) record has been opened; nothing may follow it.
    ended: bool,
}

impl Body {
    /// Opens the next record, enforcing the order rules: nothing after the final record, and
    /// a record shorter than `rs` must be the final one.
    fn open_next(&mut self, record: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        if self.ended {
            return Err(Error::Decrypt);
        }
        let delimiter = self.keys.open(self.seq, record, out)?;
        if delimiter == DELIMITER_RECORD && record.len() != self.rs {
            return Err(Error::Decrypt);
        }
        self.ended = delimiter == DELIMITER_FINAL;
        self.seq = self.seq.checked_add(1).ok_or(Error::Decrypt)?;
        Ok(())
    }
}

impl Decryptor {
    /// A decryptor for a body encrypted under `key` (a [`ContentKey`] or the
    /// [`crate::FileKeys`] holding one).
    pub fn new(key: &impl AsRef<ContentKey>) -> Self {
        Self {
            state: State::Header(key.as_ref().clone()),
            buf: Vec::new(),
        }
    }

    /// Feeds the next bytes of the body and returns the plaintext of every record completed
    /// by them (possibly none). See the type's documentation for why the last record waits
    /// for [`Decryptor::finish`].
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        let result = self.push_inner(input);
        if result.is_err() {
            self.state = State::Failed;
            self.buf = Vec::new();
        }
        result
    }

    fn push_inner(&mut self, mut input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        if let State::Header(key) = &self.state {
            let Some((salt, rs)) = take_header(&mut self.buf, &mut input)? else {
                return Ok(out);
            };
            self.state = State::Body(Box::new(Body {
                keys: RecordKeys::derive(key, &salt),
                rs,
                seq: 0,
                ended: false,
            }));
            self.buf.clear();
        }
        let State::Body(body) = &mut self.state else {
            return Err(Error::Decrypt);
        };
        let rs = body.rs;
        // First complete a record begun by an earlier push.
        if !self.buf.is_empty() {
            let take = (rs - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() < rs {
                return Ok(out);
            }
            body.open_next(&self.buf, &mut out)?;
            self.buf.clear();
        }
        // Then whole records straight from the input, without another copy.
        out.reserve(input.len());
        while input.len() >= rs {
            let (record, rest) = input.split_at(rs);
            body.open_next(record, &mut out)?;
            input = rest;
        }
        // Keep the start of the next record, unless the body has already ended.
        if !input.is_empty() {
            if body.ended {
                return Err(Error::Decrypt);
            }
            self.buf.extend_from_slice(input);
        }
        Ok(out)
    }

    /// Ends the stream: opens the buffered final record, if any, and returns its plaintext.
    ///
    /// Fails unless the header was complete, exactly one final (0x02) record was seen and
    /// nothing follows it. Mandatory: see the type's documentation.
    #[must_use = "finish() returns the final record's plaintext and reports truncation"]
    pub fn finish(mut self) -> Result<Vec<u8>, Error> {
        let State::Body(body) = &mut self.state else {
            return Err(Error::Decrypt);
        };
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            // Shorter than rs, so open_next requires the final delimiter.
            body.open_next(&self.buf, &mut out)?;
        }
        if body.ended {
            Ok(out)
        } else {
            Err(Error::Decrypt)
        }
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Header(_) => "header",
            State::Body(body) if body.ended => "ended",
            State::Body(_) => "records",
            State::Failed => "failed",
        };
        f.debug_struct("Decryptor")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Moves header bytes from `input` into `buf` and returns `(salt, rs)` once the whole header,
/// keyid included, is there. An out-of-range `rs` is rejected as soon as it is known.
fn take_header(buf: &mut Vec<u8>, input: &mut &[u8]) -> Result<Option<([u8; 16], usize)>, Error> {
    let mut take_until = |buf: &mut Vec<u8>, len: usize| {
        let take = len.saturating_sub(buf.len()).min(input.len());
        buf.extend_from_slice(&input[..take]);
        *input = &input[take..];
        buf.len() >= len
    };
    if !take_until(buf, HEADER_SIZE) {
        return Ok(None);
    }
    let rs = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if !(MIN_RECORD_SIZE..=MAX_RECORD_SIZE).contains(&rs) {
        return Err(Error::Decrypt);
    }
    let idlen = usize::from(buf[20]);
    if !take_until(buf, HEADER_SIZE + idlen) {
        return Ok(None);
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&buf[..16]);
    Ok(Some((salt, rs as usize)))
}
