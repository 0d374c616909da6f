//! The served OpenAPI document against the router itself: it is exactly `docs/openapi.json`,
//! and every operation it documents reaches a real handler that answers, for an unknown file,
//! a stranger and the owner alike, only statuses the document lists for that operation.
//! (schemathesis, run by `cargo xtask test`, then fuzzes the same document against a server.)

use std::path::Path;

use axum::http::Method;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn served_document_is_the_committed_one() {
    let t = TestApp::new().await;
    let r = t.get("/api/v1/openapi.json", None).await;
    r.expect(200, None);
    assert_eq!(r.header("content-type"), "application/json");
    // Found at run time: checkouts sharing a target dir share compiled tests.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo");
    let committed = std::fs::read(Path::new(&manifest_dir).join("../docs/openapi.json")).unwrap();
    assert!(
        r.body == committed,
        "the served document is not docs/openapi.json"
    );
}

#[tokio::test]
async fn every_documented_operation_answers_only_documented_statuses() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let doc: Value = t.get("/api/v1/openapi.json", None).await.json();
    let unknown = b64(&[7; 16]);
    let mut operations: Vec<(String, Method, Vec<u16>)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let documented = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let method = method.to_uppercase().parse().unwrap();
            operations.push((path.clone(), method, documented));
        }
    }
    // DELETE last: it turns every later answer into 404.
    operations.sort_by_key(|(_, method, _)| *method == Method::DELETE);
    let mut checked = 0;
    for (path, method, documented) in &operations {
        for (id, token) in [
            (unknown.as_str(), None),
            (up.id.as_str(), None),
            (up.id.as_str(), Some(up.owner.as_str())),
        ] {
            let uri = format!("/api/v1{}", path.replace("{id}", id).replace("{n}", "0"));
            let r = t.call(method.clone(), &uri, token, None).await;
            assert!(
                documented.contains(&r.status.as_u16()),
                "{method} {path} answered {} ({}), documented: {documented:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
            if !r.status.is_success() {
                assert!(!r.code().is_empty(), "{method} {path}: no error envelope");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 12 * 3, "every documented operation was called");
}
