//! What the bench checks beside the load runs: the memory idle connections hold, and the click
//! log against the clicks answered.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use super::*;

/// Opens `n` idle h2 connections (one click each) and holds them; returns the server's RSS
/// growth per 10 000 connections (KiB), the connections held, and the 302s received.
pub(super) fn hold_idle(
    exe: &Path,
    s: &mut Server,
    urls: &Path,
    roots: &Path,
    n: usize,
    pin: bool,
) -> Result<(f64, u64, u64), String> {
    eprintln!("e2e: {}: opening {n} idle TLS connections", s.name);
    let before = s.proc.rss_kib();
    let mut cmd = procs::pinned(pin.then_some(CLIENT_CORE), exe);
    cmd.arg("loadgen")
        .arg("--target")
        .arg(s.https.to_string())
        .arg("--urls-file")
        .arg(urls)
        .arg("--ca")
        .arg(roots)
        .args([
            "--mode",
            "hold",
            "--http",
            "2",
            "--kx",
            "x25519",
            "--insecure-no-verify",
            "-c",
            "64",
        ])
        .args([
            "--timeout",
            "30s",
            "--duration",
            "120s",
            "--no-progress",
            "--json",
        ])
        .arg("--connections")
        .arg(n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let dir = s
        .proc
        .log
        .parent()
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    let mut child = procs::Proc::spawn("loadgen (hold)", cmd, &dir.join("hold.log"))?;
    let stdout = child.child().stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(120)).map_err(|_| {
        format!(
            "connections not all open within 120 s:\n{}",
            child.log_tail()
        )
    })?;
    // "holding N connections, K ok"
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (held, ok) = match nums.as_slice() {
        [h, k, ..] => (*h, *k),
        _ => return Err(format!("unexpected line from the load generator: {line:?}")),
    };
    // Let the server finish its side of the last handshakes and requests.
    std::thread::sleep(Duration::from_millis(500));
    let during = s.proc.rss_kib();
    child.stop(Duration::from_secs(5));
    if held == 0 {
        return Err("no connection held".into());
    }
    let per_10k = during.saturating_sub(before) as f64 * 10_000.0 / held as f64;
    eprintln!(
        "e2e: {}: {held} idle connections: RSS {:.1} → {:.1} MiB ({:.1} MiB per 10 000)",
        s.name,
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        per_10k / 1024.0
    );
    Ok((per_10k, held, ok))
}

/// Polls clickedge's click log until it holds `sent` lines (or 20 s pass) and reads its metrics.
pub(super) fn check_clicks(
    rt: &tokio::runtime::Runtime,
    s: &Server,
    sent: u64,
    shipping: bool,
) -> Result<String, String> {
    let dir = s.data_dir.as_ref().expect("clickedge").join("clicks");
    let lines = peers::wait_for_click_lines(&dir, sent);
    let scrape = || {
        rt.block_on(async {
            let url = format!("http://{}/metrics", s.admin.expect("admin"));
            match reqwest::get(&url).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        })
    };
    let value = |metrics: &str, name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .map_or_else(|| "?".into(), |v| v.trim().to_owned())
    };
    // With a stream: how long after the last run the shipper takes to have every byte
    // acknowledged (bounded: 120 s).
    let drained = shipping.then(|| {
        let start = Instant::now();
        let mut last = scrape();
        while value(&last, "clickedge_click_unshipped_bytes") != "0"
            && start.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(100));
            last = scrape();
        }
        (start.elapsed(), last)
    });
    let metrics = scrape();
    let metric = |name: &str| value(&metrics, name);
    let shipped = drained.map_or_else(String::new, |(waited, at_end)| {
        format!(
            "; shipping: unshipped bytes {} after waiting {:.1} s for the drain, \
             clickedge_clicks_shipped_total {}, duplicates {}, errors {}",
            value(&at_end, "clickedge_click_unshipped_bytes"),
            waited.as_secs_f64(),
            metric("clickedge_clicks_shipped_total"),
            metric("clickedge_click_ship_duplicates_total"),
            metric("clickedge_click_ship_errors_total"),
        )
    });
    let verdict = if lines == sent {
        "every click logged"
    } else {
        "MISMATCH"
    };
    Ok(format!(
        "clickedge clicks: {sent} answered 302 to the load generator, {lines} lines in its click log ({verdict}); \
         clickedge_clicks_dropped_total {}, clickedge_clicks_logged_total {}, requests_total{{outcome=\"redirect\"}} {}{shipped}",
        metric("clickedge_clicks_dropped_total"),
        metric("clickedge_clicks_logged_total"),
        metric("clickedge_requests_total{outcome=\"redirect\"}"),
    ))
}

/// `clicks`, if `s` is clickedge (whose click log is checked against them at the end), else 0.
pub(super) fn clickedge_only(s: &Server, clicks: u64) -> u64 {
    if s.name == "clickedge" { clicks } else { 0 }
}
