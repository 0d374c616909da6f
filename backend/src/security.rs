//! Security headers on every response, with a CSP whose script hashes are computed once at
//! startup from the inline `<script>` bodies of the web app's index.html.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// The bodies of every inline `<script>` (one without a `src` attribute), byte for byte as the
/// browser hashes them.
pub fn inline_scripts(html: &str) -> Vec<&str> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(rel) = lower[pos..].find("<script") {
        let tag_start = pos + rel;
        let after_name = tag_start + "<script".len();
        // `<scripts>` or `<script-foo>` are not script tags.
        if !lower[after_name..].starts_with(|c: char| c == '>' || c.is_ascii_whitespace()) {
            pos = after_name;
            continue;
        }
        let Some(tag_end_rel) = lower[after_name..].find('>') else {
            break;
        };
        let body_start = after_name + tag_end_rel + 1;
        let attrs = &lower[after_name..body_start - 1];
        let Some(close_rel) = lower[body_start..].find("</script") else {
            break;
        };
        let body_end = body_start + close_rel;
        if !has_src_attribute(attrs) {
            out.push(&html[body_start..body_end]);
        }
        pos = body_end;
    }
    out
}

fn has_src_attribute(attrs: &str) -> bool {
    attrs
        .split(|c: char| c.is_ascii_whitespace())
        .any(|a| a == "src" || a.starts_with("src="))
}

/// The Content-Security-Policy for the app, allowing exactly the given inline scripts.
pub fn content_security_policy(index_html: Option<&str>) -> String {
    let mut script_src = String::from("'self' 'wasm-unsafe-eval'");
    for body in index_html.map(inline_scripts).unwrap_or_default() {
        let digest = Sha256::digest(body.as_bytes());
        script_src.push_str(&format!(" 'sha256-{}'", STANDARD.encode(digest)));
    }
    format!(
        "default-src 'self'; script-src {script_src}; img-src 'self' blob: data:; \
         media-src 'self' blob:; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'; form-action 'self'"
    )
}

/// The fixed header set, built once at startup and cloned onto each response.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl SecurityHeaders {
    /// Builds the header set around a CSP string.
    pub fn new(csp: &str) -> Self {
        let csp = HeaderValue::from_str(csp).unwrap_or_else(|_| {
            // Only ASCII goes into the CSP, so this is unreachable; fail closed if not.
            HeaderValue::from_static("default-src 'none'")
        });
        Self {
            headers: vec![
                (header::CONTENT_SECURITY_POLICY, csp),
                (
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
                (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
                (
                    HeaderName::from_static("cross-origin-opener-policy"),
                    HeaderValue::from_static("same-origin"),
                ),
            ],
        }
    }

    /// The CSP value (for logs and tests).
    pub fn csp(&self) -> &HeaderValue {
        &self.headers[0].1
    }
}

/// Middleware adding the security headers to every response, errors and static files alike.
pub async fn add_security_headers(
    State(headers): State<std::sync::Arc<SecurityHeaders>>,
    req: Request,
    next: Next,
) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in &headers.headers {
        h.insert(name.clone(), value.clone());
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_inline_scripts() {
        let html = r#"<html><head>
<script type="module">import init from '/app.js'; init();</script>
<SCRIPT src="/x.js"></SCRIPT><scripts>no</scripts>
<script>
  a()
</script></head></html>"#;
        assert_eq!(
            inline_scripts(html),
            vec!["import init from '/app.js'; init();", "\n  a()\n"]
        );
    }

    #[test]
    fn csp_lists_hashes() {
        let csp = content_security_policy(Some("<script>alert(1)</script>"));
        // echo -n 'alert(1)' | openssl dgst -sha256 -binary | base64
        assert!(csp.contains("'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='"));
        assert!(csp.starts_with("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'"));
        assert!(!content_security_policy(None).contains("sha256"));
    }
}
