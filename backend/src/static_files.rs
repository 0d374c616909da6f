//! Serving the built web app: files from `--static-dir`, and index.html for any other non-API
//! path so client-side routes such as `/d/{id}` and `/m/{id}` load the app.

use std::convert::Infallible;
use std::path::Path;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile};

/// The static file service with its SPA fallback.
#[derive(Debug, Clone)]
pub struct StaticFiles {
    service: ServeDir<ServeFile>,
}

impl StaticFiles {
    /// Serves `dir`, falling back to `dir/index.html`.
    pub fn new(dir: &Path) -> Self {
        let index = dir.join("index.html");
        Self {
            service: ServeDir::new(dir).fallback(ServeFile::new(index)),
        }
    }

    /// Answers one request. HTML (index.html, directly or as the fallback) gets
    /// `Cache-Control: no-cache` so a new deploy, whose CSP hashes and asset names change
    /// together, is picked up at once; hashed assets keep default caching.
    pub async fn serve(&self, req: Request) -> Response {
        let res: Result<_, Infallible> = self.service.clone().oneshot(req).await;
        let mut res = match res {
            Ok(res) => res.into_response(),
            Err(never) => match never {},
        };
        let is_html = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/html"));
        if is_html {
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        res
    }
}
