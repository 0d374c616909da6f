//! Small browser helpers: the window, timers, reading file slices, formatting numbers for people.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The page's window; the app only runs in a browser tab, where it always exists.
pub(crate) fn window() -> web_sys::Window {
    web_sys::window().expect("the app runs in a browser window")
}

/// The page's service worker container, or `None` where the browser offers none: outside a
/// secure context (plain http to a LAN address, say) `navigator.serviceWorker` does not exist,
/// and calling anything on it would throw.
pub(crate) fn service_workers() -> Option<web_sys::ServiceWorkerContainer> {
    js_sys::Reflect::get(&window().navigator(), &JsValue::from_str("serviceWorker"))
        .ok()?
        .dyn_into()
        .ok()
}

/// Copies `text` to the clipboard; returns whether the browser took it. A secure context has
/// the Clipboard API; plain http (a LAN address, say) has none, and the API may also refuse
/// (an unfocused page), so then the text is selected in `input` (which must hold it) and
/// copied with the older copy command, which browsers still allow just after a click.
pub(crate) async fn copy_to_clipboard(text: &str, input: &web_sys::HtmlInputElement) -> bool {
    let navigator = window().navigator();
    if let Some(clipboard) = js_sys::Reflect::get(&navigator, &JsValue::from_str("clipboard"))
        .ok()
        .and_then(|c| c.dyn_into::<web_sys::Clipboard>().ok())
        && JsFuture::from(clipboard.write_text(text)).await.is_ok()
    {
        return true;
    }
    input.select();
    let Some(document) = window().document() else {
        return false;
    };
    js_sys::Reflect::get(&document, &JsValue::from_str("execCommand"))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .and_then(|exec| exec.call1(&document, &JsValue::from_str("copy")).ok())
        .and_then(|copied| copied.as_bool())
        .unwrap_or(false)
}

/// Milliseconds since the page loaded, for speed and time-left estimates.
pub(crate) fn now_ms() -> f64 {
    window().performance().map(|p| p.now()).unwrap_or(0.0)
}

/// Waits `ms` milliseconds without blocking the page. Dropped before then (a timeout that lost
/// its race, say), it clears its timer: a timer left to fire would keep its callback, and the
/// promise and closures behind it, alive until then. The crypto pool races two 30-second
/// timeouts against every part, so such leftovers grew with the upload's length: two for every
/// part of the last 30 seconds, which comes to some 2,000 at once at 140 MB/s, against 50 for a
/// whole 100 MiB file.
pub(crate) fn sleep_ms(ms: i32) -> Sleep {
    let (fired, done) = oneshot::channel();
    let mut fired = Some(fired);
    let callback = Closure::<dyn FnMut()>::new(move || {
        if let Some(fired) = fired.take() {
            let _ = fired.send(());
        }
    });
    // The browser always takes a timer from a page; were it to refuse, the wait ends at once
    // (as the callback, dropped with it, drops the sender) rather than never.
    let timer = window()
        .set_timeout_with_callback_and_timeout_and_arguments_0(
            callback.as_ref().unchecked_ref(),
            ms,
        )
        .ok()
        .map(|handle| (handle, callback));
    Sleep { timer, done }
}

/// See [`sleep_ms`].
#[derive(Debug)]
pub(crate) struct Sleep {
    /// The timer's handle and the callback it calls, kept until the timer is cleared.
    timer: Option<(i32, Closure<dyn FnMut()>)>,
    done: oneshot::Receiver<()>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Fired, or (timer refused) its sender dropped: either way the wait is over.
        Pin::new(&mut self.done).poll(cx).map(drop)
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((handle, callback)) = self.timer.take() {
            window().clear_timeout_with_handle(handle);
            // The callback goes only now, once no timer can call it.
            drop(callback);
        }
    }
}

/// Reads bytes `start..end` of a picked file, into JS memory (not this module's).
pub(crate) async fn read_slice(
    file: &web_sys::File,
    start: u64,
    end: u64,
) -> Result<js_sys::ArrayBuffer, String> {
    let buffer = JsFuture::from(slice(file, start, end)?.array_buffer())
        .await
        .map_err(|_| UNREADABLE.to_owned())?;
    Ok(buffer.unchecked_into())
}

/// Bytes `start..end` of `file` as a `Blob`: a reference to them, not a copy, which a worker
/// can read itself.
pub(crate) fn slice(file: &web_sys::File, start: u64, end: u64) -> Result<web_sys::Blob, String> {
    file.slice_with_f64_and_f64(start as f64, end as f64)
        .map_err(|_| "The browser could not read the file.".to_owned())
}

/// What the user is told when the browser cannot read a file it was given.
pub(crate) const UNREADABLE: &str =
    "The browser could not read the file (was it moved or deleted?).";

/// Copies `bytes` into a JS `Uint8Array` (fetch bodies and blobs live on the JS side).
pub(crate) fn to_js_bytes(bytes: &[u8]) -> js_sys::Uint8Array {
    let array = js_sys::Uint8Array::new_with_length(bytes.len() as u32);
    array.copy_from(bytes);
    array
}

/// Whether `s` looks like a file id: 22 base64url characters (16 random bytes).
pub(crate) fn is_id(s: &str) -> bool {
    s.len() == 22
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The URL fragment without its `#`, or an empty string.
pub(crate) fn fragment() -> String {
    let hash = window().location().hash().unwrap_or_default();
    hash.strip_prefix('#').unwrap_or(&hash).to_owned()
}

/// Removes the fragment (the key) from the address bar and from this history entry, so it is
/// not left on screen, in screenshots or in the session history.
pub(crate) fn forget_fragment() {
    let location = window().location();
    let clean = format!(
        "{}{}",
        location.pathname().unwrap_or_default(),
        location.search().unwrap_or_default()
    );
    if let Ok(history) = window().history() {
        let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&clean));
    }
}

/// The page's origin, e.g. `http://127.0.0.1:8080`.
pub(crate) fn origin() -> String {
    window().location().origin().unwrap_or_default()
}

/// Sizes for people: `512 B`, `1.5 MiB`.
pub(crate) fn format_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Durations for people: `42 s`, `3 min 5 s`, `2 h 10 min`.
pub(crate) fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A unix time as the browser's local date and time.
pub(crate) fn format_time(unix_seconds: i64) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(unix_seconds as f64 * 1000.0));
    String::from(date.to_locale_string("default", &JsValue::UNDEFINED))
}

/// Starts a download of `blob` under `name` through a temporary link. The blob URL is returned
/// so an image preview can show the same bytes; with `release`, the URL is revoked a minute
/// later instead, so the browser can free the decrypted bytes once the save has started.
pub(crate) fn save_blob(
    blob: &web_sys::Blob,
    name: &str,
    release: bool,
) -> Result<String, JsValue> {
    let url = web_sys::Url::create_object_url_with_blob(blob)?;
    let document = window().document().ok_or(JsValue::NULL)?;
    let anchor: web_sys::HtmlAnchorElement = document.create_element("a")?.dyn_into()?;
    anchor.set_href(&url);
    anchor.set_download(name);
    anchor.set_rel("noopener");
    let body = document.body().ok_or(JsValue::NULL)?;
    body.append_child(&anchor)?;
    anchor.click();
    body.remove_child(&anchor)?;
    if release {
        let revoked = url.clone();
        let revoke = wasm_bindgen::closure::Closure::once_into_js(move || {
            let _ = web_sys::Url::revoke_object_url(&revoked);
        });
        window().set_timeout_with_callback_and_timeout_and_arguments_0(
            revoke.unchecked_ref(),
            60_000,
        )?;
    }
    Ok(url)
}
