//! The ring engine against the RustCrypto one (feature `native-ring`, native only):
//! byte-identical parts and bodies at several record sizes with random keys, salts and
//! plaintexts, and identical verdicts, push by push, on valid and damaged bodies, streamed and
//! by random access. The committed vectors run through it in `vectors.rs`; its speed is
//! measured by `cargo xtask bench cli-encrypt`, not here.
//!
//! Run with `cargo test -p crypto-wasm --features native-ring` (the workspace's `cargo test`
//! enables the feature through the CLI).
#![cfg(all(feature = "native-ring", not(target_arch = "wasm32")))]

use crypto_wasm::ring::{RingDecryptor, RingEncryptor, RingRecordAccess};
use crypto_wasm::{ContentKey, Decryptor, Encryptor, Error, RECORD_SIZE, RecordAccess};
use proptest::prelude::*;

/// `len` reproducible pseudorandom bytes from `seed` (SplitMix64, eight bytes a step).
fn bytes_from(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = vec![0u8; len];
    for word in out.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let z = (z ^ (z >> 31)).to_le_bytes();
        word.copy_from_slice(&z[..word.len()]);
    }
    out
}

fn encryptors(ikm: &[u8], salt: [u8; 16], rs: u32) -> (ContentKey, Encryptor, RingEncryptor) {
    let key = ContentKey::from_ikm(ikm).unwrap();
    let rust = Encryptor::with_salt_and_rs(&key, salt, rs).unwrap();
    let ring = RingEncryptor::new(&rust);
    (key, rust, ring)
}

/// The plaintext of each part: full parts and a shorter last one; one empty part if empty.
fn pieces(plaintext: &[u8], per_part: usize) -> Vec<&[u8]> {
    if plaintext.is_empty() {
        vec![plaintext]
    } else {
        plaintext.chunks(per_part).collect()
    }
}

/// Checks that ring seals every part (in reverse order) to exactly the bytes of the RustCrypto
/// body at the part's place, and the whole body to the same body; returns the body. (The
/// RustCrypto parts concatenate to its body: `proptest.rs`.)
fn same_parts_and_body(rust: &Encryptor, ring: &RingEncryptor, plaintext: &[u8]) -> Vec<u8> {
    let body = rust.encrypt_body(plaintext);
    let per_part = usize::try_from(rust.plaintext_per_part()).unwrap();
    let pieces = pieces(plaintext, per_part);
    let mut end = body.len();
    for (index, piece) in pieces.iter().enumerate().rev() {
        let is_last = index + 1 == pieces.len();
        let part = ring.encrypt_part(index as u64, piece, is_last).unwrap();
        let start = end
            .checked_sub(part.len())
            .expect("part longer than the body");
        assert!(part == body[start..end], "part {index} of {}", pieces.len());
        end = start;
    }
    assert_eq!(end, 0, "parts shorter than the body");
    assert!(ring.encrypt_body(plaintext) == body, "whole body");
    body
}

/// Pushes the pieces of `body` between `cuts` through both decryptors, checking that every
/// push, every state and the finish agree; returns that result.
fn decrypt_both(key: &ContentKey, body: &[u8], cuts: &[usize]) -> Result<Vec<u8>, Error> {
    let mut rust = Decryptor::new(key);
    let mut ring = RingDecryptor::new(key);
    let mut plaintext = Ok(Vec::new());
    let mut start = 0;
    for &cut in cuts.iter().chain([&body.len()]) {
        let cut = cut.clamp(start, body.len());
        let piece = &body[start..cut];
        let expected = rust.push(piece);
        assert_eq!(ring.push(piece), expected, "push of {start}..{cut}");
        assert_eq!(format!("{ring:?}").replace("Ring", ""), format!("{rust:?}"));
        plaintext = plaintext.and_then(|mut all: Vec<u8>| {
            all.extend(expected?);
            Ok(all)
        });
        start = cut;
    }
    let expected = rust.finish();
    assert_eq!(ring.finish(), expected, "finish");
    let mut plaintext = plaintext?;
    plaintext.extend(expected?);
    Ok(plaintext)
}

/// Opens records `first..=last` of `body` (as given, possibly damaged, with `body_size` as
/// claimed) by random access with both engines, checking that they agree; returns the result.
fn open_both(
    key: &ContentKey,
    body: &[u8],
    body_size: u64,
    first: u64,
    last: u64,
) -> Result<Vec<u8>, Error> {
    let rust = RecordAccess::new(key, body, body_size);
    let ring = RingRecordAccess::new(key, body, body_size);
    let (rust, ring) = match (rust, ring) {
        (Ok(rust), Ok(ring)) => (rust, ring),
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            return Err(a);
        }
        (rust, ring) => panic!("constructors disagree: {rust:?} vs {ring:?}"),
    };
    assert_eq!(format!("{ring:?}").replace("Ring", ""), format!("{rust:?}"));
    assert_eq!(ring.header_len(), rust.header_len());
    assert_eq!(ring.record_size(), rust.record_size());
    assert_eq!(ring.record_count(), rust.record_count());
    assert_eq!(ring.chunk_len(), rust.chunk_len());
    let range = rust.body_range(first, last);
    assert_eq!(ring.body_range(first, last), range);
    let range = range.unwrap_or(0..0);
    let end = usize::try_from(range.end).unwrap().min(body.len());
    let start = usize::try_from(range.start).unwrap().min(end);
    let bytes = &body[start..end];
    let expected = rust.open(first, bytes);
    assert_eq!(
        ring.open(first, bytes),
        expected,
        "records {first}..={last}"
    );
    expected
}

/// Record sizes from the smallest to the real one: tiny records make many records per part.
fn record_size() -> impl Strategy<Value = u32> {
    prop_oneof![18u32..=40, 41u32..=300, Just(1000), Just(4096)]
}

/// One change to a valid body (indices reduced modulo its sizes); `rs` locates records.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit { at: usize, bit: u8 },
    Truncate { len: usize },
    Append { bytes: Vec<u8> },
    DeleteRange { at: usize, len: usize },
    SwapRecords { a: usize, b: usize },
    DuplicateRecord { record: usize, to: usize },
    RecordSize { rs: u32 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        prop::collection::vec(any::<u8>(), 1..100).prop_map(|bytes| Mutation::Append { bytes }),
        (any::<usize>(), 1usize..150).prop_map(|(at, len)| Mutation::DeleteRange { at, len }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapRecords { a, b }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(record, to)| Mutation::DuplicateRecord { record, to }),
        (0u32..300).prop_map(|rs| Mutation::RecordSize { rs }),
    ]
}

fn apply(body: &[u8], rs: usize, mutation: &Mutation) -> Vec<u8> {
    let mut records: Vec<Vec<u8>> = body[21..].chunks(rs).map(<[u8]>::to_vec).collect();
    let join = |records: &[Vec<u8>]| [body[..21].to_vec(), records.concat()].concat();
    let mut out = body.to_vec();
    match mutation {
        Mutation::FlipBit { at, bit } => out[at % body.len()] ^= 1 << bit,
        Mutation::Truncate { len } => out.truncate(len % body.len()),
        Mutation::Append { bytes } => out.extend_from_slice(bytes),
        Mutation::DeleteRange { at, len } => {
            let at = at % body.len();
            out.drain(at..(at + len).min(body.len()));
        }
        Mutation::SwapRecords { a, b } => {
            let (a, b) = (a % records.len(), b % records.len());
            records.swap(a, b);
            out = join(&records);
        }
        Mutation::DuplicateRecord { record, to } => {
            let copy = records[record % records.len()].clone();
            records.insert(to % (records.len() + 1), copy);
            out = join(&records);
        }
        Mutation::RecordSize { rs } => out[16..20].copy_from_slice(&rs.to_be_bytes()),
    }
    out
}

/// Sorted cut points within a body of `len` bytes.
fn cuts_within(cuts: &[usize], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random keys, salts and plaintexts of up to two parts and a bit: the same parts, the
    /// same body, and each engine opens the other's output (identical bytes), in any chunking.
    #[test]
    fn both_engines_write_the_same_bytes(
        ikm in prop::collection::vec(any::<u8>(), 1..64),
        salt in any::<[u8; 16]>(),
        rs in record_size(),
        parts in 0.0f64..2.2,
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        seed in any::<u64>(),
    ) {
        let (key, rust, ring) = encryptors(&ikm, salt, rs);
        let per_part = rust.plaintext_per_part() as f64;
        let len = (parts * per_part) as usize;
        let plaintext = bytes_from(seed, len);
        let body = same_parts_and_body(&rust, &ring, &plaintext);
        let cuts = cuts_within(&cuts, body.len());
        prop_assert_eq!(decrypt_both(&key, &body, &cuts), Ok(plaintext));
    }

    /// Any single change to a valid body gets the same verdict from both engines, push by push
    /// and at the end (the RustCrypto engine's verdicts are checked in `proptest.rs`).
    #[test]
    fn damaged_bodies_get_the_same_verdicts(
        salt in any::<[u8; 16]>(),
        rs in 18u32..=100,
        len in 0usize..700,
        mutation in mutation(),
        cuts in prop::collection::vec(any::<usize>(), 0..5),
    ) {
        let (key, rust, _) = encryptors(b"damaged bodies", salt, rs);
        let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let body = rust.encrypt_body(&plaintext);
        let damaged = apply(&body, rs as usize, &mutation);
        let cuts = cuts_within(&cuts, damaged.len());
        let whole = decrypt_both(&key, &damaged, &[]);
        prop_assert_eq!(decrypt_both(&key, &damaged, &cuts), whole);
    }

    /// Random access to valid and damaged bodies, with true and false sizes: the same records
    /// open, or fail, with both engines.
    #[test]
    fn random_access_gives_the_same_verdicts(
        salt in any::<[u8; 16]>(),
        rs in 18u32..=100,
        len in 0usize..700,
        mutation in prop::option::of(mutation()),
        size_error in prop_oneof![Just(0i64), -20i64..20],
        first in 0u64..20,
        span in 0u64..20,
    ) {
        let (key, rust, _) = encryptors(b"random access", salt, rs);
        let plaintext: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let body = rust.encrypt_body(&plaintext);
        let body = match &mutation {
            Some(mutation) => apply(&body, rs as usize, mutation),
            None => body,
        };
        let size = (body.len() as u64).saturating_add_signed(size_error);
        let opened = open_both(&key, &body, size, first, first + span);
        if mutation.is_none() && size_error == 0 {
            let chunk = rs as usize - 17;
            let count = len.div_ceil(chunk).max(1) as u64;
            if first + span < count {
                let start = first as usize * chunk;
                let end = len.min((first + span + 1) as usize * chunk);
                prop_assert_eq!(opened, Ok(plaintext[start..end].to_vec()));
            }
        }
    }
}

/// The real record size and part size, at every length that changes the record and part
/// layout, with random bytes: what the CLI seals and opens.
#[test]
fn both_engines_agree_at_the_real_record_size() {
    let chunk = RECORD_SIZE as usize - 17;
    let per_part = 64 * chunk;
    let mut seed = 0x0123_4567_89ab_cdefu64;
    let mut random_bytes = |len: usize| {
        seed += 1;
        bytes_from(seed, len)
    };
    for len in [
        0,
        1,
        chunk - 1,
        chunk,
        chunk + 1,
        per_part - 1,
        per_part,
        per_part + 1,
        2 * per_part + chunk + 7,
    ] {
        let ikm = random_bytes(32);
        let salt = random_bytes(16).try_into().unwrap();
        let (key, rust, ring) = encryptors(&ikm, salt, RECORD_SIZE);
        let plaintext = random_bytes(len);
        let body = same_parts_and_body(&rust, &ring, &plaintext);
        let cuts = [
            21 + RECORD_SIZE as usize - 1,
            body.len() / 2,
            body.len() - 1,
        ];
        assert!(
            decrypt_both(&key, &body, &cuts) == Ok(plaintext),
            "{len} bytes"
        );
        // A flipped bit in the last record: both reject, at the same step.
        let mut damaged = body.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(decrypt_both(&key, &damaged, &cuts), Err(Error::Decrypt));
        let records = open_both(&key, &body, body.len() as u64, 0, 0);
        assert_eq!(records.map(|r| r.len()), Ok(len.min(chunk)));
    }
}

/// `Debug` shows sizes and states only.
#[test]
fn debug_output_shows_no_key() {
    let (key, _, ring) = encryptors(&[7; 32], [1; 16], RECORD_SIZE);
    assert_eq!(format!("{ring:?}"), "RingEncryptor { rs: 65536, .. }");
    assert_eq!(
        format!("{:?}", RingDecryptor::new(&key)),
        r#"RingDecryptor { state: "header", .. }"#
    );
}
