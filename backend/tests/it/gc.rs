//! Garbage collection: abandoned uploads, expired files, exhausted files and tickets.

use std::time::Duration;

use backend::gc::run_once;

use crate::common::*;

#[tokio::test]
async fn gc_removes_abandoned_uploads() {
    let t = TestApp::new().await;
    let abandoned = t.create(Spec::default()).await;
    t.put_part(&abandoned, 0).await.expect(200, None);
    t.put_part(&abandoned, 3).await.expect(200, None);
    let done = t.upload(Spec::default()).await;
    assert_eq!(t.objects(&abandoned.id).await.len(), 2);

    // With the default 24 h TTL nothing is due.
    let report = run_once(&t.state).await.unwrap();
    assert_eq!(report.files_purged, 0);
    assert_eq!(t.objects(&abandoned.id).await.len(), 2);

    // With a zero TTL every incomplete upload is abandoned.
    let mut config = (*t.state.config).clone();
    config.upload_ttl = Duration::ZERO;
    let zero_ttl = t.state.with_config(config);
    let report = run_once(&zero_ttl).await.unwrap();
    assert_eq!(report.marked.abandoned, 1);
    assert_eq!(report.files_purged, 1);
    assert_eq!(report.objects_deleted, 2);
    assert!(t.objects(&abandoned.id).await.is_empty());
    assert_eq!(t.rows(&abandoned.id).await, 0);

    // Idempotent: a second pass finds nothing.
    let again = run_once(&zero_ttl).await.unwrap();
    assert_eq!(again, backend::gc::GcReport::default());

    // The owner of the abandoned upload now gets 404, and a late part leaves nothing.
    t.put_part(&abandoned, 1)
        .await
        .expect(404, Some("not_found"));
    assert!(t.objects(&abandoned.id).await.is_empty());

    // The complete file survived and still downloads.
    let ticket = t.ticket(&done).await;
    let r = t
        .get(&format!("/api/v1/files/{}/content", done.id), Some(&ticket))
        .await;
    assert_eq!(r.body.as_ref(), done.body.as_slice());
}

#[tokio::test]
async fn gc_removes_expired_files() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    t.exec("UPDATE files SET expires_at = 1 WHERE id = ?", &up.id)
        .await;
    let report = run_once(&t.state).await.unwrap();
    assert_eq!(report.marked.expired, 1);
    assert!(t.objects(&up.id).await.is_empty());
    assert_eq!(t.rows(&up.id).await, 0);
}

#[tokio::test]
async fn gc_keeps_exhausted_files_until_their_last_ticket_expires() {
    let t = TestApp::new().await;
    let up = t
        .upload(Spec {
            download_limit: Some(1),
            ..Spec::default()
        })
        .await;
    let ticket = t.ticket(&up).await;

    // Exhausted, but a download may still be in progress.
    let report = run_once(&t.state).await.unwrap();
    assert_eq!(report.marked.exhausted, 0);
    t.get(&format!("/api/v1/files/{}/parts/0", up.id), Some(&ticket))
        .await
        .expect(200, None);

    // Once the ticket has expired, both the ticket and the file go.
    t.exec(
        "UPDATE tickets SET expires_at = 1 WHERE file_id = ?",
        &up.id,
    )
    .await;
    let report = run_once(&t.state).await.unwrap();
    assert_eq!(report.marked.exhausted, 1);
    assert_eq!(report.tickets_removed, 1);
    assert!(t.objects(&up.id).await.is_empty());
    assert_eq!(t.rows(&up.id).await, 0);
}

#[tokio::test]
async fn gc_drops_expired_tickets_of_live_files() {
    let t = TestApp::new().await;
    let up = t.upload(Spec::default()).await;
    let ticket = t.ticket(&up).await;
    t.exec(
        "UPDATE tickets SET expires_at = 1 WHERE file_id = ?",
        &up.id,
    )
    .await;
    // An expired ticket no longer reads, even before GC.
    t.get(&format!("/api/v1/files/{}/content", up.id), Some(&ticket))
        .await
        .expect(401, Some("bad_token"));
    let report = run_once(&t.state).await.unwrap();
    assert_eq!(report.tickets_removed, 1);
    assert_eq!(report.files_purged, 0);
    assert_eq!(t.objects(&up.id).await.len(), 4);
}

#[tokio::test]
async fn gc_spares_uploads_that_are_still_active() {
    let t = TestApp::new().await;
    let up = t.create(Spec::default()).await;
    // Created long ago, but a part arrived just now: the TTL counts idle time.
    t.exec(
        "UPDATE files SET created_at = created_at - 7200 WHERE id = ?",
        &up.id,
    )
    .await;
    t.put_part(&up, 0).await.expect(200, None);
    let mut config = (*t.state.config).clone();
    config.upload_ttl = Duration::from_secs(3600);
    let hour_ttl = t.state.with_config(config);
    let report = run_once(&hour_ttl).await.unwrap();
    assert_eq!(report.marked.abandoned, 0);
    assert_eq!(t.objects(&up.id).await.len(), 1);

    // Idle for longer than the TTL: collected.
    t.exec(
        "UPDATE parts SET created_at = created_at - 7200 WHERE file_id = ?",
        &up.id,
    )
    .await;
    let report = run_once(&hour_ttl).await.unwrap();
    assert_eq!(report.marked.abandoned, 1);
    assert!(t.objects(&up.id).await.is_empty());
    assert_eq!(t.rows(&up.id).await, 0);
}
