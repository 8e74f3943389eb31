//! Errors that teach an operator what to do: an ACME directory that cannot be reached is a
//! warning at start, not a surprise at the first order; config errors show the bad value.

mod common;

use std::process::Command;

use common::{Edge, bin};

#[test]
fn an_unreachable_acme_directory_is_a_warning_at_start() {
    // A port nothing listens on: taken, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut edge = Edge::start_with(&format!(
        "[tls]\nissuer = \"acme\"\n[acme]\ndirectory = \"https://127.0.0.1:{port}/dir\"\n"
    ));
    let log = edge.wait_for_log("could not reach the CA", 1);
    assert!(log.contains(&format!("127.0.0.1:{port}/dir")), "{log}");
    assert!(edge.alive(), "a warning, not a refusal to start");
}

#[test]
fn a_config_error_shows_the_line_with_a_caret_under_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, "[clicks]\nmax_file_bytes = \"64 megs\"\n").unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    for part in [
        "edge.toml",
        "\n2 | max_file_bytes = \"64 megs\"\n",
        "^^^^^^^^^",
        "expected a positive number of bytes, e.g. 67108864 or \"64MiB\"",
    ] {
        assert!(err.contains(part), "missing {part:?} in:\n{err}");
    }
}
