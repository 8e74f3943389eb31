//! An edge that must refuse to start: its stderr, bounded in time.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::bin;

/// Runs `clickedge serve` with `config` and `env`, expecting it to refuse to start; returns its
/// stderr. Bounded: a start that does not end within 30 s fails the test.
pub fn refused_start(config: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(bin());
    command
        .env_remove("CLICKEDGE_SEAL_KEY")
        .envs(env.iter().copied());
    refused_start_as(
        command,
        dir.path(),
        &format!(
            "[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{config}"
        ),
    )
}

/// [`refused_start`] through `command` (the binary, or a program that runs it as another user:
/// `serve --config FILE` is appended), with the data dir under `dir` and `config` after it.
pub fn refused_start_as(mut command: Command, dir: &Path, config: &str) -> String {
    let path = dir.join("clickedge.toml");
    std::fs::write(
        &path,
        format!("data_dir = \"{}\"\n{config}", dir.join("data").display()),
    )
    .unwrap();
    let mut child = command
        .args(["serve", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning clickedge");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("clickedge serve neither started nor refused within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
