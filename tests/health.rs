//! Health for probes and load balancers: `/healthz` (alive) and `/readyz` (ready; 503 from the
//! first signal on, while the edge still serves for `shutdown_delay`), `clickedge health` for
//! images without curl, and JSON logs: one object per line, stable field names, no token.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Edge;
use serde_json::{Value, json};

const DOMAIN: &str = "links.example.com";

async fn status(url: String) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn readyz_turns_503_at_the_signal_while_the_edge_still_serves_for_shutdown_delay() {
    let mut edge = Edge::start_with("shutdown_delay = \"4s\"\n");
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/a", json!({})).await;
    let readyz = format!("http://{}/readyz", edge.admin);
    assert_eq!(status(readyz.clone()).await, Some(200));
    assert_eq!(edge.metric("clickedge_ready").await, 1.0);

    edge.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(3);
    while status(readyz.clone()).await != Some(503) {
        assert!(
            Instant::now() < deadline,
            "/readyz still ready after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Draining: not ready, but alive and serving clicks.
    assert_eq!(edge.metric("clickedge_ready").await, 0.0);
    assert_eq!(
        status(format!("http://{}/healthz", edge.admin)).await,
        Some(200)
    );
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
    assert!(edge.wait().success());
    assert_eq!(edge.clicks().len(), 1, "the click made while draining");
}

#[tokio::test]
async fn health_command_exits_zero_for_a_ready_edge_and_one_without_an_edge() {
    let edge = Edge::start();
    let run = |admin: String| {
        Command::new(common::bin())
            .args(["health", "--admin", &admin])
            .output()
            .expect("running clickedge health")
    };
    let ok = run(format!("http://{}", edge.admin));
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ready");
    let port = common::pebble::free_tcp_port();
    let down = run(format!("http://127.0.0.1:{port}"));
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    // What failed, once: no layer after layer of the HTTP client repeating the URL.
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(err.contains("is `clickedge serve` running?"), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
    assert_eq!(
        err.matches(&format!("127.0.0.1:{port}")).count(),
        1,
        "{err}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_stable_fields_and_never_the_token() {
    let mut edge = Edge::start_with("log_format = \"json\"\n");
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/a", json!({})).await;
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
    let token = edge.token.clone();
    assert!(edge.terminate().success());
    let stderr = edge.stderr();
    let mut lines = 0;
    for line in stderr.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(v[field].is_string(), "no {field}: {line}");
        }
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
        lines += 1;
    }
    assert!(lines >= 2, "{stderr}");
    assert!(!stderr.contains(&token), "the admin token was logged");
}

/// With JSON logs every line the edge writes is a JSON object, stdout's banner and the error a
/// start fails with included: the journal and kubelet mix stdout into stderr, and a pipeline
/// reading JSON lines would drop the reason a pod crash-loops.
#[test]
fn with_json_logs_the_banner_and_a_failed_start_are_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "log_format = \"json\"\ndata_dir = \"{}\"\n[listen]\nhttps = \"127.0.0.1:0\"\n\
             http = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(common::bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let banner: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(banner["message"], "listening", "{banner}");
    assert!(banner["https"][0].as_str().is_some(), "{banner}");

    // A data dir that cannot be made: the start fails once logging is up.
    std::fs::write(dir.path().join("file"), "").unwrap();
    std::fs::write(
        &config,
        format!(
            "log_format = \"json\"\ndata_dir = \"{}\"\n",
            dir.path().join("file").join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(common::bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last: Value = stderr
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("not JSON: {stderr}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("error: ")),
        "{last}"
    );
}

#[tokio::test]
async fn log_format_flag_wins_over_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "log_format = \"json\"\n").unwrap();
    // A bad value is refused naming the choices, before anything starts.
    let out = Command::new(common::bin())
        .args(["serve", "--log-format", "yaml", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("json") && err.contains("text"), "{err}");
    let out = Command::new(common::bin())
        .args(["serve"])
        .arg("--config")
        .arg(&config)
        .env("CLICKEDGE_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CLICKEDGE_LOG_FORMAT=\"xml\""),
        "{out:?}"
    );
    // Written before the command, as it could be when every command listed it, it still
    // applies: the start's error comes as a JSON event.
    let dir2 = tempfile::tempdir().unwrap();
    let failing = dir2.path().join("c.toml");
    std::fs::write(
        &failing,
        "[store]\npath = \"/nonexistent/x.db\"\n[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = Command::new(common::bin())
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&failing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"level\":\"ERROR\""), "{err}");
    // Not UTF-8: refused the same (it fell back to the config's format in silence).
    let out = Command::new(common::bin())
        .args(["serve"])
        .arg("--config")
        .arg(&config)
        .env(
            "CLICKEDGE_LOG_FORMAT",
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"js\xffon"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CLICKEDGE_LOG_FORMAT=\"js\\xFFon\""),
        "{out:?}"
    );
}
