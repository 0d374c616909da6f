//! Random access to the records of a body (`RecordAccess`, for seeking): every record and
//! span opens to the matching slice of the plaintext, and every record out of place fails.
//! Runs natively and in the browser.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use crypto_wasm::{ContentKey, Encryptor, Error, RecordAccess, decrypt};
use hkdf::Hkdf;
use sha2::Sha256;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// Declares a test for both targets.
macro_rules! tests {
    ($($(#[$meta:meta])* fn $name:ident() $body:block)*) => {$(
        $(#[$meta])*
        #[cfg_attr(not(target_arch = "wasm32"), test)]
        #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
        fn $name() $body
    )*};
}

const IKM: [u8; 32] = [7; 32];
const SALT: [u8; 16] = [9; 16];

fn key() -> ContentKey {
    ContentKey::from_ikm(&IKM).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn body(rs: u32, plaintext: &[u8]) -> Vec<u8> {
    Encryptor::with_salt_and_rs(&key(), SALT, rs)
        .unwrap()
        .encrypt_body(plaintext)
}

fn slice(body: &[u8], range: std::ops::Range<u64>) -> &[u8] {
    &body[range.start as usize..range.end as usize]
}

/// A body sealed by hand from raw record contents (`data || delimiter || padding`), with a
/// keyid, as another RFC 8188 writer may produce.
fn seal_by_hand(rs: u32, keyid: &[u8], contents: &[Vec<u8>]) -> Vec<u8> {
    let hkdf = Hkdf::<Sha256>::new(Some(&SALT), &IKM);
    let (mut cek, mut base) = ([0u8; 16], [0u8; 12]);
    hkdf.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .unwrap();
    hkdf.expand(b"Content-Encoding: nonce\0", &mut base)
        .unwrap();
    let aead = Aes128Gcm::new(&cek.into());
    let mut out = SALT.to_vec();
    out.extend_from_slice(&rs.to_be_bytes());
    out.push(keyid.len() as u8);
    out.extend_from_slice(keyid);
    for (seq, content) in contents.iter().enumerate() {
        let mut nonce = base;
        for (byte, counter) in nonce[4..].iter_mut().zip((seq as u64).to_be_bytes()) {
            *byte ^= counter;
        }
        out.extend(
            aead.encrypt(Nonce::from_slice(&nonce), &content[..])
                .unwrap(),
        );
    }
    out
}

fn content(data: &[u8], delimiter: u8, padding: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    out.push(delimiter);
    out.resize(out.len() + padding, 0);
    out
}

/// Checks every record alone, the whole body and a spread of spans against the plaintext.
fn check_all_spans(rs: u32, len: usize) {
    let plaintext = pattern(len);
    let body = body(rs, &plaintext);
    let chunk = rs as usize - 17;
    let access = RecordAccess::new(&key(), &body[..21], body.len() as u64).unwrap();
    let count = len.div_ceil(chunk).max(1) as u64;
    assert_eq!(access.record_count(), count, "rs {rs} len {len}");
    assert_eq!((access.header_len(), access.record_size()), (21, rs));
    assert_eq!(access.chunk_len(), chunk as u64);
    // More bytes than the header are ignored.
    let again = RecordAccess::new(&key(), &body, body.len() as u64).unwrap();
    assert_eq!(again.record_count(), count);
    let expected = |first: u64, last: u64| {
        let start = (first as usize * chunk).min(len);
        let end = ((last as usize + 1) * chunk).min(len);
        &plaintext[start..end]
    };
    let mut spans: Vec<(u64, u64)> = (0..count).map(|i| (i, i)).collect();
    spans.push((0, count - 1));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ len as u64 ^ u64::from(rs);
    for _ in 0..20 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        let a = (state >> 33) % count;
        let b = (state >> 13) % count;
        spans.push((a.min(b), a.max(b)));
    }
    for (first, last) in spans {
        let range = access.body_range(first, last).unwrap();
        let opened = access.open(first, slice(&body, range)).unwrap();
        assert_eq!(
            opened,
            expected(first, last),
            "rs {rs} len {len} {first}..={last}"
        );
    }
    assert_eq!(
        access.body_range(0, count - 1).unwrap(),
        21..body.len() as u64
    );
    assert_eq!(access.body_range(count - 1, count), None);
    if count > 1 {
        assert_eq!(access.body_range(1, 0), None);
    }
}

tests! {
    fn every_record_and_span_opens_to_its_plaintext() {
        for rs in [64u32, 1000, 65536] {
            let chunk = rs as usize - 17;
            for len in [0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3 * chunk + 5, 7 * chunk + 2] {
                check_all_spans(rs, len);
            }
        }
        // A multi-part body (rs = 64: a part is 64 records).
        check_all_spans(64, 47 * 64 * 2 + 30);
    }

    fn the_last_record_opens_alone() {
        let plaintext = pattern(1000);
        let body = body(64, &plaintext);
        let access = RecordAccess::new(&key(), &body, body.len() as u64).unwrap();
        let last = access.record_count() - 1;
        let range = access.body_range(last, last).unwrap();
        assert_eq!(range.end, body.len() as u64);
        assert_eq!(access.open(last, slice(&body, range)).unwrap(), &plaintext[last as usize * 47..]);
    }

    fn tampered_or_misplaced_records_fail() {
        let plaintext = pattern(47 * 5 + 10);
        let body = body(64, &plaintext);
        let access = RecordAccess::new(&key(), &body, body.len() as u64).unwrap();
        assert_eq!(access.record_count(), 6);
        let record = |i: u64| slice(&body, access.body_range(i, i).unwrap()).to_vec();
        // A flipped bit, in any record.
        for i in 0..6 {
            let mut bytes = record(i);
            bytes[3] ^= 0x10;
            assert_eq!(access.open(i, &bytes), Err(Error::Decrypt), "record {i}");
        }
        // Records shifted by one index.
        assert_eq!(access.open(2, &record(1)), Err(Error::Decrypt));
        let span = slice(&body, access.body_range(1, 2).unwrap());
        assert_eq!(access.open(2, span), Err(Error::Decrypt));
        assert_eq!(access.open(0, span), Err(Error::Decrypt));
        // Lengths that are not whole records at that place.
        assert_eq!(access.open(0, &[]), Err(Error::Decrypt));
        assert_eq!(access.open(3, &[]), Err(Error::Decrypt));
        assert_eq!(access.open(0, &record(0)[..63]), Err(Error::Decrypt));
        assert_eq!(access.open(4, &record(5)), Err(Error::Decrypt));
        assert_eq!(access.open(6, &record(5)), Err(Error::Decrypt));
        assert_eq!(access.open(u64::MAX, &record(5)), Err(Error::Decrypt));
        let mut extra = record(5);
        extra.push(0);
        assert_eq!(access.open(5, &extra), Err(Error::Decrypt));
    }

    fn a_lying_body_size_cannot_move_the_final_record() {
        let chunk = 47;
        // Truncated at a record boundary and presented as complete: the record now at the last
        // index carries 0x01.
        let plaintext = pattern(chunk * 3 + 10);
        let full = body(64, &plaintext);
        let truncated = &full[..21 + 2 * 64];
        let access = RecordAccess::new(&key(), truncated, truncated.len() as u64).unwrap();
        assert_eq!(access.record_count(), 2);
        assert_eq!(access.open(0, &truncated[21..21 + 64]).unwrap(), &plaintext[..chunk]);
        assert_eq!(access.open(1, &truncated[21 + 64..]), Err(Error::Decrypt));
        assert_eq!(access.open(0, &truncated[21..]), Err(Error::Decrypt));
        // A full-size final record claimed at a non-final index (the size claims more).
        let plaintext = pattern(chunk * 2);
        let body = body(64, &plaintext);
        let access = RecordAccess::new(&key(), &body, body.len() as u64 + 40).unwrap();
        assert_eq!(access.record_count(), 3);
        assert_eq!(access.open(0, &body[21..21 + 64]).unwrap(), &plaintext[..chunk]);
        assert_eq!(access.open(1, &body[21 + 64..]), Err(Error::Decrypt));
    }

    fn padding_before_the_last_record_cannot_be_seeked() {
        let data = pattern(47 + 47 + 20);
        // Record 0 padded (44 bytes of content, 3 of padding), still rs bytes: a streaming
        // decryptor accepts it, random access does not. The final record may be padded.
        let contents = [
            content(&data[..44], 1, 3),
            content(&data[44..91], 1, 0),
            content(&data[91..], 2, 5),
        ];
        let body = seal_by_hand(64, b"keyid", &contents);
        assert_eq!(decrypt(&key(), &body).unwrap(), data);
        let access = RecordAccess::new(&key(), &body[..26], body.len() as u64).unwrap();
        assert_eq!((access.header_len(), access.record_count()), (26, 3));
        let open = |first: u64, last: u64| {
            access.open(first, slice(&body, access.body_range(first, last).unwrap()))
        };
        assert_eq!(open(0, 0), Err(Error::Decrypt));
        assert_eq!(open(0, 2), Err(Error::Decrypt));
        assert_eq!(open(1, 1).unwrap(), &data[44..91]);
        assert_eq!(open(2, 2).unwrap(), &data[91..]);
        assert_eq!(open(1, 2).unwrap(), &data[44..]);

        // A final (0x02) record before the last index, and a last record without 0x02.
        let contents = [content(&data[..47], 2, 0), content(&data[47..60], 2, 0)];
        let body = seal_by_hand(64, b"", &contents);
        let access = RecordAccess::new(&key(), &body, body.len() as u64).unwrap();
        assert_eq!(access.open(0, &body[21..85]), Err(Error::Decrypt));
        assert_eq!(access.open(1, &body[85..]).unwrap(), &data[47..60]);
        let contents = [content(&data[..47], 1, 0), content(&data[47..60], 1, 0)];
        let body = seal_by_hand(64, b"", &contents);
        let access = RecordAccess::new(&key(), &body, body.len() as u64).unwrap();
        assert_eq!(access.open(1, &body[85..]), Err(Error::Decrypt));
        // No delimiter at all.
        let body = seal_by_hand(64, b"", &[vec![0u8; 10]]);
        let access = RecordAccess::new(&key(), &body, body.len() as u64).unwrap();
        assert_eq!(access.open(0, &body[21..]), Err(Error::Decrypt));
    }

    fn impossible_headers_and_sizes_fail() {
        let body = body(64, &pattern(100));
        let header = &body[..21];
        let new = |header: &[u8], size: u64| RecordAccess::new(&key(), header, size).map(|_| ());
        assert_eq!(new(header, body.len() as u64), Ok(()));
        assert_eq!(new(header, 21 + 17), Ok(()));
        assert_eq!(new(header, 21 + 64), Ok(()));
        assert_eq!(new(header, 21 + 64 + 17), Ok(()));
        for size in [0, 20, 21, 21 + 16, 21 + 64 + 1, 21 + 64 + 16, 21 + 5 * 64 + 3, u64::MAX - 30] {
            assert_eq!(new(header, size), Err(Error::Decrypt), "size {size}");
        }
        // Short headers, including a keyid cut short.
        assert_eq!(new(&header[..20], body.len() as u64), Err(Error::Decrypt));
        assert_eq!(new(&[], body.len() as u64), Err(Error::Decrypt));
        let mut with_keyid = header.to_vec();
        with_keyid[20] = 5;
        with_keyid.extend_from_slice(b"abc");
        assert_eq!(new(&with_keyid, body.len() as u64), Err(Error::Decrypt));
        with_keyid.extend_from_slice(b"de");
        assert_eq!(new(&with_keyid, 26 + 17), Ok(()));
        // rs out of range.
        for rs in [0u32, 17, 16 * 1024 * 1024 + 1, u32::MAX] {
            let mut bad = header.to_vec();
            bad[16..20].copy_from_slice(&rs.to_be_bytes());
            assert_eq!(new(&bad, 21 + 17), Err(Error::Decrypt), "rs {rs}");
        }
        let mut largest = header.to_vec();
        largest[16..20].copy_from_slice(&(16u32 * 1024 * 1024).to_be_bytes());
        assert_eq!(new(&largest, 21 + 17), Ok(()));
        assert_eq!(new(header, u64::MAX), Ok(()));
        let huge = RecordAccess::new(&key(), &largest, u64::MAX).unwrap();
        let last = huge.record_count() - 1;
        assert_eq!(huge.body_range(last, last).unwrap().end, u64::MAX);
        assert_eq!(huge.body_range(0, last).unwrap(), 21..u64::MAX);
    }

    fn debug_output_never_shows_keys() {
        let body = body(64, &pattern(100));
        let access = RecordAccess::new(&key(), &body, body.len() as u64).unwrap();
        let text = format!("{access:?}");
        assert!(text.starts_with("RecordAccess {"), "{text}");
        assert!(text.contains("record_count: 3"), "{text}");
        assert!(!text.contains("07, 7") && !text.contains("cek") && !text.contains("aead"), "{text}");
    }
}
