//! The page's side of the crypto workers (`src/bin/worker.rs`): a small pool of Web Workers,
//! one per core (at most [`MAX_WORKERS`]), that encrypt parts off the main thread. Jobs go
//! round-robin; each answer resolves the future of the job it names.
//!
//! Plaintext goes to a worker and ciphertext comes back as transferred `ArrayBuffer`s, so
//! neither is copied through this page's wasm memory. Each is freed as soon as it is used (the
//! plaintext by the worker, the ciphertext when its [`SealedPart`] drops), not at the next
//! garbage collection: otherwise dozens of parts would pile up in memory before one runs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use js_sys::{Array, ArrayBuffer, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker};

/// More workers than this gain nothing: the upload link, not the CPU, is then the limit.
const MAX_WORKERS: usize = 4;
/// Trunk's loader for the worker bundle (see `app/index.html`).
const WORKER_URL: &str = "/worker_loader.js";

/// An encrypted part, as a worker returns it. Dropping it frees the ciphertext's buffer at
/// once: keep it until the part is sent (a request copies its body when it is made).
#[derive(Debug)]
pub(crate) struct SealedPart {
    /// The whole of its own `ArrayBuffer`, which nothing else shares.
    pub(crate) ciphertext: Uint8Array,
    /// SHA-256 of the ciphertext, lowercase hex (the server checks it).
    pub(crate) sha256_hex: String,
    /// SHA-256 of the plaintext, lowercase hex (resuming checks it, see `resume.rs`).
    pub(crate) plaintext_sha256_hex: String,
}

impl Drop for SealedPart {
    fn drop(&mut self) {
        crypto_wasm::webcrypto::release(&self.ciphertext.buffer());
    }
}

type Pending = Rc<RefCell<HashMap<u32, oneshot::Sender<Result<JsValue, String>>>>>;

/// A pool of started, ready crypto workers. Dropping it terminates them.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Rc<Inner>,
}

struct Inner {
    workers: Vec<Worker>,
    next_worker: Cell<usize>,
    next_job: Cell<u32>,
    pending: Pending,
    // Kept alive as long as the pool: the workers call them.
    _handlers: Vec<Closure<dyn FnMut(MessageEvent)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for worker in &self.workers {
            worker.terminate();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.inner.workers.len())
            .finish()
    }
}

impl Pool {
    /// Starts one worker per core (at most [`MAX_WORKERS`]) and waits until each has loaded
    /// its wasm. Fails when the browser cannot start workers; callers then encrypt in the page.
    pub(crate) async fn start() -> Result<Pool, String> {
        let cores = crate::util::window().navigator().hardware_concurrency() as usize;
        let count = cores.clamp(1, MAX_WORKERS);
        let pending = Pending::default();
        let mut workers = Vec::with_capacity(count);
        let mut handlers = Vec::with_capacity(count);
        let mut readiness = Vec::with_capacity(count);
        for _ in 0..count {
            let worker =
                Worker::new(WORKER_URL).map_err(|_| "the browser refused to start a worker")?;
            let (ready_tx, ready_rx) = oneshot::channel::<()>();
            let handler = handler(ready_tx, Rc::clone(&pending));
            worker.set_onmessage(Some(handler.as_ref().unchecked_ref()));
            workers.push(worker);
            handlers.push(handler);
            readiness.push(ready_rx);
        }
        let pool = Pool {
            inner: Rc::new(Inner {
                workers,
                next_worker: Cell::new(0),
                next_job: Cell::new(0),
                pending,
                _handlers: handlers,
            }),
        };
        for ready in readiness {
            ready.await.map_err(|_| "a crypto worker did not start")?;
        }
        Ok(pool)
    }

    /// Encrypts part `part` of the body keyed by (`ikm`, `salt`) in a worker. `plaintext` is
    /// transferred to the worker: it is unusable here afterwards.
    pub(crate) async fn encrypt(
        &self,
        ikm: &[u8],
        salt: &[u8; 16],
        part: u64,
        last: bool,
        plaintext: ArrayBuffer,
    ) -> Result<SealedPart, String> {
        let request = Object::new();
        set(&request, "op", &JsValue::from_str("encrypt"));
        set(&request, "ikm", &Uint8Array::from(ikm));
        set(&request, "salt", &Uint8Array::from(&salt[..]));
        set(&request, "part", &JsValue::from_f64(part as f64));
        set(&request, "last", &JsValue::from_bool(last));
        set(&request, "data", &plaintext);
        let reply = self.call(request, &plaintext).await?;
        match get(&reply, "data").dyn_into::<ArrayBuffer>() {
            Ok(buffer) => Ok(SealedPart {
                ciphertext: Uint8Array::new(&buffer),
                sha256_hex: get(&reply, "sha256").as_string().unwrap_or_default(),
                plaintext_sha256_hex: get(&reply, "plain_sha256").as_string().unwrap_or_default(),
            }),
            Err(_) => Err("the crypto worker sent no data".into()),
        }
    }

    /// SHA-256 (lowercase hex) of `plaintext`, computed in a worker; `plaintext` is transferred.
    pub(crate) async fn hash(&self, plaintext: ArrayBuffer) -> Result<String, String> {
        let request = Object::new();
        set(&request, "op", &JsValue::from_str("hash"));
        set(&request, "data", &plaintext);
        let reply = self.call(request, &plaintext).await?;
        get(&reply, "plain_sha256")
            .as_string()
            .ok_or_else(|| "the crypto worker sent no hash".to_owned())
    }

    /// Sends `request` (with `transfer` moved, not copied) to the next worker and waits for
    /// its answer.
    async fn call(&self, request: Object, transfer: &ArrayBuffer) -> Result<JsValue, String> {
        let inner = &self.inner;
        let job = inner.next_job.get();
        inner.next_job.set(job.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        inner.pending.borrow_mut().insert(job, tx);
        set(&request, "job", &JsValue::from(job));
        let index = inner.next_worker.get();
        inner.next_worker.set((index + 1) % inner.workers.len());
        if inner.workers[index]
            .post_message_with_transfer(&request, &Array::of1(transfer))
            .is_err()
        {
            inner.pending.borrow_mut().remove(&job);
            return Err("could not hand the part to a crypto worker".into());
        }
        rx.await
            .map_err(|_| "the crypto worker stopped".to_owned())?
    }
}

/// The `onmessage` handler of one worker: its first message says it is ready, every later
/// one answers a job.
fn handler(ready: oneshot::Sender<()>, pending: Pending) -> Closure<dyn FnMut(MessageEvent)> {
    let mut ready = Some(ready);
    Closure::new(move |event: MessageEvent| {
        let data = event.data();
        if get(&data, "ready").is_truthy() {
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
            return;
        }
        let Some(job) = get(&data, "job").as_f64() else {
            return;
        };
        let Some(tx) = pending.borrow_mut().remove(&(job as u32)) else {
            return;
        };
        let reply = match get(&data, "error").as_string() {
            Some(error) => Err(format!("encryption failed: {error}")),
            None => Ok(data),
        };
        let _ = tx.send(reply);
    })
}

fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(key), value);
}
