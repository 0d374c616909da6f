//! `ls`, `info`, `set-expiry`, `rm`, `config` and the local files' permissions.

use crate::common::*;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn uploads_are_listed_inspected_extended_and_removed() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let a = write(src.path(), "a.txt", b"first");
    let b = write(src.path(), "b.txt", b"second file");
    let first = cli.upload(&["--download-limit", "3", a.to_str().unwrap()]);
    let second = cli.upload(&["--password", "pw-123", b.to_str().unwrap()]);
    let (id_a, id_b) = (field(&first[0], "id"), field(&second[0], "id"));

    let listed: serde_json::Value = serde_json::from_str(&cli.ok(&["--json", "ls"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(field(&listed[0], "id"), id_a);
    assert_eq!(field(&listed[0], "name"), "a.txt");
    assert_eq!(
        field(&listed[0], "share_link"),
        field(&first[0], "share_link")
    );
    assert_eq!(listed[1]["password"], true);
    let table = cli.ok(&["ls"]);
    assert!(table.contains("a.txt") && table.contains(id_b), "{table}");

    // By a unique prefix of the id.
    let info = &json_lines(&cli.ok(&["--json", "info", &id_a[..8]]))[0];
    assert_eq!(field(info, "state"), "complete");
    assert_eq!(field(info, "name"), "a.txt");
    assert_eq!(info["download_limit"], 3);
    assert_eq!(info["downloads_remaining"], 3);
    assert_eq!(info["download_count"], 0);

    let before = now();
    let set = &json_lines(&cli.ok(&["--json", "set-expiry", id_b, "2h"]))[0];
    let after = now();
    let expires_at = set["expires_at"].as_i64().unwrap();
    assert!(
        (before + 7200..=after + 7200).contains(&expires_at),
        "{set}"
    );
    let info = &json_lines(&cli.ok(&["--json", "info", id_b]))[0];
    assert_eq!(info["expires_at"].as_i64(), Some(expires_at));
    assert_eq!(info["password"], true);
    assert_eq!(field(info, "name"), "b.txt", "from the local list");

    let manage_link = field(&first[0], "manage_link").to_owned();
    cli.ok(&["rm", "--", id_a]);
    let listed: serde_json::Value = serde_json::from_str(&cli.ok(&["--json", "ls"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let gone = cli.run(&["info", &manage_link]);
    assert_eq!(code(&gone), 4, "{}", stderr(&gone));
    let unknown = cli.run(&["info", id_a]);
    assert_eq!(code(&unknown), 2, "{}", stderr(&unknown));

    // A manage link works without the local list (e.g. from another machine).
    let elsewhere = Cli::new(&server);
    let info = &json_lines(&elsewhere.ok(&["--json", "info", field(&second[0], "manage_link")]))[0];
    assert_eq!(field(info, "id"), id_b);
}

#[cfg(unix)]
#[test]
fn local_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;

    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    let a = write(src.path(), "a.txt", b"x");
    cli.upload(&[a.to_str().unwrap()]);
    let other = url_of_other_server();
    cli.ok(&["config", "--set-server", &other]);
    let shown = &json_lines(
        &cli.command()
            .env_remove("BITSTRATUS_URL")
            .args(["--json", "config"])
            .output()
            .map(|o| String::from_utf8(o.stdout).unwrap())
            .unwrap(),
    )[0];
    assert_eq!(field(shown, "server"), other);

    let mode = |name: &str| {
        std::fs::metadata(cli.config.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("uploads.json"), 0o600);
    assert_eq!(mode("config.json"), 0o600);
    assert_eq!(mode("pending"), 0o700);
}

fn url_of_other_server() -> String {
    "https://files.example.org".to_owned()
}

#[test]
fn uploads_finishing_at_once_all_stay_in_the_list() {
    let server = Server::start();
    let cli = Cli::new(&server);
    let src = tempfile::tempdir().unwrap();
    // Six uploads at once, each pausing between reading the list and writing it back: without
    // the lock each would write the list as it read it, and all but one entry would be lost.
    let running: Vec<_> = (0..6)
        .map(|i| {
            let path = write(
                src.path(),
                &format!("f{i}.txt"),
                format!("file {i}").as_bytes(),
            );
            cli.command()
                .env("BITSTRATUS_TEST_STORE_DELAY_MS", "300")
                .args(["--json", "upload", path.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids: Vec<String> = running
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let report = json_lines(&String::from_utf8_lossy(&output.stdout));
            field(&report[0], "id").to_owned()
        })
        .collect();
    let listed: serde_json::Value = serde_json::from_str(&cli.ok(&["--json", "ls"])).unwrap();
    let mut in_list: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|u| field(u, "id").to_owned())
        .collect();
    ids.sort();
    in_list.sort();
    assert_eq!(in_list, ids, "every upload's owner token was kept");
}
