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

    /// Answers one request with `Cache-Control: no-cache` on everything: the app's assets
    /// have fixed names (the page starts its worker by URL), so browsers must revalidate them
    /// (a cheap 304) to pick up a new deploy, whose CSP hashes and SRI digests change with them.
    pub async fn serve(&self, req: Request) -> Response {
        let res: Result<_, Infallible> = self.service.clone().oneshot(req).await;
        let mut res = match res {
            Ok(res) => res.into_response(),
            Err(never) => match never {},
        };
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    }
}
