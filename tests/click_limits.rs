//! What one client can do to the click log, end to end against the real binary: headers are cut
//! to their bounds and flagged, a line never holds a raw line break, clicks past the per-address
//! rate are redirected but not logged (counted), and the log never grows past its cap (the oldest
//! files go, counted). And who may read it: click files are private whatever the umask and
//! whoever created the data dir.

mod common;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Edge;
use serde_json::json;

const DOMAIN: &str = "links.example.com";
const DEST: &str = "https://shop.example.com/";

#[tokio::test]
async fn huge_user_agent_and_referer_are_logged_cut_to_their_bounds_and_flagged() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    let client = edge.client(&[DOMAIN]);
    // As much as one request head may carry (limits.max_header_bytes, 16 KiB): what a link
    // holder used to get written into the log on every click. The referer's "é" straddles its
    // bound, so the cut must step back over the whole character.
    let ua = "u".repeat(10_000);
    let referer = format!(
        "https://a.example/{}é{}",
        "r".repeat(1005),
        "r".repeat(4_000)
    );
    let res = client
        .get(&link)
        .header("user-agent", &ua)
        .header("referer", &referer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], DEST);
    // An ordinary click next to it is logged as before: no "truncated" field.
    let res = client
        .get(&link)
        .header("user-agent", "test-agent/1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);

    let clicks = edge.wait_for_clicks(2);
    assert_eq!(clicks.len(), 2, "{clicks:?}");
    let cut = &clicks[0];
    assert_eq!(cut["ua"], "u".repeat(512));
    let kept = cut["referer"].as_str().unwrap();
    assert_eq!(kept, &referer[..1023], "cut before the two-byte character");
    assert_eq!(cut["truncated"], json!(["ua", "referer"]));
    assert_eq!(clicks[1]["ua"], "test-agent/1");
    assert!(clicks[1].get("truncated").is_none(), "{}", clicks[1]);
    // The whole line, not just the fields, is small now.
    let line_bytes: usize = common::read_click_files(&edge.data_dir().join("clicks"))
        .iter()
        .map(String::len)
        .sum();
    assert!(
        line_bytes < 2 * 1024 + 1024,
        "{line_bytes} bytes for two clicks"
    );
    assert_eq!(
        edge.metric("clickedge_click_fields_truncated_total{field=\"ua\"}")
            .await,
        1.0
    );
    assert_eq!(
        edge.metric("clickedge_click_fields_truncated_total{field=\"referer\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn unicode_line_breaks_in_headers_stay_inside_one_click_line() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    // Raw UTF-8 in a header value (obs-text): NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR, with a
    // forged record between them.
    let ua = "a\u{2028}{\"kind\":\"click\",\"url\":\"https://forged.example/\"}\u{2029}b\u{85}c";
    let value = reqwest::header::HeaderValue::from_bytes(ua.as_bytes()).unwrap();
    let res = edge
        .client(&[DOMAIN])
        .get(&link)
        .header("user-agent", value)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    edge.wait_for_clicks(1);
    let dir = edge.data_dir().join("clicks");
    let text: String = common::read_click_files(&dir).concat();
    let records: Vec<&str> = text
        .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .filter(|r| !r.is_empty())
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    let click: serde_json::Value = serde_json::from_str(records[0]).unwrap();
    assert_eq!(click["ua"], ua);
    assert_eq!(click["url"], DEST);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The click files of `dir` (logs and quarantined tails) with their modes.
fn click_file_modes(dir: &Path) -> Vec<(String, u32)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("clicks-")
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_str().unwrap().to_owned(),
                mode(&p),
            )
        })
        .collect();
    files.sort();
    files
}

/// A data dir someone else made with a permissive umask: everything in it world-readable and
/// writable, including a click log from before and a quarantined tail.
fn permissive_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let clicks = dir.path().join("data/clicks");
    std::fs::create_dir_all(&clicks).unwrap();
    let old = clicks.join("clicks-20251124T160000.000Z.jsonl");
    std::fs::write(&old, b"{\"kind\":\"click\"}\n").unwrap();
    let torn = clicks.join("clicks-20251124T160000.000Z.jsonl.torn");
    std::fs::write(&torn, b"{\"ki").unwrap();
    for p in [dir.path().join("data"), clicks.clone()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for p in [old, torn] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    dir
}

async fn click_once(edge: &Edge) {
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
    edge.wait_for_clicks(2);
}

#[tokio::test]
async fn click_log_is_private_under_a_permissive_umask_in_a_data_dir_made_by_someone_else() {
    // umask 000: without explicit modes, new files would be 0666 and directories 0777.
    let edge = Edge::start_in_with_umask(permissive_data_dir(), 0o000, "");
    click_once(&edge).await;
    let clicks = edge.data_dir().join("clicks");
    assert_eq!(mode(&clicks), 0o700);
    let files = click_file_modes(&clicks);
    assert_eq!(files.len(), 3, "{files:?}");
    for (name, mode) in &files {
        assert_eq!(*mode, 0o600, "{name}");
    }
    assert!(
        edge.stderr()
            .contains("click log directory had other permissions")
    );
}

#[tokio::test]
async fn group_read_gives_the_group_read_access_whatever_the_umask() {
    // umask 077 would take the group's bits away from anything not set explicitly.
    let edge = Edge::start_in_with_umask(
        permissive_data_dir(),
        0o077,
        "[clicks]\ngroup_read = true\n",
    );
    click_once(&edge).await;
    let clicks = edge.data_dir().join("clicks");
    assert_eq!(mode(&clicks), 0o750);
    let files = click_file_modes(&clicks);
    assert_eq!(files.len(), 3, "{files:?}");
    for (name, mode) in &files {
        assert_eq!(*mode, 0o640, "{name}");
    }
}

#[tokio::test]
async fn flood_of_large_clicks_keeps_the_log_under_its_cap_by_deleting_the_oldest_files() {
    const CAP: u64 = 16 * 1024;
    // No per-address bound: this is the flood that bound would stop short.
    let edge = Edge::start_with(&format!(
        "[clicks]\nmax_file_bytes = 4096\nmax_total_bytes = {CAP}\nflush_interval = \"1ms\"\n\
         max_clicks_per_ip_per_sec = 0\n"
    ));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    let client = edge.client(&[DOMAIN]);
    let dir = edge.data_dir().join("clicks");
    let log_bytes = || -> u64 {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            // Click files only (not the click-seq floor beside them).
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("clicks-"))
            })
            // A file closed (renamed) or deleted since the listing is counted under its new
            // name in the next poll.
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    // Each click as large as a request can make it (about 2 KiB of line), numbered in its
    // referer; forty of them are five times the cap.
    let clicks = 40;
    for i in 0..clicks {
        let res = client
            .get(&link)
            .header("user-agent", "u".repeat(10_000))
            .header(
                "referer",
                format!("https://a.example/{i:04}/{}", "r".repeat(2_000)),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        // One click per write, so the cap is checked at every line.
        let deadline = Instant::now() + Duration::from_secs(20);
        while edge.metric("clickedge_clicks_logged_total").await < f64::from(i + 1) {
            assert!(Instant::now() < deadline, "click {i} not written");
            tokio::task::yield_now().await;
        }
        assert!(log_bytes() <= CAP, "{} bytes after click {i}", log_bytes());
    }
    // What is left is the newest clicks, whole and in order.
    let kept: Vec<String> = edge
        .clicks()
        .iter()
        .map(|c| c["referer"].as_str().unwrap()[..22].to_owned())
        .collect();
    let newest: Vec<String> = (clicks - kept.len() as u32..clicks)
        .map(|i| format!("https://a.example/{i:04}"))
        .collect();
    assert!(kept.len() >= 4, "{kept:?}");
    assert_eq!(kept, newest);
    // Never silent: every deleted byte is counted, and each deletion logged.
    let deleted = edge.metric("clickedge_click_log_deleted_bytes_total").await;
    assert!(edge.metric("clickedge_click_log_deleted_files_total").await >= 4.0);
    assert_eq!(
        edge.metric("clickedge_click_log_bytes").await,
        log_bytes() as f64
    );
    assert!(deleted + log_bytes() as f64 > 4.0 * CAP as f64);
    assert!(
        edge.stderr()
            .contains("click log at clicks.max_total_bytes: deleted its oldest file"),
        "{}",
        edge.stderr()
    );
    assert_eq!(edge.metric("clickedge_clicks_dropped_total").await, 0.0);
}

/// A provider's RFC 8058 one-click unsubscribes come from a few addresses, fast: the first of
/// each link is logged whatever the address's rate (its line is the only word of it the sender
/// gets), and answered 200 only once it is on disk. One link posted in a loop is a flood like
/// any other: its repeats are answered but logged only up to the rate.
#[tokio::test]
async fn one_click_unsubscribes_are_logged_past_the_address_rate_but_not_their_repeats() {
    let edge = Edge::start_with("[clicks]\nmax_clicks_per_ip_per_sec = 1\n");
    edge.add_domain(DOMAIN).await;
    let links: u64 = 5;
    let mut minted = Vec::new();
    for i in 0..links {
        let (status, body) = edge
            .admin(
                reqwest::Method::POST,
                "/v1/links",
                Some(json!({
                    "domain": DOMAIN, "url": DEST, "message": format!("m-{i}"), "role": "unsubscribe"
                })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        minted.push(edge.on_port(body["link"].as_str().unwrap()));
    }
    let provider = edge.client(&[DOMAIN]);
    let one_click = |link: &str| {
        provider
            .post(link)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
    };
    for link in &minted {
        assert_eq!(one_click(link).await.unwrap().status(), 200);
    }
    // Answered once durable: every line is in the log already.
    let posted =
        |lines: &[serde_json::Value]| lines.iter().filter(|c| c["method"] == "POST").count() as u64;
    let lines = edge.clicks();
    assert_eq!(posted(&lines), links, "{lines:#?}");
    let unlogged_metric = "clickedge_clicks_unlogged_total{reason=\"rate\"}";
    assert_eq!(edge.metric(unlogged_metric).await, 0.0);

    let repeats: u64 = 30;
    let started = Instant::now();
    for _ in 0..repeats {
        assert_eq!(one_click(&minted[0]).await.unwrap().status(), 200);
    }
    let elapsed = started.elapsed();
    let logged = posted(&edge.clicks()) - links;
    // One a second, as for any click (the bound is computed from the measured time).
    let bound = 1 + elapsed.as_secs() + 1;
    assert!(
        (1..=bound).contains(&logged),
        "{logged} repeats logged in {elapsed:?}"
    );
    // Never silent: every repeat not logged is counted.
    let unlogged = edge.metric(unlogged_metric).await as u64;
    assert_eq!(unlogged + logged, repeats);
    assert_eq!(
        edge.metric("clickedge_requests_total{outcome=\"confirmed\"}")
            .await,
        (links + repeats) as f64
    );
}

#[tokio::test]
async fn one_address_clicking_fast_is_redirected_but_logged_only_up_to_its_rate() {
    let edge = Edge::start_with("[clicks]\nmax_clicks_per_ip_per_sec = 1\n");
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    let from = |ip: &str| {
        edge.client_builder(&[DOMAIN])
            .local_address(ip.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let flooder = from("127.0.0.1");
    let clicks: u32 = 60;
    let started = Instant::now();
    for _ in 0..clicks {
        let res = flooder.get(&link).send().await.unwrap();
        // Every click is still redirected: the bound is on the log, not on the people.
        assert_eq!(res.status(), 302);
        assert_eq!(res.headers()["location"], DEST);
    }
    let elapsed = started.elapsed();
    // Other clients are not held back by the flood: their clicks are logged. (Each address has
    // a bucket of its own, but for a 1 in 65 536 chance of sharing the flooder's: one of three
    // may.)
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert_eq!(from(ip).get(&link).send().await.unwrap().status(), 302);
    }
    let unlogged_metric = "clickedge_clicks_unlogged_total{reason=\"rate\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while edge.metric("clickedge_clicks_logged_total").await + edge.metric(unlogged_metric).await
        < f64::from(clicks + 3)
    {
        assert!(Instant::now() < deadline, "clicks not settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = edge.clicks();
    let logged_from = |ip: &str| lines.iter().filter(|c| c["ip"] == ip).count() as u64;
    let flooder_logged = logged_from("127.0.0.1");
    // One a second: the first, then one per second the flood lasted (the bound is computed from
    // the measured time, not assumed).
    let bound = 1 + elapsed.as_secs() + 1;
    assert!(
        (1..=bound).contains(&flooder_logged),
        "{flooder_logged} lines in {elapsed:?}"
    );
    let others = ["127.0.0.2", "127.0.0.3", "127.0.0.4"].map(logged_from);
    assert!(others.iter().sum::<u64>() >= 2, "{others:?}");
    // Never silent: every click not logged is counted.
    let unlogged = edge.metric(unlogged_metric).await as u64;
    assert_eq!(
        unlogged + flooder_logged + others.iter().sum::<u64>(),
        u64::from(clicks) + 3
    );
    assert!(unlogged > 0);
    assert_eq!(
        edge.metric("clickedge_requests_total{outcome=\"redirect\"}")
            .await,
        f64::from(clicks + 3)
    );
    assert!(
        edge.stderr()
            .contains("clicks over clicks.max_clicks_per_ip_per_sec"),
        "{}",
        edge.stderr()
    );
}
