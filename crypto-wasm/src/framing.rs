//! The rules of an RFC 8188 `aes128gcm` body that do not involve the cipher: the header, the
//! per-body key schedule (CEK and nonce base), record splitting, sequence numbers and nonces,
//! the delimiter and padding, and the order rules (final record, short non-final record,
//! trailing data, mandatory end).
//!
//! This is the crate's one implementation of those rules. Three AEAD engines are built on it
//! and therefore produce and accept exactly the same bytes: RustCrypto's AES-128-GCM in
//! [`crate::ece`] (the synchronous [`crate::Encryptor`], [`crate::Decryptor`] and
//! [`crate::RecordAccess`]), ring's AES-128-GCM in `crate::ring` (feature `native-ring`, which
//! reuses `ece`'s sealing loop and openers with another cipher) and the browser's WebCrypto in
//! `crate::webcrypto` (feature `webcrypto`).
//!
//! - Encrypting: a [`PartPlan`] lists, for every record of a part (or of a whole body), its
//!   sequence number, nonce, plaintext range, delimiter and place in the output. The engine
//!   seals `plaintext[chunk] || delimiter` under the nonce and writes it there.
//! - Decrypting: a [`RecordReader`] turns the pushed bytes into sealed records
//!   `(seq, nonce, bytes)` ([`Batch`]); the engine opens each one, in any order or all at once,
//!   and hands its padded plaintext back, in order, to [`RecordReader::accept`], which checks
//!   the delimiter and the order rules and says how much of it is content. An engine that
//!   holds the bytes elsewhere (WebCrypto, in JavaScript buffers) pushes only the bytes up to
//!   a record boundary (`RecordReader::to_boundary`), takes whole records as ranges of its
//!   own bytes (`RecordReader::push_whole`) and hands back each record's length and last
//!   bytes (`RecordReader::accept_tail`), under the same rules.
//! - Random access (seeking): a [`RecordMap`], built from the header and the body's total
//!   length, locates records by index and turns whole records into [`SealedRecord`]s; the
//!   engine opens them and hands each back to [`RecordMap::accept`], which checks the delimiter
//!   and padding rules of the record's position.

use std::ops::Range;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::layout::{
    HEADER_SIZE, MAX_RECORD_SIZE, MIN_RECORD_SIZE, RECORD_OVERHEAD, RECORDS_PER_PART,
    plaintext_per_part_for,
};
use crate::primitives::{Prk, TAG_LEN};
use crate::{ContentKey, Error};

/// HKDF label of the content-encryption key (RFC 8188 section 2.2). Frozen.
const CEK_INFO: &[u8] = b"Content-Encoding: aes128gcm\0";
/// HKDF label of the nonce base (RFC 8188 section 2.3). Frozen.
const NONCE_INFO: &[u8] = b"Content-Encoding: nonce\0";
/// Delimiter of every record but the last.
const DELIMITER_RECORD: u8 = 0x01;
/// Delimiter of the last record.
const DELIMITER_FINAL: u8 = 0x02;

/// The AES-128-GCM key of every record of one body.
pub(crate) type Cek = Zeroizing<[u8; 16]>;

/// The keys of one body, fixed by its IKM and salt:
///
/// ```text
/// PRK   = HKDF-SHA256-Extract[salt](IKM)
/// CEK   = HKDF-SHA256-Expand[PRK, "Content-Encoding: aes128gcm\0"](16)
/// NONCE = HKDF-SHA256-Expand[PRK, "Content-Encoding: nonce\0"](12)
/// ```
pub(crate) struct BodyKeys {
    cek: Cek,
    nonces: NonceBase,
}

impl BodyKeys {
    pub(crate) fn derive(key: &ContentKey, salt: &[u8; 16]) -> Self {
        let prk = Prk::extract(salt, key.expose_ikm());
        Self {
            cek: prk.expand::<16>(CEK_INFO),
            nonces: NonceBase(*prk.expand::<12>(NONCE_INFO)),
        }
    }

    /// The raw CEK, to key an AEAD engine with. Whoever holds it can read the body.
    pub(crate) fn expose_cek(&self) -> &[u8; 16] {
        &self.cek
    }

    pub(crate) fn nonces(&self) -> &NonceBase {
        &self.nonces
    }
}

/// `NONCE`, the base from which every record's nonce is derived. Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct NonceBase([u8; 12]);

impl NonceBase {
    /// `NONCE XOR seq`, with `seq` as a 96-bit big-endian integer.
    pub(crate) fn nonce(&self, seq: u64) -> [u8; 12] {
        let mut nonce = self.0;
        for (byte, counter) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *byte ^= counter;
        }
        nonce
    }
}

/// `salt (16) || rs (u32 big-endian) || idlen (0)`.
pub(crate) fn header(salt: &[u8; 16], rs: u32) -> [u8; HEADER_SIZE] {
    let mut header = [0u8; HEADER_SIZE];
    header[..16].copy_from_slice(salt);
    header[16..20].copy_from_slice(&rs.to_be_bytes());
    header
}

// ---------------------------------------------------------------------------------------------
// Encryption
// ---------------------------------------------------------------------------------------------

/// The records of one part (or of a whole body) and where they go. Never pads.
#[derive(Debug)]
pub(crate) struct PartPlan {
    header: Option<[u8; HEADER_SIZE]>,
    first_seq: u64,
    plaintext_len: usize,
    rs: usize,
    is_last: bool,
}

/// One record to seal: `AES-128-GCM[CEK, nonce](plaintext[chunk] || delimiter)`, with
/// `nonce = NONCE XOR seq`, goes to `output[offset..offset + chunk.len() + 17]`.
#[derive(Debug)]
pub(crate) struct SealRecord {
    pub(crate) nonce: [u8; 12],
    pub(crate) chunk: Range<usize>,
    pub(crate) delimiter: u8,
    pub(crate) offset: usize,
}

impl SealRecord {
    /// Where the sealed record (ciphertext and tag) goes in the output.
    pub(crate) fn sealed_range(&self) -> Range<usize> {
        self.offset..self.offset + self.chunk.len() + RECORD_OVERHEAD as usize
    }
}

impl PartPlan {
    /// Part `index` of the body with this salt and `rs` (already validated), holding
    /// `plaintext_len` bytes.
    ///
    /// The plaintext must be exactly `RECORDS_PER_PART * (rs - 17)` bytes unless `is_last`, in
    /// which case it may be shorter but not empty (only a lone part 0 may be empty: the empty
    /// file). Fails with [`Error::InvalidPart`] otherwise, or if `index` is so large that the
    /// record counter would overflow.
    pub(crate) fn part(
        salt: &[u8; 16],
        rs: u32,
        index: u64,
        plaintext_len: usize,
        is_last: bool,
    ) -> Result<Self, Error> {
        let per_part = plaintext_per_part_for(rs);
        let len = plaintext_len as u64;
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
        Ok(Self {
            header: (index == 0).then(|| header(salt, rs)),
            first_seq,
            plaintext_len,
            rs: rs as usize,
            is_last,
        })
    }

    /// A whole body: the header and every record, the last one final.
    pub(crate) fn body(salt: &[u8; 16], rs: u32, plaintext_len: usize) -> Self {
        Self {
            header: Some(header(salt, rs)),
            first_seq: 0,
            plaintext_len,
            rs: rs as usize,
            is_last: true,
        }
    }

    /// The header that starts the output (part 0 only).
    pub(crate) fn header(&self) -> Option<&[u8; HEADER_SIZE]> {
        self.header.as_ref()
    }

    fn chunk_len(&self) -> usize {
        self.rs - RECORD_OVERHEAD as usize
    }

    fn header_len(&self) -> usize {
        if self.header.is_some() {
            HEADER_SIZE
        } else {
            0
        }
    }

    /// Records in the plan: at least one (an empty plaintext is one record of just `0x02`).
    fn record_count(&self) -> usize {
        self.plaintext_len.div_ceil(self.chunk_len()).max(1)
    }

    /// Length of the output, or `None` if it does not fit in memory.
    pub(crate) fn output_len(&self) -> Option<usize> {
        let overhead = self.record_count().checked_mul(RECORD_OVERHEAD as usize)?;
        self.plaintext_len
            .checked_add(overhead)?
            .checked_add(self.header_len())
    }

    /// Every record in order. Every one but the last holds a full `rs - 17`-byte chunk; the
    /// last is final (`0x02`) if the part is the body's last.
    pub(crate) fn records<'a>(
        &'a self,
        nonces: &'a NonceBase,
    ) -> impl Iterator<Item = SealRecord> + 'a {
        let count = self.record_count();
        let chunk_len = self.chunk_len();
        (0..count).map(move |j| {
            let seq = self.first_seq + j as u64;
            let start = j * chunk_len;
            let end = self.plaintext_len.min(start + chunk_len);
            let delimiter = if self.is_last && j + 1 == count {
                DELIMITER_FINAL
            } else {
                DELIMITER_RECORD
            };
            SealRecord {
                nonce: nonces.nonce(seq),
                chunk: start..end,
                delimiter,
                // Every earlier record is exactly rs bytes.
                offset: self.header_len().saturating_add(j.saturating_mul(self.rs)),
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Decryption
// ---------------------------------------------------------------------------------------------

/// Splits a body pushed in chunks of any size into sealed records and enforces the format's
/// rules on them, without ever touching the cipher.
///
/// Use: [`RecordReader::push`] each input chunk and open every record of the returned
/// [`Batch`] (keying the AEAD first with the CEK the batch carries when it completed the
/// header); give each opened record back to [`RecordReader::accept`] in order. At the end of
/// input, open the record returned by [`RecordReader::end`] likewise, then
/// [`RecordReader::check_complete`]. Every record handed out must be accepted before the next
/// push or the end: otherwise (an engine failure, a dropped future) those fail.
///
/// Every failure is [`Error::Decrypt`] and poisons the reader; an engine whose own step fails
/// (a tag that does not verify) calls [`RecordReader::fail`].
pub(crate) struct RecordReader {
    phase: Phase,
    /// Header bytes, or the start of a record, carried over between pushes. Never more than
    /// `rs - 1` bytes (or 21 + 255 for a header).
    buf: Vec<u8>,
}

enum Phase {
    /// Collecting the header; the key is kept only until the salt is known.
    Header(ContentKey),
    /// Reading records.
    Records(Position),
    /// A failure was reported; every later call fails too.
    Failed,
}

/// Position within the records of a body.
struct Position {
    rs: usize,
    nonces: NonceBase,
    /// Sequence number of the next record to hand out.
    issued: u64,
    /// Sequence number of the next record to accept; `accepted <= issued`.
    accepted: u64,
    /// Whether the final (0x02) record has been accepted; nothing may follow it.
    ended: bool,
}

/// The sealed records completed by one push (or by the end of input), in order.
pub(crate) struct Batch<'a> {
    /// The CEK, if this push completed the header.
    cek: Option<Cek>,
    nonces: Option<NonceBase>,
    first_seq: u64,
    rs: usize,
    /// A record completed from bytes carried over from earlier pushes (or the short last
    /// record, at the end); empty if none.
    carried: Vec<u8>,
    /// Whole records straight from the input: a multiple of `rs` bytes.
    whole: &'a [u8],
}

/// One sealed record: `AES-128-GCM[CEK, nonce](padded plaintext) = bytes`.
#[derive(Debug)]
pub(crate) struct SealedRecord<'b> {
    pub(crate) seq: u64,
    pub(crate) nonce: [u8; 12],
    pub(crate) bytes: &'b [u8],
}

impl Batch<'_> {
    fn empty() -> Self {
        Self {
            cek: None,
            nonces: None,
            first_seq: 0,
            rs: 0,
            carried: Vec::new(),
            whole: &[],
        }
    }

    /// The body's CEK, if this batch completed the header: key the AEAD with it before
    /// opening any record.
    pub(crate) fn take_cek(&mut self) -> Option<Cek> {
        self.cek.take()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.carried.is_empty() && self.whole.is_empty()
    }

    /// Total length of the sealed records, an upper bound on their plaintext.
    pub(crate) fn sealed_len(&self) -> usize {
        self.carried.len() + self.whole.len()
    }

    /// The records, in order.
    pub(crate) fn records(&self) -> impl Iterator<Item = SealedRecord<'_>> {
        let carried = (!self.carried.is_empty()).then_some(self.carried.as_slice());
        let whole = self.whole.chunks(self.rs.max(1));
        carried
            .into_iter()
            .chain(whole)
            .enumerate()
            .filter_map(|(i, bytes)| {
                let nonces = self.nonces.as_ref()?;
                let seq = self.first_seq + i as u64;
                Some(SealedRecord {
                    seq,
                    nonce: nonces.nonce(seq),
                    bytes,
                })
            })
    }
}

impl RecordReader {
    /// A reader for a body encrypted under `key`.
    pub(crate) fn new(key: ContentKey) -> Self {
        Self {
            phase: Phase::Header(key),
            buf: Vec::new(),
        }
    }

    /// Poisons the reader: every later call fails.
    pub(crate) fn fail(&mut self) {
        self.phase = Phase::Failed;
        self.buf = Vec::new();
    }

    /// Poisons the reader if `result` is a failure.
    fn poison_on_err<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// Where the reader is: `header`, `records`, `ended` or `failed`.
    pub(crate) fn state(&self) -> &'static str {
        match &self.phase {
            Phase::Header(_) => "header",
            Phase::Records(position) if position.ended => "ended",
            Phase::Records(_) => "records",
            Phase::Failed => "failed",
        }
    }

    /// Takes the next bytes of the body and returns the records they complete (possibly none).
    /// Fails on a header with `rs` out of range, or on any byte after the final record.
    pub(crate) fn push<'a>(&mut self, input: &'a [u8]) -> Result<Batch<'a>, Error> {
        let result = self.push_inner(input);
        self.poison_on_err(result)
    }

    fn push_inner<'a>(&mut self, mut input: &'a [u8]) -> Result<Batch<'a>, Error> {
        let mut cek = None;
        if let Phase::Header(key) = &self.phase {
            let Some((salt, rs)) = take_header(&mut self.buf, &mut input)? else {
                return Ok(Batch::empty());
            };
            let BodyKeys {
                cek: body_cek,
                nonces,
            } = BodyKeys::derive(key, &salt);
            self.phase = Phase::Records(Position {
                rs,
                nonces,
                issued: 0,
                accepted: 0,
                ended: false,
            });
            cek = Some(body_cek);
            self.buf.clear();
        }
        let position = ready_for(&mut self.phase, input.len())?;
        let rs = position.rs;
        let mut batch = Batch {
            cek,
            nonces: Some(position.nonces.clone()),
            first_seq: position.issued,
            rs,
            carried: Vec::new(),
            whole: &[],
        };
        // First complete a record begun by an earlier push.
        if !self.buf.is_empty() {
            let take = (rs - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() < rs {
                return Ok(batch);
            }
            batch.carried = std::mem::take(&mut self.buf);
        }
        // Then whole records straight from the input, without another copy; keep the start
        // of the next one.
        let (whole, rest) = input.split_at(input.len() - input.len() % rs);
        batch.whole = whole;
        self.buf.extend_from_slice(rest);
        let count = u64::from(!batch.carried.is_empty()) + (whole.len() / rs) as u64;
        position.issued = position.issued.checked_add(count).ok_or(Error::Decrypt)?;
        Ok(batch)
    }

    /// Takes the padded plaintext of `record`, opened by the engine, checks the delimiter and
    /// the order rules and returns the length of its content (the bytes before the
    /// delimiter). Records must be accepted in order.
    pub(crate) fn accept(
        &mut self,
        record: &SealedRecord<'_>,
        padded: &[u8],
    ) -> Result<usize, Error> {
        let result = self.accept_inner(record.seq, record.bytes.len(), padded.len(), padded);
        self.poison_on_err(result)
    }

    fn accept_inner(
        &mut self,
        seq: u64,
        sealed_len: usize,
        padded_len: usize,
        tail: &[u8],
    ) -> Result<usize, Error> {
        let Phase::Records(position) = &mut self.phase else {
            return Err(Error::Decrypt);
        };
        let in_order = seq == position.accepted && position.accepted < position.issued;
        if !in_order || position.ended || padded_len + TAG_LEN != sealed_len {
            return Err(Error::Decrypt);
        }
        let (content_len, delimiter) = check_record(padded_len, tail, sealed_len, position.rs)?;
        position.accepted += 1;
        if delimiter == DELIMITER_FINAL {
            position.ended = true;
            // Nothing may follow the final record: not another record, not a partial one.
            if position.accepted != position.issued || !self.buf.is_empty() {
                return Err(Error::Decrypt);
            }
        }
        Ok(content_len)
    }

    /// Stands a reader that has read the header and nothing else at record `seq`, as if
    /// records `0..seq` had been read and accepted: for a decryption resumed at a record
    /// boundary by a fresh decryptor (a download handed over to another worker). Nothing here
    /// proves those records were there: whoever read them checked them. Every later record is
    /// still bound to its place by its nonce, and the end is still proven by the final record.
    /// Fails, and poisons the reader, unless the header is complete and no byte of a record
    /// has been read.
    pub(crate) fn skip_to(&mut self, seq: u64) -> Result<(), Error> {
        let result = match &mut self.phase {
            Phase::Records(position)
                if self.buf.is_empty() && position.issued == 0 && position.accepted == 0 =>
            {
                position.issued = seq;
                position.accepted = seq;
                Ok(())
            }
            _ => Err(Error::Decrypt),
        };
        self.poison_on_err(result)
    }

    /// Ends the input and returns the buffered last record, if any, to open and accept like
    /// any other. Fails if the header is incomplete or a record handed out was not accepted.
    pub(crate) fn end(&mut self) -> Result<Batch<'static>, Error> {
        let result = self.end_inner();
        self.poison_on_err(result)
    }

    fn end_inner(&mut self) -> Result<Batch<'static>, Error> {
        let Phase::Records(position) = &mut self.phase else {
            return Err(Error::Decrypt);
        };
        if position.issued != position.accepted {
            return Err(Error::Decrypt);
        }
        let mut batch = Batch {
            nonces: Some(position.nonces.clone()),
            first_seq: position.issued,
            rs: position.rs,
            ..Batch::empty()
        };
        if !self.buf.is_empty() {
            // Shorter than rs, so accept() will require the final delimiter; it must at least
            // hold a delimiter and a tag.
            if self.buf.len() < RECORD_OVERHEAD as usize {
                return Err(Error::Decrypt);
            }
            batch.carried = std::mem::take(&mut self.buf);
            position.issued = position.issued.checked_add(1).ok_or(Error::Decrypt)?;
        }
        Ok(batch)
    }

    /// After the records of [`RecordReader::end`]: succeeds only if exactly one final record
    /// was seen, every record was accepted and nothing followed.
    pub(crate) fn check_complete(&self) -> Result<(), Error> {
        match &self.phase {
            Phase::Records(position)
                if position.ended
                    && position.issued == position.accepted
                    && self.buf.is_empty() =>
            {
                Ok(())
            }
            _ => Err(Error::Decrypt),
        }
    }
}

/// For an engine that holds the body's bytes outside this crate's memory (WebCrypto, reading
/// JavaScript buffers): the same rules, given lengths, ranges and each record's last bytes.
#[cfg(all(feature = "webcrypto", target_arch = "wasm32"))]
impl RecordReader {
    /// Bytes carried over from earlier pushes (the header's, or a record's start).
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes complete the header or the record begun by earlier pushes: 0 when
    /// the reader stands between records (the header read, nothing carried over), where
    /// [`RecordReader::push_whole`] may be called.
    pub(crate) fn to_boundary(&self) -> usize {
        match &self.phase {
            Phase::Header(_) if self.buf.len() < HEADER_SIZE => HEADER_SIZE - self.buf.len(),
            Phase::Header(_) => HEADER_SIZE + usize::from(self.buf[20]) - self.buf.len(),
            Phase::Records(position) if !self.buf.is_empty() => position.rs - self.buf.len(),
            Phase::Records(_) | Phase::Failed => 0,
        }
    }

    /// Takes the whole records at the start of the next `len` bytes of the body, which the
    /// engine holds and reads itself, like [`RecordReader::push`] of them, and returns them,
    /// each a range of those bytes. Only at a boundary ([`RecordReader::to_boundary`] is 0);
    /// the bytes after the last whole record ([`RecordSlots::byte_len`]) are to be pushed next.
    pub(crate) fn push_whole(&mut self, len: usize) -> Result<RecordSlots, Error> {
        let result = self.push_whole_inner(len);
        self.poison_on_err(result)
    }

    fn push_whole_inner(&mut self, len: usize) -> Result<RecordSlots, Error> {
        let at_boundary = self.buf.is_empty();
        let position = ready_for(&mut self.phase, len)?;
        if !at_boundary {
            return Err(Error::Decrypt);
        }
        let count = (len / position.rs) as u64;
        let slots = RecordSlots {
            nonces: position.nonces.clone(),
            first_seq: position.issued,
            rs: position.rs,
            count,
        };
        position.issued = position.issued.checked_add(count).ok_or(Error::Decrypt)?;
        Ok(slots)
    }

    /// [`RecordReader::accept`] for an engine that keeps the opened record outside this
    /// crate's memory: `seq` and `sealed_len` are the record's ([`RecordSlot`]), `padded_len`
    /// the length of its padded plaintext and `tail` the last bytes of that plaintext, which
    /// must reach back to its last non-zero byte (the delimiter) or be the whole of it:
    /// otherwise the record is refused, as one without a delimiter.
    pub(crate) fn accept_tail(
        &mut self,
        seq: u64,
        sealed_len: usize,
        padded_len: usize,
        tail: &[u8],
    ) -> Result<usize, Error> {
        let result = self.accept_inner(seq, sealed_len, padded_len, tail);
        self.poison_on_err(result)
    }
}

/// The reader's position, if `len` more bytes of records may be taken now: every record handed
/// out was accepted, and no byte may follow the final record.
fn ready_for(phase: &mut Phase, len: usize) -> Result<&mut Position, Error> {
    match phase {
        Phase::Records(position)
            if position.issued == position.accepted && !(position.ended && len > 0) =>
        {
            Ok(position)
        }
        _ => Err(Error::Decrypt),
    }
}

/// The records made by [`RecordReader::push_whole`], in order.
#[cfg(all(feature = "webcrypto", target_arch = "wasm32"))]
pub(crate) struct RecordSlots {
    nonces: NonceBase,
    first_seq: u64,
    rs: usize,
    count: u64,
}

/// One sealed record of bytes the engine holds: its sequence number, its nonce and its range
/// within the bytes given to [`RecordReader::push_whole`].
#[cfg(all(feature = "webcrypto", target_arch = "wasm32"))]
#[derive(Debug)]
pub(crate) struct RecordSlot {
    pub(crate) seq: u64,
    pub(crate) nonce: [u8; 12],
    pub(crate) range: Range<usize>,
}

#[cfg(all(feature = "webcrypto", target_arch = "wasm32"))]
impl RecordSlots {
    /// The bytes the records span, from the start of those given.
    pub(crate) fn byte_len(&self) -> usize {
        self.count as usize * self.rs
    }

    /// The records, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = RecordSlot> + '_ {
        (0..self.count).map(|i| {
            let seq = self.first_seq + i;
            let start = i as usize * self.rs;
            RecordSlot {
                seq,
                nonce: self.nonces.nonce(seq),
                range: start..start + self.rs,
            }
        })
    }
}

/// The rules every opened record obeys, whatever its position: a delimiter (see [`unpad`]),
/// and a `0x01` record exactly `rs` sealed bytes (a shorter record can only be the last one).
/// `tail` is the end of the `padded_len` bytes of padded plaintext (see [`unpad`]). Returns
/// the content length and the delimiter.
fn check_record(
    padded_len: usize,
    tail: &[u8],
    sealed_len: usize,
    rs: usize,
) -> Result<(usize, u8), Error> {
    let (content_len, delimiter) = unpad(padded_len, tail)?;
    if delimiter == DELIMITER_RECORD && sealed_len != rs {
        return Err(Error::Decrypt);
    }
    Ok((content_len, delimiter))
}

/// Strips RFC 8188 padding: zero bytes after the delimiter, which is the last non-zero byte.
/// `tail` is the end of a padded plaintext of `padded_len` bytes (the whole of it, or enough
/// of its end to hold the delimiter). Returns the content length and the delimiter; a record
/// without a valid one is invalid, and so is a tail of zeros shorter than the record.
fn unpad(padded_len: usize, tail: &[u8]) -> Result<(usize, u8), Error> {
    let start = padded_len.checked_sub(tail.len()).ok_or(Error::Decrypt)?;
    let at = tail
        .iter()
        .rposition(|&byte| byte != 0)
        .ok_or(Error::Decrypt)?;
    match tail[at] {
        delimiter @ (DELIMITER_RECORD | DELIMITER_FINAL) => Ok((start + at, delimiter)),
        _ => Err(Error::Decrypt),
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

// ---------------------------------------------------------------------------------------------
// Random access
// ---------------------------------------------------------------------------------------------

/// The records of one body whose header and total length are known, addressed by index
/// (seeking). Every record but the last is exactly `rs` bytes; the last is what remains, 17..=rs
/// bytes. Knowing each record's position, [`RecordMap::accept`] also requires what a streaming
/// reader only learns at the end: a record before the last carries `0x01` and **no padding**
/// (its content is exactly `rs - 17` bytes, so plaintext offsets map to record indices), and the
/// record at the last index carries `0x02` (padding allowed).
pub(crate) struct RecordMap {
    header_len: u64,
    rs: u64,
    count: u64,
    body_size: u64,
    nonces: NonceBase,
}

impl RecordMap {
    /// Parses the header at the start of `header` (extra bytes are ignored), checks that a body
    /// with it can be `body_size` bytes long and derives the keys. Returns the map and the CEK.
    pub(crate) fn new(
        key: &ContentKey,
        header: &[u8],
        body_size: u64,
    ) -> Result<(Self, Cek), Error> {
        let mut buf = Vec::new();
        let mut input = header;
        let (salt, rs) = take_header(&mut buf, &mut input)?.ok_or(Error::Decrypt)?;
        let (header_len, rs) = (buf.len() as u64, rs as u64);
        let records_len = body_size.checked_sub(header_len).ok_or(Error::Decrypt)?;
        let count = records_len.div_ceil(rs);
        // Non-final records are exactly rs bytes, so the last one is what remains; it must at
        // least hold a delimiter and a tag (and there must be one).
        let last_len = records_len - count.saturating_sub(1) * rs;
        if count == 0 || last_len < u64::from(RECORD_OVERHEAD) {
            return Err(Error::Decrypt);
        }
        let BodyKeys { cek, nonces } = BodyKeys::derive(key, &salt);
        let map = Self {
            header_len,
            rs,
            count,
            body_size,
            nonces,
        };
        Ok((map, cek))
    }

    pub(crate) fn header_len(&self) -> u64 {
        self.header_len
    }

    pub(crate) fn record_size(&self) -> u64 {
        self.rs
    }

    pub(crate) fn record_count(&self) -> u64 {
        self.count
    }

    /// Content bytes of every record but the last: `rs - 17`.
    pub(crate) fn chunk_len(&self) -> u64 {
        self.rs - u64::from(RECORD_OVERHEAD)
    }

    /// The body bytes of records `first..=last`, or `None` unless `first <= last < count`.
    pub(crate) fn body_range(&self, first: u64, last: u64) -> Option<Range<u64>> {
        if first > last || last >= self.count {
            return None;
        }
        // Both indices are below count, so record starts lie within the body.
        let start = self.header_len + first * self.rs;
        let end = self
            .body_size
            .min((self.header_len + last * self.rs).saturating_add(self.rs));
        Some(start..end)
    }

    /// Splits `bytes`, which must be exactly the records `first..=k` for some `k` (a range
    /// given by [`RecordMap::body_range`]), into sealed records `(seq, nonce, bytes)`.
    pub(crate) fn records<'b>(
        &'b self,
        first: u64,
        bytes: &'b [u8],
    ) -> Result<impl Iterator<Item = SealedRecord<'b>> + 'b, Error> {
        let len = bytes.len() as u64;
        let last = first
            .checked_add(len.div_ceil(self.rs))
            .and_then(|end| end.checked_sub(1))
            .ok_or(Error::Decrypt)?;
        match self.body_range(first, last) {
            Some(range) if range.end - range.start == len => {}
            _ => return Err(Error::Decrypt),
        }
        Ok(bytes
            .chunks(self.rs as usize)
            .zip(first..)
            .map(|(bytes, seq)| SealedRecord {
                seq,
                nonce: self.nonces.nonce(seq),
                bytes,
            }))
    }

    /// Takes the padded plaintext of `record`, opened by the engine, checks the delimiter and
    /// the rules of its position and returns the length of its content.
    pub(crate) fn accept(&self, record: &SealedRecord<'_>, padded: &[u8]) -> Result<usize, Error> {
        if record.seq >= self.count || padded.len() + TAG_LEN != record.bytes.len() {
            return Err(Error::Decrypt);
        }
        let (content_len, delimiter) =
            check_record(padded.len(), padded, record.bytes.len(), self.rs as usize)?;
        let ok = if record.seq + 1 < self.count {
            delimiter == DELIMITER_RECORD && content_len as u64 == self.chunk_len()
        } else {
            delimiter == DELIMITER_FINAL
        };
        if !ok {
            return Err(Error::Decrypt);
        }
        Ok(content_len)
    }
}
