//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations
//! and the request and response types themselves, served at `/api/v1/openapi.json` and
//! committed as `docs/openapi.json` (a test fails when the two differ; `docs/API.md` is the
//! prose companion).
//!
//! Every operation lists the error statuses it can answer, each with the one error envelope
//! of [`crate::error`]; `cargo xtask test` runs schemathesis against a live server from this
//! document and fails on any 5xx or any response the document does not describe.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use super::{download, manage, upload};

/// The document. Paths are relative to the server entry `/api/v1`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "BitStratus API",
        description = "Zero-knowledge file hosting: the server stores ciphertext, sealed \
            metadata and hashes of tokens, never a key, a name or plaintext. Binary values are \
            base64url without padding; times are unix seconds. See docs/API.md and \
            docs/FORMAT.md.",
        license(name = "MIT OR Apache-2.0"),
    ),
    servers((url = "/api/v1")),
    paths(
        upload::create,
        upload::put_part,
        upload::list_parts,
        upload::complete,
        download::info,
        download::metadata,
        download::downloads,
        download::get_part,
        download::content,
        manage::manage,
        manage::patch,
        manage::delete,
    ),
    components(schemas(ErrorEnvelope, ErrorBody, FileId, Octets), responses(
        BadRequest,
        BadToken,
        OwnerOnly,
        NotFound,
        Timeout,
        Conflict,
        TooLarge,
        RangeNotSatisfiable,
        TooManyAttempts,
        Internal,
        ServerBusy,
    )),
    modifiers(&Tokens),
    tags(
        (name = "upload", description = "Create a file, send its parts, complete it (owner token)."),
        (name = "download", description = "Public info, sealed metadata and ciphertext (auth token, then ticket)."),
        (name = "manage", description = "The owner's view and changes (owner token)."),
    ),
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The three bearer tokens of docs/API.md, as security schemes.
struct Tokens;

impl Modify for Tokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "owner_token",
                "The owner token create returned (32 bytes, base64url).",
            ),
            (
                "auth_token",
                "HKDF of the link secret and password (32 bytes, base64url); wrong ones are \
                 throttled per file.",
            ),
            (
                "ticket",
                "A download ticket from POST /files/{id}/downloads (valid 24 h).",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// The document as pretty JSON with a final newline, exactly as committed.
pub fn document() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

/// `GET /api/v1/openapi.json`.
pub(crate) async fn serve() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document(),
    )
        .into_response()
}

/// The error envelope every failure answers with.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON that `ApiError`'s `IntoResponse` writes.
pub(crate) struct ErrorEnvelope {
    error: ErrorBody,
}

/// The error itself: a stable snake_case code and a sentence for people.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the JSON that `ApiError`'s `IntoResponse` writes.
pub(crate) struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `bad_token`, `part_conflict`.
    #[schema(example = "not_found")]
    code: String,
    /// A human-readable sentence.
    #[schema(example = "no such file")]
    message: String,
}

/// Declares one reusable error response (a type named `$name`) with `$description`.
macro_rules! error_response {
    ($($name:ident: $description:literal;)*) => {$(
        #[derive(ToResponse)]
        #[response(description = $description)]
        #[allow(dead_code)] // Describes a response `ApiError` writes.
        pub(crate) struct $name(ErrorEnvelope);
    )*};
}

error_response! {
    BadRequest: "Malformed input: JSON, a field, a header, a part number, a part's size or hash (`bad_request`, `bad_part_number`, `part_size_mismatch`, `hash_mismatch`).";
    BadToken: "Wrong key or password: the auth token does not match (`bad_token`).";
    OwnerOnly: "A public file, but not this owner token (`bad_token`).";
    NotFound: "No such file for this caller: unknown, malformed, deleted, expired, exhausted or incomplete ids all answer the same (`not_found`).";
    Timeout: "The part's body stalled; nothing was stored; retry (`timeout`).";
    Conflict: "The part exists with other bytes, the upload is already complete, or parts are missing (`part_conflict`, `already_complete`, `missing_parts`).";
    TooLarge: "Larger than this server accepts (`file_too_large`, `part_too_large`, `payload_too_large`).";
    RangeNotSatisfiable: "The range lies outside the body (`range_not_satisfiable`); `Content-Range: bytes */<size>`.";
    TooManyAttempts: "Too many wrong auth tokens for this file; `Retry-After` says when to try again (`too_many_attempts`).";
    Internal: "A server fault; details are only logged (`internal`).";
    ServerBusy: "Too many parts in progress; retry after `Retry-After` seconds (`server_busy`).";
}

/// A path parameter: a file id (16 bytes, base64url: 22 characters).
#[derive(ToSchema)]
#[schema(value_type = String, example = "q2XKp3mJ0m0D5v0l6Zb1Fw")]
#[allow(dead_code)] // A documentation type.
pub(crate) struct FileId(String);

/// Raw octets (ciphertext).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // A documentation type.
pub(crate) struct Octets(Vec<u8>);

#[cfg(test)]
mod tests {
    use super::document;

    /// The committed copy must be what the code generates: regenerate it with
    /// `BITSTRATUS_WRITE_OPENAPI=1 cargo test -p backend --lib openapi`.
    #[test]
    fn committed_openapi_document_matches_the_code() {
        // Found at run time: checkouts sharing a target dir share compiled tests.
        let path =
            std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("../docs/openapi.json");
        let generated = document();
        if std::env::var_os("BITSTRATUS_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the API the code serves: regenerate it with \
             `BITSTRATUS_WRITE_OPENAPI=1 cargo test -p backend --lib openapi` and review the diff"
        );
    }

    #[test]
    fn document_is_openapi_3_1_with_every_operation() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let operations: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, 12, "every route of api::router is documented");
    }
}
