//! Download: a real encrypted file end to end, byte ranges, the download limit, exact even
//! under concurrency, and retried download starts that count once.

use std::sync::Arc;

use axum::http::{Request, header};
use crypto_wasm::{Decryptor, Encryptor, FileKeys, KdfParams, Metadata, Secret};
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn happy_path_with_real_ciphertext() {
    real_ciphertext_round_trip(&TestApp::new().await).await;
}

/// Uploads a real encrypted 9 MB file and downloads it back part by part, whole and as a byte
/// range spanning two parts; `s3.rs` runs the same path against a real S3 server.
pub(crate) async fn real_ciphertext_round_trip(t: &TestApp) {
    // The uploader: a 9 MB file is three parts (two full, one short).
    let plaintext = random_bytes(9_000_000);
    let secret = Secret::generate();
    let keys = FileKeys::derive(&secret, None).unwrap();
    let meta = Metadata {
        name: "holiday.mov".into(),
        size: plaintext.len() as u64,
        mime: "video/quicktime".into(),
    };
    let sealed = keys.seal_metadata(&meta).unwrap();
    let enc = Encryptor::new(&keys);
    let per_part = crypto_wasm::plaintext_per_part() as usize;
    let chunks: Vec<&[u8]> = plaintext.chunks(per_part).collect();
    let parts: Vec<Vec<u8>> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            enc.encrypt_part(i as u64, c, i + 1 == chunks.len())
                .unwrap()
        })
        .collect();
    let body: Vec<u8> = parts.concat();
    assert_eq!(
        body.len() as u64,
        crypto_wasm::body_size(plaintext.len() as u64)
    );

    let spec = Spec {
        size: body.len() as u64,
        first_part_size: crypto_wasm::first_part_size(),
        part_size: crypto_wasm::part_size(),
        ..Spec::default()
    };
    let up = t
        .create_with_body(spec, body.clone(), keys.auth_token().to_vec(), sealed)
        .await;
    assert_eq!(up.auth, keys.auth_token_base64url());
    assert_eq!(up.part_count, 3);
    // Parts may arrive in any order.
    for n in [2, 0, 1] {
        assert_eq!(up.part(n), parts[n as usize]);
        t.put_part(&up, n).await.expect(200, None);
    }
    let done = t.complete(&up).await;
    done.expect(200, None);
    assert_eq!(done.json()["state"], "complete");
    assert_eq!(done.json()["size"], body.len());

    // The downloader, holding only the link.
    let link_secret = Secret::from_base64url(&secret.to_base64url()).unwrap();
    let info = t.get(&format!("/api/v1/files/{}", up.id), None).await;
    info.expect(200, None);
    assert_eq!(
        info.json(),
        json!({"id": up.id, "kdf": null, "expires_at": info.json()["expires_at"], "downloads_remaining": null})
    );
    let keys = FileKeys::derive(&link_secret, None).unwrap();
    let auth = keys.auth_token_base64url();
    let m = t
        .get(&format!("/api/v1/files/{}/metadata", up.id), Some(&auth))
        .await;
    m.expect(200, None);
    let mv = m.json();
    assert_eq!(mv["size"], body.len());
    assert_eq!(mv["first_part_size"], crypto_wasm::first_part_size());
    assert_eq!(mv["part_size"], crypto_wasm::part_size());
    assert_eq!(mv["part_count"], 3);
    let blob = base64_decode(mv["metadata"].as_str().unwrap());
    assert_eq!(keys.open_metadata(&blob).unwrap(), meta);

    let d = t
        .post(
            &format!("/api/v1/files/{}/downloads", up.id),
            Some(&auth),
            None,
        )
        .await;
    d.expect(200, None);
    let ticket = d.json()["ticket"].as_str().unwrap().to_owned();
    assert_eq!(d.json()["downloads_remaining"], Value::Null);

    // Part by part, decrypting as it streams.
    let mut dec = Decryptor::new(&keys);
    let mut out = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        let r = t
            .get(&format!("/api/v1/files/{}/parts/{n}", up.id), Some(&ticket))
            .await;
        r.expect(200, None);
        assert_eq!(r.header("content-type"), "application/octet-stream");
        assert_eq!(r.header("cache-control"), "no-store");
        assert_eq!(r.header("content-length"), part.len().to_string());
        out.extend(dec.push(&r.body).unwrap());
    }
    out.extend(dec.finish().unwrap());
    assert!(
        out == plaintext,
        "decrypted parts differ from the plaintext"
    );

    // And the whole body in one response, byte-identical.
    let r = t
        .get(&format!("/api/v1/files/{}/content", up.id), Some(&ticket))
        .await;
    r.expect(200, None);
    assert_eq!(r.header("content-length"), body.len().to_string());
    assert_eq!(r.header("accept-ranges"), "bytes");
    assert!(
        r.body.as_ref() == body.as_slice(),
        "content differs from the uploaded body"
    );

    // A range across the boundary of parts 0 and 1, read from two objects.
    let (a, b) = (parts[0].len() - 1000, parts[0].len() + 999);
    let req = Request::get(format!("/api/v1/files/{}/content", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {ticket}"))
        .header(header::RANGE, format!("bytes={a}-{b}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let r = t.send(req).await;
    r.expect(206, None);
    assert_eq!(
        r.header("content-range"),
        format!("bytes {a}-{b}/{}", body.len())
    );
    assert!(
        r.body.as_ref() == &body[a..=b],
        "range differs from the uploaded body"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[tokio::test]
async fn kdf_params_are_returned_verbatim() {
    let t = TestApp::new().await;
    let kdf = KdfParams::generate();
    let kdf_json = serde_json::to_value(&kdf).unwrap();
    let up = t
        .upload(Spec {
            kdf: kdf_json.clone(),
            ..Spec::default()
        })
        .await;
    let r = t.get(&format!("/api/v1/files/{}", up.id), None).await;
    assert_eq!(r.json()["kdf"], kdf_json);
    let back: KdfParams = serde_json::from_value(r.json()["kdf"].clone()).unwrap();
    assert_eq!(back, kdf);
    let m = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    assert_eq!(m.json()["kdf"], kdf_json);
}

#[tokio::test]
async fn ranges_206_and_416() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let ticket = t.ticket(&up).await;
    let uri = format!("/api/v1/files/{}/content", up.id);
    let get = |range: &'static str| {
        let req = Request::get(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {ticket}"))
            .header(header::RANGE, range)
            .body(axum::body::Body::empty())
            .unwrap();
        t.send(req)
    };
    // (range, expected start..end) over the 250-byte body whose parts are 0..100, 100..164,
    // 164..228, 228..250.
    for (range, start, end) in [
        ("bytes=0-9", 0, 10),
        ("bytes=90-170", 90, 171),
        ("bytes=100-163", 100, 164),
        ("bytes=-5", 245, 250),
        ("bytes=240-", 240, 250),
        ("bytes=0-", 0, 250),
        ("bytes=200-9999", 200, 250),
    ] {
        let r = get(range).await;
        r.expect(206, None);
        assert_eq!(r.body.as_ref(), &up.body[start..end], "{range}");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {}-{}/250", start, end - 1)
        );
        assert_eq!(r.header("content-length"), (end - start).to_string());
    }
    for range in [
        "bytes=250-",
        "bytes=300-400",
        "bytes=5-1",
        "bytes=0-1,3-4",
        "lines=1-2",
        "bytes=-0",
    ] {
        let r = get(range).await;
        r.expect(416, Some("range_not_satisfiable"));
        assert_eq!(r.header("content-range"), "bytes */250", "{range}");
    }
}

#[tokio::test]
async fn download_limit_is_exact() {
    let t = TestApp::new().await;
    let up = t
        .upload(Spec {
            download_limit: Some(2),
            ..Spec::default()
        })
        .await;
    let uri = format!("/api/v1/files/{}/downloads", up.id);
    let info = t.get(&format!("/api/v1/files/{}", up.id), None).await;
    assert_eq!(info.json()["downloads_remaining"], 2);
    // Fetching metadata is not a download.
    for _ in 0..3 {
        t.get(&format!("/api/v1/files/{}/metadata", up.id), Some(&up.auth))
            .await
            .expect(200, None);
    }
    let first = t.post(&uri, Some(&up.auth), None).await;
    first.expect(200, None);
    assert_eq!(first.json()["downloads_remaining"], 1);
    let second = t.post(&uri, Some(&up.auth), None).await;
    second.expect(200, None);
    assert_eq!(second.json()["downloads_remaining"], 0);
    t.post(&uri, Some(&up.auth), None)
        .await
        .expect(404, Some("not_found"));
    t.get(&format!("/api/v1/files/{}", up.id), None)
        .await
        .expect(404, Some("not_found"));

    // Tickets already granted still work: a download in progress finishes.
    let ticket = second.json()["ticket"].as_str().unwrap().to_owned();
    let r = t
        .get(&format!("/api/v1/files/{}/content", up.id), Some(&ticket))
        .await;
    r.expect(200, None);
    assert_eq!(r.body.as_ref(), up.body.as_slice());
    let m = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    assert_eq!(m.json()["download_count"], 2);
    assert_eq!(m.json()["download_limit"], 2);
}

/// `POST .../downloads` named with an `Idempotency-Key`.
async fn start_named(t: &TestApp, up: &Upload, key: &str) -> Resp {
    let req = Request::post(format!("/api/v1/files/{}/downloads", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.auth))
        .header("idempotency-key", key)
        .body(axum::body::Body::empty())
        .unwrap();
    t.send(req).await
}

#[tokio::test]
async fn a_repeated_download_start_counts_once() {
    let t = TestApp::new().await;
    let up = t
        .upload(Spec {
            download_limit: Some(1),
            ..Spec::default()
        })
        .await;
    // The answer to the first request was lost; the client sends it again, same key.
    let first = start_named(&t, &up, "retry-me-0123456789abcdef").await;
    first.expect(200, None);
    let again = start_named(&t, &up, "retry-me-0123456789abcdef").await;
    again.expect(200, None);
    assert_eq!(again.json()["downloads_remaining"], 0);
    assert_eq!(
        again.json()["expires_at"],
        first.json()["expires_at"],
        "a repeat's ticket expires with the first one"
    );
    // Either ticket reads the file.
    for r in [&first, &again] {
        let ticket = r.json()["ticket"].as_str().unwrap().to_owned();
        let read = t
            .get(&format!("/api/v1/files/{}/content", up.id), Some(&ticket))
            .await;
        read.expect(200, None);
        assert_eq!(read.body.as_ref(), up.body.as_slice());
    }
    let m = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    assert_eq!(m.json()["download_count"], 1, "one download counted");

    // Another key is another download: the limit is reached.
    start_named(&t, &up, "someone-else-0123456789")
        .await
        .expect(404, Some("not_found"));
    // The exhausted file tells a wrong token nothing, even with the first key.
    let stranger = Upload {
        auth: b64(&[9; 32]),
        ..up.clone()
    };
    start_named(&t, &stranger, "retry-me-0123456789abcdef")
        .await
        .expect(404, Some("not_found"));
    // Once the first ticket has expired, the old key is new again, and counts.
    t.exec(
        "UPDATE download_requests SET expires_at = 0 WHERE file_id = ?",
        &up.id,
    )
    .await;
    start_named(&t, &up, "retry-me-0123456789abcdef")
        .await
        .expect(404, Some("not_found"));
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_and_counts_nothing() {
    let t = TestApp::new().await;
    let up = t
        .upload(Spec {
            download_limit: Some(1),
            ..Spec::default()
        })
        .await;
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str(), "tab\there"] {
        start_named(&t, &up, key)
            .await
            .expect(400, Some("bad_request"));
    }
    let info = t.get(&format!("/api/v1/files/{}", up.id), None).await;
    assert_eq!(info.json()["downloads_remaining"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn download_limit_holds_under_concurrency() {
    const LIMIT: u64 = 3;
    const REQUESTS: usize = 24;
    let t = Arc::new(TestApp::new().await);
    let up = t
        .upload(Spec {
            download_limit: Some(LIMIT),
            ..Spec::default()
        })
        .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(REQUESTS));
    let mut tasks = Vec::new();
    for _ in 0..REQUESTS {
        let (t, barrier, uri, auth) = (
            Arc::clone(&t),
            Arc::clone(&barrier),
            format!("/api/v1/files/{}/downloads", up.id),
            up.auth.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            t.post(&uri, Some(&auth), None).await
        }));
    }
    let mut ok = 0;
    let mut remaining = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        match r.status.as_u16() {
            200 => {
                ok += 1;
                remaining.push(r.json()["downloads_remaining"].as_u64().unwrap());
            }
            404 => assert_eq!(r.code(), "not_found"),
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert_eq!(ok, LIMIT);
    remaining.sort_unstable();
    assert_eq!(remaining, vec![0, 1, 2]);
    let m = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    assert_eq!(m.json()["download_count"], LIMIT);
}
