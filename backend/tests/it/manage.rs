//! Owner management: the manage view, PATCH of expiry and limit, DELETE.

use axum::http::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn manage_shows_everything_the_owner_needs() {
    let t = TestApp::new().await;
    let up = t
        .upload(Spec {
            download_limit: Some(5),
            ..Spec::default()
        })
        .await;
    let r = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    r.expect(200, None);
    let v = r.json();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 9, "exactly the contract's fields: {keys:?}");
    assert_eq!(v["id"], up.id);
    assert_eq!(v["state"], "complete");
    assert_eq!(v["kdf"], json!(null));
    assert_eq!(v["metadata"].as_str().unwrap().len(), 64); // 48 bytes, base64url
    assert_eq!(v["size"], 250);
    assert_eq!(v["download_limit"], 5);
    assert_eq!(v["download_count"], 0);
    assert!(v["created_at"].as_i64().unwrap() <= v["expires_at"].as_i64().unwrap() - 3600);
}

#[tokio::test]
async fn patch_expiry_and_limit() {
    let t = TestApp::new().await;
    let up = t
        .upload(Spec {
            download_limit: Some(1),
            ..Spec::default()
        })
        .await;
    let uri = format!("/api/v1/files/{}", up.id);
    let before = t
        .get(&format!("{uri}/manage"), Some(&up.owner))
        .await
        .json();

    // Exhaust it, then lift the limit: public again.
    t.ticket(&up).await;
    t.get(&uri, None).await.expect(404, Some("not_found"));
    let r = t
        .call(
            Method::PATCH,
            &uri,
            Some(&up.owner),
            Some(json!({"download_limit": null})),
        )
        .await;
    r.expect(200, None);
    assert_eq!(r.json()["download_limit"], json!(null));
    assert_eq!(r.json()["download_count"], 1);
    let info = t.get(&uri, None).await;
    info.expect(200, None);
    assert_eq!(info.json()["downloads_remaining"], json!(null));

    // Set a limit of 3 (two left) and extend the expiry to 30 days from now.
    let r = t
        .call(
            Method::PATCH,
            &uri,
            Some(&up.owner),
            Some(json!({"download_limit": 3, "expires_in": 2_592_000})),
        )
        .await;
    r.expect(200, None);
    let after = r.json();
    assert_eq!(after["download_limit"], 3);
    assert!(
        after["expires_at"].as_i64().unwrap() >= before["expires_at"].as_i64().unwrap() + 2_588_400
    );
    assert_eq!(t.get(&uri, None).await.json()["downloads_remaining"], 2);

    // An absent field is left alone.
    let r = t
        .call(
            Method::PATCH,
            &uri,
            Some(&up.owner),
            Some(json!({"expires_in": 3600})),
        )
        .await;
    assert_eq!(r.json()["download_limit"], 3);

    // Bad values and unknown fields are refused; a wrong token is 403.
    for body in [
        json!({"expires_in": 10}),
        json!({"download_limit": 0}),
        json!({"downloadLimit": 2}),
    ] {
        t.call(Method::PATCH, &uri, Some(&up.owner), Some(body))
            .await
            .expect(400, Some("bad_request"));
    }
    t.call(
        Method::PATCH,
        &uri,
        Some(&up.auth),
        Some(json!({"expires_in": 3600})),
    )
    .await
    .expect(403, Some("bad_token"));
}

#[tokio::test]
async fn delete_makes_it_404_and_gc_removes_objects() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let keep = t.upload(Spec::default()).await;
    let ticket = t.ticket(&up).await;
    assert_eq!(t.objects(&up.id).await.len(), 4);

    let uri = format!("/api/v1/files/{}", up.id);
    t.call(Method::DELETE, &uri, Some(&up.owner), None)
        .await
        .expect(204, None);
    t.get(&uri, None).await.expect(404, Some("not_found"));
    t.get(&format!("{uri}/manage"), Some(&up.owner))
        .await
        .expect(404, Some("not_found"));
    // Outstanding tickets die with the file.
    t.get(&format!("{uri}/content"), Some(&ticket))
        .await
        .expect(404, Some("not_found"));
    t.call(Method::DELETE, &uri, Some(&up.owner), None)
        .await
        .expect(404, Some("not_found"));

    backend::gc::run_once(&t.state).await.unwrap();
    assert!(t.objects(&up.id).await.is_empty());
    assert_eq!(t.rows(&up.id).await, 0);
    let root = t
        .state
        .storage
        .local_root()
        .unwrap()
        .join("files")
        .join(&up.id);
    assert!(!root.exists(), "empty directory left behind");
    // Another file is untouched.
    assert_eq!(t.objects(&keep.id).await.len(), 4);
    t.get(&format!("/api/v1/files/{}", keep.id), None)
        .await
        .expect(200, None);
}
