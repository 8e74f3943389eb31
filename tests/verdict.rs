//! Human or machine through the real edge: every request shape gets the same 302 as a browser,
//! and the click line says what the rules made of it and why; a burst across the links of one
//! message writes revision lines naming the earlier clicks by `click_id`; and a real Chromium
//! (headless, through chromedriver) following a link comes out as the rules say it should.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::browser::Browser;
use common::{Edge, an_hour_ago};
use serde_json::{Value, json};

const DOMAIN: &str = "links.example.com";
const DEST: &str = "https://shop.example.com/sale";
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/131.0.0.0 Safari/537.36";
/// A loopback address the test's network catalogue names as a scanner.
const SCANNER: &str = "127.0.0.3";

/// An edge whose catalogue adds `127.0.0.3/32` as a certain click scanner.
async fn start() -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let networks = dir.path().join("networks.txt");
    std::fs::write(
        &networks,
        format!("{SCANNER}/32  test-scanner  clicks  certain\n"),
    )
    .unwrap();
    let config = format!("[clicks]\nnetworks_file = \"{}\"\n", networks.display());
    let edge = Edge::start_in(dir, &config);
    edge.add_domain(DOMAIN).await;
    edge
}

/// Mints link `index` of `count` of message `message`, sent an hour ago.
async fn mint(edge: &Edge, message: &str, index: u32, count: u32) -> String {
    mint_to(edge, &format!("{DEST}/{index}"), message, index, count).await
}

/// Mints a link to `url`, link `index` of `count` of message `message`, sent an hour ago.
async fn mint_to(edge: &Edge, url: &str, message: &str, index: u32, count: u32) -> String {
    let (status, body) = edge
        .admin(
            reqwest::Method::POST,
            "/v1/links",
            Some(json!({
                "domain": DOMAIN, "url": url, "meta": {},
                "message": message, "index": index, "count": count, "sent_at": an_hour_ago(),
            })),
        )
        .await;
    assert_eq!(status, 201, "minting: {body}");
    edge.on_port(body["link"].as_str().unwrap())
}

/// A request the way a browser's navigation from a mail client sends it.
fn browser_get(client: &reqwest::Client, link: &str) -> reqwest::RequestBuilder {
    browser(client, reqwest::Method::GET, link)
}

fn browser(
    client: &reqwest::Client,
    method: reqwest::Method,
    link: &str,
) -> reqwest::RequestBuilder {
    client
        .request(method, link)
        .header("user-agent", CHROME)
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-user", "?1")
}

fn clicks_only(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["kind"] == "click").collect()
}

#[tokio::test]
async fn every_request_shape_gets_the_browsers_302_and_its_verdict_and_reasons_are_logged() {
    let edge = start().await;
    let client = edge.client(&[DOMAIN]);
    let scanner_client = edge
        .client_builder(&[DOMAIN])
        .local_address(SCANNER.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    // One message per request, so no burst joins them.
    let mut links = Vec::new();
    for m in 0..5 {
        links.push(mint(&edge, &format!("shape-{m}"), 0, 1).await);
    }
    let requests = [
        browser_get(&client, &links[0]),
        browser(&client, reqwest::Method::HEAD, &links[1]),
        browser_get(&client, &links[2]).header("sec-purpose", "prefetch;prerender"),
        client.get(&links[3]).header("user-agent", "curl/8.5.0"),
        browser_get(&scanner_client, &links[4]),
    ];
    for (i, req) in requests.into_iter().enumerate() {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 302, "request {i}");
        assert_eq!(
            res.headers()["location"],
            format!("{DEST}/0"),
            "request {i}"
        );
        assert_eq!(res.headers()["cache-control"], "no-store", "request {i}");
    }
    let lines = edge.wait_for_clicks(5);
    let got: Vec<(String, Value, Value, &str)> = clicks_only(&lines)
        .into_iter()
        .map(|c| {
            assert_eq!(c["rules"], "r6+n2");
            (
                c["message"]["id"].as_str().unwrap().to_owned(),
                c["verdict"].clone(),
                c["reasons"].clone(),
                c["ip"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("shape-0".into(), json!("human"), json!([]), "127.0.0.1"),
            (
                "shape-1".into(),
                json!("machine"),
                json!(["head"]),
                "127.0.0.1"
            ),
            (
                "shape-2".into(),
                json!("machine"),
                json!(["prefetch"]),
                "127.0.0.1"
            ),
            (
                "shape-3".into(),
                json!("machine"),
                json!(["ua:curl"]),
                "127.0.0.1"
            ),
            (
                "shape-4".into(),
                json!("machine"),
                json!(["net:test-scanner"]),
                SCANNER
            ),
        ]
    );
    // Counted as the lines are written: the file may show them a moment before the counter.
    let machine = "clickedge_clicks_by_verdict_total{verdict=\"machine\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while edge.metric(machine).await < 4.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "machine clicks not counted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(edge.metric(machine).await, 4.0);
}

/// Browsers send `Sec-Fetch-*` only to HTTPS URLs: a Chrome user agent without any is held
/// against a click over HTTPS (`no-sec-fetch`), never against one over plain HTTP, where a real
/// Chrome sends none either.
#[tokio::test]
async fn no_sec_fetch_is_held_against_https_clicks_only() {
    let edge = start().await;
    let plain_link = mint(&edge, "plain-1", 0, 1).await;
    let https_link = mint(&edge, "https-1", 0, 1).await;
    // Before any HTTPS handshake the name has no certificate, so the plain HTTP listener serves
    // the click rather than upgrading it.
    let path = &plain_link[plain_link.find("/c/").unwrap()..];
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://{}{path}", edge.http))
        .header("host", DOMAIN)
        .header("user-agent", CHROME)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let client = edge.client(&[DOMAIN]);
    let res = client
        .get(&https_link)
        .header("user-agent", CHROME)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    let lines = edge.wait_for_clicks(2);
    let clicks = clicks_only(&lines);
    let of = |m: &str| {
        clicks
            .iter()
            .find(|c| c["message"]["id"] == m)
            .unwrap_or_else(|| panic!("no click of {m}: {lines:#?}"))
    };
    let p = of("plain-1");
    assert_eq!(p["tls"], Value::Null, "{p}");
    assert_eq!(
        (&p["verdict"], &p["reasons"], &p["sec_fetch"]),
        (&json!("human"), &json!([]), &json!("")),
        "{p}"
    );
    let h = of("https-1");
    assert_eq!(h["tls"], "1.3", "{h}");
    assert_eq!(
        (&h["verdict"], &h["reasons"]),
        (&json!("unknown"), &json!(["no-sec-fetch"])),
        "{h}"
    );
}

#[tokio::test]
async fn a_burst_across_links_of_one_message_revises_the_earlier_clicks_by_click_id() {
    let edge = start().await;
    let client = edge.client(&[DOMAIN]);
    let mut links = Vec::new();
    for i in 0..3 {
        links.push(mint(&edge, "newsletter-7", i, 8).await);
    }
    // A person's click, then a scanner following the other links within the burst window.
    for link in &links {
        let res = browser_get(&client, link).send().await.unwrap();
        assert_eq!(res.status(), 302);
    }
    let lines = edge.wait_for_clicks(4);
    let clicks = clicks_only(&lines);
    assert_eq!(clicks.len(), 3, "{lines:#?}");
    assert_eq!(clicks[0]["verdict"], "human");
    assert_eq!(clicks[1]["verdict"], "machine");
    assert_eq!(clicks[1]["reasons"], json!(["burst"]));
    let revisions: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "verdict").collect();
    assert_eq!(
        revisions.len(),
        1,
        "the first click is revised once: {lines:#?}"
    );
    let r = revisions[0];
    assert_eq!(r["click_id"], clicks[0]["click_id"]);
    assert_eq!(r["verdict"], "machine");
    assert_eq!(r["reasons"], json!(["burst"]));
    assert_eq!(r["rules"], "r6+n2");
    // Its own id, from the same sequence, different from every click's.
    let own = r["revision_id"].as_str().unwrap();
    assert!(clicks.iter().all(|c| c["click_id"] != own), "{lines:#?}");
    // Written after the click it names.
    let at = |v: &Value| lines.iter().position(|l| l == v).unwrap();
    assert!(at(r) > at(clicks[0]));
    // The metric settles once the batch is written, as the line is.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while edge.metric("clickedge_verdict_revisions_total").await != 1.0 {
        assert!(std::time::Instant::now() < deadline, "revision not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Headless Chromium says so in its user agent (`HeadlessChrome`), so the rules take it for a
/// machine (`ua:headless`), as they should a headless scanner; the same browser with the user
/// agent a desktop Chrome sends is a person: its navigation has every `Sec-Fetch-*` header.
#[tokio::test]
async fn real_chromium_clicks_are_judged_by_their_user_agent_and_fetch_metadata() {
    let edge = start().await;
    let logs = tempfile::tempdir().unwrap();
    let args = |ua: Option<&str>| {
        let mut a = vec![
            format!("--host-resolver-rules=MAP {DOMAIN} 127.0.0.1"),
            "--ignore-certificate-errors".to_owned(),
        ];
        a.extend(ua.map(|ua| format!("--user-agent={ua}")));
        a
    };
    // A destination the browser can load, so the navigation ends without an error.
    let page = format!("http://{}/metrics", edge.admin);
    let headless = mint_to(&edge, &page, "chromium-1", 0, 1).await;
    let desktop = mint_to(&edge, &page, "chromium-2", 0, 1).await;
    {
        let browser = Browser::start_with(logs.path(), &args(None)).await;
        browser.goto(&headless).await;
    }
    {
        let browser = Browser::start_with(logs.path(), &args(Some(CHROME))).await;
        browser.goto(&desktop).await;
    }
    let lines = edge.wait_for_clicks(2);
    let clicks = clicks_only(&lines);
    let of = |m: &str| {
        clicks
            .iter()
            .find(|c| c["message"]["id"] == m && c["method"] == "GET")
            .unwrap_or_else(|| panic!("no click of {m}: {lines:#?}"))
    };
    let h = of("chromium-1");
    assert!(h["ua"].as_str().unwrap().contains("HeadlessChrome"), "{h}");
    assert_eq!(h["verdict"], "machine", "{h}");
    assert_eq!(h["reasons"], json!(["ua:headless"]), "{h}");
    let d = of("chromium-2");
    assert_eq!(d["ua"], CHROME);
    assert_eq!(d["verdict"], "human", "{d}");
    assert_eq!(d["reasons"], json!([]), "{d}");
}
