//! The download page `/d/{id}#{secret}`: reads the key from the fragment (then removes it from
//! the address bar), asks for the password when the file has one, shows the decrypted name,
//! size and type, and on request downloads, verifies, decrypts and saves the file.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use leptos::prelude::*;

use futures::StreamExt as _;

use crate::{api, stream, util};

/// What a recipient is told when the file fails verification.
const DAMAGED: &str =
    "The download failed verification: the file was damaged or tampered with. Nothing was saved.";

/// What a recipient is told when the browser will not take the decrypted file.
const REFUSED: &str = "The browser refused to save the file.";

/// What a recipient is told when the server no longer has the file (or never had it).
pub(crate) const GONE: &str = "This file is not available: the link has expired, reached its download limit, or the file was deleted.";

#[derive(Clone, Debug, PartialEq)]
enum Page {
    Loading,
    Failed(String),
    NeedPassword {
        error: Option<String>,
    },
    Ready {
        name: String,
        size: u64,
        mime: String,
        expires_at: i64,
        remaining: Option<u64>,
    },
    Working {
        name: String,
        done: u64,
        total: u64,
        started_ms: f64,
        /// Why the transfer is waiting, while it is (a dropped connection being retried).
        note: Option<String>,
    },
    Interrupted {
        name: String,
        message: String,
    },
    Playing {
        name: String,
        url: String,
        video: bool,
    },
    Saved {
        name: String,
        size: u64,
        url: String,
        preview: bool,
    },
}

/// The download page for file `id`.
#[component]
pub(crate) fn DownloadPage(id: String) -> impl IntoView {
    let fragment = util::fragment();
    util::forget_fragment();
    stream::register();
    let page = RwSignal::new(Page::Loading);
    let secret = StoredValue::new_local(None::<crypto_wasm::Secret>);
    let keys = StoredValue::new_local(None::<crypto_wasm::FileKeys>);
    let info = StoredValue::new(None::<api::PublicInfo>);
    let sealed = StoredValue::new(None::<api::Sealed>);
    let password = RwSignal::new(String::new());
    let transfer = StoredValue::new_local(None::<Transfer>);
    let id = StoredValue::new(id);

    // Derives the keys (with the password, if any), proves them to the server and opens the
    // metadata.
    let unlock = move |pw: Option<String>| {
        leptos::task::spawn_local(async move {
            let Some(public) = info.get_value() else {
                return;
            };
            let derived = secret.with_value(|s| {
                let s = s.as_ref()?;
                Some(crypto_wasm::FileKeys::derive(
                    s,
                    pw.as_deref().zip(public.kdf.as_ref()),
                ))
            });
            let derived = match derived {
                Some(Ok(k)) => k,
                Some(Err(e)) => {
                    return page.set(Page::Failed(format!(
                        "This file's key could not be derived: {e}."
                    )));
                }
                None => return,
            };
            let response = api::metadata(&id.get_value(), &derived.auth_token_base64url()).await;
            let opened = match response {
                Ok(s) => s,
                Err(e) if e.code == "bad_token" && pw.is_some() => {
                    return page.set(Page::NeedPassword {
                        error: Some(
                            "Wrong password (or the link is incomplete). Try again.".into(),
                        ),
                    });
                }
                Err(e) if e.code == "bad_token" => {
                    return page.set(Page::Failed(
                        "This link's key does not match the file. Check that you copied the whole link.".into(),
                    ));
                }
                Err(e) if e.code == "too_many_attempts" && pw.is_some() => {
                    return page.set(Page::NeedPassword {
                        error: Some(e.message),
                    });
                }
                Err(e) if e.status == 404 => return page.set(Page::Failed(GONE.into())),
                Err(e) => return page.set(Page::Failed(e.message)),
            };
            let blob = URL_SAFE_NO_PAD.decode(&opened.metadata).unwrap_or_default();
            let Ok(meta) = derived.open_metadata(&blob) else {
                return page.set(Page::Failed(
                    "The file's details could not be decrypted: the link's key does not fit them."
                        .into(),
                ));
            };
            keys.set_value(Some(derived));
            sealed.set_value(Some(opened));
            page.set(Page::Ready {
                name: meta.name,
                size: meta.size,
                mime: meta.mime,
                expires_at: public.expires_at,
                remaining: public.downloads_remaining,
            });
        });
    };

    leptos::task::spawn_local(async move {
        if fragment.is_empty() {
            return page.set(Page::Failed(
                "This link is missing its key (the part after “#”). Ask the sender for the complete link.".into(),
            ));
        }
        match crypto_wasm::Secret::from_base64url(&fragment) {
            Ok(s) => secret.set_value(Some(s)),
            Err(_) => {
                return page.set(Page::Failed(
                    "The key in this link is damaged. Check that you copied the whole link.".into(),
                ));
            }
        }
        match api::public_info(&id.get_value()).await {
            Ok(public) => {
                let needs_password = public.kdf.is_some();
                info.set_value(Some(public));
                if needs_password {
                    page.set(Page::NeedPassword { error: None });
                } else {
                    unlock(None);
                }
            }
            Err(e) if e.status == 404 => page.set(Page::Failed(GONE.into())),
            Err(e) => page.set(Page::Failed(e.message)),
        }
    });

    // Fetches, verifies and decrypts the parts from where the transfer stands, then saves the
    // file. A failed part leaves the transfer resumable from that part with the same ticket.
    let resume = move || {
        leptos::task::spawn_local(async move {
            let Some(mut t) = transfer.try_update_value(Option::take).flatten() else {
                return;
            };
            while t.next < t.part_count {
                let bytes = match api::get_part(&id.get_value(), &t.ticket, t.next).await {
                    Ok(b) => b,
                    Err(e) => {
                        let message = format!("The download stopped: {}", e.message);
                        let name = t.name.clone();
                        transfer.set_value(Some(t));
                        return page.set(Page::Interrupted { name, message });
                    }
                };
                t.received += bytes.len() as u64;
                let Ok(plain) = t.decryptor.push(&bytes).await else {
                    return page.set(Page::Failed(DAMAGED.into()));
                };
                t.plain_len += plain.len() as u64;
                let Ok(blob) = part_blob(&plain, &mut t.scratch) else {
                    return page.set(Page::Failed(REFUSED.into()));
                };
                t.chunks.push(&blob);
                t.next += 1;
                page.set(Page::Working {
                    name: t.name.clone(),
                    done: t.received,
                    total: crypto_wasm::body_size(t.size),
                    started_ms: t.started_ms,
                    note: None,
                });
            }
            let Transfer {
                decryptor,
                chunks,
                mut scratch,
                plain_len,
                name,
                size,
                mime,
                ..
            } = t;
            match decryptor.finish().await {
                Ok(rest) if plain_len + rest.len() as u64 == size => {
                    if !rest.is_empty() {
                        let Ok(blob) = part_blob(&rest, &mut scratch) else {
                            return page.set(Page::Failed(REFUSED.into()));
                        };
                        chunks.push(&blob);
                    }
                }
                _ => return page.set(Page::Failed(DAMAGED.into())),
            }
            let options = web_sys::BlobPropertyBag::new();
            options.set_type(if mime.is_empty() {
                "application/octet-stream"
            } else {
                &mime
            });
            let preview = previewable(&mime);
            let saved = web_sys::Blob::new_with_blob_sequence_and_options(&chunks, &options)
                .and_then(|blob| util::save_blob(&blob, &name, !preview));
            match saved {
                Ok(url) => page.set(Page::Saved {
                    name,
                    size,
                    url,
                    preview,
                }),
                Err(_) => page.set(Page::Failed(REFUSED.into())),
            }
        });
    };

    // Counts one download and plays the file in the page: the service worker answers the
    // player's range requests by fetching and decrypting only the records they cover.
    let play = move |name: String, size: u64, mime: String| {
        leptos::task::spawn_local(async move {
            let (Some(auth), Some(ikm)) = (
                keys.with_value(|k| k.as_ref().map(|k| k.auth_token_base64url())),
                keys.with_value(|k| k.as_ref().map(|k| k.content_key().expose_ikm().to_vec())),
            ) else {
                return;
            };
            let ticket = match api::start_download(&id.get_value(), &auth).await {
                Ok(t) => t.ticket,
                Err(e) if e.status == 404 => return page.set(Page::Failed(GONE.into())),
                Err(e) => return page.set(Page::Failed(e.message)),
            };
            let job = stream::MediaJob {
                id: &id.get_value(),
                ticket: &ticket,
                ikm: &ikm,
                body_size: crypto_wasm::body_size(size),
                size,
                mime: &mime,
            };
            match stream::register_media(&job).await {
                Ok(url) => page.set(Page::Playing { name, url, video: mime.starts_with("video/") }),
                Err(_) => page.set(Page::Failed(
                    "This browser cannot play encrypted media here (no service worker). Download the file instead.".into(),
                )),
            }
        });
    };

    // Counts one download (the server hands out a ticket for it) and starts the transfer.
    let download = move |name: String, size: u64, mime: String| {
        leptos::task::spawn_local(async move {
            let (Some(layout), Some((auth, decryptor))) = (
                sealed.get_value(),
                keys.with_value(|k| {
                    k.as_ref()
                        .map(|k| (k.auth_token_base64url(), PageDecryptor::new(k)))
                }),
            ) else {
                return;
            };
            let started_ms = util::now_ms();
            let total = crypto_wasm::body_size(size);
            page.set(Page::Working {
                name: name.clone(),
                done: 0,
                total,
                started_ms,
                note: None,
            });
            let ticket = match api::start_download(&id.get_value(), &auth).await {
                Ok(t) => t.ticket,
                Err(e) if e.status == 404 => return page.set(Page::Failed(GONE.into())),
                Err(e) => return page.set(Page::Failed(e.message)),
            };
            if size >= stream::THRESHOLD && !previewable(&mime) {
                let ikm =
                    keys.with_value(|k| k.as_ref().map(|k| k.content_key().expose_ikm().to_vec()));
                let job = stream::Job {
                    id: &id.get_value(),
                    ticket: &ticket,
                    ikm: &ikm.unwrap_or_default(),
                    body_size: layout.size,
                    first_part_size: layout.first_part_size,
                    part_size: layout.part_size,
                    part_count: layout.part_count,
                    name: &name,
                    size,
                };
                // Without a service worker, fall through to decrypting in the page.
                if let Ok(mut streaming) = stream::start(&job).await {
                    let mut done = 0;
                    let working = |done, note| Page::Working {
                        name: name.clone(),
                        done,
                        total,
                        started_ms,
                        note,
                    };
                    while let Some(event) = streaming.events.next().await {
                        match event {
                            stream::Event::Progress { parts } => {
                                done = match parts {
                                    0 => 0,
                                    n => layout.first_part_size + (n - 1) * layout.part_size,
                                };
                                page.set(working(done.min(total), None));
                            }
                            stream::Event::Retrying { attempt } => page.set(working(
                                done.min(total),
                                Some(format!(
                                    "Connection lost; reconnecting (attempt {attempt}). The download continues where it stopped."
                                )),
                            )),
                            stream::Event::Resumed => page.set(working(done.min(total), None)),
                            stream::Event::Done => {
                                return page.set(Page::Saved {
                                    name,
                                    size,
                                    url: String::new(),
                                    preview: false,
                                });
                            }
                            stream::Event::Failed { damaged: true, .. } => {
                                return page.set(Page::Failed(DAMAGED.into()));
                            }
                            stream::Event::Failed { message, .. } => {
                                return page.set(Page::Failed(format!(
                                    "The download stopped ({message}). Reload this page to start it again."
                                )));
                            }
                        }
                    }
                    return page.set(Page::Failed("The download stopped unexpectedly.".into()));
                }
            }
            transfer.set_value(Some(Transfer {
                ticket,
                part_count: layout.part_count,
                next: 0,
                decryptor,
                chunks: js_sys::Array::new(),
                scratch: None,
                received: 0,
                plain_len: 0,
                name,
                size,
                mime,
                started_ms,
            }));
            resume();
        });
    };

    view! {
        <section class="card">
            {move || match page.get() {
                Page::Loading => view! { <p class="muted">"Opening the link…"</p> }.into_any(),
                Page::Failed(message) => view! {
                    <h1>"Cannot open this file"</h1>
                    <p class="error" role="alert">{message}</p>
                }
                    .into_any(),
                Page::NeedPassword { error } => view! {
                    <h1>"This file is protected by a password"</h1>
                    <form
                        class="password-form"
                        on:submit=move |ev| {
                            ev.prevent_default();
                            page.set(Page::Loading);
                            unlock(Some(password.get_untracked()));
                        }
                    >
                        <input
                            id="download-password"
                            type="password"
                            autocomplete="current-password"
                            placeholder="Password"
                            prop:value=move || password.get()
                            on:input=move |ev| password.set(event_target_value(&ev))
                        />
                        <button id="unlock" class="primary" type="submit">"Unlock"</button>
                    </form>
                    {error.map(|e| view! { <p class="error" role="alert">{e}</p> })}
                }
                    .into_any(),
                Page::Ready { name, size, mime, expires_at, remaining } => {
                    let (n, m) = (name.clone(), mime.clone());
                    let (play_name, play_mime) = (name.clone(), mime.clone());
                    view! {
                        <h1 class="file-name">{name}</h1>
                        <p class="file-facts">
                            <span class="file-size">{util::format_bytes(size as f64)}</span>
                            " · "
                            <span class="file-type">{if mime.is_empty() { "unknown type".to_owned() } else { mime }}</span>
                        </p>
                        <p class="muted">
                            {format!("Available until {}", util::format_time(expires_at))}
                            {remaining.map(|r| format!(" · {r} download(s) left"))}
                        </p>
                        <button id="download" class="primary" on:click=move |_| download(n.clone(), size, m.clone())>
                            "Download and decrypt"
                        </button>
                        // Playing needs the service worker, which plain http does not offer.
                        {(playable(&play_mime) && util::service_workers().is_some()).then(|| {
                            view! {
                                <button id="play" on:click=move |_| play(play_name.clone(), size, play_mime.clone())>
                                    "Play here"
                                </button>
                            }
                        })}
                    }
                        .into_any()
                }
                Page::Working { name, done, total, started_ms, note } => {
                    let percent = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
                    let elapsed = ((util::now_ms() - started_ms) / 1000.0).max(0.001);
                    let speed = done as f64 / elapsed;
                    view! {
                        <h1 class="file-name">{name}</h1>
                        <progress max="100" value=format!("{percent:.1}")></progress>
                        <p class="stats">
                            {format!("Downloading and decrypting · {percent:.0}% · {}/s", util::format_bytes(speed))}
                        </p>
                        {note.map(|note| view! { <p class="notice" role="status">{note}</p> })}
                    }
                        .into_any()
                }
                Page::Playing { name, url, video } => view! {
                    <h1 class="file-name">{name}</h1>
                    {if video {
                        view! { <video class="player" controls autoplay src=url></video> }.into_any()
                    } else {
                        view! { <audio class="player" controls autoplay src=url></audio> }.into_any()
                    }}
                    <p class="muted">"Decrypted in this browser as it plays; seeking fetches only what it needs."</p>
                }
                    .into_any(),
                Page::Interrupted { name, message } => view! {
                    <h1 class="file-name">{name}</h1>
                    <p class="error" role="alert">{message}</p>
                    <button id="resume" class="primary" on:click=move |_| resume()>"Resume download"</button>
                    <p class="muted">"Resuming continues from the last verified part; it does not count as another download."</p>
                }
                    .into_any(),
                Page::Saved { name, size, url, preview } => view! {
                    <h1 class="file-name">{name.clone()}</h1>
                    <p class="done" id="saved">
                        {format!("Decrypted and saved ({}). The file was verified intact.", util::format_bytes(size as f64))}
                    </p>
                    {preview.then(|| view! { <img class="preview" src=url alt=name /> })}
                }
                    .into_any(),
            }}
        </section>
    }
}

/// A download in progress: where it stands, so that it can resume after a failed part.
struct Transfer {
    ticket: String,
    part_count: u64,
    /// The next part to fetch; every part before it was verified and decrypted.
    next: u64,
    decryptor: PageDecryptor,
    /// The decrypted parts so far, one `Blob` each (see [`part_blob`]).
    chunks: js_sys::Array,
    /// The array each part's plaintext passes through on its way into its blob.
    scratch: Option<js_sys::Uint8Array>,
    received: u64,
    plain_len: u64,
    name: String,
    size: u64,
    mime: String,
    started_ms: f64,
}

/// Media the page can play while decrypting (the browser decides what it can decode).
fn playable(mime: &str) -> bool {
    mime.starts_with("video/") || mime.starts_with("audio/")
}

/// The decryptor of an in-page download: WebCrypto where the page has it (a secure context),
/// which works off the page's thread and decrypted 64 KiB records 10 times faster than the
/// wasm engine in `browser-crypto` here (562 against 56 MB/s), else (plain http) the wasm
/// engine, on the page's thread.
enum PageDecryptor {
    Web(Box<crypto_wasm::webcrypto::WebCryptoDecryptor>),
    Wasm(crypto_wasm::Decryptor),
}

impl PageDecryptor {
    fn new(keys: &crypto_wasm::FileKeys) -> Self {
        match crypto_wasm::webcrypto::WebCryptoDecryptor::new(keys) {
            Ok(web) => Self::Web(Box::new(web)),
            Err(_) => Self::Wasm(crypto_wasm::Decryptor::new(keys)),
        }
    }

    /// The plaintext of the records `bytes` completes; see [`crypto_wasm::Decryptor::push`].
    async fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, crypto_wasm::Error> {
        match self {
            Self::Web(d) => d.push(bytes).await,
            Self::Wasm(d) => d.push(bytes),
        }
    }

    /// The last record's plaintext, or an error if the body was cut short.
    async fn finish(self) -> Result<Vec<u8>, crypto_wasm::Error> {
        match self {
            Self::Web(d) => d.finish().await,
            Self::Wasm(d) => d.finish(),
        }
    }
}

/// A decrypted part as a `Blob`, so that the page's memory does not grow with the file: the
/// browser keeps a blob's bytes outside the page (Chromium, by its documented design, in its
/// browser process, paged to disk when they grow large). This is the path of every file the streaming service worker
/// does not take (small files, previews, and any size over plain http, where no service worker
/// exists). The bytes pass through one array, `scratch`, reused from part to part (a blob
/// takes a copy), so a long download leaves no part-sized garbage in the page either.
fn part_blob(
    plain: &[u8],
    scratch: &mut Option<js_sys::Uint8Array>,
) -> Result<web_sys::Blob, wasm_bindgen::JsValue> {
    let len = u32::try_from(plain.len()).map_err(|_| wasm_bindgen::JsValue::NULL)?;
    let array = match scratch {
        Some(array) if array.length() >= len => array.subarray(0, len),
        _ => scratch
            .insert(js_sys::Uint8Array::new_with_length(len))
            .clone(),
    };
    array.copy_from(plain);
    web_sys::Blob::new_with_u8_array_sequence(&js_sys::Array::of1(&array))
}

/// Image types the page previews after decryption. SVG is excluded: it can carry script.
fn previewable(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif" | "image/bmp"
    )
}
