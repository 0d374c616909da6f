//! Upload: create validation, part PUT (size caps, truncation, hashes, idempotency,
//! conflicts, the concurrency limit, the idle timeout), resume listing, complete.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, header};
use backend::storage::{PutOutcome, part_key};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use serde_json::{Value, json};

use crate::common::*;

fn create_body(overrides: Value) -> Value {
    let mut body = json!({
        "metadata": b64(&[1u8; 48]),
        "auth_token": b64(&[7u8; 32]),
        "kdf": null,
        "size": 250,
        "first_part_size": FIRST,
        "part_size": PART,
        "expires_in": 3600,
        "download_limit": null,
    });
    for (k, v) in overrides.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn create_returns_id_token_part_count() {
    let t = TestApp::new().await;
    let r = t
        .post("/api/v1/files", None, Some(create_body(json!({}))))
        .await;
    r.expect(201, None);
    let v = r.json();
    assert_eq!(v["id"].as_str().unwrap().len(), 22);
    assert_eq!(v["owner_token"].as_str().unwrap().len(), 43);
    assert_eq!(v["part_count"], 4);
    assert!(v["expires_at"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn create_rejects_bad_fields() {
    let t = TestApp::new().await;
    for (overrides, status, code) in [
        (json!({"expires_in": 3599}), 400, "bad_request"),
        (json!({"expires_in": 2_592_001}), 400, "bad_request"),
        (json!({"download_limit": 0}), 400, "bad_request"),
        (json!({"auth_token": b64(&[1u8; 31])}), 400, "bad_request"),
        (json!({"auth_token": "not base64!"}), 400, "bad_request"),
        (json!({"metadata": b64(&[1u8; 4097])}), 400, "bad_request"),
        (json!({"metadata": ""}), 400, "bad_request"),
        (json!({"size": 0}), 400, "bad_request"),
        (json!({"part_size": 0}), 400, "bad_request"),
        (json!({"first_part_size": 65 << 20}), 400, "bad_request"),
        (
            json!({"size": 1u64 << 40, "first_part_size": 1, "part_size": 1}),
            413,
            "file_too_large",
        ),
        (
            json!({"size": 10_000_000, "first_part_size": 1, "part_size": 1}),
            400,
            "bad_request",
        ),
        (
            json!({"kdf": {"alg": "scrypt", "m_cost": 1, "t_cost": 1, "p_cost": 1, "salt": b64(&[0; 16])}}),
            400,
            "bad_request",
        ),
        (
            json!({"kdf": {"alg": "argon2id", "m_cost": 19456, "t_cost": 2, "p_cost": 1, "salt": b64(&[0; 15])}}),
            400,
            "bad_request",
        ),
        (json!({"unexpected": 1}), 400, "bad_request"),
    ] {
        let r = t
            .post("/api/v1/files", None, Some(create_body(overrides.clone())))
            .await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "{overrides}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.code(), code, "{overrides}");
    }
}

#[tokio::test]
async fn malformed_json_is_400_in_the_envelope() {
    let t = TestApp::new().await;
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut b = Request::post("/api/v1/files");
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(Body::from(body)).unwrap()
    };
    // Syntax error, wrong type, missing field, no content type: all 400 bad_request.
    for req in [
        raw("{not json", Some("application/json")),
        raw(r#"{"metadata": 5}"#, Some("application/json")),
        raw(r#"{"metadata": "AAAA"}"#, Some("application/json")),
        raw("{}", None),
    ] {
        let r = t.send(req).await;
        r.expect(400, Some("bad_request"));
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    // The same on PATCH, an owner route.
    let up = t.upload(Spec::default()).await;
    let req = Request::patch(format!("/api/v1/files/{}", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("[1,2"))
        .unwrap();
    t.send(req).await.expect(400, Some("bad_request"));
}

#[tokio::test]
async fn truncated_part_leaves_no_row_and_no_object() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    let full = up.part(0);

    // A body that simply ends early, announcing the full part's hash.
    let req = Request::put(format!("/api/v1/files/{}/parts/0", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(&full))
        .body(Body::from(full[..50].to_vec()))
        .unwrap();
    t.send(req).await.expect(400, Some("part_size_mismatch"));

    // A body whose stream fails midway, as when the client disconnects.
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::copy_from_slice(&full[..60])),
        Err(std::io::Error::other("connection reset")),
    ];
    let req = Request::put(format!("/api/v1/files/{}/parts/0", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(&full))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    t.send(req).await.expect(400, Some("part_size_mismatch"));

    // A declared Content-Length that is short is refused before reading.
    let req = Request::put(format!("/api/v1/files/{}/parts/0", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(&full))
        .header(header::CONTENT_LENGTH, "50")
        .body(Body::from(full[..50].to_vec()))
        .unwrap();
    t.send(req).await.expect(400, Some("part_size_mismatch"));

    let parts = t
        .get(&format!("/api/v1/files/{}/parts", up.id), Some(&up.owner))
        .await;
    assert_eq!(parts.json()["parts"], json!([]));
    assert!(t.objects(&up.id).await.is_empty());
}

#[tokio::test]
async fn oversized_part_is_413_without_reading_the_rest() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    let mut long = up.part(1);
    long.push(0);

    // Streamed: one byte too many.
    t.put_raw(&up.id, &up.owner, 1, long.clone())
        .await
        .expect(413, Some("part_too_large"));

    // A stream that sends too much and then never ends: the answer must still come, so the
    // server stops reading as soon as the cap is passed.
    let endless = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(long)) })
        .chain(futures::stream::pending());
    let req = Request::put(format!("/api/v1/files/{}/parts/1", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(&up.part(1)))
        .body(Body::from_stream(endless))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), t.send(req))
        .await
        .expect("413 must not wait for the rest of the body");
    r.expect(413, Some("part_too_large"));

    // A declared Content-Length above the part size: refused before reading anything.
    let req = Request::put(format!("/api/v1/files/{}/parts/1", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(&up.part(1)))
        .header(header::CONTENT_LENGTH, "1000000000")
        .body(Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::io::Error>,
        >()))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), t.send(req))
        .await
        .expect("413 must not read the body");
    r.expect(413, Some("part_too_large"));

    assert!(t.objects(&up.id).await.is_empty());
}

#[tokio::test]
async fn wrong_hash_is_400() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    let req = Request::put(format!("/api/v1/files/{}/parts/0", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(b"something else"))
        .body(Body::from(up.part(0)))
        .unwrap();
    t.send(req).await.expect(400, Some("hash_mismatch"));

    // Missing or malformed hash header.
    let not_hex = "zz".repeat(32);
    for value in [None, Some("abc"), Some(not_hex.as_str())] {
        let mut b = Request::put(format!("/api/v1/files/{}/parts/0", up.id))
            .header(header::AUTHORIZATION, format!("Bearer {}", up.owner));
        if let Some(v) = value {
            b = b.header("x-content-sha256", v);
        }
        t.send(b.body(Body::from(up.part(0))).unwrap())
            .await
            .expect(400, Some("bad_request"));
    }
    assert!(t.objects(&up.id).await.is_empty());
}

#[tokio::test]
async fn bad_part_number_is_400() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    t.put_raw(&up.id, &up.owner, 4, vec![0; 22])
        .await
        .expect(400, Some("bad_part_number"));
    let req = Request::put(format!("/api/v1/files/{}/parts/x", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(b""))
        .body(Body::empty())
        .unwrap();
    t.send(req).await.expect(400, Some("bad_part_number"));
}

#[tokio::test]
async fn idempotent_part_reput() {
    idempotent_part_reput_on(&TestApp::new().await).await;
}

/// The same part twice is one object and one row; shared with `s3.rs`.
pub(crate) async fn idempotent_part_reput_on(t: &TestApp) {
    let up = t.create(Spec::default()).await;
    let first = t.put_part(&up, 2).await;
    first.expect(200, None);
    assert_eq!(first.json(), json!({"part": 2, "size": 64}));
    let again = t.put_part(&up, 2).await;
    again.expect(200, None);
    assert_eq!(again.json(), first.json());
    let parts = t
        .get(&format!("/api/v1/files/{}/parts", up.id), Some(&up.owner))
        .await;
    assert_eq!(
        parts.json(),
        json!({"parts": [{"n": 2, "size": 64, "sha256": sha256_hex(&up.part(2))}]})
    );
    assert_eq!(
        t.objects(&up.id).await,
        vec![format!("files/{}/00000002", up.id)]
    );
}

#[tokio::test]
async fn part_conflict_is_409_and_keeps_the_first_bytes() {
    part_conflict_on(&TestApp::new().await).await;
}

/// Other bytes for a stored part are refused and the first bytes survive; shared with `s3.rs`.
pub(crate) async fn part_conflict_on(t: &TestApp) {
    let up = t.create(Spec::default()).await;
    t.put_part(&up, 1).await.expect(200, None);
    let mut other = up.part(1);
    other[0] ^= 1;
    t.put_raw(&up.id, &up.owner, 1, other)
        .await
        .expect(409, Some("part_conflict"));
    // The stored part is still the first one: the full round trip checks the bytes.
    for n in [0, 2, 3] {
        t.put_part(&up, n).await.expect(200, None);
    }
    t.complete(&up).await.expect(200, None);
    let ticket = t.ticket(&up).await;
    let r = t
        .get(&format!("/api/v1/files/{}/content", up.id), Some(&ticket))
        .await;
    assert_eq!(r.body.as_ref(), up.body.as_slice());
}

#[tokio::test]
async fn stored_objects_are_never_overwritten() {
    create_only_storage_on(&TestApp::new().await).await;
}

/// Create-only semantics of the store itself, below the database check: an object left
/// without a row (as after a crash between the write and the row insert) is never replaced by
/// other bytes, while the identical bytes count as stored. Shared with `s3.rs`.
pub(crate) async fn create_only_storage_on(t: &TestApp) {
    let up = t.create(Spec::default()).await;

    // Part 1: an orphan with other bytes.
    let real = up.part(1);
    let mut other = real.clone();
    other[0] ^= 1;
    assert_eq!(store(t, &up, 1, &other).await, PutOutcome::Created);
    assert_eq!(
        store(t, &up, 1, &other).await,
        PutOutcome::AlreadyStored,
        "identical retry"
    );
    assert_eq!(store(t, &up, 1, &real).await, PutOutcome::Conflict);
    assert_eq!(stored(t, &up, 1).await, other);
    // Through the API the orphan's bytes win too: the client's different bytes would reuse
    // the part's nonces, so they are refused rather than written over the orphan.
    t.put_part(&up, 1).await.expect(409, Some("part_conflict"));
    assert_eq!(stored(t, &up, 1).await, other);

    // Part 2: an orphan with the right bytes is simply adopted.
    assert_eq!(store(t, &up, 2, &up.part(2)).await, PutOutcome::Created);
    t.put_part(&up, 2).await.expect(200, None);
    let parts = t
        .get(&format!("/api/v1/files/{}/parts", up.id), Some(&up.owner))
        .await;
    assert_eq!(
        parts.json(),
        json!({"parts": [{"n": 2, "size": 64, "sha256": sha256_hex(&up.part(2))}]})
    );
    assert_eq!(stored(t, &up, 2).await, up.part(2));
}

/// Writes part `n` straight to the store, bypassing the API and the database.
async fn store(t: &TestApp, up: &Upload, n: u64, bytes: &[u8]) -> PutOutcome {
    t.state
        .storage
        .put_part(
            &part_key(&up.id, n),
            Bytes::copy_from_slice(bytes),
            &backend::ids::hash(bytes),
        )
        .await
        .unwrap()
}

/// Reads part `n` straight from the store.
async fn stored(t: &TestApp, up: &Upload, n: u64) -> Vec<u8> {
    let len = up.part(n).len() as u64;
    let chunks: Vec<Bytes> = t
        .state
        .storage
        .get_range(&part_key(&up.id, n), 0..len)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    chunks.concat()
}

#[tokio::test]
async fn part_after_complete_is_409() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    t.put_part(&up, 0)
        .await
        .expect(409, Some("already_complete"));
}

#[tokio::test]
async fn complete_with_missing_parts_is_409_listing_them() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    t.put_part(&up, 0).await.expect(200, None);
    t.put_part(&up, 2).await.expect(200, None);
    let r = t.complete(&up).await;
    r.expect(409, Some("missing_parts"));
    assert_eq!(r.json()["error"]["message"], "missing parts: 1, 3");
    // Still invisible to the public.
    t.get(&format!("/api/v1/files/{}", up.id), None)
        .await
        .expect(404, Some("not_found"));
    // Completing after the rest arrives works, and completing again is harmless.
    t.put_part(&up, 1).await.expect(200, None);
    t.put_part(&up, 3).await.expect(200, None);
    let r = t.complete(&up).await;
    r.expect(200, None);
    assert_eq!(r.json()["state"], "complete");
    t.complete(&up).await.expect(200, None);
}

#[tokio::test]
async fn bad_owner_token() {
    let t = TestApp::new().await;
    let done = t.upload(Spec::default()).await;
    let pending = t.create(Spec::default()).await;
    let wrong = b64(&[9u8; 32]);

    // On a public file a wrong owner token is 403 bad_token, on every owner route.
    for (method, path) in [
        (Method::GET, "manage"),
        (Method::GET, "parts"),
        (Method::POST, "complete"),
    ] {
        let r = t
            .call(
                method,
                &format!("/api/v1/files/{}/{path}", done.id),
                Some(&wrong),
                None,
            )
            .await;
        r.expect(403, Some("bad_token"));
    }
    t.call(
        Method::DELETE,
        &format!("/api/v1/files/{}", done.id),
        Some(&wrong),
        None,
    )
    .await
    .expect(403, Some("bad_token"));
    t.call(
        Method::DELETE,
        &format!("/api/v1/files/{}", done.id),
        None,
        None,
    )
    .await
    .expect(403, Some("bad_token"));
    // The auth token is not an owner token.
    t.get(
        &format!("/api/v1/files/{}/manage", done.id),
        Some(&done.auth),
    )
    .await
    .expect(403, Some("bad_token"));

    // On a file the public cannot see, a wrong owner token learns nothing: plain 404.
    t.put_raw(&pending.id, &wrong, 0, pending.part(0))
        .await
        .expect(404, Some("not_found"));
    t.get(
        &format!("/api/v1/files/{}/manage", pending.id),
        Some(&wrong),
    )
    .await
    .expect(404, Some("not_found"));
    assert!(t.objects(&pending.id).await.is_empty());
}

#[tokio::test]
async fn single_part_file() {
    let t = TestApp::new().await;
    let up = t
        .upload(Spec {
            size: 38,
            ..Spec::default()
        })
        .await;
    assert_eq!(up.part_count, 1);
    let ticket = t.ticket(&up).await;
    let r = t
        .get(&format!("/api/v1/files/{}/parts/0", up.id), Some(&ticket))
        .await;
    r.expect(200, None);
    assert_eq!(r.body.as_ref(), up.body.as_slice());
}

#[tokio::test]
async fn lifetime_starts_at_completion() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    // Pretend the upload started two hours ago with a one-hour lifetime: a slow upload must
    // not expire before it is even complete.
    t.exec(
        "UPDATE files SET created_at = created_at - 7200, expires_at = expires_at - 7200 \
         WHERE id = ?",
        &up.id,
    )
    .await;
    t.finish(&up).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let r = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    let expires_at = r.json()["expires_at"].as_i64().unwrap();
    assert!(
        (now + 3590..=now + 3610).contains(&expires_at),
        "{expires_at} vs {now}"
    );
    t.get(&format!("/api/v1/files/{}", up.id), None)
        .await
        .expect(200, None);
}

/// A PUT of part `n` whose body is `body`, announcing the hash of the real part.
fn put_streamed(
    up: &Upload,
    n: u64,
    body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Request<Body> {
    Request::put(format!("/api/v1/files/{}/parts/{n}", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(&up.part(n)))
        .body(Body::from_stream(body))
        .unwrap()
}

/// The first `k` bytes of part `n`, then nothing ever again: a client that stalled.
fn stalled_body(
    up: &Upload,
    n: u64,
    k: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    held_body(up, n, k, std::future::pending())
}

/// The first `k` bytes of part `n`, then nothing until `release` resolves, then the rest: a
/// PUT the test holds mid-body.
fn held_body(
    up: &Upload,
    n: u64,
    k: usize,
    release: impl Future<Output = ()> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let part = up.part(n);
    let head = Bytes::copy_from_slice(&part[..k]);
    let tail = Bytes::copy_from_slice(&part[k..]);
    futures::stream::once(async move { Ok(head) }).chain(futures::stream::once(async move {
        release.await;
        Ok(tail)
    }))
}

#[tokio::test]
async fn part_uploads_beyond_the_limit_get_503_server_busy() {
    let t = TestApp::with(|c| c.max_concurrent_parts = 1).await;
    let up = t.create(Spec::default()).await;
    assert_eq!(t.state.part_permits_available(), 1);

    // A first upload sends a few bytes and hangs, holding the only permit.
    let app = t.app.clone();
    let req = put_streamed(&up, 0, stalled_body(&up, 0, 10));
    let holder = tokio::spawn(async move { send(&app, req).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.state.part_permits_available() != 0 {
        assert!(
            Instant::now() < deadline,
            "the first upload never took its permit"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // A second one is refused at once, before its body is read, with a hint to retry.
    let r = tokio::time::timeout(Duration::from_secs(10), t.put_part(&up, 1))
        .await
        .expect("503 must not wait for a permit");
    r.expect(503, Some("server_busy"));
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.header("cache-control"), "no-store");
    // Requests that fail validation still get their own answer: the permit comes later.
    t.put_raw(&up.id, &up.owner, 4, vec![0; 22])
        .await
        .expect(400, Some("bad_part_number"));

    // The first client goes away: its permit comes back, and nothing of it was stored.
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    assert_eq!(t.state.part_permits_available(), 1);
    assert!(t.objects(&up.id).await.is_empty());
    t.put_part(&up, 1).await.expect(200, None);
    t.put_part(&up, 0).await.expect(200, None);
    assert_eq!(t.state.part_permits_available(), 1);
}

#[tokio::test]
async fn stalled_part_body_is_408_timeout_and_stores_nothing() {
    let idle = Duration::from_millis(300);
    let t = TestApp::with(|c| c.part_idle_timeout = idle).await;
    let up = t.create(Spec::default()).await;

    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        t.send(put_streamed(&up, 0, stalled_body(&up, 0, 60))),
    )
    .await
    .expect("a stalled body must be given up on");
    r.expect(408, Some("timeout"));
    assert!(
        started.elapsed() >= idle,
        "gave up after {:?}",
        started.elapsed()
    );
    // A body that never sends a byte is given up on too.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        t.send(put_streamed(&up, 1, futures::stream::pending())),
    )
    .await
    .expect("a silent body must be given up on");
    r.expect(408, Some("timeout"));

    assert_eq!(
        t.state.part_permits_available(),
        t.state.config.max_concurrent_parts
    );
    let parts = t
        .get(&format!("/api/v1/files/{}/parts", up.id), Some(&up.owner))
        .await;
    assert_eq!(parts.json()["parts"], json!([]));
    assert!(t.objects(&up.id).await.is_empty());

    // The timeout is per silence, not per part: a slow but steady body (ten chunks 50 ms
    // apart, 500 ms in all, longer than the timeout) goes through.
    let chunks: Vec<Bytes> = up.part(0).chunks(10).map(Bytes::copy_from_slice).collect();
    let steady = futures::stream::iter(chunks).then(|c| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, std::io::Error>(c)
    });
    let started = Instant::now();
    t.send(put_streamed(&up, 0, steady)).await.expect(200, None);
    assert!(started.elapsed() > idle);
}

#[tokio::test]
async fn put_held_across_delete_and_gc_is_404_and_leaves_nothing() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    t.put_part(&up, 1).await.expect(200, None);

    // A PUT of part 0 sends a few bytes and waits.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let req = put_streamed(
        &up,
        0,
        held_body(&up, 0, 10, async move {
            let _ = released.await;
        }),
    );
    let app = t.app.clone();
    let put = tokio::spawn(async move { send(&app, req).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.state.part_permits_available() == t.state.config.max_concurrent_parts {
        assert!(Instant::now() < deadline, "the PUT never started its body");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Meanwhile the owner deletes the file and the GC runs.
    t.call(
        Method::DELETE,
        &format!("/api/v1/files/{}", up.id),
        Some(&up.owner),
        None,
    )
    .await
    .expect(204, None);
    backend::gc::run_once(&t.state).await.unwrap();
    assert_eq!(t.rows(&up.id).await, 0);

    // The body then completes: the file is gone, so is anything the PUT stored.
    release.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), put)
        .await
        .expect("the released PUT must answer")
        .unwrap();
    r.expect(404, Some("not_found"));
    assert_eq!(
        r.body,
        t.get(
            "/api/v1/files/AAAAAAAAAAAAAAAAAAAAAA/parts",
            Some(&up.owner)
        )
        .await
        .body,
        "the same 404 as an unknown id"
    );
    assert!(t.objects(&up.id).await.is_empty());
    assert_eq!(t.files_on_disk(&up.id), Vec::<std::path::PathBuf>::new());
    assert_eq!(t.rows(&up.id).await, 0);
}

/// A retried PUT of part 0 whose write reaches the store only after the owner deleted the
/// file and a GC pass deleted its objects, but before that pass removed the rows: the first
/// PUT's row is still there, yet the retry's object would outlive the purge. It must be
/// answered 404 and remove the object it created.
#[tokio::test]
async fn retried_put_racing_delete_and_purge_leaves_no_orphan() {
    let (t, store) = TestApp::gated().await;
    let up = t.create(Spec::default()).await;

    // The retry has read and checked its body, found no row, and is about to write.
    let (reached, release) = store.hold_next_put(part_key(&up.id, 0));
    let app = t.app.clone();
    let req = put_streamed(&up, 0, futures::stream::iter([Ok(Bytes::from(up.part(0)))]));
    let retry = tokio::spawn(async move { send(&app, req).await });
    tokio::time::timeout(Duration::from_secs(10), reached)
        .await
        .expect("the retry never reached the store")
        .unwrap();

    // The first PUT of the same part completes meanwhile.
    t.put_part(&up, 0).await.expect(200, None);
    assert_eq!(t.files_on_disk(&up.id).len(), 1);

    // The owner deletes the file (what DELETE does, minus its own background purge, whose
    // timing a test cannot control), and a GC pass starts: objects first...
    assert!(
        t.state
            .db
            .mark_deleted(&up.id, backend::db::now())
            .await
            .unwrap()
    );
    assert_eq!(
        t.state.storage.delete_file_objects(&up.id).await.unwrap(),
        1
    );

    // ...the retry's write lands now, on an empty key...
    release.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), retry)
        .await
        .expect("the released PUT must answer")
        .unwrap();
    r.expect(404, Some("not_found"));

    // ...and the pass ends with the rows. Nothing of the file may be left.
    assert!(t.state.db.purge_rows(&up.id).await.unwrap());
    assert_eq!(t.rows(&up.id).await, 0);
    assert!(t.objects(&up.id).await.is_empty());
    assert_eq!(t.files_on_disk(&up.id), Vec::<std::path::PathBuf>::new());
}

/// Waits (up to 10 s) until `check` holds: staging files are removed in the background.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a path on disk is a staging file (`<object>#<n>`).
fn is_staging(path: &std::path::Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains('#'))
}

#[tokio::test]
async fn large_parts_stream_to_disk_in_small_chunks() {
    // Parts of several write batches, sent in uneven chunks, some tiny.
    let part = 3 * backend::storage::WRITE_BATCH as u64 + 12_345;
    let t = TestApp::new().await;
    let up = t
        .create(Spec {
            size: 2 * part + 1000,
            first_part_size: part,
            part_size: part,
            ..Spec::default()
        })
        .await;
    for n in 0..up.part_count {
        let bytes = up.part(n);
        let mut chunks = Vec::new();
        let mut rest = &bytes[..];
        for size in [1, 7, 65_536, 200_000, 1_000_000].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (head, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(head)));
            rest = tail;
        }
        t.send(put_streamed(&up, n, futures::stream::iter(chunks)))
            .await
            .expect(200, None);
        assert_eq!(stored(&t, &up, n).await, bytes);
    }
    let on_disk = t.files_on_disk(&up.id);
    assert_eq!(on_disk.len(), 3, "{on_disk:?}");
    assert!(!on_disk.iter().any(|p| is_staging(p)), "{on_disk:?}");
    t.complete(&up).await.expect(200, None);
}

#[tokio::test]
async fn refused_bodies_leave_no_file_on_disk() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    let full = up.part(0);

    // Cut off by a body error, too long, and mis-hashed: each after the staging file exists.
    let cut = vec![
        Ok(Bytes::copy_from_slice(&full[..60])),
        Err(std::io::Error::other("connection reset")),
    ];
    t.send(put_streamed(&up, 0, futures::stream::iter(cut)))
        .await
        .expect(400, Some("part_size_mismatch"));
    let mut long = full.clone();
    long.push(0);
    t.put_raw(&up.id, &up.owner, 0, long)
        .await
        .expect(413, Some("part_too_large"));
    let req = Request::put(format!("/api/v1/files/{}/parts/0", up.id))
        .header(header::AUTHORIZATION, format!("Bearer {}", up.owner))
        .header("x-content-sha256", sha256_hex(b"other bytes"))
        .body(Body::from(full))
        .unwrap();
    t.send(req).await.expect(400, Some("hash_mismatch"));

    assert!(t.objects(&up.id).await.is_empty());
    eventually("refused bodies left files behind", || {
        t.files_on_disk(&up.id).is_empty()
    })
    .await;
}

#[tokio::test]
async fn concurrent_puts_of_one_part_store_one_object() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;

    // The same bytes twice at once: both acknowledged, one object.
    let (a, b) = tokio::join!(t.put_part(&up, 1), t.put_part(&up, 1));
    a.expect(200, None);
    b.expect(200, None);
    assert_eq!(stored(&t, &up, 1).await, up.part(1));

    // Different bytes at once, each with its own hash: exactly one is stored, the other is a
    // conflict, whichever wins.
    let other = random_bytes(up.part(2).len());
    let (a, b) = tokio::join!(
        t.put_part(&up, 2),
        t.put_raw(&up.id, &up.owner, 2, other.clone())
    );
    let stored_2 = stored(&t, &up, 2).await;
    match (a.status.as_u16(), b.status.as_u16()) {
        (200, 409) => assert_eq!(stored_2, up.part(2)),
        (409, 200) => assert_eq!(stored_2, other),
        other => panic!("expected one 200 and one 409, got {other:?}"),
    }

    eventually("staging files left behind", || {
        let on_disk = t.files_on_disk(&up.id);
        on_disk.len() == 2 && !on_disk.iter().any(|p| is_staging(p))
    })
    .await;
}

/// A PUT still receiving a part when the owner deletes the file and the purge runs: the purge
/// removes its staging file, and the PUT answers 404 and leaves nothing.
#[tokio::test]
async fn put_whose_staging_file_is_purged_mid_body_is_404() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;

    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let req = put_streamed(
        &up,
        0,
        held_body(&up, 0, 10, async move {
            let _ = released.await;
        }),
    );
    let app = t.app.clone();
    let put = tokio::spawn(async move { send(&app, req).await });
    eventually("the PUT never created its staging file", || {
        t.files_on_disk(&up.id).iter().any(|p| is_staging(p))
    })
    .await;

    t.call(
        Method::DELETE,
        &format!("/api/v1/files/{}", up.id),
        Some(&up.owner),
        None,
    )
    .await
    .expect(204, None);
    backend::gc::run_once(&t.state).await.unwrap();
    assert_eq!(t.files_on_disk(&up.id), Vec::<std::path::PathBuf>::new());

    release.send(()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), put)
        .await
        .expect("the released PUT must answer")
        .unwrap();
    r.expect(404, Some("not_found"));
    assert_eq!(t.files_on_disk(&up.id), Vec::<std::path::PathBuf>::new());
    assert!(
        !t.state
            .config
            .objects_dir()
            .join("files")
            .join(&up.id)
            .exists()
    );
}

/// Staging files a crash left behind are never listed as objects, and the file's purge
/// removes them with its directory.
#[tokio::test]
async fn purge_removes_leftover_staging_files() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    t.put_part(&up, 0).await.expect(200, None);
    let dir = t.state.config.objects_dir().join("files").join(&up.id);
    std::fs::write(dir.join("00000001#3"), b"half a part").unwrap();
    assert_eq!(t.objects(&up.id).await, [part_key(&up.id, 0).to_string()]);

    t.call(
        Method::DELETE,
        &format!("/api/v1/files/{}", up.id),
        Some(&up.owner),
        None,
    )
    .await
    .expect(204, None);
    backend::gc::run_once(&t.state).await.unwrap();
    assert!(!dir.exists(), "{:?}", t.files_on_disk(&up.id));
}
