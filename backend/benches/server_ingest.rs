//! Server ingest benchmark (`cargo xtask bench server-ingest`, or
//! `cargo bench -p backend --bench server_ingest`).
//!
//! Uploads one file of `BITSTRATUS_BENCH_BYTES` (default 1 GiB; `4096`, `64MiB`, `1GiB`, ...)
//! through the HTTP API of the real router served on a loopback socket in this process
//! (create, `PUT` every part with its real `X-Content-SHA256`, complete), and writes the same
//! bytes, cut into the same parts, straight into the same object store with
//! [`Storage::put_part`] (on local disk the very write path of a part PUT, staging file,
//! fsyncs and create-only link, minus the hashing), with the same number of parts in flight.
//! It prints one line:
//!
//! ```text
//! server-ingest: ratio=<api/direct> api_MBps=<..> direct_MBps=<..> bytes=<..> parts=<..> in_flight=4 rounds=<..>
//! ```
//!
//! The two sides run under the same conditions: after an untimed warm-up pass, every pass
//! starts right after the previous pass's objects were deleted (so each writes into page cache
//! the kernel has just freed; on a VM whose idle memory is handed back to the host, whichever
//! side wrote into fresh memory was up to twice as slow, measured), and the rounds alternate
//! which side goes first. Each figure is the median over `BITSTRATUS_BENCH_ROUNDS` rounds
//! (default 3).
//!
//! Each pass's CPU time (user+system, of the whole process: server and client) goes to stderr
//! with its wall time: a side using about as many CPU seconds per second as the machine has
//! cores is bound by the CPU, not by the disk.
//!
//! MB is 10^6 bytes. Speed is reported, never asserted. Without `--bench` (for example under
//! `cargo test --benches`) it does a small smoke run instead. Needs free disk in the temp dir
//! for the size once; progress goes to stderr.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::config::parse_size;
use backend::layout::Layout;
use backend::storage::{PutOutcome, Storage, part_key};
use backend::{AppState, Config, app};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::StreamExt as _;
use sha2::{Digest, Sha256};

/// Parts the web app will keep in flight at once.
const IN_FLIGHT: usize = 4;
/// Body size when run by `cargo bench`.
const DEFAULT_BYTES: u64 = 1 << 30;
/// Timed rounds when run by `cargo bench`.
const DEFAULT_ROUNDS: usize = 3;
/// Body size of the smoke run (not under `cargo bench`), which does one round.
const SMOKE_BYTES: u64 = 9 << 20;
/// File id of the direct side's objects: made up, they belong to no row, like an upload's
/// before complete.
const DIRECT_ID: &str = "bench-direct-ingest";

/// The body and its cutting: what both sides send.
struct Body {
    bytes: Bytes,
    layout: Layout,
    /// SHA-256 of each part, computed before any clock starts: a real client hashes on its
    /// own machine, so its hashing must not count against the server here.
    hashes: Vec<[u8; 32]>,
}

impl Body {
    fn part(&self, n: u64) -> Bytes {
        let range = self.layout.part_range(n).expect("part in range");
        self.bytes.slice(range.start as usize..range.end as usize)
    }

    fn part_count(&self) -> u64 {
        self.layout.part_count()
    }
}

#[tokio::main]
async fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let size = match std::env::var("BITSTRATUS_BENCH_BYTES") {
        Ok(s) => parse_size(&s).unwrap_or_else(|e| panic!("BITSTRATUS_BENCH_BYTES: {e}")),
        Err(_) if bench => DEFAULT_BYTES,
        Err(_) => SMOKE_BYTES,
    };
    assert!(size > 0, "BITSTRATUS_BENCH_BYTES must be at least 1");
    let rounds = match std::env::var("BITSTRATUS_BENCH_ROUNDS") {
        Ok(s) => s
            .parse::<usize>()
            .ok()
            .filter(|&r| r > 0)
            .expect("BITSTRATUS_BENCH_ROUNDS must be a positive integer"),
        Err(_) if bench => DEFAULT_ROUNDS,
        Err(_) => 1,
    };

    let dir = tempfile::tempdir().expect("temp dir");
    eprintln!(
        "server-ingest: {size} bytes, {IN_FLIGHT} parts in flight, data in {}",
        dir.path().display()
    );
    // Random bytes standing in for ciphertext: the server cannot tell them apart from a real
    // RFC 8188 body (it checks only lengths and hashes), and random data defeats any
    // compression or deduplication in the storage path just as ciphertext does.
    let body = Arc::new(random_body(size));

    let state = AppState::new(Config::with_data_dir(dir.path().join("data")))
        .await
        .expect("app state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    // The direct side writes through the very `Storage` the router uses.
    let storage = state.storage.clone();
    let server = tokio::spawn(async move {
        backend::serve(listener, app(state), std::future::pending())
            .await
            .expect("serve");
    });

    let api_base = format!("http://{addr}/api/v1");
    store_directly(storage.clone(), Arc::clone(&body)).await;
    delete_objects(&storage, DIRECT_ID).await;
    eprintln!("server-ingest: warmed up");
    let (mut api, mut direct) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for api_side in [round % 2 == 0, round % 2 != 0] {
            let cpu = process_cpu();
            if api_side {
                let (took, id) = upload_via_api(&api_base, Arc::clone(&body)).await;
                eprintln!(
                    "server-ingest: round {round}: api    {:.2} s, cpu {}",
                    took.as_secs_f64(),
                    cpu_since(cpu)
                );
                delete_objects(&storage, &id).await;
                api.push(took);
            } else {
                let took = store_directly(storage.clone(), Arc::clone(&body)).await;
                eprintln!(
                    "server-ingest: round {round}: direct {:.2} s, cpu {}",
                    took.as_secs_f64(),
                    cpu_since(cpu)
                );
                delete_objects(&storage, DIRECT_ID).await;
                direct.push(took);
            }
        }
    }
    server.abort();

    let mbps = |t: Duration| size as f64 / 1e6 / t.as_secs_f64();
    let (api_mbps, direct_mbps) = (mbps(median(api)), mbps(median(direct)));
    println!(
        "server-ingest: ratio={:.3} api_MBps={api_mbps:.1} direct_MBps={direct_mbps:.1} bytes={size} parts={} in_flight={IN_FLIGHT} rounds={rounds}",
        api_mbps / direct_mbps,
        body.part_count(),
    );
}

/// `size` random bytes cut with the web app's layout (part 0 carries the 21-byte header).
fn random_body(size: u64) -> Body {
    let started = Instant::now();
    let mut bytes = vec![0u8; usize::try_from(size).expect("size fits in memory")];
    for chunk in bytes.chunks_mut(16 << 20) {
        getrandom::getrandom(chunk).expect("random bytes");
    }
    let layout = Layout {
        size,
        first_part_size: crypto_wasm::first_part_size(),
        part_size: crypto_wasm::part_size(),
    };
    let bytes = Bytes::from(bytes);
    let hashes = (0..layout.part_count())
        .map(|n| {
            let range = layout.part_range(n).expect("part in range");
            Sha256::digest(&bytes[range.start as usize..range.end as usize]).into()
        })
        .collect();
    eprintln!(
        "server-ingest: prepared the body in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Body {
        bytes,
        layout,
        hashes,
    }
}

/// User and system CPU time of this whole process so far, in clock ticks (Linux only).
fn process_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// The CPU time used since `before` (a [`process_cpu`] reading) as `user+system s`, assuming
/// the usual 100 ticks per second; `n/a` where it cannot be read.
fn cpu_since(before: Option<(u64, u64)>) -> String {
    match (before, process_cpu()) {
        (Some((u0, s0)), Some((u1, s1))) => {
            let secs = |ticks: u64| ticks as f64 / 100.0;
            format!("{:.2}+{:.2} s", secs(u1 - u0), secs(s1 - s0))
        }
        _ => "n/a".to_owned(),
    }
}

/// The median of some durations (the upper one of the middle two for an even count).
fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Create, `PUT` every part (`IN_FLIGHT` at a time, each on its own task like the server's
/// connections), complete; returns the time the whole upload took and the file's id.
async fn upload_via_api(base: &str, body: Arc<Body>) -> (Duration, String) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("http client");
    let mut auth = [0u8; 32];
    getrandom::getrandom(&mut auth).expect("random");
    let mut metadata = [0u8; 64];
    getrandom::getrandom(&mut metadata).expect("random");

    let started = Instant::now();
    let create = serde_json::json!({
        "metadata": URL_SAFE_NO_PAD.encode(metadata),
        "auth_token": URL_SAFE_NO_PAD.encode(auth),
        "kdf": null,
        "size": body.layout.size,
        "first_part_size": body.layout.first_part_size,
        "part_size": body.layout.part_size,
        "expires_in": 3600,
        "download_limit": null,
    });
    let created = expect_ok(
        client
            .post(format!("{base}/files"))
            .header("content-type", "application/json")
            .body(create.to_string())
            .send()
            .await,
        "create",
    )
    .await;
    let created: serde_json::Value = serde_json::from_slice(&created).expect("create JSON");
    let id = created["id"].as_str().expect("id").to_owned();
    let owner = format!("Bearer {}", created["owner_token"].as_str().expect("owner"));
    assert_eq!(created["part_count"].as_u64(), Some(body.part_count()));

    let puts = futures::stream::iter(0..body.part_count()).map(|n| {
        let request = client
            .put(format!("{base}/files/{id}/parts/{n}"))
            .header("authorization", &owner)
            .header("x-content-sha256", hex::encode(body.hashes[n as usize]))
            .header("content-type", "application/octet-stream")
            .body(body.part(n));
        tokio::spawn(async move { expect_ok(request.send().await, &format!("part {n}")).await })
    });
    let mut puts = puts.buffer_unordered(IN_FLIGHT);
    let mut done = 0;
    while let Some(result) = puts.next().await {
        result.expect("part task");
        done += 1;
        progress("api", done, body.part_count());
    }
    drop(puts);

    expect_ok(
        client
            .post(format!("{base}/files/{id}/complete"))
            .header("authorization", &owner)
            .send()
            .await,
        "complete",
    )
    .await;
    (started.elapsed(), id)
}

/// The same parts into the same store, `IN_FLIGHT` at a time, each on its own task.
async fn store_directly(storage: Storage, body: Arc<Body>) -> Duration {
    let started = Instant::now();
    let puts = futures::stream::iter(0..body.part_count()).map(|n| {
        let (storage, body) = (storage.clone(), Arc::clone(&body));
        tokio::spawn(async move {
            let key = part_key(DIRECT_ID, n);
            let outcome = storage
                .put_part(&key, body.part(n), &body.hashes[n as usize])
                .await
                .unwrap_or_else(|e| panic!("direct put of part {n}: {e}"));
            assert!(outcome != PutOutcome::Conflict, "part {n} conflicted");
        })
    });
    let mut puts = puts.buffer_unordered(IN_FLIGHT);
    let mut done = 0;
    while let Some(result) = puts.next().await {
        result.expect("part task");
        done += 1;
        progress("direct", done, body.part_count());
    }
    started.elapsed()
}

/// Deletes every object of file `id` (the API side's rows stay: nothing reads them again).
async fn delete_objects(storage: &Storage, id: &str) {
    let started = Instant::now();
    let deleted = storage
        .delete_file_objects(id)
        .await
        .unwrap_or_else(|e| panic!("deleting the objects of {id}: {e}"));
    eprintln!(
        "server-ingest: deleted {deleted} objects in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// The response body of a 2xx answer; panics with the server's answer otherwise.
async fn expect_ok(response: reqwest::Result<reqwest::Response>, what: &str) -> Bytes {
    let response = response.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "{what}: HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

fn progress(side: &str, done: u64, total: u64) {
    if done.is_multiple_of(64) || done == total {
        eprintln!("server-ingest: {side}: {done}/{total} parts");
    }
}
