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
