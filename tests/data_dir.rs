//! One serving process per data dir: a second `clickedge serve` on a data dir in use refuses to
//! start and names the first (so does a second one on a SQLite store in use); client commands
//! are unaffected.

mod common;

use std::process::Command;

use common::{Edge, bin};

#[tokio::test]
async fn a_second_serve_on_a_data_dir_in_use_refuses_naming_the_first() {
    let mut edge = Edge::start();
    // The config listens on port 0: only the data dir is shared.
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(edge.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    for part in [
        "is in use by another clickedge serve".to_owned(),
        format!("pid {}", edge.pid()),
        format!("kill -TERM {}", edge.pid()),
    ] {
        assert!(err.contains(&part), "missing {part:?} in:\n{err}");
    }
    assert!(
        String::from_utf8(out.stdout).unwrap().is_empty(),
        "no ready line"
    );

    // Client commands talk to the admin API and take no lock.
    edge.cli(&["domain", "list"]);

    // Once the first has stopped, the data dir is free again.
    assert!(edge.alive());
    let dir = edge.stop_keep_dir();
    let again = Edge::start_in(dir, "");
    assert_eq!(again.admin.ip().to_string(), "127.0.0.1");
}

/// Two edges with data dirs of their own on one SQLite file would each take themselves for its
/// only node: the second refuses, naming the key and the first's pid.
#[tokio::test]
async fn a_second_serve_on_a_sqlite_file_in_use_refuses_naming_store_path() {
    let shared = tempfile::tempdir().unwrap();
    let store = shared.path().join("edge.db");
    let store_table = format!("[store]\npath = \"{}\"\n", store.display());
    let edge = Edge::start_with(&store_table);
    let other = tempfile::tempdir().unwrap();
    let config = other.path().join("clickedge.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{store_table}",
            other.path().join("data").display()
        ),
    )
    .unwrap();
    let mut second = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A second edge that starts would serve on: not waited for forever.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second edge started on a SQLite file in use");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    for part in [
        format!("store.path {} is in use", store.display()),
        format!("pid {}", edge.pid()),
        "store.url".to_owned(),
    ] {
        assert!(err.contains(&part), "missing {part:?} in:\n{err}");
    }
}
