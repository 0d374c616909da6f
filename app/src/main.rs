//! The BitStratus web app: picks a page from the address, mounts it, and does all encryption
//! and decryption in the browser.
//!
//! **Architecture Invariant:** everything secret (file contents, names, the link secret, the
//! password and every derived key) stays in this tab. The server receives only ciphertext, the
//! sealed metadata blob and the auth token derived for it (see `docs/FORMAT.md`).

// Leptos's `#[component]` expands to `pub` props structs, which this lint cannot see through.
#![allow(unreachable_pub)]

mod api;
mod download;
mod manage;
mod resume;
mod stream;
mod upload;
mod util;
mod workers;

use leptos::prelude::*;

/// The size of this module's wasm memory in bytes. The memory benchmark
/// (`e2e/bench/memory.mjs`) reads it through DevTools, which is lighter than searching the heap
/// for `WebAssembly.Memory` objects. It says nothing about the data.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn wasm_memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size(0) * 65536) as f64
}

fn main() {
    let path = util::window().location().pathname().unwrap_or_default();
    leptos::mount::mount_to_body(move || {
        let page = match Route::parse(&path) {
            Route::Upload => upload::UploadPage().into_any(),
            Route::Download(id) => view! { <download::DownloadPage id /> }.into_any(),
            Route::Manage(id) => view! { <manage::ManagePage id /> }.into_any(),
            Route::NotFound => view! {
                <p class="error">"There is no page at this address."</p>
                <p><a href="/">"Upload a file"</a></p>
            }
            .into_any(),
        };
        view! {
            <header class="top">
                <a class="brand" href="/">"BitStratus"</a>
                <span class="tagline">"end-to-end encrypted file sharing"</span>
            </header>
            <main>{page}</main>
            <footer>
                "Files are encrypted in your browser before upload; the key stays in the link and never reaches the server."
            </footer>
        }
    });
}

/// The pages the app knows, by path.
#[derive(Debug, PartialEq)]
enum Route {
    Upload,
    Download(String),
    Manage(String),
    NotFound,
}

impl Route {
    fn parse(path: &str) -> Route {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [] => Route::Upload,
            ["d", id] if util::is_id(id) => Route::Download((*id).to_owned()),
            ["m", id] if util::is_id(id) => Route::Manage((*id).to_owned()),
            _ => Route::NotFound,
        }
    }
}
