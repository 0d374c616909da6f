//! Project automation, run as `cargo xtask <command>`:
//!
//! - `run`: install missing build tools, build the web app (Trunk) and the server, and serve
//!   both on <http://127.0.0.1:8080> with SQLite and local-disk storage under `./data`.
//! - `test`: install what the tests need (wasm target, wasm-bindgen-cli, Trunk, Chromium and
//!   its driver, the s3s-fs S3 server, the end-to-end test's npm packages, schemathesis), then
//!   run fmt, clippy (native and wasm32), docs, the native and in-browser unit tests, a
//!   schemathesis fuzz of the running server from its OpenAPI document, and the end-to-end
//!   tests in headless Chromium.
//! - `bench NAME` (`server-ingest`, `browser-upload`, `browser-download`, `browser-crypto`,
//!   `browser-background`, `browser-ceiling`, `memory`, `cli-encrypt`, `cli-upload` or `all`):
//!   build what the benchmark needs in release mode, run it, and print its one result line
//!   (`NAME: ratio=R side=value ...`). Benchmarks report speed and memory; nothing asserts
//!   them.
//!
//! It uses only the standard library so that it builds in seconds on a fresh machine.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The wasm-bindgen CLI must match the `wasm-bindgen` crate pinned in the root `Cargo.toml`.
const WASM_BINDGEN_VERSION: &str = "0.2.106";
/// Trunk 0.22 needs a newer rustc than this machine's 1.95.
const TRUNK_VERSION: &str = "0.21.14";
/// s3s-fs: a real S3-compatible server the backend's S3 tests start (0.17 needs rustc 1.96).
const S3S_FS_VERSION: &str = "0.14.1";
/// schemathesis (PyPI), which fuzzes the running server from its OpenAPI document.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Generated cases per API operation in `cargo xtask test`'s fuzz run: bounded, so the run
/// takes well under a minute; each run draws new cases (its seed is printed to reproduce).
const FUZZ_EXAMPLES: &str = "25";
/// What the fuzz run checks: no 5xx, and every status, content type, header and body is one
/// the document describes for that operation.
const FUZZ_CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance";
const WASM_TARGET: &str = "wasm32-unknown-unknown";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// What `cargo xtask bench` runs; `all` runs them in this order.
const BENCHES: [&str; 9] = [
    "server-ingest",
    "browser-upload",
    "browser-download",
    "browser-crypto",
    "browser-background",
    "browser-ceiling",
    "memory",
    "cli-encrypt",
    "cli-upload",
];
/// The browser benchmarks' scripts (run by node with the release server and app) and their
/// arguments. Their names must not look like tests to `node --test`.
const BROWSER_BENCH: &str = "e2e/bench/browser.mjs";
const CRYPTO_BENCH: &str = "e2e/bench/crypto.mjs";
const MEMORY_BENCH: &str = "e2e/bench/memory.mjs";
const BACKGROUND_BENCH: &str = "e2e/bench/background.mjs";
const CEILING_BENCH: &str = "e2e/bench/ceiling.mjs";
const USAGE: &str = "usage: cargo xtask run [server flags...] | cargo xtask test | \
cargo xtask bench server-ingest|browser-upload|browser-download|browser-crypto|browser-background|\
browser-ceiling|memory|cli-encrypt|cli-upload|all";

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(),
        Some("bench") if args.len() == 2 => bench(&args[1]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
///
/// Read at run time (cargo sets `CARGO_MANIFEST_DIR` for `cargo run`): checkouts that share one
/// `CARGO_TARGET_DIR` share one compiled xtask, whose compile-time path may be another one's.
fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` when set, else `<root>/target`.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn run(server_args: &[String]) -> Result {
    // `cargo xtask run -- --flag` passes the `--` through; the server's flags follow it.
    let server_args = server_args
        .strip_prefix(&["--".to_owned()])
        .unwrap_or(server_args);
    ensure_build_tools()?;
    build_app()?;
    build_release_server()?;
    let server = target_dir().join("release/bitstratus-server");
    println!("BitStratus is starting on http://127.0.0.1:8080 (data in ./data; Ctrl-C stops it)");
    let status = Command::new(server)
        .current_dir(root())
        .args(["--static-dir", "app/dist"])
        .args(server_args)
        .status()
        .map_err(|e| format!("could not start the server: {e}"))?;
    check(status, "bitstratus-server")
}

fn test() -> Result {
    let started = Instant::now();
    ensure_build_tools()?;
    ensure_cargo_tool(
        "s3s-fs",
        "s3s-fs",
        S3S_FS_VERSION,
        &["--features", "binary"],
    )?;
    ensure_browser()?;
    ensure_e2e_packages()?;

    step("rustfmt", || cargo(&["fmt", "--all", "--check"]))?;
    step("clippy (native)", || {
        cargo(&[
            "clippy",
            "-p",
            "crypto-wasm",
            "-p",
            "backend",
            "-p",
            "bitstratus-cli",
            "-p",
            "xtask",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("clippy (wasm32)", || {
        cargo(&[
            "clippy",
            "-p",
            "crypto-wasm",
            "-p",
            "app",
            "--all-targets",
            "--all-features",
            "--target",
            WASM_TARGET,
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("docs", || {
        Command::new("cargo")
            .args([
                "doc",
                "--no-deps",
                "-p",
                "crypto-wasm",
                "-p",
                "backend",
                "-p",
                "bitstratus-cli",
            ])
            .env("RUSTDOCFLAGS", "-D warnings")
            .current_dir(root())
            .status()
            .map_err(|e| e.to_string())
            .and_then(|s| check(s, "cargo doc"))
    })?;
    step("unit and integration tests (native)", || {
        cargo(&[
            "test",
            "-p",
            "crypto-wasm",
            "-p",
            "backend",
            "-p",
            "bitstratus-cli",
            "-p",
            "xtask",
        ])
    })?;
    step("crypto tests in headless Chromium (wasm32)", || {
        Command::new("cargo")
            // With the WebCrypto engine: its tests compare it with the wasm engine byte for byte.
            .args([
                "test",
                "-p",
                "crypto-wasm",
                "--target",
                WASM_TARGET,
                "--features",
                "webcrypto",
            ])
            .env("CHROMEDRIVER", CHROMEDRIVER)
            .current_dir(root())
            .status()
            .map_err(|e| e.to_string())
            .and_then(|s| check(s, "wasm tests"))
    })?;
    build_app()?;
    step(
        "build the server and the CLI for the end-to-end tests",
        || {
            cargo(&[
                "build",
                "-p",
                "backend",
                "--bin",
                "bitstratus-server",
                "-p",
                "bitstratus-cli",
                "--bin",
                "bitstratus",
            ])
        },
    )?;
    step(
        "API fuzz from the OpenAPI document (schemathesis)",
        fuzz_api,
    )?;
    step("end-to-end tests in headless Chromium", || {
        let status = Command::new("node")
            .args(["--test", "--test-concurrency=1", "e2e/"])
            .env(
                "BITSTRATUS_SERVER",
                target_dir().join("debug/bitstratus-server"),
            )
            .env("BITSTRATUS_STATIC_DIR", root().join("app/dist"))
            .env("BITSTRATUS_CLI", target_dir().join("debug/bitstratus"))
            .env("CHROMIUM", CHROMIUM)
            .current_dir(root())
            .status()
            .map_err(|e| format!("could not run node: {e}"))?;
        check(status, "end-to-end tests")
    })?;
    println!(
        "xtask: every check passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds what the benchmark `name` (or `all`) needs, runs it, and prints its result line;
/// `all` repeats every result line together at the end.
fn bench(name: &str) -> Result {
    let names: Vec<&str> = match name {
        "all" => BENCHES.to_vec(),
        name if BENCHES.contains(&name) => vec![name],
        _ => return Err(USAGE.to_owned()),
    };
    if names.iter().any(|n| node_bench(n).is_some()) {
        ensure_build_tools()?;
        ensure_browser()?;
        ensure_e2e_packages()?;
        build_app()?;
        build_release_server()?;
    } else if names.contains(&"cli-upload") {
        // `cargo bench` builds the CLI; the server it uploads to is another package's binary.
        build_release_server()?;
    }
    let mut results = Vec::new();
    for name in names {
        step(&format!("benchmark {name}"), || {
            results.push(run_bench(name)?);
            Ok(())
        })?;
    }
    if results.len() > 1 {
        println!("\nxtask: benchmark results");
        for line in &results {
            println!("{line}");
        }
    }
    Ok(())
}

/// Runs one benchmark (building it first if cargo does); its progress goes to stderr as it
/// comes, its standard output is echoed, and its `NAME: ratio=...` line is returned.
fn run_bench(name: &str) -> Result<String> {
    let mut command = if let Some((script, args)) = node_bench(name) {
        let mut c = Command::new("node");
        c.arg(script)
            .args(args)
            .env(
                "BITSTRATUS_SERVER",
                target_dir().join("release/bitstratus-server"),
            )
            .env("BITSTRATUS_STATIC_DIR", root().join("app/dist"))
            .env("CHROMIUM", CHROMIUM);
        c
    } else {
        let (package, bench) = cargo_bench(name).ok_or_else(|| format!("no benchmark {name}"))?;
        let mut c = Command::new("cargo");
        c.args(["bench", "-p", package, "--bench", bench]).env(
            "BITSTRATUS_SERVER",
            target_dir().join("release/bitstratus-server"),
        );
        c
    };
    let out = command
        .current_dir(root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start the benchmark: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    check(out.status, name)?;
    result_line(&stdout, name)
        .map(str::to_owned)
        .ok_or_else(|| format!("{name} printed no `{name}: ratio=...` line"))
}

/// The node script (and its arguments) of a benchmark that drives the browser against the
/// release server and app; `None` for the others.
fn node_bench(name: &str) -> Option<(&'static str, &'static [&'static str])> {
    match name {
        "browser-upload" => Some((BROWSER_BENCH, &["upload"])),
        "browser-download" => Some((BROWSER_BENCH, &["download"])),
        "browser-crypto" => Some((CRYPTO_BENCH, &[])),
        "memory" => Some((MEMORY_BENCH, &[])),
        "browser-background" => Some((BACKGROUND_BENCH, &[])),
        "browser-ceiling" => Some((CEILING_BENCH, &[])),
        _ => None,
    }
}

/// The package and `cargo bench` target of a benchmark written in Rust; `None` for the others.
fn cargo_bench(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "server-ingest" => Some(("backend", "server_ingest")),
        "cli-encrypt" => Some(("bitstratus-cli", "cli_encrypt")),
        "cli-upload" => Some(("bitstratus-cli", "cli_upload")),
        _ => None,
    }
}

/// The one `NAME: ratio=...` line in a benchmark's output.
fn result_line<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout.lines().find(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(": ratio="))
    })
}

/// Builds the release server binary (`run` serves with it, the benchmarks measure it).
fn build_release_server() -> Result {
    step("build the release server", || {
        cargo(&[
            "build",
            "--release",
            "-p",
            "backend",
            "--bin",
            "bitstratus-server",
        ])
    })
}

/// Builds the web app into `app/dist` with Trunk (release: the crypto must be fast).
fn build_app() -> Result {
    step("build the web app (trunk)", || {
        let status = Command::new("trunk")
            .args(["build", "--release", "--offline"])
            .current_dir(root())
            .status()
            .map_err(|e| format!("could not run trunk: {e}"))?;
        check(status, "trunk build")
    })
}

/// The wasm32 target, wasm-bindgen-cli and Trunk, each installed only when missing.
fn ensure_build_tools() -> Result {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == WASM_TARGET) {
        step("install the wasm32 target (rustup)", || {
            command("rustup", &["target", "add", WASM_TARGET])
        })?;
    }
    ensure_cargo_tool(
        "wasm-bindgen",
        "wasm-bindgen-cli",
        WASM_BINDGEN_VERSION,
        &[],
    )?;
    ensure_cargo_tool("trunk", "trunk", TRUNK_VERSION, &["--locked"])
}

fn ensure_cargo_tool(bin: &str, krate: &str, version: &str, extra: &[&str]) -> Result {
    let have = output(bin, &["--version"]).unwrap_or_default();
    if have.split_whitespace().any(|word| word == version) {
        return Ok(());
    }
    step(
        &format!("install {krate} {version} (cargo install, a few minutes, once)"),
        || {
            let mut args = vec!["install", krate, "--version", version];
            args.extend_from_slice(extra);
            // Tools go to ~/.cargo/bin, built in their own target dir, not the workspace's.
            Command::new("cargo")
                .args(&args)
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .map_err(|e| e.to_string())
                .and_then(|s| check(s, "cargo install"))
        },
    )
}

/// Debian's Chromium and its matching ChromeDriver.
fn ensure_browser() -> Result {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return Ok(());
    }
    step(
        "install chromium and chromium-driver (apt-get, once)",
        || {
            command("apt-get", &["update", "-q"])?;
            let status = Command::new("apt-get")
                .args(["install", "-y", "-q", "chromium", "chromium-driver"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map_err(|e| format!("could not run apt-get: {e}"))?;
            check(status, "apt-get install")
        },
    )
}

/// The end-to-end tests' npm packages (playwright-core, driving the system Chromium).
fn ensure_e2e_packages() -> Result {
    let e2e = root().join("e2e");
    let installed = e2e.join("node_modules/.package-lock.json");
    let lock = std::fs::read(e2e.join("package-lock.json")).map_err(|e| e.to_string())?;
    let fresh = std::fs::read(&installed)
        .map(|i| same_packages(&i, &lock))
        .unwrap_or(false);
    if fresh {
        return Ok(());
    }
    step("install the end-to-end test packages (npm ci)", || {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&e2e)
            .status()
            .map_err(|e| format!("could not run npm: {e}"))?;
        check(status, "npm ci")
    })
}

/// Starts the debug server on a free loopback port with a fresh data directory and runs
/// schemathesis against its `/api/v1/openapi.json` (installing it into a virtual environment
/// under `~/.cache/bitstratus` first, if missing). Fails on any 5xx or any answer the document
/// does not describe.
fn fuzz_api() -> Result {
    let home = env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(env::temp_dir);
    let venv = home.join(format!(
        ".cache/bitstratus/schemathesis-{SCHEMATHESIS_VERSION}"
    ));
    let st = venv.join("bin/st");
    if !st.is_file() {
        step(
            &format!("install schemathesis {SCHEMATHESIS_VERSION} (pip)"),
            || {
                let venv = venv.to_string_lossy();
                command("python3", &["-m", "venv", &venv])?;
                let pip = format!("{venv}/bin/pip");
                let wanted = format!("schemathesis=={SCHEMATHESIS_VERSION}");
                command(&pip, &["install", "--quiet", &wanted])
            },
        )?;
    }
    let data = env::temp_dir().join(format!("bitstratus-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Command::new(target_dir().join("debug/bitstratus-server"))
        .args(["--listen", &listen, "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "error")
        .spawn()
        .map_err(|e| format!("could not start the server: {e}"))?;
    let result = wait_for_port(&listen).and_then(|()| {
        let schema = format!("http://{listen}/api/v1/openapi.json");
        let status = Command::new(&st)
            .args(["run", &schema, "--checks", FUZZ_CHECKS, "--max-examples"])
            .args([FUZZ_EXAMPLES, "--generation-database", "none", "--no-color"])
            .current_dir(env::temp_dir())
            .status()
            .map_err(|e| format!("could not run schemathesis: {e}"))?;
        check(status, "schemathesis")
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// Waits up to 30 s until something accepts connections on `address`.
fn wait_for_port(address: &str) -> Result {
    for _ in 0..300 {
        if std::net::TcpStream::connect(address).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(format!(
        "the server did not listen on {address} within 30 s"
    ))
}

/// Whether npm's record of installed packages names every `"resolved"` entry of the lockfile.
fn same_packages(installed: &[u8], lock: &[u8]) -> bool {
    let installed = String::from_utf8_lossy(installed);
    String::from_utf8_lossy(lock)
        .lines()
        .filter(|l| l.contains("\"resolved\""))
        .all(|l| installed.contains(l.trim()))
}

/// Runs one named step, printing its name and time so a slow or failing step is easy to find.
fn step(name: &str, body: impl FnOnce() -> Result) -> Result {
    println!("\n==> {name}");
    let started = Instant::now();
    body().map_err(|e| format!("{name}: {e}"))?;
    println!(
        "<== {name}: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cargo(args: &[&str]) -> Result {
    command("cargo", args)
}

fn command(program: &str, args: &[&str]) -> Result {
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("could not run {program}: {e}"))?;
    check(status, program)
}

fn check(status: std::process::ExitStatus, what: &str) -> Result {
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// A command's standard output, or `None` when it cannot run (for example, not installed).
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{
        BENCHES, BROWSER_BENCH, USAGE, cargo_bench, node_bench, result_line, root, same_packages,
    };

    /// Whether `node --test DIR` would run a file of this name, found under DIR (node 20-22:
    /// `test.*`, `test-*.*`, `*.test.*`, `*-test.*`, `*_test.*` with a js/cjs/mjs extension, and
    /// any such file in a directory called `test`).
    fn node_would_run(relative_path: &Path) -> bool {
        let is_js = relative_path
            .extension()
            .is_some_and(|e| e == "js" || e == "mjs" || e == "cjs");
        let in_test_dir = relative_path
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "test"));
        let stem = relative_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        is_js
            && (in_test_dir
                || stem == "test"
                || stem.starts_with("test-")
                || [".test", "-test", "_test"]
                    .iter()
                    .any(|s| stem.ends_with(s)))
    }

    #[test]
    fn benchmarks_are_not_picked_up_as_end_to_end_tests() {
        assert!(node_would_run(Path::new("share.test.mjs")));
        assert!(node_would_run(Path::new("bench/test-upload.mjs")));
        assert!(node_would_run(Path::new("test/anything.mjs")));
        assert!(!node_would_run(Path::new("harness.mjs")));
        let bench_dir = root().join(BROWSER_BENCH);
        let bench_dir = bench_dir.parent().unwrap();
        let mut seen = 0;
        for entry in std::fs::read_dir(bench_dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root().join("e2e")).unwrap();
            assert!(
                !node_would_run(relative),
                "`node --test e2e/` would run the benchmark {}: rename it",
                relative.display()
            );
            seen += 1;
        }
        assert!(seen > 0, "no benchmark script in {}", bench_dir.display());
    }

    #[test]
    fn every_browser_benchmark_has_its_script() {
        for name in BENCHES {
            if let Some((script, _)) = node_bench(name) {
                assert!(root().join(script).is_file(), "{name}: no {script}");
            }
        }
        assert_eq!(node_bench("server-ingest"), None);
        assert!(node_bench("browser-crypto").is_some() && node_bench("memory").is_some());
    }

    /// Every benchmark is run one way or the other, its Rust source exists, and the usage
    /// text names it.
    #[test]
    fn every_benchmark_has_a_runner() {
        for name in BENCHES {
            match (node_bench(name), cargo_bench(name)) {
                (Some(_), None) => {}
                (None, Some((package, bench))) => {
                    let dir = if package == "bitstratus-cli" {
                        "cli"
                    } else {
                        package
                    };
                    let source = root().join(dir).join("benches").join(format!("{bench}.rs"));
                    assert!(source.is_file(), "{name}: no {}", source.display());
                }
                other => panic!("{name}: runners {other:?}"),
            }
            assert!(
                USAGE.contains(name),
                "{name} is missing from the usage text"
            );
        }
        assert_eq!(cargo_bench("memory"), None);
    }

    #[test]
    fn result_line_is_found_among_other_output() {
        let out = "warming up\nserver-ingest: ratio=0.9 api_MBps=1 direct_MBps=2\n";
        assert_eq!(
            result_line(out, "server-ingest"),
            Some("server-ingest: ratio=0.9 api_MBps=1 direct_MBps=2")
        );
        assert_eq!(result_line(out, "browser-upload"), None);
    }

    #[test]
    fn changed_lockfile_means_reinstall() {
        let lock = br#""resolved": "https://example/a-1.0.0.tgz","#;
        assert!(same_packages(lock, lock));
        let newer = br#""resolved": "https://example/a-1.1.0.tgz","#;
        assert!(!same_packages(lock, newer));
    }
}
