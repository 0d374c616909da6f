//! Shared test harness: a real SQLite file database and real local object storage in a
//! tempdir, driven through `app(state)` with `oneshot`, plus request and upload helpers.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use backend::db::Db;
use backend::storage::Storage;
use backend::{AppState, Config, app};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tower::ServiceExt as _;

/// A small generic layout: the server does not care that real parts are 4 MiB.
pub(crate) const FIRST: u64 = 100;
/// Later parts of the small layout.
pub(crate) const PART: u64 = 64;

pub(crate) struct TestApp {
    pub(crate) state: AppState,
    pub(crate) app: Router,
    // Held so the directory lives as long as the app.
    _dir: TempDir,
}

#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The envelope's error code.
    pub(crate) fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error envelope: {:?}", self.json()))
            .to_owned()
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}"))
            .to_str()
            .unwrap()
    }

    /// Asserts the status and, for errors, the envelope code.
    #[track_caller]
    pub(crate) fn expect(&self, status: u16, code: Option<&str>) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        if let Some(code) = code {
            assert_eq!(self.code(), code);
        }
        self
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v).unwrap();
    v
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Upload parameters; `Default` is a 250-byte, 4-part, unlimited file.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) size: u64,
    pub(crate) first_part_size: u64,
    pub(crate) part_size: u64,
    pub(crate) download_limit: Option<u64>,
    pub(crate) kdf: Value,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            size: 250,
            first_part_size: FIRST,
            part_size: PART,
            download_limit: None,
            kdf: Value::Null,
        }
    }
}

/// A created upload: what the client keeps.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) auth: String,
    pub(crate) part_count: u64,
    pub(crate) body: Vec<u8>,
    pub(crate) spec: Spec,
}

impl Upload {
    /// The bytes of part `n` of `body` under the upload's layout.
    pub(crate) fn part(&self, n: u64) -> Vec<u8> {
        let (f, p, size) = (
            self.spec.first_part_size,
            self.spec.part_size,
            self.body.len() as u64,
        );
        let (start, end) = if n == 0 {
            (0, size.min(f))
        } else {
            let s = f + (n - 1) * p;
            (s, size.min(s + p))
        };
        self.body[start as usize..end as usize].to_vec()
    }
}

impl TestApp {
    pub(crate) async fn new() -> Self {
        Self::with(|_| {}).await
    }

    pub(crate) async fn with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::with_data_dir(dir.path().join("data"));
        tweak(&mut config);
        let state = AppState::new(config).await.unwrap();
        Self {
            app: app(state.clone()),
            state,
            _dir: dir,
        }
    }

    /// Like [`TestApp::new`], but objects go through a [`GatedStore`] over the same local
    /// directory (`<data-dir>/objects`), so a test can hold one write back.
    pub(crate) async fn gated() -> (Self, Arc<GatedStore>) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::with_data_dir(dir.path().join("data"));
        std::fs::create_dir_all(config.objects_dir()).unwrap();
        let local = LocalFileSystem::new_with_prefix(config.objects_dir())
            .unwrap()
            .with_automatic_cleanup(true);
        let store = Arc::new(GatedStore {
            inner: local,
            gate: Mutex::new(None),
        });
        let db = Db::connect(&config).await.unwrap();
        let storage = Storage::from_store(Arc::clone(&store) as Arc<dyn ObjectStore>);
        let state = AppState::with_parts(config, db, storage).unwrap();
        let t = Self {
            app: app(state.clone()),
            state,
            _dir: dir,
        };
        (t, store)
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> Resp {
        send(&self.app, req).await
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        json: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match json {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).unwrap()).await
    }

    pub(crate) async fn get(&self, uri: &str, token: Option<&str>) -> Resp {
        self.call(Method::GET, uri, token, None).await
    }

    pub(crate) async fn post(&self, uri: &str, token: Option<&str>, json: Option<Value>) -> Resp {
        self.call(Method::POST, uri, token, json).await
    }

    /// POST /files with the spec and a fresh auth token; the body is random bytes.
    pub(crate) async fn create(&self, spec: Spec) -> Upload {
        let body = random_bytes(spec.size as usize);
        self.create_with_body(spec, body, random_bytes(32), random_bytes(48))
            .await
    }

    pub(crate) async fn create_with_body(
        &self,
        spec: Spec,
        body: Vec<u8>,
        auth: Vec<u8>,
        metadata: Vec<u8>,
    ) -> Upload {
        let r = self
            .post(
                "/api/v1/files",
                None,
                Some(json!({
                    "metadata": b64(&metadata),
                    "auth_token": b64(&auth),
                    "kdf": spec.kdf,
                    "size": spec.size,
                    "first_part_size": spec.first_part_size,
                    "part_size": spec.part_size,
                    "expires_in": 3600,
                    "download_limit": spec.download_limit,
                })),
            )
            .await;
        r.expect(201, None);
        let v = r.json();
        Upload {
            id: v["id"].as_str().unwrap().to_owned(),
            owner: v["owner_token"].as_str().unwrap().to_owned(),
            auth: b64(&auth),
            part_count: v["part_count"].as_u64().unwrap(),
            body,
            spec,
        }
    }

    /// PUT a part with the right hash header.
    pub(crate) async fn put_raw(&self, id: &str, owner: &str, n: u64, bytes: Vec<u8>) -> Resp {
        let req = Request::put(format!("/api/v1/files/{id}/parts/{n}"))
            .header(header::AUTHORIZATION, format!("Bearer {owner}"))
            .header("x-content-sha256", sha256_hex(&bytes))
            .body(Body::from(bytes))
            .unwrap();
        self.send(req).await
    }

    pub(crate) async fn put_part(&self, up: &Upload, n: u64) -> Resp {
        self.put_raw(&up.id, &up.owner, n, up.part(n)).await
    }

    pub(crate) async fn complete(&self, up: &Upload) -> Resp {
        self.post(
            &format!("/api/v1/files/{}/complete", up.id),
            Some(&up.owner),
            None,
        )
        .await
    }

    /// Create, upload every part and complete.
    pub(crate) async fn upload(&self, spec: Spec) -> Upload {
        let up = self.create(spec).await;
        self.finish(&up).await;
        up
    }

    pub(crate) async fn finish(&self, up: &Upload) {
        for n in 0..up.part_count {
            self.put_part(up, n).await.expect(200, None);
        }
        self.complete(up).await.expect(200, None);
    }

    /// POST downloads and return the ticket.
    pub(crate) async fn ticket(&self, up: &Upload) -> String {
        let r = self
            .post(
                &format!("/api/v1/files/{}/downloads", up.id),
                Some(&up.auth),
                None,
            )
            .await;
        r.expect(200, None);
        r.json()["ticket"].as_str().unwrap().to_owned()
    }

    /// Stored object keys of a file, straight from the object store.
    pub(crate) async fn objects(&self, id: &str) -> Vec<String> {
        self.state.storage.list_file_objects(id).await.unwrap()
    }

    /// Files on local disk under the file's object directory, whatever the store lists
    /// (stray temporary files included); empty when the directory is gone.
    pub(crate) fn files_on_disk(&self, id: &str) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &self.state.config.objects_dir().join("files").join(id),
            &mut out,
        );
        out
    }

    /// A file's auth throttle: `(auth_failures, auth_locked_until)`.
    pub(crate) async fn throttle(&self, id: &str) -> (i64, i64) {
        sqlx::query_as("SELECT auth_failures, auth_locked_until FROM files WHERE id = ?")
            .bind(id)
            .fetch_one(self.state.db.pool())
            .await
            .unwrap()
    }

    /// Number of rows across the tables that mention a file.
    pub(crate) async fn rows(&self, id: &str) -> i64 {
        let pool = self.state.db.pool();
        let mut total = 0;
        for sql in [
            "SELECT COUNT(*) FROM files WHERE id = ?",
            "SELECT COUNT(*) FROM parts WHERE file_id = ?",
            "SELECT COUNT(*) FROM tickets WHERE file_id = ?",
        ] {
            let (n,): (i64,) = sqlx::query_as(sql).bind(id).fetch_one(pool).await.unwrap();
            total += n;
        }
        total
    }

    /// Runs SQL against the test database (to age rows).
    pub(crate) async fn exec(&self, sql: &str, id: &str) {
        sqlx::query(sql)
            .bind(id)
            .execute(self.state.db.pool())
            .await
            .unwrap();
    }
}

pub(crate) async fn send(app: &Router, req: Request<Body>) -> Resp {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

/// A local object store whose next write of one key waits until the test lets it through:
/// it pins a part PUT between "body read and checked" and "object written" while the test
/// changes the world around it. Everything else goes straight to the local store.
#[derive(Debug)]
pub(crate) struct GatedStore {
    inner: LocalFileSystem,
    gate: Mutex<Option<Gate>>,
}

#[derive(Debug)]
struct Gate {
    key: ObjectPath,
    reached: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

impl GatedStore {
    /// Holds back the next write of `key`. The first receiver fires when that write has
    /// arrived (and waits); sending on the second lets it proceed.
    pub(crate) fn hold_next_put(
        &self,
        key: ObjectPath,
    ) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (reached_tx, reached_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *self.gate.lock().unwrap() = Some(Gate {
            key,
            reached: reached_tx,
            release: release_rx,
        });
        (reached_rx, release_tx)
    }
}

impl std::fmt::Display for GatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gated({})", self.inner)
    }
}

type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = object_store::Result<T>> + Send + 'a>>;

// `ObjectStore` is an `#[async_trait]` trait; these are its desugared signatures, written out
// so the tests need no extra dependency.
impl ObjectStore for GatedStore {
    fn put_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreFuture<'async_trait, PutResult>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let gate = {
                let mut slot = self.gate.lock().unwrap();
                match slot.as_ref() {
                    Some(gate) if gate.key == *location => slot.take(),
                    _ => None,
                }
            };
            if let Some(gate) = gate {
                let _ = gate.reached.send(());
                let _ = gate.release.await;
            }
            self.inner.put_opts(location, payload, opts).await
        })
    }

    fn put_multipart_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        opts: PutMultipartOptions,
    ) -> StoreFuture<'async_trait, Box<dyn MultipartUpload>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.put_multipart_opts(location, opts))
    }

    fn get_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        options: GetOptions,
    ) -> StoreFuture<'async_trait, GetResult>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.get_opts(location, options))
    }

    fn delete<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
    ) -> StoreFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.delete(location))
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'life0, 'life1, 'async_trait>(
        &'life0 self,
        prefix: Option<&'life1 ObjectPath>,
    ) -> StoreFuture<'async_trait, ListResult>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.list_with_delimiter(prefix))
    }

    fn copy<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        from: &'life1 ObjectPath,
        to: &'life2 ObjectPath,
    ) -> StoreFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.copy(from, to))
    }

    fn copy_if_not_exists<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        from: &'life1 ObjectPath,
        to: &'life2 ObjectPath,
    ) -> StoreFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.inner.copy_if_not_exists(from, to))
    }
}
