//! CLI encryption benchmark (`cargo xtask bench cli-encrypt`, or
//! `cargo bench -p bitstratus-cli --bench cli_encrypt`).
//!
//! Encrypts a file held in memory, `BITSTRATUS_BENCH_BYTES` long (default 1 GiB; `64MiB`,
//! `1GiB`, ...), into its RFC 8188 body with the CLI's engine (`crypto_wasm::ring`), part by
//! part as `bitstratus upload` does: each 4 MiB part sealed into a fresh buffer in 64 KiB
//! records, on `BITSTRATUS_BENCH_THREADS` threads (default 4, the upload's default
//! `--parallel`: it seals that many parts at once on blocking threads) taking parts in turn.
//! Reading the file, hashing and sending are left out: this is the cipher's share of an upload.
//!
//! In the same run it takes OpenSSL's figure for the same work,
//! `openssl speed -evp aes-128-gcm -bytes 65536 -seconds S`, with `-multi T` when the thread
//! count `T` is above 1, so that both sides use the same number of threads (on a machine with
//! fewer cores, both are oversubscribed alike). OpenSSL encrypts one 64 KiB buffer over and
//! over with one context: no per-record nonce, tag or copy, which the CLI pays.
//!
//! Each round times OpenSSL for `S` seconds (`BITSTRATUS_BENCH_SECONDS`, default 3) and the
//! CLI's engine, on threads that live through the measurement like the CLI's blocking threads,
//! over the file's parts pass after pass for at least as long (one pass at least), alternating
//! which goes first; each figure is the median over `BITSTRATUS_BENCH_ROUNDS` rounds (default
//! 3). For reference each round also times, for a second, the CLI's engine sealing the file's
//! first part over and over (`cached_MBps`: the part stays in the CPU caches, as after the
//! CLI's read and hash of it; the full run instead streams the file from RAM, and copying each
//! chunk next to its tag costs about as much as sealing it), and one pass of the portable engine
//! (`rustcrypto_MBps`: RustCrypto's AES-GCM, which the browser falls back to without WebCrypto
//! and the CLI used before). It prints:
//!
//! ```text
//! cli-encrypt: ratio=<cli/openssl> cli_MBps=<..> openssl_MBps=<..> bytes=<..> record=65536 threads=<..> cached_MBps=<..> rustcrypto_MBps=<..> rounds=<..>
//! ```
//!
//! MB is 10^6 bytes of plaintext. Speed is reported, never asserted. Without `--bench` (for
//! example under `cargo test --benches`) it does a small smoke run instead, one round of one
//! second. Needs `openssl` on the `PATH`; progress goes to stderr.

use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backend::config::parse_size;
use crypto_wasm::ring::RingEncryptor;
use crypto_wasm::{ContentKey, Encryptor, Layout, RECORD_SIZE, part_plaintext_range};

/// File size when run by `cargo bench`.
const DEFAULT_BYTES: u64 = 1 << 30;
/// Timed rounds when run by `cargo bench`.
const DEFAULT_ROUNDS: usize = 3;
/// Seconds OpenSSL runs per round when run by `cargo bench`.
const DEFAULT_SECONDS: u64 = 3;
/// Parts sealed at once by `bitstratus upload` unless told otherwise (`--parallel`).
const CLI_PARALLEL: usize = 4;
/// File size of the smoke run (not under `cargo bench`), which does one short round.
const SMOKE_BYTES: u64 = 9 << 20;

/// The engines measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    /// The CLI's: `crypto_wasm::ring::RingEncryptor`.
    Ring,
    /// The portable one: `crypto_wasm::Encryptor`.
    RustCrypto,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {s:?} is not a valid number")),
        Err(_) => default,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A file's worth of bytes that no compressor or cipher shortcut could exploit (SplitMix64).
fn file_contents(len: usize) -> Vec<u8> {
    let mut state = 0x5eed_u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let word = (z ^ (z >> 31)).to_le_bytes();
        let take = word.len().min(len - out.len());
        out.extend_from_slice(&word[..take]);
    }
    out
}

/// Seals the parts of `file` with `engine` on `threads` threads, each part into a fresh buffer
/// that is then dropped (as the CLI drops it once sent), pass after pass, until `at_least` has
/// passed (at least one pass). The threads live through the whole measurement, as the CLI's
/// blocking threads do. Returns plaintext MB/s.
fn measure_engine(file: &[u8], engine: Engine, threads: usize, at_least: Duration) -> f64 {
    let key = ContentKey::from_ikm(&[0x42; 32]).expect("a 32-byte IKM is valid");
    let rust = Encryptor::with_salt_and_rs(&key, [7; 16], RECORD_SIZE).expect("valid rs");
    let ring = RingEncryptor::new(&rust);
    let size = file.len() as u64;
    let count = Layout::for_plaintext_len(size).part_count();
    // Parts are handed out in file order, pass after pass: ticket k is part k % count.
    let next = AtomicU64::new(0);
    let sealed = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let ticket = next.fetch_add(1, Ordering::Relaxed);
                    if ticket >= count && started.elapsed() >= at_least {
                        break;
                    }
                    let n = ticket % count;
                    let range = part_plaintext_range(size, n).expect("part within the file");
                    let plaintext = &file[range.start as usize..range.end as usize];
                    let is_last = n + 1 == count;
                    let part = match engine {
                        Engine::Ring => ring.encrypt_part(n, plaintext, is_last),
                        Engine::RustCrypto => rust.encrypt_part(n, plaintext, is_last),
                    }
                    .expect("a valid part");
                    black_box(part);
                    sealed.fetch_add(plaintext.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    sealed.into_inner() as f64 / seconds / 1e6
}

/// OpenSSL's AES-128-GCM MB/s on 64 KiB buffers over `seconds`, with `threads` processes.
fn measure_openssl(seconds: u64, threads: usize) -> f64 {
    let mut command = Command::new("openssl");
    command.args(["speed", "-mr", "-evp", "aes-128-gcm", "-bytes", "65536"]);
    command.args(["-seconds", &seconds.to_string()]);
    if threads > 1 {
        command.args(["-multi", &threads.to_string()]);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("could not run openssl (is it installed?): {e}"));
    assert!(out.status.success(), "openssl speed failed: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_openssl(&stdout)
        .unwrap_or_else(|| panic!("no AES-128-GCM figure in openssl's output:\n{stdout}"))
        / 1e6
}

/// The bytes per second of `openssl speed -mr` output: its last `+F:<i>:<name>:<bytes/s>`
/// line (with `-multi`, the sum over the processes; the per-process lines start `Got:`).
fn parse_openssl(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .filter(|line| line.starts_with("+F:"))
        .filter_map(|line| line.rsplit(':').next()?.trim().parse::<f64>().ok())
        .next_back()
}

/// Plaintext bytes in a full part (64 records of `rs - 17`).
fn per_part_len() -> usize {
    usize::try_from(crypto_wasm::plaintext_per_part()).expect("a part fits in memory")
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let size = match std::env::var("BITSTRATUS_BENCH_BYTES") {
        Ok(s) => parse_size(&s).unwrap_or_else(|e| panic!("BITSTRATUS_BENCH_BYTES: {e}")),
        Err(_) if bench => DEFAULT_BYTES,
        Err(_) => SMOKE_BYTES,
    };
    assert!(size > 0, "BITSTRATUS_BENCH_BYTES must be at least 1");
    let rounds = if bench {
        env_or("BITSTRATUS_BENCH_ROUNDS", DEFAULT_ROUNDS)
    } else {
        1
    };
    let seconds = if bench {
        env_or("BITSTRATUS_BENCH_SECONDS", DEFAULT_SECONDS)
    } else {
        1
    };
    let threads = env_or("BITSTRATUS_BENCH_THREADS", CLI_PARALLEL);
    assert!(
        rounds > 0 && seconds > 0 && threads > 0,
        "rounds, seconds and threads must be at least 1"
    );
    let len = usize::try_from(size).expect("BITSTRATUS_BENCH_BYTES fits in memory");
    eprintln!("cli-encrypt: preparing {size} bytes in memory");
    let file = file_contents(len);
    // Untimed warm-up: faults the file in and brings both engines' code into cache.
    measure_engine(&file, Engine::Ring, threads, Duration::ZERO);
    measure_engine(&file, Engine::RustCrypto, threads, Duration::ZERO);

    let (mut cli, mut openssl) = (Vec::new(), Vec::new());
    let (mut cached, mut rustcrypto) = (Vec::new(), Vec::new());
    let first_part = &file[..file.len().min(per_part_len())];
    let at_least = Duration::from_secs(seconds);
    for round in 0..rounds {
        let measure_cli = |cli: &mut Vec<f64>| {
            cli.push(measure_engine(&file, Engine::Ring, threads, at_least));
        };
        if round % 2 == 0 {
            openssl.push(measure_openssl(seconds, threads));
            measure_cli(&mut cli);
        } else {
            measure_cli(&mut cli);
            openssl.push(measure_openssl(seconds, threads));
        }
        let second = Duration::from_secs(1);
        cached.push(measure_engine(first_part, Engine::Ring, threads, second));
        rustcrypto.push(measure_engine(
            &file,
            Engine::RustCrypto,
            threads,
            Duration::ZERO,
        ));
        eprintln!(
            "cli-encrypt: round {}: cli {:.0} MB/s, openssl {:.0} MB/s, cached {:.0} MB/s, \
             rustcrypto {:.0} MB/s",
            round + 1,
            cli[round],
            openssl[round],
            cached[round],
            rustcrypto[round]
        );
    }
    let (cli, openssl) = (median(&mut cli), median(&mut openssl));
    let (cached, rustcrypto) = (median(&mut cached), median(&mut rustcrypto));
    println!(
        "cli-encrypt: ratio={:.2} cli_MBps={cli:.0} openssl_MBps={openssl:.0} bytes={size} \
         record={RECORD_SIZE} threads={threads} cached_MBps={cached:.0} \
         rustcrypto_MBps={rustcrypto:.0} rounds={rounds}",
        cli / openssl
    );
}
