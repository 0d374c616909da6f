//! The in-process server, a runner for the binary, test data and a small HTTP helper for
//! looking at the server directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use axum::response::IntoResponse as _;
use tempfile::TempDir;

/// A BitStratus server on a loopback port, running until the test process exits.
pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) data: TempDir,
}

impl Server {
    pub(crate) fn start() -> Self {
        Self::start_with(std::convert::identity)
    }

    /// A server whose first answer to `POST .../downloads` is lost after the server acted on
    /// it: the client gets a 502, as from a proxy whose upstream connection dropped.
    pub(crate) fn losing_first_download_answer() -> Self {
        Self::start_with(|app| {
            let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            app.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let lose = request.method() == axum::http::Method::POST
                        && request.uri().path().ends_with("/downloads")
                        && !lost.swap(true, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        let response = next.run(request).await;
                        if lose {
                            return axum::http::StatusCode::BAD_GATEWAY.into_response();
                        }
                        response
                    }
                },
            ))
        })
    }

    /// A server whose router is `backend::app` as `wrap` returns it.
    fn start_with(wrap: impl FnOnce(axum::Router) -> axum::Router + Send + 'static) -> Self {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let state = backend::AppState::new(backend::Config::with_data_dir(dir))
                    .await
                    .unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                backend::serve(listener, wrap(backend::app(state)), std::future::pending())
                    .await
                    .unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Self {
            url: format!("http://{addr}"),
            data,
        }
    }
}

/// The binary with its own configuration directory, pointed at one server.
pub(crate) struct Cli {
    pub(crate) config: TempDir,
    pub(crate) server: String,
}

impl Cli {
    pub(crate) fn new(server: &Server) -> Self {
        Self {
            config: tempfile::tempdir().unwrap(),
            server: server.url.clone(),
        }
    }

    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bitstratus"));
        command
            .env("BITSTRATUS_CONFIG_DIR", self.config.path())
            .env("BITSTRATUS_URL", &self.server)
            .env("BITSTRATUS_RETRIES", "2")
            .env_remove("BITSTRATUS_PASSWORD")
            .env_remove("BITSTRATUS_TEST_ABORT_AFTER_PARTS")
            .stdin(Stdio::null());
        command
    }

    /// Runs the binary with `args`.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs the binary and requires success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "bitstratus {args:?} failed with {:?}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Downloads `link` into a fresh directory; returns the bytes saved as `name`.
    pub(crate) fn downloaded(&self, link: &str, name: &str) -> Vec<u8> {
        let out = tempfile::tempdir().unwrap();
        self.ok(&["download", link, "-o", out.path().to_str().unwrap()]);
        std::fs::read(out.path().join(name)).unwrap()
    }

    /// Uploads with `--json` and returns one report per file.
    pub(crate) fn upload(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["--json", "upload"];
        all.extend_from_slice(args);
        json_lines(&self.ok(&all))
    }
}

/// Parses one JSON value per line.
pub(crate) fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The exit code, requiring the process to have exited normally.
pub(crate) fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {output:?}"))
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Deterministic pseudo-random bytes.
pub(crate) fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `bytes` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A string field of a JSON report.
pub(crate) fn field<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
}

/// `GET` on the server's API with a bearer token: status and JSON body.
pub(crate) fn api_get(server: &str, path: &str, bearer: &str) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{server}/api/v1{path}"))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, body)
    })
}

/// The single interrupted upload recorded in the configuration directory.
pub(crate) fn pending_upload(cli: &Cli) -> serde_json::Value {
    let dir = cli.config.path().join("pending");
    let states: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(states.len(), 1, "{states:?}");
    serde_json::from_slice(&std::fs::read(&states[0]).unwrap()).unwrap()
}

/// Part numbers the server holds for an unfinished upload.
pub(crate) fn stored_parts(server: &str, id: &str, owner: &str) -> Vec<u64> {
    let (status, body) = api_get(server, &format!("/files/{id}/parts"), owner);
    assert_eq!(status, 200, "{body}");
    body["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["n"].as_u64().unwrap())
        .collect()
}
