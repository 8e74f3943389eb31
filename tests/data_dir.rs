//! One serving process per data dir: a second `clickedge serve` on a data dir in use refuses to
//! start and names the first; client commands are unaffected.

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
