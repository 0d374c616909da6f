//! CLI upload benchmark (`cargo xtask bench cli-upload`, or, with the release server built,
//! `cargo bench -p bitstratus-cli --bench cli_upload`).
//!
//! Starts the release server (`BITSTRATUS_SERVER`, default `bitstratus-server` next to the
//! bench's own target directory: `cargo xtask bench` builds it) on a loopback port with a fresh
//! data directory, writes a file of `BITSTRATUS_BENCH_BYTES` random bytes (default 1 GiB;
//! `64MiB`, `1GiB`, ...) and times, as whole processes:
//!
//! - **cli**: `bitstratus upload --parallel 4 FILE` (this package's release binary): reading,
//!   hashing, journaling, encrypting and sending every part, create and complete included.
//! - **curl**: the same number of already-encrypted bytes, cut into the same parts, sent by
//!   `curl` to the same endpoints with the same parallelism: a create (`POST /api/v1/files`),
//!   one `curl --parallel --parallel-max 4` that `PUT`s every part file with its
//!   `X-Content-SHA256` (the body, the part files and their hashes are made beforehand, untimed,
//!   with the CLI's engine), and the complete.
//!
//! After an untimed warm-up pass of each, every pass starts right after the previous pass's
//! file was deleted and its objects purged (see `backend/benches/server_ingest.rs` for why),
//! and the rounds alternate which side goes first. Each figure is the median over
//! `BITSTRATUS_BENCH_ROUNDS` rounds (default 3). It prints:
//!
//! ```text
//! cli-upload: ratio=<cli/curl> cli_MBps=<..> curl_MBps=<..> bytes=<..> parts=<..> in_flight=4 rounds=<..> body_bytes=<..>
//! ```
//!
//! `bytes` is the file's size; speeds are body bytes sent per second (MB is 10^6 bytes), the
//! same count for both sides. Speed is reported, never asserted. Without `--bench` (for example
//! under `cargo test --benches`) it does a small smoke run instead. Needs `curl` on the `PATH`
//! and free disk in the temp dir for about three times the size; progress goes to stderr.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend::config::parse_size;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crypto_wasm::ring::RingEncryptor;
use crypto_wasm::{ContentKey, Encryptor, Layout, part_plaintext_range};
use sha2::{Digest, Sha256};

/// Parts in flight on both sides: the CLI's default `--parallel`.
const IN_FLIGHT: usize = 4;
/// File size when run by `cargo bench`.
const DEFAULT_BYTES: u64 = 1 << 30;
/// Timed rounds when run by `cargo bench`.
const DEFAULT_ROUNDS: usize = 3;
/// File size of the smoke run (not under `cargo bench`), which does one round.
const SMOKE_BYTES: u64 = 9 << 20;

/// The release server, killed when dropped (also when the benchmark panics).
struct Server {
    child: Child,
    url: String,
    data_dir: PathBuf,
}

impl Server {
    fn start(binary: &Path, data_dir: PathBuf) -> Self {
        // A free port: bind, read it, release it for the server.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(binary)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start {} ({e}); build it with `cargo build --release -p backend \
                     --bin bitstratus-server` or set BITSTRATUS_SERVER",
                    binary.display()
                )
            });
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data_dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("bitstratus-server exited with {status} before listening");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "bitstratus-server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1/files{path}", self.url)
    }

    /// Waits until the server holds no object any more (after a delete, purged in the
    /// background), so that the next pass starts from the same state.
    fn wait_until_empty(&self) {
        let started = Instant::now();
        while count_files(&self.data_dir.join("objects")) > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the deleted file's objects were not purged within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Regular files under `dir` (0 if it does not exist).
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => count_files(&entry.path()),
            Ok(kind) if kind.is_file() => 1,
            _ => 0,
        })
        .sum()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Random-looking bytes from a fixed seed (SplitMix64), written to `path` in 4 MiB writes.
fn write_file(path: &Path, len: u64) {
    let mut file = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path).unwrap());
    let mut state = 0x5eed_u64;
    let mut left = len;
    while left > 0 {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let word = (z ^ (z >> 31)).to_le_bytes();
        let take = usize::try_from(left.min(8)).unwrap();
        file.write_all(&word[..take]).unwrap();
        left -= take as u64;
    }
    file.flush().unwrap();
}

/// The curl side's input: the body of `file` sealed with the CLI's engine under a fresh key,
/// one file per part, and each part's SHA-256 (hex).
struct Parts {
    paths: Vec<PathBuf>,
    hashes: Vec<String>,
    layout: Layout,
}

fn seal_parts(file: &Path, size: u64, dir: &Path) -> Parts {
    let plaintext = std::fs::read(file).unwrap();
    let mut ikm = [0u8; 32];
    ikm.iter_mut()
        .zip(0u8..)
        .for_each(|(byte, i)| *byte = i.wrapping_mul(73));
    let key = ContentKey::from_ikm(&ikm).unwrap();
    let encryptor = RingEncryptor::new(&Encryptor::new(&key));
    let layout = Layout::for_plaintext_len(size);
    let count = layout.part_count();
    std::fs::create_dir_all(dir).unwrap();
    let (mut paths, mut hashes) = (Vec::new(), Vec::new());
    for n in 0..count {
        let range = part_plaintext_range(size, n).unwrap();
        let chunk = &plaintext[usize::try_from(range.start).unwrap()..]
            [..usize::try_from(range.end - range.start).unwrap()];
        let part = encryptor.encrypt_part(n, chunk, n + 1 == count).unwrap();
        assert_eq!(Some(part.len() as u64), layout.part_len(n));
        let path = dir.join(format!("p{n}"));
        std::fs::write(&path, &part).unwrap();
        hashes.push(hex::encode(Sha256::digest(&part)));
        paths.push(path);
    }
    Parts {
        paths,
        hashes,
        layout,
    }
}

/// Runs a command to completion; panics with its output unless it succeeds.
fn run(command: &mut Command) -> String {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A string field of a JSON object.
fn json_str(json: &str, field: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {json}"))
        .to_owned()
}

/// The CLI side: one `bitstratus upload`, timed as a process. Returns seconds.
fn cli_pass(cli: &Path, server: &Server, config_dir: &Path, file: &Path) -> f64 {
    let cli_command = || {
        let mut command = Command::new(cli);
        command
            .args(["--server", &server.url])
            .arg("--config-dir")
            .arg(config_dir)
            .args(["--json", "--quiet"]);
        command
    };
    let started = Instant::now();
    let report = run(cli_command()
        .args(["upload", "--parallel", &IN_FLIGHT.to_string()])
        .arg(file));
    let seconds = started.elapsed().as_secs_f64();
    let id = json_str(&report, "id");
    run(cli_command().args(["rm", &id]));
    server.wait_until_empty();
    seconds
}

/// The curl side: create, every part with `curl --parallel`, complete. Returns seconds.
fn curl_pass(server: &Server, parts: &Parts, work_dir: &Path) -> f64 {
    let layout = &parts.layout;
    let create = serde_json::json!({
        // The server cannot tell sealed metadata from any other bytes.
        "metadata": URL_SAFE_NO_PAD.encode([0x5a; 120]),
        "auth_token": URL_SAFE_NO_PAD.encode([0x17; 32]),
        "kdf": null,
        "size": layout.size(),
        "first_part_size": layout.first_part_size(),
        "part_size": layout.part_size(),
        "expires_in": 3600,
        "download_limit": null,
    })
    .to_string();
    let started = Instant::now();
    let created = run(Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", &server.api("")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &create,
        ]));
    let (id, owner) = (json_str(&created, "id"), json_str(&created, "owner_token"));
    // One transfer per part; `next` starts the next one's own options.
    let mut config = String::new();
    for (n, (path, hash)) in parts.paths.iter().zip(&parts.hashes).enumerate() {
        if n > 0 {
            config.push_str("next\n");
        }
        let _ = write!(
            config,
            "url = \"{}\"\nupload-file = \"{}\"\nheader = \"Authorization: Bearer {owner}\"\n\
             header = \"X-Content-SHA256: {hash}\"\nheader = \"Content-Type: application/octet-stream\"\n\
             header = \"Expect:\"\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}}\\n\"\n\
             silent\nshow-error\n",
            server.api(&format!("/{id}/parts/{n}")),
            path.display(),
        );
    }
    let config_path = work_dir.join("curl-parts.conf");
    std::fs::write(&config_path, config).unwrap();
    let codes = run(Command::new("curl")
        .args(["--parallel", "--parallel-max", &IN_FLIGHT.to_string()])
        .arg("--config")
        .arg(&config_path));
    let ok = codes.lines().filter(|code| *code == "200").count();
    assert_eq!(ok, parts.paths.len(), "curl part PUTs answered: {codes}");
    let auth = format!("Authorization: Bearer {owner}");
    run(Command::new("curl")
        .args(["-sS", "--fail-with-body", "-o", "/dev/null", "-X", "POST"])
        .args([&server.api(&format!("/{id}/complete")), "-H", &auth]));
    let seconds = started.elapsed().as_secs_f64();
    run(Command::new("curl")
        .args(["-sS", "--fail-with-body", "-o", "/dev/null", "-X", "DELETE"])
        .args([&server.api(&format!("/{id}")), "-H", &auth]));
    server.wait_until_empty();
    seconds
}

/// The release server: `BITSTRATUS_SERVER`, or `bitstratus-server` in the profile directory
/// this bench was built into (`target/release/deps/cli_upload-*` → `target/release/`).
fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BITSTRATUS_SERVER") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the bench's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the bench lives in <target>/<profile>/deps")
        .join("bitstratus-server")
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let size = match std::env::var("BITSTRATUS_BENCH_BYTES") {
        Ok(s) => parse_size(&s).unwrap_or_else(|e| panic!("BITSTRATUS_BENCH_BYTES: {e}")),
        Err(_) if bench => DEFAULT_BYTES,
        Err(_) => SMOKE_BYTES,
    };
    assert!(size > 0, "BITSTRATUS_BENCH_BYTES must be at least 1");
    let rounds = match std::env::var("BITSTRATUS_BENCH_ROUNDS") {
        Ok(s) if bench => s.parse().expect("BITSTRATUS_BENCH_ROUNDS: a number"),
        _ if bench => DEFAULT_ROUNDS,
        _ => 1,
    };
    assert!(rounds > 0, "BITSTRATUS_BENCH_ROUNDS must be at least 1");
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_bitstratus"));
    let tmp = tempfile::tempdir().unwrap();
    let (file, config_dir) = (tmp.path().join("file.bin"), tmp.path().join("config"));
    eprintln!("cli-upload: writing a {size}-byte file and sealing its parts for curl");
    write_file(&file, size);
    let parts = seal_parts(&file, size, &tmp.path().join("parts"));
    let body_bytes = parts.layout.size();
    let server = Server::start(&server_binary(), tmp.path().join("data"));

    if bench {
        eprintln!("cli-upload: warm-up (untimed)");
        cli_pass(&cli, &server, &config_dir, &file);
        curl_pass(&server, &parts, tmp.path());
    }
    let (mut cli_speeds, mut curl_speeds) = (Vec::new(), Vec::new());
    let mb_per_s = |seconds: f64| body_bytes as f64 / seconds / 1e6;
    for round in 0..rounds {
        let mut sides = [true, false];
        if round % 2 == 1 {
            sides.reverse();
        }
        for cli_side in sides {
            if cli_side {
                cli_speeds.push(mb_per_s(cli_pass(&cli, &server, &config_dir, &file)));
            } else {
                curl_speeds.push(mb_per_s(curl_pass(&server, &parts, tmp.path())));
            }
        }
        eprintln!(
            "cli-upload: round {}: cli {:.0} MB/s, curl {:.0} MB/s",
            round + 1,
            cli_speeds[round],
            curl_speeds[round]
        );
    }
    drop(server);
    let (cli_speed, curl_speed) = (median(&mut cli_speeds), median(&mut curl_speeds));
    println!(
        "cli-upload: ratio={:.2} cli_MBps={cli_speed:.0} curl_MBps={curl_speed:.0} bytes={size} \
         parts={} in_flight={IN_FLIGHT} rounds={rounds} body_bytes={body_bytes}",
        cli_speed / curl_speed,
        parts.paths.len()
    );
}
