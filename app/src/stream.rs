//! Streaming downloads to disk through the download service worker (`app/sw.js`): the page
//! starts a download fetcher (`app/fetcher.js`, a dedicated worker that fetches and decrypts
//! the parts) and hands the service worker a job (name, size, and the fetcher's feed), opens
//! `/stream/<token>` in a hidden frame, and the browser's download manager receives the
//! decrypted file as the fetcher produces it. Memory stays at a few parts whatever the file's
//! size.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::StreamExt as _;
use futures::channel::mpsc;
use js_sys::{Array, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::util;

/// Files at least this large stream to disk; smaller ones are decrypted in the page, which
/// also allows an inline preview.
pub(crate) const THRESHOLD: u64 = 64 * 1024 * 1024;

/// Registers the download service worker (at the root scope, so it sees `/stream/…`), in the
/// background. Errors are ignored, and a browser without service workers here (plain http)
/// is fine: downloads then fall back to decrypting in the page.
pub(crate) fn register() {
    if let Some(container) = util::service_workers() {
        let _ = container.register("/sw.js");
    }
}

/// What the worker reports while it streams.
#[derive(Debug)]
pub(crate) enum Event {
    Progress {
        parts: u64,
    },
    /// The connection dropped or the server is away; the worker retries (`attempt`) and will
    /// continue from the last byte it received.
    Retrying {
        attempt: u64,
    },
    /// Bytes flow again after retries.
    Resumed,
    Done,
    Failed {
        damaged: bool,
        message: String,
    },
}

/// A streaming download handed to the service worker; its events arrive on `events`.
pub(crate) struct Stream {
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    frame: web_sys::Element,
    /// The download fetchers (`app/fetcher.js`), the current one stopped with the stream.
    fetchers: Rc<Fetchers>,
    _on_fetcher_error: Closure<dyn FnMut(web_sys::Event)>,
    _on_fetcher_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    _handed: HandedOver,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.frame.remove();
        if let Some(current) = self.fetchers.current.borrow().as_ref() {
            stop(current);
        }
    }
}

/// Parts one download fetcher serves before it hands the rest over to a fresh one: 256 MiB.
/// See the hand-over in `app/fetcher.js`.
const FETCHER_HAND_OVER_AFTER: u64 = 64;

/// The download fetcher at work, and what starting the next one takes.
struct Fetchers {
    /// `None` only until the first one is started.
    current: RefCell<Option<web_sys::Worker>>,
    /// The job as first posted; each successor gets it with `from`, `credit` and `header`.
    job: Object,
    /// The handlers every fetcher gets; `on_message` is set once it exists (it needs this).
    on_error: js_sys::Function,
    on_message: RefCell<Option<js_sys::Function>>,
}

impl Fetchers {
    /// Starts a fetcher with this download's handlers.
    fn start(&self) -> Result<web_sys::Worker, JsValue> {
        let options = web_sys::WorkerOptions::new();
        options.set_name(FETCHER_NAME);
        let worker = web_sys::Worker::new_with_options(FETCHER_URL, &options)?;
        worker.set_onerror(Some(&self.on_error));
        worker.set_onmessage(self.on_message.borrow().as_ref());
        Ok(worker)
    }

    /// Gives the feed (`event`'s port) of a fetcher that served its parts to a fresh one,
    /// which resumes at the part `event` names; then stops the old one.
    fn hand_over(&self, event: &web_sys::MessageEvent) -> Result<(), JsValue> {
        let data = event.data();
        let get = |key: &str| Reflect::get(&data, &JsValue::from_str(key));
        let feed = event.ports().get(0);
        if get("type")?.as_string().as_deref() != Some("handover") || feed.is_undefined() {
            return Ok(());
        }
        for (key, from) in [("from", "next"), ("credit", "credit"), ("header", "header")] {
            Reflect::set(&self.job, &JsValue::from_str(key), &get(from)?)?;
        }
        let next = self.start()?;
        next.post_message_with_transfer(&self.job, &Array::of1(&feed))?;
        if let Some(done) = self.current.replace(Some(next)) {
            stop(&done);
        }
        Ok(())
    }
}

/// Stops a fetcher, and its handlers from hearing any message it left behind.
fn stop(fetcher: &web_sys::Worker) {
    fetcher.set_onmessage(None);
    fetcher.set_onerror(None);
    fetcher.terminate();
}

/// What the page says when the download fetcher dies.
const FETCHER_DIED: &str = "the download worker stopped";

/// Tells the service worker, through the job's channel, to fail its stream.
fn post_abort(port: &web_sys::MessagePort) {
    let abort = Object::new();
    let _ = Reflect::set(&abort, &"type".into(), &"abort".into());
    let _ = Reflect::set(&abort, &"message".into(), &FETCHER_DIED.into());
    let _ = port.post_message(&abort);
}

/// The download fetcher's script and the name it is started with (which tells the worker
/// bundle it loads not to serve crypto jobs: see `app/src/bin/worker.rs`).
const FETCHER_URL: &str = "/fetcher.js";
const FETCHER_NAME: &str = "bitstratus-download";

/// Everything the worker needs to fetch and decrypt the file.
pub(crate) struct Job<'a> {
    pub(crate) id: &'a str,
    pub(crate) ticket: &'a str,
    pub(crate) ikm: &'a [u8],
    /// The server's layout of the ciphertext body: its length and how it is cut into parts.
    pub(crate) body_size: u64,
    pub(crate) first_part_size: u64,
    pub(crate) part_size: u64,
    pub(crate) part_count: u64,
    pub(crate) name: &'a str,
    /// The plaintext length.
    pub(crate) size: u64,
}

/// Starts streaming `job` to disk. `Err` when no service worker is available (the caller
/// then downloads in the page).
pub(crate) async fn start(job: &Job<'_>) -> Result<Stream, JsValue> {
    let (tx, events) = mpsc::unbounded();
    let token = hex_token();
    // The fetcher fetches and decrypts; it feeds the plaintext to the service worker through
    // `feed`, so the service worker's thread only refills the download manager's pipe.
    let feed = web_sys::MessageChannel::new()?;
    // A fetcher that dies (its script failed to load, say) would leave the download waiting
    // for ever: the service worker is told to fail the stream, and the page hears of it. Set
    // up at once, so an early death is not missed. A successor that cannot be started is
    // taken the same way.
    let fetcher_died = Rc::new(Cell::new(false));
    let abort_port = Rc::new(RefCell::new(None::<web_sys::MessagePort>));
    let die = {
        let (died, port, failed) = (Rc::clone(&fetcher_died), Rc::clone(&abort_port), tx.clone());
        Rc::new(move || {
            died.set(true);
            if let Some(port) = port.borrow().as_ref() {
                post_abort(port);
            }
            let _ = failed.unbounded_send(Event::Failed {
                damaged: false,
                message: FETCHER_DIED.to_owned(),
            });
        })
    };
    let on_fetcher_error = {
        let die = Rc::clone(&die);
        Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
            event.prevent_default();
            die();
        })
    };
    let fields = [
        ("type", JsValue::from_str("download")),
        ("token", JsValue::from_str(&token)),
        ("id", JsValue::from_str(job.id)),
        ("ticket", JsValue::from_str(job.ticket)),
        ("ikm", Uint8Array::from(job.ikm).into()),
        ("partCount", JsValue::from_f64(job.part_count as f64)),
        ("bodySize", JsValue::from_f64(job.body_size as f64)),
        (
            "firstPartSize",
            JsValue::from_f64(job.first_part_size as f64),
        ),
        ("partSize", JsValue::from_f64(job.part_size as f64)),
        ("name", JsValue::from_str(job.name)),
        ("size", JsValue::from_f64(job.size as f64)),
        (
            "handOverAfter",
            JsValue::from_f64(FETCHER_HAND_OVER_AFTER as f64),
        ),
    ];
    let fetch_job = Object::new();
    for (key, value) in &fields {
        Reflect::set(&fetch_job, &JsValue::from_str(key), value)?;
    }
    let fetchers = Rc::new(Fetchers {
        current: RefCell::new(None),
        job: fetch_job,
        on_error: on_fetcher_error
            .as_ref()
            .unchecked_ref::<js_sys::Function>()
            .clone(),
        on_message: RefCell::new(None),
    });
    let on_fetcher_message = {
        let fetchers = Rc::clone(&fetchers);
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            if fetchers.hand_over(&event).is_err() {
                die();
            }
        })
    };
    *fetchers.on_message.borrow_mut() = Some(
        on_fetcher_message
            .as_ref()
            .unchecked_ref::<js_sys::Function>()
            .clone(),
    );
    let fetcher = fetchers.start()?;
    fetcher.post_message_with_transfer(&fetchers.job, &Array::of1(&feed.port1()))?;
    *fetchers.current.borrow_mut() = Some(fetcher);
    // The service worker needs neither the key nor the ticket any more: it only names the file.
    let for_service_worker: Vec<_> = fields
        .iter()
        .filter(|(key, _)| matches!(*key, "type" | "token" | "name" | "size"))
        .cloned()
        .collect();
    let handed = hand_over(&for_service_worker, Some(feed.port2()), move |get| {
        let event = match get("type").as_string().as_deref() {
            Some("progress") => Event::Progress {
                parts: get("part").as_f64().unwrap_or(0.0) as u64,
            },
            Some("retrying") => Event::Retrying {
                attempt: get("attempt").as_f64().unwrap_or(0.0) as u64,
            },
            Some("resumed") => Event::Resumed,
            Some("done") => Event::Done,
            Some("failed") => Event::Failed {
                damaged: get("damaged").is_truthy(),
                message: get("message").as_string().unwrap_or_default(),
            },
            _ => return,
        };
        let _ = tx.unbounded_send(event);
    })
    .await?;

    // The service worker may now be told to fail the stream; so it is, if the fetcher died
    // while the job was being handed over.
    *abort_port.borrow_mut() = Some(handed.port.clone());
    if fetcher_died.get() {
        post_abort(&handed.port);
    }

    let document = util::window().document().ok_or(JsValue::NULL)?;
    let frame = document.create_element("iframe")?;
    frame.set_attribute("hidden", "")?;
    frame.set_attribute("src", &format!("/stream/{token}"))?;
    document.body().ok_or(JsValue::NULL)?.append_child(&frame)?;
    Ok(Stream {
        events,
        frame,
        fetchers,
        _on_fetcher_error: on_fetcher_error,
        _on_fetcher_message: on_fetcher_message,
        _handed: handed,
    })
}

/// A job the service worker accepted: the page's end of its channel and the keep-alive timer.
struct HandedOver {
    /// The page's end of the job's channel (the worker's messages arrive here).
    port: web_sys::MessagePort,
    _on_message: Closure<dyn FnMut(web_sys::MessageEvent)>,
    interval: i32,
    _keep_alive: Closure<dyn FnMut()>,
}

impl Drop for HandedOver {
    fn drop(&mut self) {
        util::window().clear_interval_with_handle(self.interval);
    }
}

/// Posts a job made of `fields` (and `feed`, when given, as the job's second port) to the
/// active service worker with a fresh channel, waits until
/// the worker confirms it, and keeps the worker alive (Firefox stops one that looks idle after
/// ~30 s, even mid-stream) until the returned value is dropped. The worker's later messages go
/// to `on_event`, which reads their fields through the function it is given.
async fn hand_over(
    fields: &[(&str, JsValue)],
    feed: Option<web_sys::MessagePort>,
    mut on_event: impl FnMut(&dyn Fn(&str) -> JsValue) + 'static,
) -> Result<HandedOver, JsValue> {
    let container = util::service_workers().ok_or(JsValue::NULL)?;
    let registration: web_sys::ServiceWorkerRegistration =
        JsFuture::from(container.ready()?).await?.unchecked_into();
    let worker = registration.active().ok_or(JsValue::NULL)?;

    let (registered_tx, mut registered) = mpsc::unbounded::<()>();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |message: web_sys::MessageEvent| {
            let data = message.data();
            let get = |key: &str| {
                Reflect::get(&data, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
            };
            if get("type").as_string().as_deref() == Some("registered") {
                let _ = registered_tx.unbounded_send(());
            } else {
                on_event(&get);
            }
        });
    let channel = web_sys::MessageChannel::new()?;
    channel
        .port1()
        .set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let message = Object::new();
    for (key, value) in fields {
        Reflect::set(&message, &JsValue::from_str(key), value)?;
    }
    let ports = Array::of1(&channel.port2());
    if let Some(feed) = feed {
        ports.push(&feed);
    }
    worker.post_message_with_transferable(&message, &ports)?;
    registered.next().await.ok_or(JsValue::NULL)?;

    let ping = Object::new();
    Reflect::set(
        &ping,
        &JsValue::from_str("type"),
        &JsValue::from_str("ping"),
    )?;
    let keep_alive = Closure::<dyn FnMut()>::new(move || {
        let _ = worker.post_message(&ping);
    });
    let interval = util::window().set_interval_with_callback_and_timeout_and_arguments_0(
        keep_alive.as_ref().unchecked_ref(),
        10_000,
    )?;
    Ok(HandedOver {
        port: channel.port1(),
        _on_message: on_message,
        interval,
        _keep_alive: keep_alive,
    })
}

/// A random 128-bit token naming one stream.
fn hex_token() -> String {
    let bytes = Uint8Array::new_with_length(16);
    let _ = util::window()
        .crypto()
        .and_then(|c| c.get_random_values_with_array_buffer_view(&bytes));
    hex::encode(bytes.to_vec())
}

/// A file to play in the page through the service worker's `/media/<token>`.
pub(crate) struct MediaJob<'a> {
    pub(crate) id: &'a str,
    pub(crate) ticket: &'a str,
    pub(crate) ikm: &'a [u8],
    /// The ciphertext body's length (the server's `size`).
    pub(crate) body_size: u64,
    /// The plaintext length (from the sealed metadata).
    pub(crate) size: u64,
    pub(crate) mime: &'a str,
}

/// Hands `job` to the service worker; returns the URL the player should load. The worker is
/// kept alive as long as the page, so the player may resume after any pause.
pub(crate) async fn register_media(job: &MediaJob<'_>) -> Result<String, JsValue> {
    let token = hex_token();
    let fields = [
        ("type", JsValue::from_str("media")),
        ("token", JsValue::from_str(&token)),
        ("id", JsValue::from_str(job.id)),
        ("ticket", JsValue::from_str(job.ticket)),
        ("ikm", Uint8Array::from(job.ikm).into()),
        ("bodySize", JsValue::from_f64(job.body_size as f64)),
        ("size", JsValue::from_f64(job.size as f64)),
        ("mime", JsValue::from_str(job.mime)),
    ];
    std::mem::forget(hand_over(&fields, None, |_| {}).await?);
    // The player's requests reach the worker only once it controls this page, which on a
    // first visit happens a moment after it activates (it claims its clients then).
    let container = util::service_workers().ok_or(JsValue::NULL)?;
    for _ in 0..100 {
        if container.controller().is_some() {
            return Ok(format!("/media/{token}"));
        }
        util::sleep_ms(50).await;
    }
    Err(JsValue::NULL)
}
