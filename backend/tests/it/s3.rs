//! The upload and download paths against a real S3 server: each test starts its own `s3s-fs`
//! (an S3-compatible server keeping objects as plain files) on a free loopback port, so the
//! S3 client, request signing, conditional writes, ranged reads, listing and deletes all run
//! for real. `s3s-fs` must be on PATH; `cargo xtask test` installs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::Method;
use backend::Config;
use backend::config::{Redacted, StorageKind};
use backend::gc::run_once;
use tempfile::TempDir;

use crate::common::*;
use crate::{download, upload};

const BUCKET: &str = "bitstratus";
const ACCESS_KEY: &str = "bitstratus-test";
const SECRET_KEY: &str = "bitstratus-test-secret";
/// How long s3s-fs may take to accept connections.
const STARTUP: Duration = Duration::from_secs(20);

/// A child process killed (and reaped) on drop, so a failing test leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // It may have exited already; either way there is nothing more to do.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `s3s-fs` serving a fresh tempdir with one empty bucket.
struct S3sFs {
    // Declared first so it is dropped first: the server stops before its files go.
    _process: KillOnDrop,
    port: u16,
    dir: TempDir,
}

impl S3sFs {
    /// Starts the server and waits until it accepts connections.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root").join(BUCKET)).unwrap();
        let log_path = dir.path().join("s3s-fs.log");
        // A free port is found by binding port 0 and letting it go, so another process could
        // take it before s3s-fs binds; s3s-fs then exits and another port is tried.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut process = KillOnDrop(spawn(&dir.path().join("root"), port, &log_path));
            if wait_until_listening(&mut process.0, port, &log_path).await {
                return Self {
                    _process: process,
                    port,
                    dir,
                };
            }
        }
        panic!("s3s-fs exited on every port tried: {}", read_log(&log_path));
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Points a config at this server: `--storage s3` over plain HTTP, path-style requests.
    fn configure(&self, config: &mut Config) {
        config.storage = StorageKind::S3;
        config.s3_endpoint = Some(self.endpoint());
        config.s3_bucket = Some(BUCKET.to_owned());
        config.s3_region = "us-east-1".to_owned();
        config.s3_access_key = Some(ACCESS_KEY.to_owned());
        config.s3_secret_key = Some(Redacted(SECRET_KEY.to_owned()));
        config.s3_allow_http = true;
        config.s3_path_style = true;
    }

    /// The files s3s-fs holds for file `id`, straight from its directory (not through S3).
    fn files_on_disk(&self, id: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(
            &self
                .dir
                .path()
                .join("root")
                .join(BUCKET)
                .join("files")
                .join(id),
            &mut found,
        );
        found.sort();
        found
    }

    /// A test app whose objects live in this server's bucket.
    async fn app(&self) -> TestApp {
        TestApp::with(|c| self.configure(c)).await
    }
}

fn spawn(root: &Path, port: u16, log_path: &Path) -> Child {
    let log = std::fs::File::create(log_path).unwrap();
    let spawned = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn();
    match spawned {
        Ok(child) => child,
        // Never skip: a missing server would silently drop the S3 coverage.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`s3s-fs` is not on PATH and the S3 tests need it: run `cargo xtask test`, which \
             installs it (or `cargo install s3s-fs --version 0.14.1 --features binary`)"
        ),
        Err(e) => panic!("cannot start s3s-fs: {e}"),
    }
}

/// True once the port accepts connections; false if the process exits first.
async fn wait_until_listening(child: &mut Child, port: u16, log_path: &Path) -> bool {
    let deadline = Instant::now() + STARTUP;
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "s3s-fs did not listen on port {port} within {STARTUP:?}: {}",
            read_log(log_path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[tokio::test]
async fn s3_happy_path_with_real_ciphertext() {
    let s3 = S3sFs::start().await;
    download::real_ciphertext_round_trip(&s3.app().await).await;
}

#[tokio::test]
async fn s3_idempotent_part_reput() {
    let s3 = S3sFs::start().await;
    let t = s3.app().await;
    upload::idempotent_part_reput_on(&t).await;
}

#[tokio::test]
async fn s3_part_conflict_keeps_the_first_bytes() {
    let s3 = S3sFs::start().await;
    upload::part_conflict_on(&s3.app().await).await;
}

#[tokio::test]
async fn s3_stored_objects_are_never_overwritten() {
    let s3 = S3sFs::start().await;
    upload::create_only_storage_on(&s3.app().await).await;
}

#[tokio::test]
async fn s3_delete_and_gc_remove_the_objects() {
    let s3 = S3sFs::start().await;
    let t = s3.app().await;

    // Deleted by the owner: purged in the background, and by any GC pass.
    let deleted = t.upload(Spec::default()).await;
    assert_eq!(s3.files_on_disk(&deleted.id).len(), 4);
    t.call(
        Method::DELETE,
        &format!("/api/v1/files/{}", deleted.id),
        Some(&deleted.owner),
        None,
    )
    .await
    .expect(204, None);
    // The background purge and this pass may race; both are idempotent, so poll until done.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(s3.files_on_disk(&deleted.id).is_empty() && t.rows(&deleted.id).await == 0) {
        assert!(
            Instant::now() < deadline,
            "delete left objects or rows behind"
        );
        run_once(&t.state).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t.objects(&deleted.id).await.is_empty());

    // Abandoned mid-upload: the GC deletes exactly its stored parts and keeps the rest.
    let abandoned = t.create(Spec::default()).await;
    t.put_part(&abandoned, 0).await.expect(200, None);
    t.put_part(&abandoned, 2).await.expect(200, None);
    let kept = t.upload(Spec::default()).await;
    assert_eq!(s3.files_on_disk(&abandoned.id).len(), 2);
    let mut config = (*t.state.config).clone();
    config.upload_ttl = Duration::ZERO;
    let report = run_once(&t.state.with_config(config)).await.unwrap();
    assert_eq!(report.marked.abandoned, 1);
    assert_eq!(report.objects_deleted, 2);
    assert!(s3.files_on_disk(&abandoned.id).is_empty());
    assert_eq!(t.rows(&abandoned.id).await, 0);
    assert_eq!(s3.files_on_disk(&kept.id).len(), 4);
    let ticket = t.ticket(&kept).await;
    let r = t
        .get(&format!("/api/v1/files/{}/content", kept.id), Some(&ticket))
        .await;
    assert_eq!(r.body.as_ref(), kept.body.as_slice());
}
