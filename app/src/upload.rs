//! The upload page: pick or drop files, choose expiry, download limit and password, then each
//! file is encrypted part by part in this tab and sent to the server; the share link, its QR
//! code and a private manage link appear when the upload completes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use futures::StreamExt as _;

use crate::{api, resume, util, workers};

/// Parts read, encrypted and uploaded at the same time.
const PARTS_IN_FLIGHT: usize = 4;

/// Expiry choices offered to the uploader, in seconds (the server accepts 1 hour to 30 days).
const EXPIRIES: [(u64, &str); 6] = [
    (3600, "1 hour"),
    (6 * 3600, "6 hours"),
    (86400, "1 day"),
    (3 * 86400, "3 days"),
    (7 * 86400, "7 days"),
    (30 * 86400, "30 days"),
];
const DEFAULT_EXPIRY: u64 = 7 * 86400;

/// Download-limit choices; `None` is unlimited.
const LIMITS: [Option<u64>; 9] = [
    Some(1),
    Some(2),
    Some(3),
    Some(5),
    Some(10),
    Some(20),
    Some(50),
    Some(100),
    None,
];

/// Where one file's upload stands.
#[derive(Clone, Debug, PartialEq)]
enum JobState {
    Waiting,
    Working {
        phase: &'static str,
        done: u64,
        total: u64,
        started_ms: f64,
    },
    Done {
        share: String,
        manage: String,
    },
    Failed(String),
}

/// One picked file as the page shows it; the `web_sys::File` itself lives in a local store.
#[derive(Clone, Debug)]
struct Job {
    index: usize,
    name: String,
    size: u64,
    state: RwSignal<JobState>,
}

/// Options chosen before the upload starts.
#[derive(Clone, Debug)]
struct Options {
    expires_in: u64,
    download_limit: Option<u64>,
    password: Option<String>,
}

/// The upload page.
#[component]
pub(crate) fn UploadPage() -> impl IntoView {
    let files = StoredValue::new_local(Vec::<web_sys::File>::new());
    let jobs = RwSignal::new(Vec::<Job>::new());
    let expiry = RwSignal::new(DEFAULT_EXPIRY);
    let limit = RwSignal::new(None::<u64>);
    let password = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let dragging = RwSignal::new(false);

    let add_files = move |list: Option<web_sys::FileList>| {
        let Some(list) = list else { return };
        for i in 0..list.length() {
            let Some(file) = list.item(i) else { continue };
            let index = files.with_value(|f| f.len());
            let job = Job {
                index,
                name: file.name(),
                size: file.size() as u64,
                state: RwSignal::new(JobState::Waiting),
            };
            files.update_value(|f| f.push(file));
            jobs.update(|j| j.push(job));
        }
    };

    let start = move |_| {
        if busy.get() {
            return;
        }
        let pending: Vec<Job> = jobs
            .get()
            .into_iter()
            .filter(|j| j.state.get() == JobState::Waiting)
            .collect();
        if pending.is_empty() {
            return;
        }
        let pw = password.get();
        let options = Options {
            expires_in: expiry.get(),
            download_limit: limit.get(),
            password: (!pw.is_empty()).then_some(pw),
        };
        busy.set(true);
        leptos::task::spawn_local(async move {
            // One pool for the whole batch; without workers, parts are encrypted in the page.
            let pool = workers::Pool::start().await.ok();
            for job in pending {
                let Some(file) = files.with_value(|f| f.get(job.index).cloned()) else {
                    continue;
                };
                let outcome = upload_file(&file, &options, pool.as_ref(), job.state).await;
                job.state.set(match outcome {
                    Ok(done) => done,
                    Err(message) => JobState::Failed(message),
                });
            }
            busy.set(false);
        });
    };

    view! {
        <section class="card">
            <h1>"Share files, end-to-end encrypted"</h1>
            <label
                class="dropzone"
                class:dragging=move || dragging.get()
                on:dragover=move |ev: web_sys::DragEvent| {
                    ev.prevent_default();
                    dragging.set(true);
                }
                on:dragleave=move |_| dragging.set(false)
                on:drop=move |ev: web_sys::DragEvent| {
                    ev.prevent_default();
                    dragging.set(false);
                    add_files(ev.data_transfer().and_then(|d| d.files()));
                }
            >
                <input
                    id="file-input"
                    type="file"
                    multiple
                    on:change=move |ev| {
                        let input: web_sys::HtmlInputElement = event_target(&ev);
                        add_files(input.files());
                        input.set_value("");
                    }
                />
                <span>"Drop files here or click to choose"</span>
            </label>

            <div class="options">
                <label>
                    "Expires after "
                    <select
                        id="expiry"
                        on:change=move |ev| expiry.set(event_target_value(&ev).parse().unwrap_or(DEFAULT_EXPIRY))
                    >
                        {EXPIRIES
                            .iter()
                            .map(|(secs, label)| {
                                view! { <option value=secs.to_string() selected=*secs == DEFAULT_EXPIRY>{*label}</option> }
                            })
                            .collect_view()}
                    </select>
                </label>
                <label>
                    "Download limit "
                    <select id="limit" on:change=move |ev| limit.set(event_target_value(&ev).parse().ok())>
                        {LIMITS
                            .iter()
                            .map(|l| {
                                let (value, text) = match l {
                                    Some(n) if *n == 1 => (n.to_string(), "1 download".to_owned()),
                                    Some(n) => (n.to_string(), format!("{n} downloads")),
                                    None => ("unlimited".to_owned(), "Unlimited".to_owned()),
                                };
                                view! { <option value=value selected=l.is_none()>{text}</option> }
                            })
                            .collect_view()}
                    </select>
                </label>
                <label>
                    "Password (optional) "
                    <input
                        id="password"
                        type="password"
                        autocomplete="new-password"
                        prop:value=move || password.get()
                        on:input=move |ev| password.set(event_target_value(&ev))
                    />
                </label>
            </div>

            <button
                id="upload"
                class="primary"
                on:click=start
                disabled=move || busy.get() || jobs.with(|j| j.iter().all(|j| j.state.get() != JobState::Waiting))
            >
                {move || if busy.get() { "Uploading…" } else { "Encrypt and upload" }}
            </button>
        </section>

        <ul class="jobs">
            <For each=move || jobs.get() key=|job| job.index let:job>
                <JobRow job />
            </For>
        </ul>
    }
}

/// One file's row: progress while it runs, then its links.
#[component]
fn JobRow(job: Job) -> impl IntoView {
    let state = job.state;
    view! {
        <li class="job">
            <div class="job-head">
                <span class="name">{job.name.clone()}</span>
                <span class="size">{util::format_bytes(job.size as f64)}</span>
            </div>
            {move || match state.get() {
                JobState::Waiting => view! { <p class="muted">"Ready to encrypt and upload."</p> }.into_any(),
                JobState::Working { phase, done, total, started_ms } => {
                    let percent = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
                    let elapsed = ((util::now_ms() - started_ms) / 1000.0).max(0.001);
                    let speed = done as f64 / elapsed;
                    let left = if speed > 0.0 { (total - done) as f64 / speed } else { 0.0 };
                    let stats = if done == 0 {
                        format!("{phase}…")
                    } else {
                        format!(
                            "{phase} · {percent:.0}% · {}/s · {} left",
                            util::format_bytes(speed),
                            util::format_duration(left)
                        )
                    };
                    view! {
                        <progress max="100" value=format!("{percent:.1}")></progress>
                        <p class="stats">{stats}</p>
                    }
                        .into_any()
                }
                JobState::Done { share, manage } => view! { <Links share manage /> }.into_any(),
                JobState::Failed(message) => view! { <p class="error" role="alert">{message}</p> }.into_any(),
            }}
        </li>
    }
}

/// The share link with copy button and QR code, and the private manage link.
#[component]
fn Links(share: String, manage: String) -> impl IntoView {
    // What the copy button says: "Copy link", then "Copied", or a hint where it failed.
    let copied = RwSignal::new(None::<bool>);
    let share_input = NodeRef::<leptos::html::Input>::new();
    let qr = qrcode::QrCode::new(share.as_bytes())
        .map(|code| {
            code.render::<qrcode::render::svg::Color>()
                .min_dimensions(180, 180)
                .build()
        })
        .unwrap_or_default();
    let share_for_copy = share.clone();
    view! {
        <div class="links">
            <span class="label">"Share link"</span>
            <div class="share-row">
                <input
                    class="share-link"
                    readonly
                    value=share.clone()
                    on:focus=select_all
                    node_ref=share_input
                />
                <button
                class="copy"
                on:click=move |_| {
                    let text = share_for_copy.clone();
                    if let Some(input) = share_input.get() {
                        leptos::task::spawn_local(async move {
                            copied.set(Some(util::copy_to_clipboard(&text, &input).await));
                        });
                    }
                }
            >
                    {move || match copied.get() {
                        None => "Copy link",
                        Some(true) => "Copied",
                        Some(false) => "Selected: press Ctrl+C",
                    }}
                </button>
            </div>
            <div class="qr" inner_html=qr></div>
            <label>
                "Manage link (private: lets you change or delete this upload)"
                <input class="manage-link" readonly value=manage on:focus=select_all />
            </label>
        </div>
    }
}

fn select_all(ev: web_sys::FocusEvent) {
    if let Some(input) = ev
        .target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
    {
        input.select();
    }
}

/// Copies `plaintext` into wasm memory and frees the buffer at once (see
/// [`crypto_wasm::webcrypto::release`]) rather than leave a part to the garbage collector.
fn take_plaintext(plaintext: js_sys::ArrayBuffer) -> Vec<u8> {
    let bytes = js_sys::Uint8Array::new(&plaintext).to_vec();
    crypto_wasm::webcrypto::release(&plaintext);
    bytes
}

/// SHA-256 (hex) of `plaintext` on the page's own thread: the fallback without workers.
fn hash_in_page(plaintext: js_sys::ArrayBuffer) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(take_plaintext(plaintext)))
}

/// Encrypts one part on the page's own thread: the fallback when workers cannot start.
fn seal_in_page(
    encryptor: &crypto_wasm::Encryptor,
    n: u64,
    last: bool,
    plaintext: js_sys::ArrayBuffer,
) -> Result<workers::SealedPart, String> {
    use sha2::Digest as _;
    let plaintext = take_plaintext(plaintext);
    let ciphertext = encryptor
        .encrypt_part(n, &plaintext, last)
        .map_err(|e| format!("Could not encrypt part {}: {e}.", n + 1))?;
    Ok(workers::SealedPart {
        sha256_hex: hex::encode(sha2::Sha256::digest(&ciphertext)),
        plaintext_sha256_hex: hex::encode(sha2::Sha256::digest(&plaintext)),
        ciphertext: util::to_js_bytes(&ciphertext),
    })
}

/// Where an upload starts from: a new file on the server, or one this browser began before.
struct Plan {
    id: String,
    owner_token: String,
    secret: crypto_wasm::Secret,
    keys: crypto_wasm::FileKeys,
    encryptor: crypto_wasm::Encryptor,
    /// Parts the server already holds, and their total size.
    stored: BTreeSet<u64>,
    stored_bytes: u64,
    /// What this browser remembers for resuming; `None` when it cannot remember (then nothing
    /// is ever resumed, so no nonce can be reused).
    record: Option<RefCell<resume::Unfinished>>,
}

const CHANGED: &str = "This file changed since the earlier upload attempt, so resuming it could expose its \
    contents. That attempt was discarded: choose the file again to upload it as a new file.";

/// Encrypts and uploads one file, resuming an earlier attempt of this browser when there is
/// one; returns its links or a message for the user.
async fn upload_file(
    file: &web_sys::File,
    options: &Options,
    pool: Option<&workers::Pool>,
    state: RwSignal<JobState>,
) -> Result<JobState, String> {
    let size = file.size() as u64;
    let started_ms = util::now_ms();
    let body_size = crypto_wasm::body_size(size);
    let working = move |phase, done| JobState::Working {
        phase,
        done,
        total: body_size,
        started_ms,
    };

    let resumed = match resume::load(file) {
        Some(record) => resume_plan(file, options, record, state, &working).await?,
        None => None,
    };
    let resuming = resumed.is_some();
    let plan = match resumed {
        Some(plan) => plan,
        None => fresh_plan(file, options, state, &working).await?,
    };
    let phase = if resuming {
        "Resuming"
    } else {
        "Encrypting and uploading"
    };
    let per_part = crypto_wasm::plaintext_per_part();
    if resuming {
        // The parts already stored came from the file as it was then: if it changed since,
        // resuming would mix two versions. Every part of an attempt had its plaintext hash
        // recorded before it was sent, so compare them all.
        state.set(working("Checking the file against the earlier attempt", 0));
        let record = plan
            .record
            .as_ref()
            .map(|r| r.borrow().plaintext_sha256.clone())
            .unwrap_or_default();
        let mut checks = futures::stream::iter(plan.stored.iter().copied())
            .map(|n| {
                let earlier = record.get(&n).cloned();
                async move {
                    let start = n * per_part;
                    let end = (start + per_part).min(size);
                    let now = match pool {
                        Some(pool) => pool.hash(&util::slice(file, start, end)?).await?,
                        None => hash_in_page(util::read_slice(file, start, end).await?),
                    };
                    Ok::<bool, String>(earlier.as_deref() == Some(now.as_str()))
                }
            })
            .buffer_unordered(PARTS_IN_FLIGHT);
        while let Some(same) = checks.next().await {
            if !same? {
                drop(checks);
                resume::forget(file);
                let _ = api::delete(&plan.id, &plan.owner_token).await;
                return Err(CHANGED.to_owned());
            }
        }
    }
    state.set(working(phase, plan.stored_bytes));

    let ikm = plan.keys.content_key().expose_ikm();
    let salt = *plan.encryptor.salt();
    let count = crypto_wasm::Layout::for_plaintext_len(size).part_count();
    let sent = Cell::new(plan.stored_bytes);
    let missing = (0..count).filter(|n| !plan.stored.contains(n));
    // Up to PARTS_IN_FLIGHT parts are read, encrypted (in the workers) and sent at once, so
    // encrypting one part overlaps sending the others; memory stays bounded by that number.
    let mut parts = futures::stream::iter(missing)
        .map(|n| {
            let (plan, sent) = (&plan, &sent);
            async move {
                let start = n * per_part;
                let end = (start + per_part).min(size);
                let last = n + 1 == count;
                // The plaintext hash of the first sealing, for a retry to compare with when
                // this browser keeps no record (see below).
                let mut first_seal = None::<String>;
                let mut backoff = api::Backoff::new();
                loop {
                    let sealed = match pool {
                        Some(pool) => {
                            let plaintext = util::slice(file, start, end)?;
                            pool.encrypt(ikm, &salt, n, last, &plaintext).await?
                        }
                        None => {
                            let plaintext = util::read_slice(file, start, end).await?;
                            seal_in_page(&plan.encryptor, n, last, plaintext)?
                        }
                    };
                    // A part goes out only sealed from the plaintext first recorded for it:
                    // a retry, or a resumed attempt, seals it again from the file, which must
                    // not have changed meanwhile (another plaintext under the same nonce).
                    let plain = sealed.plaintext_sha256_hex.clone();
                    if *first_seal.get_or_insert_with(|| plain.clone()) != plain {
                        return Err(CHANGED.to_owned());
                    }
                    if let Some(record) = &plan.record {
                        let mut record = record.borrow_mut();
                        match record.plaintext_sha256.get(&n) {
                            Some(earlier) if *earlier != plain => return Err(CHANGED.to_owned()),
                            Some(_) => {}
                            None => {
                                // Remembered before the ciphertext leaves the page: see
                                // resume.rs.
                                record.plaintext_sha256.insert(n, plain);
                                resume::save_part(file, &record, n)?;
                            }
                        }
                    }
                    let size = u64::from(sealed.ciphertext.length());
                    // The ciphertext is freed as soon as the request has its copy.
                    match api::put_part_once(&plan.id, &plan.owner_token, n, sealed).await {
                        Ok(()) => {
                            sent.set(sent.get() + size);
                            break;
                        }
                        Err(e) if backoff.retry(&e).await => {}
                        Err(e) => {
                            return Err(format!(
                                "Upload failed at part {} of {count}: {}",
                                n + 1,
                                e.message
                            ));
                        }
                    }
                }
                state.set(working(phase, sent.get()));
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(PARTS_IN_FLIGHT);
    while let Some(result) = parts.next().await {
        if let Err(message) = result {
            if message == CHANGED {
                resume::forget(file);
                let _ = api::delete(&plan.id, &plan.owner_token).await;
            }
            return Err(message);
        }
    }
    drop(parts);
    api::complete(&plan.id, &plan.owner_token)
        .await
        .map_err(|e| e.message)?;
    resume::forget(file);

    let origin = util::origin();
    let secret = plan.secret.to_base64url();
    Ok(JobState::Done {
        share: format!("{origin}/d/{}#{secret}", plan.id),
        manage: format!("{origin}/m/{}#{}.{secret}", plan.id, plan.owner_token),
    })
}

/// Derives the file keys, stretching the password first if there is one (slow on purpose).
async fn derive_keys(
    secret: &crypto_wasm::Secret,
    password: Option<(&str, &crypto_wasm::KdfParams)>,
    state: RwSignal<JobState>,
    working: &impl Fn(&'static str, u64) -> JobState,
) -> Result<crypto_wasm::FileKeys, String> {
    if password.is_some() {
        state.set(working("Strengthening the password", 0));
        // Let the page paint before the deliberately slow key stretching runs.
        util::sleep_ms(30).await;
    }
    crypto_wasm::FileKeys::derive(secret, password)
        .map_err(|e| format!("Could not derive the keys: {e}."))
}

/// A new upload: fresh secret and salt, the sealed metadata, and the server's id for it.
async fn fresh_plan(
    file: &web_sys::File,
    options: &Options,
    state: RwSignal<JobState>,
    working: &impl Fn(&'static str, u64) -> JobState,
) -> Result<Plan, String> {
    let size = file.size() as u64;
    let secret = crypto_wasm::Secret::generate();
    let kdf = options
        .password
        .as_ref()
        .map(|_| crypto_wasm::KdfParams::generate());
    let keys = derive_keys(
        &secret,
        options.password.as_deref().zip(kdf.as_ref()),
        state,
        working,
    )
    .await?;
    let metadata = crypto_wasm::Metadata {
        name: file.name(),
        size,
        mime: file.type_(),
    };
    let sealed = keys
        .seal_metadata(&metadata)
        .map_err(|e| format!("Could not encrypt the file's details: {e}."))?;
    let created = api::create_file(&api::CreateFile {
        metadata: URL_SAFE_NO_PAD.encode(sealed),
        auth_token: keys.auth_token_base64url(),
        kdf: kdf.as_ref(),
        size: crypto_wasm::body_size(size),
        first_part_size: crypto_wasm::first_part_size(),
        part_size: crypto_wasm::part_size(),
        expires_in: options.expires_in,
        download_limit: options.download_limit,
    })
    .await
    .map_err(|e| e.message)?;
    // The layout is ours to decide: a server answering another part count would make us seal
    // an early part as the last one.
    let part_count = crypto_wasm::Layout::for_plaintext_len(size).part_count();
    if part_count != created.part_count {
        return Err(
            "The server proposed a different layout for this file; nothing was uploaded.".into(),
        );
    }
    let encryptor = crypto_wasm::Encryptor::new(&keys);
    let record = resume::Unfinished {
        id: created.id.clone(),
        owner_token: created.owner_token.clone(),
        secret: secret.to_base64url(),
        salt: hex::encode(encryptor.salt()),
        kdf,
        auth_sha256: auth_fingerprint(&keys),
        part_count,
        block: resume::BLOCK,
        plaintext_sha256: Default::default(),
    };
    // Without storage the upload still works; it just cannot be resumed later.
    let record = resume::save(file, &record)
        .is_ok()
        .then(|| RefCell::new(record));
    Ok(Plan {
        id: created.id,
        owner_token: created.owner_token,
        secret,
        keys,
        encryptor,
        stored: BTreeSet::new(),
        stored_bytes: 0,
        record,
    })
}

/// Picks up the earlier attempt `record` of this browser: same secret, salt and keys, and
/// only the parts the server is missing. `Ok(None)` when the server no longer has it.
async fn resume_plan(
    file: &web_sys::File,
    options: &Options,
    record: resume::Unfinished,
    state: RwSignal<JobState>,
    working: &impl Fn(&'static str, u64) -> JobState,
) -> Result<Option<Plan>, String> {
    let stored = match api::list_parts(&record.id, &record.owner_token).await {
        Ok(parts) => parts,
        Err(e) if matches!(e.status, 403 | 404) => {
            resume::forget(file);
            return Ok(None);
        }
        Err(e) => return Err(e.message),
    };
    let damaged = "This browser's record of the earlier attempt is damaged; choose the file again to start over.";
    let (Ok(secret), Ok(Ok(salt))) = (
        crypto_wasm::Secret::from_base64url(&record.secret),
        hex::decode(&record.salt).map(<[u8; 16]>::try_from),
    ) else {
        resume::forget(file);
        return Err(damaged.into());
    };
    let password = match (&record.kdf, options.password.as_deref()) {
        (Some(kdf), Some(password)) => Some((password, kdf)),
        (Some(_), None) => {
            return Err("The earlier attempt of this upload had a password: enter the same password to resume it.".into());
        }
        (None, _) => None,
    };
    let keys = derive_keys(&secret, password, state, working).await?;
    if auth_fingerprint(&keys) != record.auth_sha256 {
        return Err("That is not the password of the earlier attempt: enter the same password to resume it.".into());
    }
    let encryptor = crypto_wasm::Encryptor::with_salt_and_rs(&keys, salt, crypto_wasm::RECORD_SIZE)
        .map_err(|_| damaged.to_owned())?;
    Ok(Some(Plan {
        id: record.id.clone(),
        owner_token: record.owner_token.clone(),
        secret,
        keys,
        encryptor,
        stored_bytes: stored.iter().map(|p| p.size).sum(),
        stored: stored.iter().map(|p| p.n).collect(),
        record: Some(RefCell::new(record)),
    }))
}

/// SHA-256 (hex) of the auth token: enough to recognise the same keys again.
fn auth_fingerprint(keys: &crypto_wasm::FileKeys) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(keys.auth_token()))
}
