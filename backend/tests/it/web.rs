//! Security headers, the static web app, SPA fallback and API error routing.

use axum::body::Body;
use axum::http::{Method, Request};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::common::*;

const SCRIPT: &str = "import init, * as bindings from '/app-1234.js';\n\
                      const wasm = await init({ module_or_path: '/app-1234_bg.wasm' });\n\
                      window.wasmBindings = bindings;";

fn assert_security_headers(r: &Resp) {
    let csp = r.header("content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert_eq!(r.header("referrer-policy"), "no-referrer");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("x-frame-options"), "DENY");
    assert_eq!(r.header("cross-origin-opener-policy"), "same-origin");
}

#[tokio::test]
async fn security_headers_on_api_responses() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    let ok = t
        .get(&format!("/api/v1/files/{}/manage", up.id), Some(&up.owner))
        .await;
    ok.expect(200, None);
    assert_security_headers(&ok);
    assert_eq!(ok.header("cache-control"), "no-store");
    let not_found = t.get("/api/v1/files/AAAAAAAAAAAAAAAAAAAAAA", None).await;
    not_found.expect(404, Some("not_found"));
    assert_security_headers(&not_found);
    let bad = t
        .post("/api/v1/files", None, Some(serde_json::json!({})))
        .await;
    bad.expect(400, Some("bad_request"));
    assert_security_headers(&bad);
}

#[tokio::test]
async fn unknown_api_paths_and_methods_use_the_envelope() {
    let t = TestApp::new().await;
    for uri in [
        "/api/v1/nope",
        "/api/v2/files",
        "/api",
        "/api/v1/files/x/y/z",
    ] {
        let r = t.get(uri, None).await;
        r.expect(404, Some("not_found"));
        assert_security_headers(&r);
    }
    let r = t.call(Method::PUT, "/api/v1/files", None, None).await;
    r.expect(405, Some("method_not_allowed"));
    // Without a static dir, other paths are a plain 404 too.
    t.get("/d/abc", None).await.expect(404, Some("not_found"));
}

#[tokio::test]
async fn static_app_with_csp_hash_and_spa_fallback() {
    let site = tempfile::tempdir().unwrap();
    let index = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
         <link rel=\"modulepreload\" href=\"/app-1234.js\">\
         <script type=\"module\">{SCRIPT}</script>\
         <script src=\"/other.js\"></script></head><body></body></html>"
    );
    std::fs::write(site.path().join("index.html"), &index).unwrap();
    std::fs::write(site.path().join("app-1234.js"), "export default 1;").unwrap();
    std::fs::write(site.path().join("app-1234_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let dir = site.path().to_owned();
    let t = TestApp::with(|c| c.static_dir = Some(dir)).await;

    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT));
    let expected = format!("'sha256-{hash}'");

    let root = t.get("/", None).await;
    root.expect(200, None);
    assert_eq!(root.body.as_ref(), index.as_bytes());
    assert!(root.header("content-type").starts_with("text/html"));
    assert_eq!(root.header("cache-control"), "no-cache");
    assert_security_headers(&root);
    let csp = root.header("content-security-policy");
    assert!(csp.contains(&expected), "CSP {csp} lacks {expected}");
    assert_eq!(
        csp.matches("'sha256-").count(),
        1,
        "only inline scripts are hashed"
    );

    // Client-side routes load the app.
    for path in ["/d/xyz", "/m/abc", "/some/deep/path"] {
        let r = t.get(path, None).await;
        r.expect(200, None);
        assert_eq!(r.body.as_ref(), index.as_bytes(), "{path}");
        assert_eq!(r.header("cache-control"), "no-cache");
        assert_security_headers(&r);
    }

    // Assets are served as themselves, with the right types.
    let js = t.get("/app-1234.js", None).await;
    js.expect(200, None);
    assert_eq!(js.body.as_ref(), b"export default 1;");
    assert!(js.header("content-type").contains("javascript"));
    assert_security_headers(&js);
    let wasm = t.get("/app-1234_bg.wasm", None).await;
    assert_eq!(wasm.header("content-type"), "application/wasm");

    // The API is not swallowed by the fallback.
    let r = t.get("/api/v1/files/AAAAAAAAAAAAAAAAAAAAAA", None).await;
    r.expect(404, Some("not_found"));
    let r = t.get("/api/unknown", None).await;
    r.expect(404, Some("not_found"));

    // Path traversal stays inside the static dir.
    let r = t
        .send(
            Request::get("/../../etc/passwd")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(!String::from_utf8_lossy(&r.body).contains("root:"));
}
