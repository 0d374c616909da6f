//! Uploads and downloads: round trips, passwords, folders, error exit codes and what the
//! server gets to see.

use crate::common::*;

const MIB: usize = 1024 * 1024;

#[test]
fn files_round_trip_to_a_file_and_to_stdout() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    for (i, len) in [0, 1000, 9 * MIB].into_iter().enumerate() {
        let bytes = data(len, i as u64);
        let path = write(src.path(), &format!("file-{len}.bin"), &bytes);
        let report = cli.upload(&[path.to_str().unwrap()]);
        assert_eq!(report.len(), 1);
        let share = field(&report[0], "share_link");
        assert!(share.starts_with(&format!("{}/d/", server.url)), "{share}");
        assert!(field(&report[0], "manage_link").contains("/m/"));
        assert_eq!(report[0]["size"].as_u64(), Some(len as u64));

        let out = tempfile::tempdir().unwrap();
        let saved = cli.ok(&[
            "--json",
            "download",
            share,
            "-o",
            out.path().to_str().unwrap(),
        ]);
        let saved = &json_lines(&saved)[0];
        let saved_path = out.path().join(format!("file-{len}.bin"));
        assert_eq!(field(saved, "path"), saved_path.to_str().unwrap());
        assert!(
            std::fs::read(&saved_path).unwrap() == bytes,
            "file of {len} bytes"
        );
        let leftovers: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no partial file remains");

        let streamed = cli.run(&["download", share, "-o", "-"]);
        assert_eq!(code(&streamed), 0, "{}", stderr(&streamed));
        assert!(streamed.stdout == bytes, "stdout of {len} bytes");
    }
}

#[test]
fn passwords_are_required_and_checked() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let bytes = data(5 * MIB, 7);
    let path = write(src.path(), "secret.bin", &bytes);
    let report = cli.upload(&["--password", "correct horse", path.to_str().unwrap()]);
    let share = field(&report[0], "share_link").to_owned();
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();

    let wrong = cli.run(&["download", &share, "-o", out_dir, "--password", "wrong"]);
    assert_eq!(code(&wrong), 5, "{}", stderr(&wrong));
    assert!(stderr(&wrong).contains("password"), "{}", stderr(&wrong));
    let missing = cli.run(&["download", &share, "-o", out_dir]);
    assert_eq!(code(&missing), 5, "{}", stderr(&missing));
    assert!(stderr(&missing).contains("needs a password"));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);

    let right = cli
        .command()
        .args(["download", &share, "-o", out_dir])
        .env("BITSTRATUS_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert_eq!(code(&right), 0, "{}", stderr(&right));
    assert!(std::fs::read(out.path().join("secret.bin")).unwrap() == bytes);
}

#[test]
fn folders_keep_their_relative_paths() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let files = [
        ("tree/top.txt", data(10, 1)),
        ("tree/sub/deeper/a.bin", data(70_000, 2)),
        ("tree/sub/b.txt", data(0, 3)),
    ];
    for (name, bytes) in &files {
        write(src.path(), name, bytes);
    }
    let reports = cli.upload(&[src.path().join("tree").to_str().unwrap()]);
    let mut names: Vec<&str> = reports.iter().map(|r| field(r, "name")).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["tree/sub/b.txt", "tree/sub/deeper/a.bin", "tree/top.txt"]
    );
    let out = tempfile::tempdir().unwrap();
    for report in &reports {
        cli.ok(&[
            "download",
            field(report, "share_link"),
            "-o",
            out.path().to_str().unwrap(),
        ]);
    }
    for (name, bytes) in &files {
        assert!(
            std::fs::read(out.path().join(name)).unwrap() == *bytes,
            "{name}"
        );
    }
    // A second download of the same file refuses to overwrite it.
    let again = cli.run(&[
        "download",
        field(&reports[0], "share_link"),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&again), 7, "{}", stderr(&again));
    assert!(stderr(&again).contains("already exists"));
}

#[test]
fn a_lost_answer_to_a_download_start_does_not_use_up_the_link() {
    let server = Server::losing_first_download_answer();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let path = write(src.path(), "once.txt", b"a one-time file");
    let report = cli.upload(&["--download-limit", "1", path.to_str().unwrap()]);
    let share = field(&report[0], "share_link").to_owned();
    // The server counts the download but its answer is lost; the client asks again with the
    // same request name and gets its ticket instead of "not found".
    let out = tempfile::tempdir().unwrap();
    let saved = cli.ok(&["download", &share, "-o", out.path().to_str().unwrap()]);
    assert!(saved.contains("once.txt"), "{saved}");
    assert_eq!(
        std::fs::read(out.path().join("once.txt")).unwrap(),
        b"a one-time file"
    );
    let info = &json_lines(&cli.ok(&["--json", "info", field(&report[0], "id")]))[0];
    assert_eq!(info["download_count"], 1, "counted once");
}

#[test]
fn gone_files_unreachable_servers_and_refusals_have_their_exit_codes() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let path = write(src.path(), "a.txt", b"hello");
    let report = cli.upload(&[path.to_str().unwrap()]);
    let share = field(&report[0], "share_link").to_owned();
    let id = field(&report[0], "id").to_owned();

    cli.ok(&["rm", "--", &id]);
    let deleted = cli.run(&["download", &share, "-o", src.path().to_str().unwrap()]);
    assert_eq!(code(&deleted), 4, "{}", stderr(&deleted));
    assert!(stderr(&deleted).contains("not found"));

    let unknown = share.replace(&id, "AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(code(&cli.run(&["download", &unknown])), 4);

    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = format!("http://127.0.0.1:{port}");
    let unreachable = cli.run(&[
        "--retries",
        "0",
        "--server",
        &down,
        "upload",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code(&unreachable), 3, "{}", stderr(&unreachable));
    assert!(stderr(&unreachable).contains("could not reach"));
    let link = share.replace(&server.url, &down);
    assert_eq!(code(&cli.run(&["--retries", "0", "download", &link])), 3);

    // The server refuses a lifetime below one hour, and says why.
    let refused = cli.run(&["upload", "--expires", "60", path.to_str().unwrap()]);
    assert_eq!(code(&refused), 6, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("bad_request"),
        "{}",
        stderr(&refused)
    );

    let bad_link = cli.run(&["download", "https://example.org/d/x"]);
    assert_eq!(code(&bad_link), 1);
    assert_eq!(code(&cli.run(&["upload"])), 2);

    // With --json a script reads the failure from stdout, as one JSON object.
    let gone = cli.run(&[
        "--json",
        "download",
        &share,
        "-o",
        src.path().to_str().unwrap(),
    ]);
    assert_eq!(code(&gone), 4);
    let reported = &json_lines(&String::from_utf8_lossy(&gone.stdout))[..];
    assert_eq!(reported.len(), 1, "one JSON object on stdout");
    assert_eq!(reported[0]["error"]["kind"], "not_found");
    assert_eq!(reported[0]["error"]["exit_code"], 4);
    let refused = cli.run(&[
        "--json",
        "upload",
        "--expires",
        "60",
        path.to_str().unwrap(),
    ]);
    let reported = json_lines(&String::from_utf8_lossy(&refused.stdout));
    let error = &reported.last().unwrap()["error"];
    assert_eq!(
        (error["kind"].as_str(), error["status"].as_u64()),
        (Some("refused"), Some(400))
    );
    assert_eq!(error["code"], "bad_request");
}

/// Every byte under `dir`, file by file.
fn all_files(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_server_never_stores_names_plaintext_keys_or_passwords() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let name = "unmistakable-file-name-4711.txt";
    let plaintext: Vec<u8> = b"plaintext marker 0123456789 "
        .iter()
        .copied()
        .cycle()
        .take(200_000)
        .collect();
    let path = write(src.path(), name, &plaintext);
    let plain = cli.upload(&[path.to_str().unwrap()]);
    let password = "pass-word-marker-9876";
    let protected = cli.upload(&["--password", password, path.to_str().unwrap()]);

    let mut needles: Vec<Vec<u8>> = vec![
        name.as_bytes().to_vec(),
        b"plaintext marker 0123456789".to_vec(),
        password.as_bytes().to_vec(),
    ];
    for report in plain.iter().chain(&protected) {
        let share = field(report, "share_link");
        let secret = share.split('#').nth(1).unwrap();
        needles.push(secret.as_bytes().to_vec());
        let raw = crypto_wasm_secret_bytes(secret);
        needles.push(raw);
    }
    let mut files = Vec::new();
    all_files(server.data.path(), &mut files);
    assert!(
        files
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains("objects"))
    );
    for (path, bytes) in &files {
        for needle in &needles {
            assert!(
                !contains(bytes, needle),
                "{} holds {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

/// The 32 raw bytes of a base64url link secret.
fn crypto_wasm_secret_bytes(secret: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(secret)
        .unwrap()
}
