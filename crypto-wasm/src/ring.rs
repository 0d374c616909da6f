//! ring's AES-128-GCM as the cipher of RFC 8188 bodies (feature `native-ring`, native targets
//! only): what the command-line client uses.
//!
//! [`RingEncryptor`], [`RingDecryptor`] and [`RingRecordAccess`] produce and accept exactly the
//! bytes of [`Encryptor`], [`Decryptor`] and [`RecordAccess`], with the same validation, errors
//! and stream rules: they run the very same code (the header, record splitting, sequence
//! numbers, nonces `NONCE XOR seq`, delimiters and order rules, and the loops that seal and open
//! records), in which only the two AES-GCM calls, seal and open, go to ring instead of
//! RustCrypto. Bodies written by one engine are read by the other, and the parts of one body
//! may be sealed by both.
//!
//! Why a second engine: RustCrypto's `aes-gcm` 0.10 runs AES-CTR and GHASH as two passes and
//! reaches about a fifth of OpenSSL's speed on a machine with VAES (1.3 against 6.5 GB/s on one
//! core, see `docs/FORMAT.md` section 8). ring's AES-GCM is BoringSSL's assembly, which
//! interleaves AES and GHASH (AES-NI with CLMUL, or VAES with VPCLMULQDQ on AVX2) and picks the
//! fastest path for the CPU at run time, so one distributed binary runs near the machine's
//! limit everywhere. `cargo xtask bench cli-encrypt` measures it against `openssl speed`.
//!
//! Key hygiene: the copies of the content-encryption key held by this crate are wiped on drop,
//! but ring offers no way to wipe the expanded key it keeps (AES round keys and the GHASH key
//! table inside its `LessSafeKey`), and this crate forbids the `unsafe` code it would take, so
//! that copy stays in freed memory until reused (the RustCrypto engine has the same gap for
//! polyval's GHASH key on x86; see `docs/ARCHITECTURE.md`). Nothing here prints key material:
//! the `Debug` output of every type shows only public sizes and states.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use ::ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::ece::{RecordOpener, StreamOpener, seal_records};
use crate::primitives::{Cipher, TAG_LEN};
use crate::{ContentKey, Encryptor, Error};
#[cfg(doc)]
use crate::{Decryptor, RecordAccess};

/// ring's AES-128-GCM keyed with one key. Not `Debug`: it holds the expanded key.
pub(crate) struct RingAead(LessSafeKey);

impl Cipher for RingAead {
    fn new(key: &[u8; 16]) -> Self {
        // ring refuses only keys of the wrong length for the algorithm.
        let key = UnboundKey::new(&AES_128_GCM, key).expect("16 bytes is an AES-128-GCM key");
        Self(LessSafeKey::new(key))
    }

    fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        // Nonces are never reused under one key: `NONCE XOR seq` with a distinct sequence number
        // for every record of a body, and a fresh key (fresh salt) for every body.
        let nonce = Nonce::assume_unique_for_key(*nonce);
        // Sealing only fails for messages longer than about 64 GiB; records are at most 16 MiB.
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce, Aad::from(aad), buf)
            .expect("AES-GCM message length is bounded");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), Error> {
        let nonce = Nonce::assume_unique_for_key(*nonce);
        self.0
            .open_in_place_separate_tag(nonce, Aad::from(aad), Tag::from(*tag), buf, 0..)
            .map(drop)
            .map_err(|_| Error::Decrypt)
    }
}

/// [`Encryptor`] with ring as the cipher: the same parts and bodies, byte for byte.
///
/// Cheap to clone, `Send + Sync`; parts may be encrypted in any order or in parallel, exactly
/// as with [`Encryptor`] (same nonce-reuse warning: one encryptor per file).
#[derive(Clone)]
pub struct RingEncryptor {
    encryptor: Encryptor,
    cipher: Arc<RingAead>,
}

impl RingEncryptor {
    /// Keys ring with `encryptor`'s content-encryption key: the result seals the same body
    /// (salt, record size, part size) as `encryptor`.
    pub fn new(encryptor: &Encryptor) -> Self {
        Self {
            cipher: Arc::new(RingAead::new(encryptor.expose_cek())),
            encryptor: encryptor.clone(),
        }
    }

    /// The RustCrypto encryptor of the same body (salt, record size, part size).
    pub fn encryptor(&self) -> &Encryptor {
        &self.encryptor
    }

    /// Encrypts part `index` of the body: exactly [`Encryptor::encrypt_part`], with the same
    /// checks and [`Error::InvalidPart`].
    pub fn encrypt_part(
        &self,
        index: u64,
        plaintext: &[u8],
        is_last: bool,
    ) -> Result<Vec<u8>, Error> {
        let plan = self.encryptor.plan_part(index, plaintext.len(), is_last)?;
        Ok(seal_records(
            &*self.cipher,
            self.encryptor.nonces(),
            &plan,
            plaintext,
        ))
    }

    /// Encrypts a whole plaintext into one body: exactly [`Encryptor::encrypt_body`].
    pub fn encrypt_body(&self, plaintext: &[u8]) -> Vec<u8> {
        seal_records(
            &*self.cipher,
            self.encryptor.nonces(),
            &self.encryptor.plan_body(plaintext.len()),
            plaintext,
        )
    }
}

impl fmt::Debug for RingEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingEncryptor")
            .field("rs", &self.encryptor.record_size())
            .finish_non_exhaustive()
    }
}

/// [`Decryptor`] with ring as the cipher: the same semantics, call for call.
///
/// [`RingDecryptor::push`] returns the plaintext of every record it could complete;
/// **[`RingDecryptor::finish`] is mandatory** and alone proves the body was not truncated.
/// Every failure is [`Error::Decrypt`] and poisons the decryptor.
pub struct RingDecryptor(StreamOpener<RingAead>);

impl RingDecryptor {
    /// A decryptor for a body encrypted under `key` (a [`ContentKey`] or the
    /// [`crate::FileKeys`] holding one).
    pub fn new(key: &impl AsRef<ContentKey>) -> Self {
        Self(StreamOpener::new(key.as_ref()))
    }

    /// Feeds the next bytes of the body and returns the plaintext of every record completed
    /// by them (possibly none), like [`Decryptor::push`].
    pub fn push(&mut self, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.push(input)
    }

    /// Ends the stream, like [`Decryptor::finish`]: opens the buffered final record, if any,
    /// and returns its plaintext. Fails unless the header was complete, exactly one final
    /// record was seen and nothing follows it. Mandatory.
    #[must_use = "finish() returns the final record's plaintext and reports truncation"]
    pub fn finish(self) -> Result<Vec<u8>, Error> {
        self.0.finish()
    }
}

impl fmt::Debug for RingDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingDecryptor")
            .field("state", &self.0.state())
            .finish_non_exhaustive()
    }
}

/// [`RecordAccess`] with ring as the cipher: random access to the records of one body whose
/// total length is known, with the same rules by position and the same errors.
pub struct RingRecordAccess(RecordOpener<RingAead>);

impl RingRecordAccess {
    /// Like [`RecordAccess::new`]: fails with [`Error::Decrypt`] on a short header, an `rs`
    /// outside `18..=16 MiB`, or a `body_size` no body with this header can have.
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

    /// Opens consecutive whole records starting at index `first`, like
    /// [`RecordAccess::open`], and returns their plaintext concatenated.
    pub fn open(&self, first: u64, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        self.0.open(first, bytes)
    }
}

impl fmt::Debug for RingRecordAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.debug_fields(&mut f.debug_struct("RingRecordAccess"))
    }
}
