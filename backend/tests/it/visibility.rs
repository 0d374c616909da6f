//! The same-404 rule and token checks: unknown, deleted, expired, exhausted and incomplete
//! files all look identical to anyone but their owner.

use axum::http::Method;

use crate::common::*;

/// Every public route's answer for `id` with `auth`: status and exact body.
async fn public_view(t: &TestApp, id: &str, auth: &str) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    for (method, path) in [
        (Method::GET, format!("/api/v1/files/{id}")),
        (Method::GET, format!("/api/v1/files/{id}/metadata")),
        (Method::POST, format!("/api/v1/files/{id}/downloads")),
        (Method::GET, format!("/api/v1/files/{id}/content")),
        (Method::GET, format!("/api/v1/files/{id}/parts/0")),
    ] {
        let r = t.call(method, &path, Some(auth), None).await;
        out.push((r.status.as_u16(), r.body.to_vec()));
    }
    out
}

#[tokio::test]
async fn unknown_deleted_expired_exhausted_and_incomplete_ids_answer_the_same_404() {
    let t = TestApp::new().await;
    let unknown = public_view(&t, "AAAAAAAAAAAAAAAAAAAAAA", &b64(&[0; 32])).await;
    assert!(unknown.iter().all(|(s, _)| *s == 404), "{unknown:?}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&unknown[0].1).unwrap()["error"]["code"],
        "not_found"
    );
    // A malformed id is the same unknown id.
    assert_eq!(public_view(&t, "nope", &b64(&[0; 32])).await, unknown);

    let incomplete = t.create(Spec::default()).await;
    t.put_part(&incomplete, 0).await.expect(200, None);
    assert_eq!(
        public_view(&t, &incomplete.id, &incomplete.auth).await,
        unknown
    );

    let deleted = t.upload(Spec::default()).await;
    t.call(
        Method::DELETE,
        &format!("/api/v1/files/{}", deleted.id),
        Some(&deleted.owner),
        None,
    )
    .await
    .expect(204, None);
    assert_eq!(public_view(&t, &deleted.id, &deleted.auth).await, unknown);

    let expired = t.upload(Spec::default()).await;
    t.exec("UPDATE files SET expires_at = 0 WHERE id = ?", &expired.id)
        .await;
    assert_eq!(public_view(&t, &expired.id, &expired.auth).await, unknown);
    // Expired is gone for the owner too.
    t.get(
        &format!("/api/v1/files/{}/manage", expired.id),
        Some(&expired.owner),
    )
    .await
    .expect(404, Some("not_found"));

    let exhausted = t
        .upload(Spec {
            download_limit: Some(1),
            ..Spec::default()
        })
        .await;
    t.ticket(&exhausted).await;
    assert_eq!(
        public_view(&t, &exhausted.id, &exhausted.auth).await,
        unknown
    );
    // The owner still sees an exhausted file.
    t.get(
        &format!("/api/v1/files/{}/manage", exhausted.id),
        Some(&exhausted.owner),
    )
    .await
    .expect(200, None);
}

#[tokio::test]
async fn incomplete_upload_is_invisible_but_the_owner_sees_it() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    for n in 0..up.part_count {
        t.put_part(&up, n).await.expect(200, None);
    }
    // Every part is there, but until complete nothing is public.
    t.get(&format!("/api/v1/files/{}", up.id), None)
        .await
        .expect(404, Some("not_found"));
    t.post(
        &format!("/api/v1/files/{}/downloads", up.id),
        Some(&up.auth),
        None,
    )
    .await
    .expect(404, Some("not_found"));
    let r = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    r.expect(200, None);
    assert_eq!(r.json()["state"], "uploading");
    t.complete(&up).await.expect(200, None);
    t.get(&format!("/api/v1/files/{}", up.id), None)
        .await
        .expect(200, None);
}

#[tokio::test]
async fn wrong_auth_token_is_401() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let wrong = b64(&[3u8; 32]);
    for token in [
        Some(wrong.as_str()),
        Some("%%%"),
        None,
        Some(up.owner.as_str()),
    ] {
        let r = t
            .get(&format!("/api/v1/files/{}/metadata", up.id), token)
            .await;
        r.expect(401, Some("bad_token"));
        assert_eq!(r.json()["error"]["message"], "wrong key or password");
        t.post(&format!("/api/v1/files/{}/downloads", up.id), token, None)
            .await
            .expect(401, Some("bad_token"));
        // The right token resets the guess throttle (see `throttle.rs`) between rounds.
        t.get(&format!("/api/v1/files/{}/metadata", up.id), Some(&up.auth))
            .await
            .expect(200, None);
    }
    // None of that counted as a download.
    let r = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    assert_eq!(r.json()["download_count"], 0);
}

#[tokio::test]
async fn wrong_ticket_is_401() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let other = t.upload(Spec::default()).await;
    let other_ticket = t.ticket(&other).await;
    for token in [b64(&[5u8; 32]), up.auth.clone(), other_ticket] {
        t.get(&format!("/api/v1/files/{}/content", up.id), Some(&token))
            .await
            .expect(401, Some("bad_token"));
        t.get(&format!("/api/v1/files/{}/parts/0", up.id), Some(&token))
            .await
            .expect(401, Some("bad_token"));
    }
}
