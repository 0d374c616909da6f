//! Interrupted uploads and downloads, resumed by running the same command again. The
//! interruption is a hard abort of the process (the test hook
//! `BITSTRATUS_TEST_ABORT_AFTER_PARTS`), as a crash would leave things.

use std::time::SystemTime;

use crate::common::*;

/// Four parts: three full ones and a short last one.
const LEN: usize = 13 * 1024 * 1024;

/// Runs an upload that aborts after `parts` parts were stored, one part at a time.
fn interrupted_upload(cli: &Cli, path: &str, parts: &str) {
    let output = cli
        .command()
        .args(["--json", "upload", "--parallel", "1", path])
        .env("BITSTRATUS_TEST_ABORT_AFTER_PARTS", parts)
        .output()
        .unwrap();
    assert!(!output.status.success(), "the upload was not interrupted");
    assert!(output.stdout.is_empty(), "no link before completion");
}

#[test]
fn an_interrupted_upload_sends_only_the_missing_parts() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let bytes = data(LEN, 11);
    let path = write(src.path(), "big.bin", &bytes);
    let path = path.to_str().unwrap();

    interrupted_upload(&cli, path, "2");
    let pending = pending_upload(&cli);
    let (id, owner) = (field(&pending, "id"), field(&pending, "owner_token"));
    assert_eq!(stored_parts(&server.url, id, owner), [0, 1]);
    // Not public before it completes.
    let (status, _) = api_get(&server.url, &format!("/files/{id}"), "");
    assert_eq!(status, 404);

    let report = cli.upload(&[path]);
    assert_eq!(field(&report[0], "id"), id);
    assert_eq!(report[0]["resumed"], true);
    assert_eq!(report[0]["parts_skipped"], 2);
    assert_eq!(report[0]["parts_sent"], 2);
    assert_eq!(
        std::fs::read_dir(cli.config.path().join("pending"))
            .unwrap()
            .count(),
        0,
        "the resume record is gone once complete"
    );

    assert!(cli.downloaded(field(&report[0], "share_link"), "big.bin") == bytes);
}

#[test]
fn a_file_changed_since_the_interruption_is_refused() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let mut bytes = data(LEN, 12);
    let path_buf = write(src.path(), "doc.bin", &bytes);
    let path = path_buf.to_str().unwrap();
    interrupted_upload(&cli, path, "1");
    let pending = pending_upload(&cli);
    let (id, owner) = (
        field(&pending, "id").to_owned(),
        field(&pending, "owner_token").to_owned(),
    );
    assert_eq!(stored_parts(&server.url, &id, &owner), [0]);

    // Same size, same modification time, one byte different in the part already stored.
    let mtime: SystemTime = std::fs::metadata(&path_buf).unwrap().modified().unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&path_buf, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path_buf)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let refused = cli.run(&["upload", path]);
    assert_eq!(code(&refused), 7, "{}", stderr(&refused));
    assert!(stderr(&refused).contains("changed"), "{}", stderr(&refused));
    assert!(refused.stdout.is_empty());
    assert_eq!(
        stored_parts(&server.url, &id, &owner),
        [0],
        "nothing more was sent"
    );

    // A size change is refused as well, before any hashing.
    let mut longer = bytes.clone();
    longer.push(0);
    std::fs::write(&path_buf, &longer).unwrap();
    let refused = cli.run(&["upload", path]);
    assert_eq!(code(&refused), 7, "{}", stderr(&refused));
    std::fs::write(&path_buf, &bytes).unwrap();

    // --restart starts over with fresh keys; the old upload is deleted.
    let report = cli.upload(&["--restart", path]);
    assert_ne!(field(&report[0], "id"), id);
    assert_eq!(report[0]["resumed"], false);
    let (status, _) = api_get(&server.url, &format!("/files/{id}/parts"), &owner);
    assert_eq!(status, 404);
    assert!(cli.downloaded(field(&report[0], "share_link"), "doc.bin") == bytes);
}

#[test]
fn an_interrupted_download_resumes_without_counting_again() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let bytes = data(LEN, 13);
    let path = write(src.path(), "once.bin", &bytes);
    let report = cli.upload(&["--download-limit", "1", path.to_str().unwrap()]);
    let share = field(&report[0], "share_link").to_owned();
    let id = field(&report[0], "id").to_owned();

    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    let crashed = cli
        .command()
        .args(["download", &share, "-o", out_dir])
        .env("BITSTRATUS_TEST_ABORT_AFTER_PARTS", "2")
        .output()
        .unwrap();
    assert!(!crashed.status.success());
    let final_path = out.path().join("once.bin");
    let partial = out.path().join("once.bin.bitstratus-partial");
    assert!(!final_path.exists());
    let partial_len = std::fs::metadata(&partial).unwrap().len();
    assert_eq!(partial_len, 2 * 4_193_216, "two whole parts were written");

    let info = &json_lines(&cli.ok(&["--json", "info", &id]))[0];
    assert_eq!(info["download_count"], 1);
    assert_eq!(info["downloads_remaining"], 0);

    let resumed = cli.ok(&["--json", "download", &share, "-o", out_dir]);
    // Continued after the two parts on disk, with random access to the remaining records.
    assert_eq!(json_lines(&resumed)[0]["resumed_from"], 2 * 4_193_216);
    assert!(std::fs::read(&final_path).unwrap() == bytes);
    assert!(!partial.exists());
    let info = &json_lines(&cli.ok(&["--json", "info", &id]))[0];
    assert_eq!(
        info["download_count"], 1,
        "the resumed download was not counted"
    );

    // The only download was used: a new one is refused.
    let other = tempfile::tempdir().unwrap();
    let again = cli.run(&["download", &share, "-o", other.path().to_str().unwrap()]);
    assert_eq!(code(&again), 4, "{}", stderr(&again));
}
