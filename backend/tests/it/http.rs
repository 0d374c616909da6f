//! Over a real socket: the server bound to 127.0.0.1:0 and raw HTTP/1.1 requests, to cover
//! what `oneshot` cannot (hyper's framing of early 413s and 408s and of bodies cut off
//! mid-part).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

async fn serve(t: &TestApp) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = t.app.clone();
    tokio::spawn(async move {
        backend::serve(listener, app, std::future::pending())
            .await
            .unwrap()
    });
    addr
}

/// Reads until the peer closes or `deadline` passes; returns what arrived.
async fn read_all(stream: &mut TcpStream, deadline: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(deadline, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[tokio::test]
async fn real_http_request() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let addr = serve(&t).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /api/v1/files/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        up.id
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let res = read_all(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&res), 200, "{res}");
    let lower = res.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/json"));
    assert!(lower.contains("x-frame-options: deny"));
    assert!(res.contains(&format!("\"id\":\"{}\"", up.id)));
}

#[tokio::test]
async fn real_http_oversized_part_is_refused_before_the_body_is_sent() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    let addr = serve(&t).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Announce 1 GB and send only the headers: the answer must come anyway.
    let head = format!(
        "PUT /api/v1/files/{}/parts/0 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nX-Content-SHA256: {}\r\nContent-Length: 1000000000\r\n\r\n",
        up.id,
        up.owner,
        sha256_hex(&up.part(0))
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let res = read_all(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&res), 413, "{res}");
    assert!(res.contains("part_too_large"));
}

#[tokio::test]
async fn real_http_truncated_part_leaves_no_row() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    let addr = serve(&t).await;
    let part = up.part(0);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/files/{}/parts/0 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nX-Content-SHA256: {}\r\nContent-Length: {}\r\n\r\n",
        up.id,
        up.owner,
        sha256_hex(&part),
        part.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&part[..part.len() / 2]).await.unwrap();
    // The client stops sending mid-body (it half-closes, so it can still read the answer).
    s.shutdown().await.unwrap();
    // The server answers once its handler has given up on the part, so after this nothing
    // of the request can still be running.
    let res = read_all(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&res), 400, "{res}");
    assert!(res.contains("\"part_size_mismatch\""), "{res}");
    drop(s);

    let parts = t
        .get(&format!("/api/v1/files/{}/parts", up.id), Some(&up.owner))
        .await;
    assert_eq!(parts.json()["parts"], serde_json::json!([]));
    assert!(t.objects(&up.id).await.is_empty());
    assert_eq!(t.rows(&up.id).await, 1, "only the file row");
    assert_eq!(
        t.state.part_permits_available(),
        t.state.config.max_concurrent_parts
    );

    // The full part then goes through on a fresh connection.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = head.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&part).await.unwrap();
    let res = read_all(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&res), 200, "{res}");
}

#[tokio::test]
async fn real_http_stalled_part_is_408_while_the_client_still_owes_bytes() {
    let t = TestApp::with(|c| c.part_idle_timeout = Duration::from_millis(200)).await;
    let up = t.create(Spec::default()).await;
    let addr = serve(&t).await;
    let part = up.part(0);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/files/{}/parts/0 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nX-Content-SHA256: {}\r\nContent-Length: {}\r\n\r\n",
        up.id,
        up.owner,
        sha256_hex(&part),
        part.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&part[..part.len() / 2]).await.unwrap();
    // The connection stays open but silent: the server answers and closes it.
    let res = read_all(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&res), 408, "{res}");
    assert!(res.contains("\"timeout\""), "{res}");
    assert!(t.objects(&up.id).await.is_empty());
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_a_request_in_progress_finish() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(backend::serve(listener, t.app.clone(), async {
        let _ = stopped.await;
    }));
    // A request whose headers are in but not yet its end: it is in progress at the shutdown.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /api/v1/files/{} HTTP/1.1\r\nHost: localhost\r\n",
        up.id
    );
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"Connection: close\r\n\r\n").await.unwrap();
    let res = read_all(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&res), 200, "{res}");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops once its connections are done")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens after the shutdown"
    );
}
