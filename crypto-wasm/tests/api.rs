//! Behaviour of the public API: encodings, validation, redaction, layout arithmetic, the
//! part-oriented encryptor and the decryptor's stream rules. Runs natively and in the browser.

use crypto_wasm::{
    ContentKey, Decryptor, Encryptor, Error, FileKeys, HEADER_SIZE, KdfParams, Layout,
    MAX_METADATA_BLOB, Metadata, RECORD_SIZE, RECORDS_PER_PART, Secret, body_size, decrypt,
    encrypt, first_part_size, part_plaintext_range, part_size, plaintext_per_part,
};

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

fn key(byte: u8) -> ContentKey {
    ContentKey::from_ikm(&[byte; 32]).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Metadata of a given name length, for padding checks.
fn meta(name_len: usize) -> Metadata {
    Metadata {
        name: "n".repeat(name_len),
        size: 7,
        mime: String::new(),
    }
}

tests! {
    fn secret_round_trips_through_base64url() {
        let secret = Secret::generate();
        let text = secret.to_base64url();
        assert_eq!(text.len(), 43);
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Secret::from_base64url(&text).unwrap().to_base64url(), text);
        assert_ne!(Secret::generate().to_base64url(), text);
    }

    fn secret_rejects_every_other_spelling() {
        let text = Secret::from_bytes([0xfb; 32]).to_base64url();
        assert_eq!(text, "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s");
        let bad = [
            String::new(),
            text[..42].to_owned(),
            format!("{text}A"),
            format!("{text}="),
            text.replace('-', "+"),
            text.replace('_', "/"),
            // Same bytes but non-zero unused low bits in the last character: not canonical.
            format!("{}t", &text[..42]),
            format!("{} ", &text[..42]),
        ];
        for candidate in bad {
            assert_eq!(Secret::from_base64url(&candidate).err(), Some(Error::InvalidSecret), "{candidate:?}");
        }
    }

    fn debug_output_never_shows_key_bytes() {
        let secret = Secret::from_bytes([0xab; 32]);
        let keys = FileKeys::derive(&secret, None).unwrap();
        let token = keys.auth_token_base64url();
        let ikm_hex = keys.content_key().expose_ikm().iter().map(|b| format!("{b:02x}")).collect::<String>();
        let texts = [
            format!("{secret:?}"),
            format!("{keys:?}"),
            format!("{:?}", keys.content_key()),
            format!("{:?}", Encryptor::new(&keys)),
            format!("{:?}", Decryptor::new(&keys)),
        ];
        for text in texts {
            assert!(text.contains("REDACTED") || text.contains(".."), "{text}");
            for needle in [secret.to_base64url().as_str(), "ab, ab", "171", &token, &ikm_hex[..8]] {
                assert!(!text.contains(needle), "{text} contains {needle}");
            }
        }
    }

    fn empty_ikm_is_rejected() {
        assert_eq!(ContentKey::from_ikm(&[]).err(), Some(Error::InvalidKey));
    }

    fn kdf_params_use_the_contract_json() {
        let params = KdfParams { m_cost: 19_456, t_cost: 2, p_cost: 1, salt: [0xff; 16] };
        let json = serde_json::to_string(&params).unwrap();
        assert_eq!(
            json,
            r#"{"alg":"argon2id","m_cost":19456,"t_cost":2,"p_cost":1,"salt":"_____________________w"}"#
        );
        assert_eq!(serde_json::from_str::<KdfParams>(&json).unwrap(), params);
        let generated = KdfParams::generate();
        assert_eq!((generated.m_cost, generated.t_cost, generated.p_cost), (19_456, 2, 1));
        assert_ne!(generated.salt, KdfParams::generate().salt);
        assert_eq!(generated.validate(), Ok(()));
    }

    fn kdf_params_reject_malformed_json() {
        let good = r#"{"alg":"argon2id","m_cost":19456,"t_cost":2,"p_cost":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA"}"#;
        assert!(serde_json::from_str::<KdfParams>(good).is_ok());
        for bad in [
            good.replace("argon2id", "argon2i"),
            good.replace("AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAA"),
            good.replace("AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAAA"),
            good.replace("AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAA+"),
            good.replace("AAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAB"),
            good.replace(r#","p_cost":1"#, ""),
            good.replace('}', r#","extra":1}"#),
        ] {
            assert!(serde_json::from_str::<KdfParams>(&bad).is_err(), "{bad}");
        }
    }

    fn kdf_policy_is_enforced_before_any_work() {
        let ok = KdfParams::generate();
        let secret = Secret::generate();
        let weak_or_absurd = [
            KdfParams { m_cost: 19_455, ..ok.clone() },
            KdfParams { m_cost: 1024 * 1024 + 1, ..ok.clone() },
            KdfParams { m_cost: u32::MAX, ..ok.clone() },
            KdfParams { t_cost: 1, ..ok.clone() },
            KdfParams { t_cost: 17, ..ok.clone() },
            KdfParams { t_cost: u32::MAX, ..ok.clone() },
            KdfParams { p_cost: 0, ..ok.clone() },
            KdfParams { p_cost: 2, ..ok.clone() },
        ];
        for params in weak_or_absurd {
            assert_eq!(params.validate(), Err(Error::InvalidKdfParams), "{params:?}");
            // u32::MAX passes or m = 4 TiB would hang or abort here if validation came late.
            assert_eq!(
                FileKeys::derive(&secret, Some(("pw", &params))).err(),
                Some(Error::InvalidKdfParams),
                "{params:?}"
            );
        }
        let edges = [
            KdfParams { m_cost: 1024 * 1024, ..ok.clone() },
            KdfParams { t_cost: 16, ..ok.clone() },
        ];
        for params in edges {
            assert_eq!(params.validate(), Ok(()), "{params:?}");
        }
    }

    fn password_changes_every_key() {
        let secret = Secret::from_bytes([7; 32]);
        let kdf = KdfParams { salt: [1; 16], ..KdfParams::generate() };
        let plain = FileKeys::derive(&secret, None).unwrap();
        let with_pw = FileKeys::derive(&secret, Some(("hunter2", &kdf))).unwrap();
        let again = FileKeys::derive(&secret, Some(("hunter2", &kdf))).unwrap();
        assert_eq!(with_pw.auth_token(), again.auth_token());
        assert_ne!(plain.auth_token(), with_pw.auth_token());
        assert_ne!(plain.content_key().expose_ikm(), with_pw.content_key().expose_ikm());
        assert_ne!(plain.expose_metadata_key(), with_pw.expose_metadata_key());
        let other_salt = KdfParams { salt: [2; 16], ..kdf.clone() };
        let salted = FileKeys::derive(&secret, Some(("hunter2", &other_salt))).unwrap();
        assert_ne!(salted.auth_token(), with_pw.auth_token());
        // The three outputs are independent of one another.
        assert_ne!(&plain.auth_token()[..], plain.content_key().expose_ikm());
    }

    fn metadata_round_trips_and_rejects_other_keys() {
        let keys = FileKeys::derive(&Secret::generate(), None).unwrap();
        let metadata = Metadata { name: "ünï \"côdé\"\n.txt".into(), size: u64::MAX, mime: "text/plain".into() };
        let blob = keys.seal_metadata(&metadata).unwrap();
        assert_eq!(keys.open_metadata(&blob).unwrap(), metadata);
        assert_ne!(keys.seal_metadata(&metadata).unwrap(), blob, "nonce must be random");
        let other = FileKeys::derive(&Secret::generate(), None).unwrap();
        assert_eq!(other.open_metadata(&blob), Err(Error::Decrypt));
        let mut bad_version = blob.clone();
        bad_version[0] = 2;
        assert_eq!(keys.open_metadata(&bad_version), Err(Error::Decrypt));
        for i in 1..blob.len() {
            let mut flipped = blob.clone();
            flipped[i] ^= 1;
            assert_eq!(keys.open_metadata(&flipped), Err(Error::Decrypt), "flip at {i}");
        }
        for len in 0..blob.len() {
            assert_eq!(keys.open_metadata(&blob[..len]), Err(Error::Decrypt), "cut at {len}");
        }
    }

    fn metadata_is_padded_to_64_byte_blocks() {
        let keys = FileKeys::derive(&Secret::generate(), None).unwrap();
        // {"v":1,"name":"","size":7,"type":""} is 36 bytes: names of 0..=28 bytes share a block.
        let len = |name_len| keys.seal_metadata(&meta(name_len)).unwrap().len();
        assert_eq!(len(0), 1 + 12 + 64 + 16);
        assert_eq!(len(28), 1 + 12 + 64 + 16);
        assert_eq!(len(29), 1 + 12 + 128 + 16);
        assert_eq!(len(92), 1 + 12 + 128 + 16);
        assert_eq!(len(93), 1 + 12 + 192 + 16);
    }

    fn metadata_size_is_capped() {
        let keys = FileKeys::derive(&Secret::generate(), None).unwrap();
        // 36 + 3996 = 4032 = 63 blocks: the largest blob is exactly 4061 bytes.
        let largest = keys.seal_metadata(&meta(3996)).unwrap();
        assert_eq!(largest.len(), 1 + 12 + 4032 + 16);
        assert!(largest.len() <= MAX_METADATA_BLOB);
        assert_eq!(keys.open_metadata(&largest).unwrap(), meta(3996));
        assert_eq!(keys.seal_metadata(&meta(3997)).err(), Some(Error::MetadataTooLarge));
    }

    fn sizes_have_the_contract_values() {
        assert_eq!(RECORD_SIZE, 65_536);
        assert_eq!(RECORDS_PER_PART, 64);
        assert_eq!(HEADER_SIZE, 21);
        assert_eq!(part_size(), 4_194_304);
        assert_eq!(first_part_size(), 4_194_325);
        assert_eq!(plaintext_per_part(), 4_193_216);
        assert_eq!(body_size(0), 38);
        assert_eq!(body_size(1), 39);
        assert_eq!(body_size(65_519), 21 + 65_536);
        assert_eq!(body_size(65_520), 21 + 65_536 + 18);
        assert_eq!(body_size(plaintext_per_part()), first_part_size());
        assert_eq!(body_size(u64::MAX), u64::MAX);
        // The worked example of docs/FORMAT.md section 7.
        assert_eq!(body_size(10_000_000), 10_002_622);
        let example = Layout::for_plaintext_len(10_000_000);
        let lens: Vec<u64> = (0..example.part_count()).filter_map(|n| example.part_len(n)).collect();
        assert_eq!(lens, [4_194_325, 4_194_304, 1_613_993]);
    }

    fn layout_matches_the_server_arithmetic() {
        let first = first_part_size();
        let part = part_size();
        let cases = [
            (38, 1),
            (first - 1, 1),
            (first, 1),
            (first + 1, 2),
            (first + part, 2),
            (first + part + 1, 3),
            (first + 10 * part, 11),
        ];
        for (size, count) in cases {
            let layout = Layout::for_body_size(size);
            assert_eq!(layout.part_count(), count, "size {size}");
            assert_eq!(layout.part_range(count), None);
            // The ranges tile [0, size) and all but the last part are full.
            let mut next = 0;
            for n in 0..count {
                let range = layout.part_range(n).unwrap();
                assert_eq!(range.start, next);
                let full = if n == 0 { first } else { part };
                if n + 1 < count {
                    assert_eq!(range.end - range.start, full);
                }
                assert_eq!(layout.part_len(n), Some(range.end - range.start));
                next = range.end;
            }
            assert_eq!(next, size);
        }
        assert_eq!(Layout::new(10, 0, 5), Err(Error::InvalidLayout));
        assert_eq!(Layout::new(10, 5, 0), Err(Error::InvalidLayout));
        let small = Layout::new(10, 4, 3).unwrap();
        assert_eq!(small.part_count(), 3);
        assert_eq!(small.part_range(2), Some(7..10));
        assert_eq!(Layout::for_plaintext_len(0).size(), 38);
    }

    fn plaintext_ranges_follow_parts() {
        let per = plaintext_per_part();
        assert_eq!(part_plaintext_range(0, 0), Some(0..0));
        assert_eq!(part_plaintext_range(0, 1), None);
        assert_eq!(part_plaintext_range(per, 0), Some(0..per));
        assert_eq!(part_plaintext_range(per, 1), None);
        assert_eq!(part_plaintext_range(per + 1, 1), Some(per..per + 1));
        assert_eq!(part_plaintext_range(3 * per, 2), Some(2 * per..3 * per));
    }

    /// Real sizes: two full 4 MiB parts and a short third one, each exactly as long as the
    /// layout (and so the server) expects, and together one valid body.
    fn parts_have_layout_sizes_at_real_record_size() {
        let keys = FileKeys::derive(&Secret::generate(), None).unwrap();
        let len = 2 * plaintext_per_part() + 70_000;
        let plaintext = pattern(usize::try_from(len).unwrap());
        let layout = Layout::for_plaintext_len(len);
        assert_eq!(layout.part_count(), 3);
        let encryptor = Encryptor::new(&keys);
        let mut body = Vec::new();
        for n in 0..3 {
            let range = part_plaintext_range(len, n).unwrap();
            let piece = &plaintext[range.start as usize..range.end as usize];
            let part = encryptor.encrypt_part(n, piece, n == 2).unwrap();
            assert_eq!(Some(part.len() as u64), layout.part_len(n), "part {n}");
            body.extend(part);
        }
        assert_eq!(body.len() as u64, body_size(len));
        assert_eq!(decrypt(&keys, &body).unwrap(), plaintext);
    }

    fn parts_in_any_order_make_the_same_body() {
        let key = key(1);
        let encryptor = Encryptor::with_salt_and_rs(&key, [9; 16], 40).unwrap();
        let per = encryptor.plaintext_per_part() as usize;
        assert_eq!(per, 64 * 23);
        let plaintext = pattern(3 * per + 5);
        let pieces: Vec<&[u8]> = plaintext.chunks(per).collect();
        let clone = encryptor.clone();
        let mut parts = vec![Vec::new(); 4];
        for n in [3, 1, 0, 2] {
            parts[n] = clone.encrypt_part(n as u64, pieces[n], n == 3).unwrap();
        }
        assert_eq!(parts.concat(), encryptor.encrypt_body(&plaintext));
        assert_eq!(decrypt(&key, &parts.concat()).unwrap(), plaintext);
        // Re-encrypting a part (a retried upload) gives the same bytes.
        assert_eq!(encryptor.encrypt_part(1, pieces[1], false).unwrap(), parts[1]);
    }

    fn encrypt_part_checks_lengths() {
        let encryptor = Encryptor::with_salt_and_rs(&key(2), [0; 16], 64).unwrap();
        let per = encryptor.plaintext_per_part() as usize;
        let full = pattern(per);
        assert!(encryptor.encrypt_part(0, &full, false).is_ok());
        assert!(encryptor.encrypt_part(5, &full, true).is_ok());
        assert!(encryptor.encrypt_part(0, &[], true).is_ok());
        let bad: [(u64, &[u8], bool); 6] = [
            (0, &full[1..], false),
            (1, &[], true),
            (0, &[], false),
            (0, &pattern(per + 1), true),
            (0, &pattern(per + 1), false),
            (u64::MAX / 64, &full, false),
        ];
        for (index, plaintext, is_last) in bad {
            assert_eq!(
                encryptor.encrypt_part(index, plaintext, is_last).err(),
                Some(Error::InvalidPart),
                "index {index}, {} bytes, last {is_last}",
                plaintext.len()
            );
        }
    }

    fn record_size_must_be_in_range() {
        for rs in [0, 17, 16 * 1024 * 1024 + 1, u32::MAX] {
            assert_eq!(Encryptor::with_salt_and_rs(&key(3), [0; 16], rs).err(), Some(Error::InvalidRecordSize));
        }
        for rs in [18, 16 * 1024 * 1024] {
            let encryptor = Encryptor::with_salt_and_rs(&key(3), [0; 16], rs).unwrap();
            let body = encryptor.encrypt_body(&pattern(100));
            assert_eq!(decrypt(&key(3), &body).unwrap(), pattern(100));
        }
        // A decryptor rejects a header with rs outside the range, as soon as it sees it.
        let mut body = Encryptor::with_salt_and_rs(&key(3), [0; 16], 18).unwrap().encrypt_body(b"x");
        body[16..20].copy_from_slice(&(16 * 1024 * 1024 + 1u32).to_be_bytes());
        assert_eq!(Decryptor::new(&key(3)).push(&body[..21]).err(), Some(Error::Decrypt));
    }

    /// RFC 8188 does not authenticate rs: another rs may re-split the records, but every
    /// record is bound to its index and the final one to its delimiter, so the result is the
    /// same plaintext or a failure.
    fn changing_rs_never_changes_the_plaintext() {
        let key = key(7);
        let encryptor = Encryptor::with_salt_and_rs(&key, [7; 16], 64).unwrap();
        let single = encryptor.encrypt_body(&pattern(40));
        let multi = encryptor.encrypt_body(&pattern(100));
        for rs in [18u32, 56, 57, 63, 65, 100, 65_536] {
            let mut body = single.clone();
            body[16..20].copy_from_slice(&rs.to_be_bytes());
            let expected = if rs >= 57 { Ok(pattern(40)) } else { Err(Error::Decrypt) };
            assert_eq!(decrypt(&key, &body), expected, "single record, rs {rs}");
            let mut body = multi.clone();
            body[16..20].copy_from_slice(&rs.to_be_bytes());
            assert_eq!(decrypt(&key, &body), Err(Error::Decrypt), "three records, rs {rs}");
        }
    }

    fn encrypt_uses_fresh_salts_and_real_record_size() {
        let keys = FileKeys::derive(&Secret::generate(), None).unwrap();
        let a = encrypt(&keys, b"same");
        let b = encrypt(&keys, b"same");
        assert_ne!(a[..16], b[..16]);
        assert_eq!(a[16..21], [0, 1, 0, 0, 0]);
        assert_eq!(a.len() as u64, body_size(4));
        assert_eq!(decrypt(&keys, &a).unwrap(), b"same");
        assert_eq!(decrypt(keys.content_key(), &b).unwrap(), b"same");
    }

    fn decryptor_emits_full_records_early_and_the_last_at_finish() {
        let key = key(4);
        let encryptor = Encryptor::with_salt_and_rs(&key, [4; 16], 64).unwrap();
        let plaintext = pattern(2 * 47 + 10);
        let body = encryptor.encrypt_body(&plaintext);
        let mut decryptor = Decryptor::new(&key);
        assert_eq!(decryptor.push(&body[..21 + 63]).unwrap(), b"");
        assert_eq!(decryptor.push(&body[21 + 63..21 + 64]).unwrap(), &plaintext[..47]);
        assert_eq!(decryptor.push(&body[21 + 64..]).unwrap(), &plaintext[47..94]);
        assert_eq!(decryptor.finish().unwrap(), &plaintext[94..]);
    }

    fn decryptor_resumes_at_a_record_boundary_and_nowhere_else() {
        let key = key(7);
        let encryptor = Encryptor::with_salt_and_rs(&key, [7; 16], 64).unwrap();
        let plaintext = pattern(47 * 5 + 10);
        let body = encryptor.encrypt_body(&plaintext);
        let header = &body[..21];
        let resumed = |record: u64| {
            let mut decryptor = Decryptor::new(&key);
            assert_eq!(decryptor.push(header).unwrap(), b"");
            decryptor.skip_to(record).map(|()| decryptor)
        };
        // From every record boundary, the rest of the body decrypts to the rest of the file.
        for k in 0..=5 {
            let mut decryptor = resumed(k as u64).unwrap();
            let mut out = decryptor.push(&body[21 + 64 * k..]).unwrap();
            out.extend(decryptor.finish().unwrap());
            assert_eq!(out, &plaintext[47 * k..], "resumed at record {k}");
        }
        // Records given to the wrong place fail: each is bound to its index by its nonce.
        let mut decryptor = resumed(3).unwrap();
        assert_eq!(decryptor.push(&body[21 + 64 * 2..]), Err(Error::Decrypt));
        // The end is still proven: a resumed body cut short fails at finish.
        let mut decryptor = resumed(2).unwrap();
        let _ = decryptor.push(&body[21 + 128..body.len() - 1]).unwrap();
        assert_eq!(decryptor.finish(), Err(Error::Decrypt));
        // Only right after the header: not before it, not within or after a record.
        assert_eq!(Decryptor::new(&key).skip_to(1), Err(Error::Decrypt));
        for read in [21 + 10, 21 + 64] {
            let mut decryptor = Decryptor::new(&key);
            let _ = decryptor.push(&body[..read]).unwrap();
            assert_eq!(decryptor.skip_to(1), Err(Error::Decrypt), "after {read} bytes");
            // A refused skip poisons the decryptor.
            assert_eq!(decryptor.push(&body[read..]), Err(Error::Decrypt));
        }
    }

    fn decryptor_is_poisoned_by_a_failure() {
        let key = key(5);
        let encryptor = Encryptor::with_salt_and_rs(&key, [5; 16], 64).unwrap();
        let body = encryptor.encrypt_body(&pattern(200));
        let mut bad = body.clone();
        bad[21 + 64 + 3] ^= 0x80;
        let mut decryptor = Decryptor::new(&key);
        assert_eq!(decryptor.push(&bad[..21 + 64]).unwrap(), &pattern(200)[..47]);
        assert_eq!(decryptor.push(&bad[21 + 64..21 + 128]), Err(Error::Decrypt));
        // Even the correct bytes are refused from now on.
        assert_eq!(decryptor.push(&body[21 + 128..]), Err(Error::Decrypt));
        assert_eq!(decryptor.finish(), Err(Error::Decrypt));
    }

    fn finish_is_what_detects_truncation() {
        let key = key(6);
        let encryptor = Encryptor::with_salt_and_rs(&key, [6; 16], 64).unwrap();
        let body = encryptor.encrypt_body(&pattern(47 * 4));
        assert_eq!(body.len(), 21 + 4 * 64);
        for cut in 0..body.len() {
            let mut decryptor = Decryptor::new(&key);
            // Every push of a prefix succeeds: it cannot know more is coming.
            let _ = decryptor.push(&body[..cut]).unwrap();
            assert_eq!(decryptor.finish(), Err(Error::Decrypt), "cut at {cut}");
        }
        let mut decryptor = Decryptor::new(&key);
        assert_eq!(decryptor.push(&body).unwrap(), pattern(47 * 4));
        assert_eq!(decryptor.push(&[]).unwrap(), b"");
        assert_eq!(decryptor.finish().unwrap(), b"");
    }

    /// After a full-size final record the decryptor knows the body has ended, so extra bytes
    /// fail at once rather than at finish().
    fn bytes_after_a_full_final_record_fail_in_push() {
        let key = key(8);
        let encryptor = Encryptor::with_salt_and_rs(&key, [8; 16], 64).unwrap();
        let body = encryptor.encrypt_body(&pattern(2 * 47));
        assert_eq!(body.len(), 21 + 2 * 64);
        let mut decryptor = Decryptor::new(&key);
        assert_eq!(decryptor.push(&body).unwrap(), pattern(2 * 47));
        assert_eq!(decryptor.push(b"x"), Err(Error::Decrypt));
        assert_eq!(decryptor.finish(), Err(Error::Decrypt));
    }

    fn types_are_thread_friendly() {
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        fn send<T: Send>() {}
        send_sync_clone::<Encryptor>();
        send_sync_clone::<FileKeys>();
        send_sync_clone::<ContentKey>();
        send::<Decryptor>();
    }
}
