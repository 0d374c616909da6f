//! The per-file guess throttle on auth-token checks (metadata and downloads): five wrong
//! tokens in a row are free, each further one locks the file's auth checks for
//! min(2^(failures-5), 3600) seconds, during which no token is even looked at.

use std::sync::Arc;

use axum::http::Method;
use backend::db::{MAX_AUTH_LOCK_SECS, auth_lock_secs};

use crate::common::*;

fn metadata_uri(up: &Upload) -> String {
    format!("/api/v1/files/{}/metadata", up.id)
}

fn downloads_uri(up: &Upload) -> String {
    format!("/api/v1/files/{}/downloads", up.id)
}

/// One auth-checked request: even `i` reads the metadata, odd `i` starts a download.
async fn attempt(t: &TestApp, up: &Upload, i: usize, token: &str) -> Resp {
    if i.is_multiple_of(2) {
        t.get(&metadata_uri(up), Some(token)).await
    } else {
        t.post(&downloads_uri(up), Some(token), None).await
    }
}

/// Asserts a 429 `too_many_attempts` that says to retry in `secs` seconds.
#[track_caller]
fn expect_locked(r: &Resp, secs: i64) {
    r.expect(429, Some("too_many_attempts"));
    assert_eq!(r.header("retry-after"), secs.to_string());
    assert_eq!(
        r.json()["error"]["message"],
        format!("Too many wrong passwords or keys for this file. Try again in {secs} seconds.")
    );
    assert_eq!(r.header("cache-control"), "no-store");
}

/// Ends the current lock as if its time had passed, keeping the failure count.
async fn expire_lock(t: &TestApp, up: &Upload) {
    t.exec(
        "UPDATE files SET auth_locked_until = auth_locked_until - 7200 WHERE id = ?",
        &up.id,
    )
    .await;
}

#[tokio::test]
async fn sixth_wrong_token_locks_the_file_and_a_right_one_resets_it() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let ticket = t.ticket(&up).await;
    let wrong = b64(&[7u8; 32]);

    // Five wrong tokens in a row are plain 401s, on both routes.
    for i in 0..5 {
        attempt(&t, &up, i, &wrong)
            .await
            .expect(401, Some("bad_token"));
    }
    assert_eq!(t.throttle(&up.id).await.0, 5);
    // The sixth locks the file for 2^1 seconds.
    let r = attempt(&t, &up, 5, &wrong).await;
    expect_locked(&r, 2);
    let (failures, until) = t.throttle(&up.id).await;
    assert_eq!(failures, 6);
    assert!(until > backend::db::now());

    // During the lock the right token is refused the same way, on both routes, and no
    // attempt is counted or extends the lock.
    for i in 0..4 {
        let r = attempt(&t, &up, i, &up.auth).await;
        r.expect(429, Some("too_many_attempts"));
        let secs: i64 = r.header("retry-after").parse().unwrap();
        assert!((1..=2).contains(&secs), "{secs}");
        attempt(&t, &up, i, &wrong)
            .await
            .expect(429, Some("too_many_attempts"));
    }
    assert_eq!(t.throttle(&up.id).await, (6, until));

    // The lock is on auth checks only: public info, the owner and outstanding tickets work.
    t.get(&format!("/api/v1/files/{}", up.id), None)
        .await
        .expect(200, None);
    let m = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    m.expect(200, None);
    assert_eq!(
        m.json()["download_count"],
        1,
        "only the first ticket counted"
    );
    t.get(&format!("/api/v1/files/{}/parts/0", up.id), Some(&ticket))
        .await
        .expect(200, None);
    let r = t
        .get(&format!("/api/v1/files/{}/content", up.id), Some(&ticket))
        .await;
    r.expect(200, None);
    assert_eq!(r.body.as_ref(), up.body.as_slice());
    t.call(
        Method::PATCH,
        &format!("/api/v1/files/{}", up.id),
        Some(&up.owner),
        Some(serde_json::json!({"download_limit": 10})),
    )
    .await
    .expect(200, None);

    // Once the lock has run out, the next wrong token is failure 7: locked for 2^2 seconds.
    expire_lock(&t, &up).await;
    expect_locked(&attempt(&t, &up, 1, &wrong).await, 4);
    assert_eq!(t.throttle(&up.id).await.0, 7);

    // After that lock the right token works and resets the count.
    expire_lock(&t, &up).await;
    let r = t.get(&metadata_uri(&up), Some(&up.auth)).await;
    r.expect(200, None);
    assert_eq!(t.throttle(&up.id).await, (0, 0));
    // So five wrong tokens are free again, and a download with the right one works.
    for i in 0..5 {
        attempt(&t, &up, i, &wrong)
            .await
            .expect(401, Some("bad_token"));
    }
    t.ticket(&up).await;
    assert_eq!(t.throttle(&up.id).await, (0, 0));
    for i in 0..5 {
        attempt(&t, &up, i, &wrong)
            .await
            .expect(401, Some("bad_token"));
    }
    expect_locked(&attempt(&t, &up, 5, &wrong).await, 2);
}

#[tokio::test]
async fn the_lock_doubles_per_failure_up_to_an_hour() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let wrong = b64(&[9u8; 32]);
    let mut seen = Vec::new();
    for failures in 6..=22_i64 {
        // The file has failed failures - 1 times and its last lock has run out.
        sqlx::query("UPDATE files SET auth_failures = ?, auth_locked_until = 0 WHERE id = ?")
            .bind(failures - 1)
            .bind(&up.id)
            .execute(t.state.db.pool())
            .await
            .unwrap();
        let r = attempt(&t, &up, failures as usize, &wrong).await;
        r.expect(429, Some("too_many_attempts"));
        let secs: i64 = r.header("retry-after").parse().unwrap();
        assert_eq!(secs, auth_lock_secs(failures));
        assert_eq!(t.throttle(&up.id).await.0, failures);
        seen.push(secs);
    }
    let mut expected: Vec<i64> = (1..=11).map(|e| 1 << e).collect();
    expected.extend([MAX_AUTH_LOCK_SECS; 6]);
    assert_eq!(seen, expected, "2, 4, ..., 2048, then an hour");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_wrong_tokens_are_counted_exactly() {
    const BELOW: usize = 5;
    const FLOOD: usize = 24;
    let t = Arc::new(TestApp::new().await);

    // Up to the free allowance, every concurrent failure is counted: none is lost.
    let up = t.upload(Spec::default()).await;
    let statuses = flood(&t, &up, BELOW).await;
    assert_eq!(statuses, vec![401; BELOW]);
    assert_eq!(t.throttle(&up.id).await, (BELOW as i64, 0));

    // Past it, exactly five are answered 401 and counted, the sixth is counted and locks,
    // and every other one is refused unchecked, whatever the interleaving.
    let up = t.upload(Spec::default()).await;
    let mut statuses = flood(&t, &up, FLOOD).await;
    statuses.sort_unstable();
    let mut expected = vec![401; 5];
    expected.extend(vec![429; FLOOD - 5]);
    assert_eq!(statuses, expected);
    assert_eq!(t.throttle(&up.id).await.0, 6);

    // None of it was a download.
    let m = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    assert_eq!(m.json()["download_count"], 0);
}

/// `n` wrong tokens at once, alternating the two routes; returns the statuses.
async fn flood(t: &Arc<TestApp>, up: &Upload, n: usize) -> Vec<u16> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (t, up, barrier) = (Arc::clone(t), up.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let wrong = b64(&[i as u8 + 1; 32]);
            barrier.wait().await;
            attempt(&t, &up, i, &wrong).await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        match r.status.as_u16() {
            401 => assert_eq!(r.code(), "bad_token"),
            429 => assert_eq!(r.code(), "too_many_attempts"),
            other => panic!("unexpected {other}: {:?}", r.body),
        }
        statuses.push(r.status.as_u16());
    }
    statuses
}
