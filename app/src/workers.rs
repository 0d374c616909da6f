//! The page's side of the crypto workers (`src/bin/worker.rs`): a small pool of Web Workers,
//! one per core (at most [`MAX_WORKERS`]), that encrypt parts off the main thread. Jobs go
//! round-robin; each answer resolves the future of the job it names.
//!
//! A worker that fails (an uncaught error, a message it cannot read) or does not answer a job
//! within [`JOB_TIMEOUT_MS`] is taken as lost: it is terminated, its jobs fail as
//! [`JobError::Lost`], and the next job given to its place starts a fresh worker. Callers
//! retry a lost job (encryption is deterministic, so a retry sends the same bytes); without
//! this, one dead worker would leave every job sent to it waiting forever and the upload
//! stalled with nothing on screen.
//!
//! A worker that has served [`RECYCLE_AFTER`] jobs is given no more; once it has answered the
//! ones it has, it is terminated and a fresh one takes its place. Each job leaves a little
//! garbage in the worker (promises, views and buffer objects, about 20 KiB a part), and V8
//! enlarges a thread's young generation the more collections it runs, so without this a
//! worker's heap grew with the size of the upload: measured in the memory benchmark, about
//! 4.5 MiB per worker after 4 GiB against 1.1 MiB after 100 MiB. The workers start staggered,
//! so that they are not all due at once and the others carry the load meanwhile.
//!
//! A worker reads its part from the file itself: it is given the part's slice of the file (a
//! `Blob`, which refers to the bytes without holding them), so plaintext never passes through
//! this page. The ciphertext comes back as a transferred `ArrayBuffer`, not copied. Both are
//! freed as soon as they are used (the plaintext by the worker, the ciphertext when its
//! [`SealedPart`] drops), not at the next garbage collection: otherwise dozens of parts would
//! pile up in memory before one runs.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::FutureExt as _;
use futures::channel::oneshot;
use futures::future::Shared;
use js_sys::{ArrayBuffer, Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{Event, MessageEvent, Worker};

/// More workers than this gain nothing: the upload link, not the CPU, is then the limit.
const MAX_WORKERS: usize = 4;
/// Trunk's loader for the worker bundle (see `app/index.html`).
const WORKER_URL: &str = "/worker_loader.js";
/// A worker that has not answered a job (or, once started, said it is ready) after this long
/// is taken as dead. A part takes milliseconds to encrypt, well under a second even with the
/// wasm fallback on a slow machine, so this only ever fires for a worker that is gone.
const JOB_TIMEOUT_MS: i32 = 30_000;
/// Times one part is given to a worker before its failure is the upload's.
const ATTEMPTS: u32 = 3;
/// Jobs (parts: 256 MiB of plaintext) after which a worker is replaced by a fresh one (see
/// the module's documentation).
const RECYCLE_AFTER: u32 = 64;

/// An encrypted part, as a worker returns it. Dropping it frees the ciphertext's buffer at
/// once: keep it until the request is made (a request copies its body when it is made).
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

/// Why a job failed.
#[derive(Debug)]
enum JobError {
    /// The worker died or stopped answering: the same job may succeed on another one.
    Lost(String),
    /// The worker answered with an error: the job itself cannot succeed.
    Failed(String),
}

impl JobError {
    fn message(self) -> String {
        match self {
            Self::Lost(message) | Self::Failed(message) => message,
        }
    }
}

/// A job waiting for its answer, and the worker (by id) that has it.
struct Waiting {
    worker: u32,
    answer: oneshot::Sender<Result<JsValue, JobError>>,
}

type Pending = Rc<RefCell<HashMap<u32, Waiting>>>;

/// A pool of crypto workers. Dropping it terminates them.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Rc<Inner>,
}

struct Inner {
    slots: RefCell<Vec<Slot>>,
    next_slot: Cell<usize>,
    next_worker_id: Cell<u32>,
    next_job: Cell<u32>,
    pending: Pending,
}

/// One started worker, with what its handlers share.
struct Slot {
    id: u32,
    worker: Worker,
    /// Resolves once the worker has loaded its wasm; fails if it dies first.
    ready: Shared<oneshot::Receiver<()>>,
    alive: Rc<Cell<bool>>,
    /// Jobs given to this worker, counted from where it started (see [`RECYCLE_AFTER`]).
    jobs: Cell<u32>,
    // Kept alive as long as the slot: the worker calls them.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(Event)>,
}

impl Slot {
    /// Whether this worker has served its [`RECYCLE_AFTER`] jobs and should be replaced.
    fn due(&self) -> bool {
        self.alive.get() && self.jobs.get() >= RECYCLE_AFTER
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for slot in self.slots.borrow().iter() {
            slot.worker.terminate();
        }
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.inner.slots.borrow().len())
            .finish()
    }
}

impl Pool {
    /// Starts one worker per core (at most [`MAX_WORKERS`]) and waits until each has loaded
    /// its wasm. Fails when the browser cannot start workers; callers then encrypt in the page.
    pub(crate) async fn start() -> Result<Pool, String> {
        let cores = crate::util::window().navigator().hardware_concurrency() as usize;
        let count = cores.clamp(1, MAX_WORKERS);
        let pool = Pool {
            inner: Rc::new(Inner {
                slots: RefCell::new(Vec::with_capacity(count)),
                next_slot: Cell::new(0),
                next_worker_id: Cell::new(0),
                next_job: Cell::new(0),
                pending: Pending::default(),
            }),
        };
        let mut readiness = Vec::with_capacity(count);
        for i in 0..count {
            let slot = pool.start_worker()?;
            // Staggered: worker i is due for a fresh start i/count of the way sooner.
            slot.jobs.set(RECYCLE_AFTER * i as u32 / count as u32);
            readiness.push(slot.ready.clone());
            pool.inner.slots.borrow_mut().push(slot);
        }
        for ready in readiness {
            within_timeout(ready)
                .await
                .and_then(|r| r.ok())
                .ok_or("a crypto worker did not start")?;
        }
        Ok(pool)
    }

    /// Encrypts part `part` of the body keyed by (`ikm`, `salt`) in a worker, which reads the
    /// part's plaintext from `plaintext` (the part's slice of the file).
    pub(crate) async fn encrypt(
        &self,
        ikm: &[u8],
        salt: &[u8; 16],
        part: u64,
        last: bool,
        plaintext: &web_sys::Blob,
    ) -> Result<SealedPart, String> {
        let request = Object::new();
        set(&request, "op", &JsValue::from_str("encrypt"));
        set(&request, "ikm", &Uint8Array::from(ikm));
        set(&request, "salt", &Uint8Array::from(&salt[..]));
        set(&request, "part", &JsValue::from_f64(part as f64));
        set(&request, "last", &JsValue::from_bool(last));
        set(&request, "data", plaintext);
        let reply = self.run(&request).await?;
        match get(&reply, "data").dyn_into::<ArrayBuffer>() {
            Ok(buffer) => Ok(SealedPart {
                ciphertext: Uint8Array::new(&buffer),
                sha256_hex: get(&reply, "sha256").as_string().unwrap_or_default(),
                plaintext_sha256_hex: get(&reply, "plain_sha256").as_string().unwrap_or_default(),
            }),
            Err(_) => Err("the crypto worker sent no data".into()),
        }
    }

    /// SHA-256 (lowercase hex) of `plaintext` (a slice of the file), read and hashed in a
    /// worker.
    pub(crate) async fn hash(&self, plaintext: &web_sys::Blob) -> Result<String, String> {
        let request = Object::new();
        set(&request, "op", &JsValue::from_str("hash"));
        set(&request, "data", plaintext);
        let reply = self.run(&request).await?;
        get(&reply, "plain_sha256")
            .as_string()
            .ok_or_else(|| "the crypto worker sent no hash".to_owned())
    }

    /// Runs the job `request` on the next worker, and again on another one when a worker is
    /// lost with it, up to [`ATTEMPTS`] times (the worker reads the file again).
    async fn run(&self, request: &Object) -> Result<JsValue, String> {
        let mut attempt = 1;
        loop {
            match self.call(request).await {
                Ok(reply) => return Ok(reply),
                Err(JobError::Lost(_)) if attempt < ATTEMPTS => {
                    attempt += 1;
                    self.revive();
                }
                Err(e) => return Err(e.message()),
            }
        }
    }

    /// Sends `request` to the next worker and waits for its answer; a dead worker in that
    /// place is replaced first.
    async fn call(&self, request: &Object) -> Result<JsValue, JobError> {
        let (id, worker, ready) = self.next_slot()?;
        within_timeout(ready)
            .await
            .and_then(|r| r.ok())
            .ok_or_else(|| JobError::Lost("a crypto worker did not start".into()))?;
        let inner = &self.inner;
        let job = inner.next_job.get();
        inner.next_job.set(job.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting {
            worker: id,
            answer: tx,
        };
        inner.pending.borrow_mut().insert(job, waiting);
        set(request, "job", &JsValue::from(job));
        if worker.post_message(request).is_err() {
            inner.pending.borrow_mut().remove(&job);
            return Err(JobError::Failed(
                "could not hand the part to a crypto worker".into(),
            ));
        }
        match within_timeout(rx).await {
            Some(Ok(answer)) => {
                self.retire_if_due(id);
                answer
            }
            Some(Err(_)) => Err(JobError::Lost("the crypto worker stopped".into())),
            None => {
                self.lose(id, "a crypto worker stopped answering");
                Err(JobError::Lost("a crypto worker stopped answering".into()))
            }
        }
    }

    /// The next worker in turn (id, handle, readiness), started afresh if the one in that
    /// place was lost and not yet revived. Workers due for a fresh start are passed over,
    /// unless all are: they finish what they have and are then replaced (see
    /// [`Pool::retire_if_due`]).
    fn next_slot(&self) -> Result<(u32, Worker, Shared<oneshot::Receiver<()>>), JobError> {
        let inner = &self.inner;
        let start = inner.next_slot.get();
        let count = inner.slots.borrow().len();
        let index = (0..count)
            .map(|k| (start + k) % count)
            .find(|&i| !inner.slots.borrow()[i].due())
            .unwrap_or(start);
        inner.next_slot.set((index + 1) % count);
        if !inner.slots.borrow()[index].alive.get() {
            let fresh = self.start_worker().map_err(|e| JobError::Lost(e.into()))?;
            inner.slots.borrow_mut()[index] = fresh;
        }
        let slots = inner.slots.borrow();
        let slot = &slots[index];
        slot.jobs.set(slot.jobs.get() + 1);
        Ok((slot.id, slot.worker.clone(), slot.ready.clone()))
    }

    /// Replaces worker `id` with a fresh one if it is due (see [`RECYCLE_AFTER`]) and has no
    /// job left. A fresh worker the browser refuses to start leaves the place to be started
    /// again when a job next comes to it.
    fn retire_if_due(&self, id: u32) {
        let inner = &self.inner;
        if inner.pending.borrow().values().any(|w| w.worker == id) {
            return;
        }
        let mut slots = inner.slots.borrow_mut();
        let Some(slot) = slots.iter_mut().find(|s| s.id == id && s.due()) else {
            return;
        };
        slot.worker.terminate();
        slot.alive.set(false);
        if let Ok(fresh) = self.start_worker() {
            *slot = fresh;
        }
    }

    /// Starts a fresh worker in the place of every lost one, so the pool is back at full
    /// strength before the lost jobs run again (rather than whenever a later job happens to
    /// be dealt to that place). A worker the browser refuses to start is tried again there.
    fn revive(&self) {
        let mut slots = self.inner.slots.borrow_mut();
        for slot in slots.iter_mut().filter(|slot| !slot.alive.get()) {
            if let Ok(fresh) = self.start_worker() {
                *slot = fresh;
            }
        }
    }

    /// Terminates the worker `id` if it is still in the pool and fails its jobs as lost.
    fn lose(&self, id: u32, why: &str) {
        if let Some(slot) = self.inner.slots.borrow().iter().find(|s| s.id == id) {
            fail_worker(&slot.worker, &slot.alive, &self.inner.pending, id, why);
        }
    }

    /// Starts one worker with its handlers; it is ready once `ready` resolves.
    fn start_worker(&self) -> Result<Slot, &'static str> {
        let id = self.inner.next_worker_id.get();
        self.inner.next_worker_id.set(id.wrapping_add(1));
        let worker =
            Worker::new(WORKER_URL).map_err(|_| "the browser refused to start a worker")?;
        let alive = Rc::new(Cell::new(true));
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        // Shared by both handlers: a worker that fails before it is ready fails its readiness.
        let ready_tx = Rc::new(RefCell::new(Some(ready_tx)));
        let on_message = on_message(Rc::clone(&ready_tx), Rc::clone(&self.inner.pending));
        let on_error = {
            let (worker, alive, pending) = (
                worker.clone(),
                Rc::clone(&alive),
                Rc::clone(&self.inner.pending),
            );
            Closure::<dyn FnMut(Event)>::new(move |event: Event| {
                event.prevent_default();
                ready_tx.borrow_mut().take();
                let detail = get(&event, "message").as_string().unwrap_or_default();
                let why = format!("a crypto worker failed: {detail}");
                fail_worker(&worker, &alive, &pending, id, &why);
            })
        };
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        worker.set_onmessageerror(Some(on_error.as_ref().unchecked_ref()));
        Ok(Slot {
            id,
            worker,
            ready: ready_rx.shared(),
            alive,
            jobs: Cell::new(0),
            _on_message: on_message,
            _on_error: on_error,
        })
    }
}

/// Terminates `worker` (id `id`), marks it dead and fails every job it had as lost.
fn fail_worker(worker: &Worker, alive: &Cell<bool>, pending: &Pending, id: u32, why: &str) {
    alive.set(false);
    worker.terminate();
    let lost: Vec<u32> = pending
        .borrow()
        .iter()
        .filter(|(_, w)| w.worker == id)
        .map(|(job, _)| *job)
        .collect();
    for job in lost {
        if let Some(waiting) = pending.borrow_mut().remove(&job) {
            let _ = waiting.answer.send(Err(JobError::Lost(why.to_owned())));
        }
    }
}

/// `future`'s output, or `None` after [`JOB_TIMEOUT_MS`].
async fn within_timeout<T>(future: impl Future<Output = T>) -> Option<T> {
    let timeout = crate::util::sleep_ms(JOB_TIMEOUT_MS);
    futures::pin_mut!(future, timeout);
    match futures::future::select(future, timeout).await {
        futures::future::Either::Left((output, _)) => Some(output),
        futures::future::Either::Right(((), _)) => None,
    }
}

/// The `onmessage` handler of one worker: its first message says it is ready, every later
/// one answers a job.
fn on_message(
    ready: Rc<RefCell<Option<oneshot::Sender<()>>>>,
    pending: Pending,
) -> Closure<dyn FnMut(MessageEvent)> {
    Closure::new(move |event: MessageEvent| {
        let data = event.data();
        if get(&data, "ready").is_truthy() {
            if let Some(tx) = ready.borrow_mut().take() {
                let _ = tx.send(());
            }
            return;
        }
        let Some(job) = get(&data, "job").as_f64() else {
            return;
        };
        let Some(waiting) = pending.borrow_mut().remove(&(job as u32)) else {
            return;
        };
        let reply = match get(&data, "error").as_string() {
            Some(_) if get(&data, "unreadable").is_truthy() => {
                Err(JobError::Failed(crate::util::UNREADABLE.to_owned()))
            }
            Some(error) => Err(JobError::Failed(format!("encryption failed: {error}"))),
            None => Ok(data),
        };
        let _ = waiting.answer.send(reply);
    })
}

fn get(object: &JsValue, key: &str) -> JsValue {
    Reflect::get(object, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn set(object: &Object, key: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(key), value);
}
