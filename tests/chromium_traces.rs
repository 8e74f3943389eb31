//! Real-browser clicks for the verdict corpus: Debian's Chromium, driven through chromedriver,
//! opens a mail-like page and clicks a link to a real edge, as a person reading the message
//! would; the edge's click lines (user agent, `Sec-Fetch-*` presence, the JA4 of Chromium's own
//! ClientHello) become replay traces, labelled by what drove them: the click with a desktop
//! user agent is a person's navigation (`human`), the one whose user agent says
//! `HeadlessChrome` is automation that says so (`machine`).
//!
//! The test checks that the traces replay to the verdicts the edge logged, fingerprint
//! included. With `CLICKEDGE_RECORD_TRACES=FILE` it also writes them to `FILE`: that is how
//! `tests/data/verdict-corpus-recorded.jsonl` was made, which `scripts/verdict-corpus` appends
//! to the synthetic corpus.

mod common;

use common::Edge;
use common::browser::Browser;
use serde_json::{Map, Value, json};

const DOMAIN: &str = "links.example.com";
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/131.0.0.0 Safari/537.36";

/// RFC 3339 for `hours` ago.
fn hours_ago(hours: i64) -> String {
    let now = clickedge::clock::Clock::system().now();
    (time::OffsetDateTime::from(now) - time::Duration::hours(hours))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Mints link `index` of a 2-link message `message`, sent two hours ago.
async fn mint(edge: &Edge, url: &str, message: &str, index: u32) -> String {
    let (status, body) = edge
        .admin(
            reqwest::Method::POST,
            "/v1/links",
            Some(json!({
                "domain": DOMAIN, "url": url, "meta": {},
                "message": message, "index": index, "count": 2, "role": "content",
                "sent_at": hours_ago(2),
            })),
        )
        .await;
    assert_eq!(status, 201, "minting: {body}");
    edge.on_port(body["link"].as_str().unwrap())
}

/// The trace a click line stands for. The line keeps the user agent, the referer and which
/// `Sec-Fetch-*` headers came, not their values: those headers are written with the value
/// `(present)`, which is all the rules read of them.
fn trace(line: &Value, label: &str, note: &str) -> Value {
    let mut headers = Map::new();
    headers.insert("user-agent".into(), line["ua"].clone());
    if let Some(r) = line["referer"].as_str() {
        headers.insert("referer".into(), r.into());
    }
    for name in line["sec_fetch"].as_str().unwrap().split(',') {
        if !name.is_empty() {
            headers.insert(format!("sec-fetch-{name}"), "(present)".into());
        }
    }
    let m = &line["message"];
    json!({
        "time": line["ts"],
        // Loopback on the test's edge; a documentation address in the corpus.
        "address": "192.0.2.10",
        "method": line["method"],
        "headers": headers,
        "tls_fp": line["tls_fp"],
        "context": {
            // A message of its own per recording: recordings of several runs never meet.
            "message": format!("chromium-{}-{}", m["id"].as_str().unwrap(), line["ts"].as_str().unwrap()),
            "index": m["index"], "count": m["count"], "sent_at": m["sent_at"], "role": m["role"],
        },
        "minted_at": line["minted_at"],
        "label": label,
        "note": note,
    })
}

/// A page of a mail-like message with one link, opened from `data:` as a webmail's would be.
fn message_page(link: &str) -> String {
    format!("data:text/html,<p>Our spring sale</p><a id=\"l\" href=\"{link}\">See the sale</a>")
}

#[tokio::test]
async fn chromium_clicks_become_traces_that_replay_to_the_edges_verdicts() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let logs = tempfile::tempdir().unwrap();
    // A destination the browser can load, so the navigation ends without an error.
    let page = format!("http://{}/metrics", edge.admin);
    let runs = [
        (
            Some(CHROME),
            "human",
            "Chromium, desktop user agent, clicked from a message page",
        ),
        (
            None,
            "machine",
            "headless Chromium (HeadlessChrome user agent) clicking a message link",
        ),
    ];
    let mut links = Vec::new();
    for (i, (ua, _, _)) in runs.iter().enumerate() {
        let link = mint(&edge, &page, &format!("m{i}"), 0).await;
        let mut args = vec![
            format!("--host-resolver-rules=MAP {DOMAIN} 127.0.0.1"),
            "--ignore-certificate-errors".to_owned(),
        ];
        args.extend(ua.map(|ua| format!("--user-agent={ua}")));
        let browser = Browser::start_with(logs.path(), &args).await;
        browser.goto(&message_page(&link)).await;
        browser.click("#l").await;
        browser.wait_for("/metrics", "clickedge_").await;
        links.push(link);
    }
    let lines = edge.wait_for_clicks(runs.len());
    let mut traces = Vec::new();
    let mut logged = Vec::new();
    for (i, (_, label, note)) in runs.iter().enumerate() {
        let line = lines
            .iter()
            .find(|l| l["kind"] == "click" && l["message"]["id"] == format!("m{i}"))
            .unwrap_or_else(|| panic!("no click of m{i}: {lines:#?}"));
        let fp = line["tls_fp"].as_str().unwrap_or_else(|| panic!("{line}"));
        assert!(clickedge::tls::Ja4::parse(fp).is_some(), "{line}");
        // Chromium offers TLS 1.3 and h2 first: no library's hello, and no reason from it.
        assert!(fp.starts_with("t13d") && fp[8..10] == *"h2", "{line}");
        let reasons = line["reasons"].as_array().unwrap();
        assert!(
            reasons
                .iter()
                .all(|r| !r.as_str().unwrap().starts_with("tls:")),
            "{line}"
        );
        assert_eq!(line["verdict"], *label, "{line}");
        traces.push(trace(line, label, note));
        logged.push(line.clone());
    }
    // A person's click from a page: every Sec-Fetch-* header, Sec-Fetch-User included.
    assert_eq!(
        logged[0]["sec_fetch"], "dest,mode,site,user",
        "{}",
        logged[0]
    );

    // The traces replay to what the edge logged.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traces.jsonl");
    let text: String = traces.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(&file, &text).unwrap();
    let replayed: Vec<Value> = common::replayed(&file)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["kind"] == "click")
        .collect();
    assert_eq!(replayed.len(), logged.len());
    for (r, l) in replayed.iter().zip(&logged) {
        for field in ["verdict", "reasons", "sec_fetch", "tls_fp", "ua"] {
            assert_eq!(r[field], l[field], "{field}: replayed {r}\nlogged {l}");
        }
    }
    if let Some(path) = std::env::var_os("CLICKEDGE_RECORD_TRACES") {
        std::fs::write(path, text).unwrap();
    }
}
