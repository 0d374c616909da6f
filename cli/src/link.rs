//! The browser's links, byte for byte (docs/FORMAT.md §2): share `<server>/d/<id>#<secret>`
//! and manage `<server>/m/<id>#<owner_token>.<secret>`. The secret only ever lives in the
//! fragment, which is never sent to the server.

use crate::error::{Error, Result};

/// Length of a file id: 16 bytes in base64url.
const ID_LEN: usize = 22;
/// Length of an owner token: 32 bytes in base64url.
const OWNER_LEN: usize = 43;

/// A parsed share or manage link.
#[derive(Debug)]
pub(crate) struct Link {
    /// Scheme, host and any path prefix, without a trailing slash.
    pub(crate) server: String,
    pub(crate) id: String,
    /// Present in manage links only.
    pub(crate) owner_token: Option<String>,
    pub(crate) secret: crypto_wasm::Secret,
}

/// The share link of a file.
pub(crate) fn share(server: &str, id: &str, secret: &str) -> String {
    format!("{server}/d/{id}#{secret}")
}

/// The manage link of a file.
pub(crate) fn manage(server: &str, id: &str, owner_token: &str, secret: &str) -> String {
    format!("{server}/m/{id}#{owner_token}.{secret}")
}

/// Normalises a server URL: `http://` or `https://`, no trailing slash, no query or fragment.
pub(crate) fn normalize_server(url: &str) -> Result<String> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            Error::Usage(format!(
                "the server URL {url:?} must start with http:// or https://"
            ))
        })?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
        return Err(Error::Usage(format!("the server URL {url:?} is not valid")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses a share or manage link.
pub(crate) fn parse(link: &str) -> Result<Link> {
    let link = link.trim();
    let (before, fragment) = link
        .split_once('#')
        .ok_or_else(|| Error::BadLink("it has no #key part; copy the whole link".into()))?;
    let (server, id, manage) = if let Some(at) = before.rfind("/d/") {
        (&before[..at], &before[at + 3..], false)
    } else if let Some(at) = before.rfind("/m/") {
        (&before[..at], &before[at + 3..], true)
    } else {
        return Err(Error::BadLink("expected <server>/d/<id>#<key>".into()));
    };
    let server =
        normalize_server(server).map_err(|_| Error::BadLink(format!("bad server in {link:?}")))?;
    let id = id.trim_end_matches('/');
    if id.len() != ID_LEN || !is_base64url(id) {
        return Err(Error::BadLink(format!("{id:?} is not a file id")));
    }
    let (owner_token, secret) = if manage {
        let (owner, secret) = fragment
            .split_once('.')
            .ok_or_else(|| Error::BadLink("a manage link's key is <owner>.<secret>".into()))?;
        if owner.len() != OWNER_LEN || !is_base64url(owner) {
            return Err(Error::BadLink("the owner token is malformed".into()));
        }
        (Some(owner.to_owned()), secret)
    } else {
        (None, fragment)
    };
    let secret = crypto_wasm::Secret::from_base64url(secret)
        .map_err(|_| Error::BadLink("the key after # is malformed or cut short".into()))?;
    Ok(Link {
        server,
        id: id.to_owned(),
        owner_token,
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "Ndo8GD_77NOlU86lEUfySg";
    const SECRET: &str = "lGNbSeeUe6QKyJ-fe1StmEKreBPvUuYAsocOcPOKk0w";
    const OWNER: &str = "9g67nVqiihW7tqbP6_JGeQb7qT_oYzMVz0weZXGmNOU";

    #[test]
    fn share_and_manage_links_round_trip() {
        let share_link = share("https://x.example/files", ID, SECRET);
        let parsed = parse(&share_link).unwrap();
        assert_eq!(parsed.server, "https://x.example/files");
        assert_eq!(parsed.id, ID);
        assert_eq!(parsed.secret.to_base64url(), SECRET);
        assert!(parsed.owner_token.is_none());

        let manage_link = manage("http://127.0.0.1:8080", ID, OWNER, SECRET);
        assert_eq!(
            manage_link,
            format!("http://127.0.0.1:8080/m/{ID}#{OWNER}.{SECRET}")
        );
        let parsed = parse(&manage_link).unwrap();
        assert_eq!(parsed.server, "http://127.0.0.1:8080");
        assert_eq!(parsed.owner_token.as_deref(), Some(OWNER));
        assert_eq!(parsed.secret.to_base64url(), SECRET);
    }

    #[test]
    fn malformed_links_are_refused() {
        for bad in [
            format!("https://x.example/d/{ID}"),
            format!("https://x.example/d/{ID}#{}", &SECRET[..40]),
            format!("https://x.example/x/{ID}#{SECRET}"),
            format!("ftp://x.example/d/{ID}#{SECRET}"),
            format!("https://x.example/d/short#{SECRET}"),
            format!("https://x.example/m/{ID}#{SECRET}"),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_urls_are_normalised() {
        assert_eq!(
            normalize_server("http://h:1/").unwrap(),
            "http://h:1".to_owned()
        );
        assert!(normalize_server("h:1").is_err());
        assert!(normalize_server("https://").is_err());
    }
}
