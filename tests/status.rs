//! Customers' status pages on a real edge over HTTPS, DNS from pebble-challtestsrv: the share
//! address opens the page of its one domain, with the fix as records, the edge's resolver and
//! admin token nowhere; `POST` checks again at most once per 10 s; once the DNS is fixed and the
//! certificate issued the page says ready, with the issuer, the expiry and a test link that
//! redirects through the domain to a page saying it works. A wrong, expired or revoked token, a
//! link token, or a removed domain gets a plain 404 (an open page then says the address no
//! longer opens); a share token never opens as a link.

mod common;

use std::time::Duration;

use common::Edge;
use common::dns::Dns;
use common::pebble::free_tcp_port;
use reqwest::Method;
use serde_json::{Value, json};

const TARGET: &str = "edge.example.net";
const STATUS: &str = "status.edge.example.net";
const BROKEN: &str = "broken.example.com";
const OTHER: &str = "other.example.com";

async fn start() -> (Dns, Edge) {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    // The public name points at the edge like any domain (else its checks hold back its
    // certificate).
    dns.set_cname(STATUS, TARGET).await;
    let (https, http) = (free_tcp_port(), free_tcp_port());
    let config = format!(
        "[onboarding]\ncname_target = \"{TARGET}\"\naddresses = [\"127.0.0.1\"]\n\
         dns_servers = [\"{}\"]\nhttp_port = {http}\ndanger_allow_private_addresses = true\n\
         public_url = \"https://{STATUS}/\"\n",
        dns.addr
    );
    let edge = Edge::start_in_at(tempfile::tempdir().unwrap(), &config, https, http);
    (dns, edge)
}

/// The share address of `name`, on the edge's port, and its answer.
async fn share(edge: &Edge, name: &str, ttl: &str) -> (String, Value) {
    let (status, body) = edge
        .admin(
            Method::POST,
            &format!("/v1/domains/{name}/share"),
            Some(json!({ "ttl": ttl })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("https://{STATUS}/s/")), "{url}");
    (edge.on_port(url), body)
}

fn client(edge: &Edge) -> reqwest::Client {
    edge.client(&[STATUS, BROKEN, OTHER])
}

async fn get(edge: &Edge, url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let res = client(edge).get(url).send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.text().await.unwrap())
}

async fn post(edge: &Edge, url: &str) -> (u16, String) {
    let res = client(edge).post(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_page_shows_its_domain_rechecks_and_turns_ready_with_a_test_link() {
    let (dns, edge) = start().await;
    dns.add_a(BROKEN, &["192.0.2.7"]).await;
    dns.set_cname(OTHER, TARGET).await;
    edge.add_domain(BROKEN).await;
    edge.add_domain(OTHER).await;
    let (url, body) = share(&edge, BROKEN, "1h").await;
    assert!(
        body["expires_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );

    let (status, headers, html) = get(&edge, &url).await;
    assert_eq!(status, 200, "{html}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(html.contains(BROKEN), "{html}");
    // The fix as records to copy: the stray A record to delete, the CNAME to add.
    assert!(html.contains("data-copy=\"192.0.2.7\""), "{html}");
    assert!(html.contains("data-copy=\"edge.example.net\""), "{html}");
    assert!(html.contains("DNS only"), "{html}");
    // Nothing of anything else: no other domain, no token, not the edge's resolver.
    assert!(!html.contains(OTHER), "{html}");
    assert!(!html.contains(&edge.token), "{html}");
    assert!(!html.contains(&dns.addr.to_string()), "{html}");
    // No external resource: every src/href is on this origin. Those it has answer HEAD too.
    for attr in ["src=\"http", "href=\"http"] {
        assert!(!html.contains(attr), "{attr} in {html}");
    }
    let origin = &url[..url.rfind("/s/").unwrap()];
    for asset in ["/s/style.css", "/s/page.js"] {
        assert!(html.contains(asset), "{asset} in {html}");
        let res = client(&edge)
            .head(format!("{origin}{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "HEAD {asset}");
    }

    let json_url = format!("{url}.json");
    let (status, headers, text) = get(&edge, &json_url).await;
    assert_eq!(status, 200);
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["name"], BROKEN);
    assert_eq!(v["ready"], false);
    let points = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "points-to-edge")
        .unwrap();
    assert_eq!(points["status"], "fail");
    assert_eq!(points["fix_records"][1]["value"], TARGET, "{points:#}");

    // Checking again: once, then the wait is shown.
    let (status, html) = post(&edge, &url).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Checked again"), "{html}");
    let (status, html) = post(&edge, &url).await;
    assert_eq!(status, 429, "{html}");
    assert!(html.contains("you can check again in"), "{html}");

    // The customer fixes the DNS; the next check (after the wait) passes.
    dns.clear_a(BROKEN).await;
    dns.set_cname(BROKEN, TARGET).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (status, text) = post(&edge, &json_url).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "pass" || c["id"] == "certificate"),
        "{v:#}"
    );
    // The first HTTPS request for the name gets its certificate.
    let _ = client(&edge)
        .get(format!("https://{BROKEN}:{}/", edge.https.port()))
        .send()
        .await
        .unwrap();
    let (_, _, text) = get(&edge, &json_url).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ready"], true, "{v:#}");
    assert!(v["certificate"]["issuer"].is_string(), "{v:#}");
    assert!(v["certificate"]["expires_at"].is_string(), "{v:#}");

    let (_, _, html) = get(&edge, &url).await;
    assert!(html.contains("is ready"), "{html}");
    let start = html.find("id=\"test-link\" href=\"").unwrap() + "id=\"test-link\" href=\"".len();
    let link = &html[start..start + html[start..].find('"').unwrap()];
    assert!(link.starts_with(&format!("https://{BROKEN}/c/")), "{link}");
    let res = client(&edge).get(edge.on_port(link)).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let works = res.headers()["location"].to_str().unwrap();
    assert_eq!(works, format!("https://{STATUS}/s/works"));
    let res = client(&edge).get(edge.on_port(works)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("It works"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_expired_revoked_and_foreign_tokens_get_a_plain_404() {
    let (dns, edge) = start().await;
    dns.set_cname(BROKEN, TARGET).await;
    edge.add_domain(BROKEN).await;
    let (url, _) = share(&edge, BROKEN, "1h").await;
    assert_eq!(get(&edge, &url).await.0, 200);
    let plain_404 = |(status, headers, text): (u16, reqwest::header::HeaderMap, String)| {
        assert_eq!(status, 404, "{text}");
        assert_eq!(text, "not found\n");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
    };

    // Altered: one character changed.
    let mut altered = url.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    plain_404(get(&edge, &altered).await);
    plain_404(get(&edge, &format!("https://{STATUS}:{}/s/", edge.https.port())).await);
    // A link's token is no share token, and a share token is no link.
    let link = edge.mint(BROKEN, "https://example.com/", json!({})).await;
    let link_token = link.rsplit('/').next().unwrap();
    plain_404(
        get(
            &edge,
            &format!("https://{STATUS}:{}/s/{link_token}", edge.https.port()),
        )
        .await,
    );
    let share_token = url.rsplit('/').next().unwrap();
    let res = client(&edge)
        .get(format!(
            "https://{BROKEN}:{}/c/{share_token}",
            edge.https.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // The page is only on the public name.
    let res = client(&edge)
        .get(format!(
            "https://{BROKEN}:{}/s/{share_token}",
            edge.https.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Expired.
    let (short, _) = share(&edge, BROKEN, "1s").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    plain_404(get(&edge, &short).await);

    // Revoked: a new key, the old one retired. Links keep opening, the page does not.
    let (_, keys) = edge.admin(Method::GET, "/v1/keys", None).await;
    let old = keys[0]["id"].as_u64().unwrap();
    assert_eq!(edge.admin(Method::POST, "/v1/keys", None).await.0, 201);
    let (status, body) = edge
        .admin(Method::POST, &format!("/v1/keys/{old}/retire"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    plain_404(get(&edge, &url).await);
    assert_eq!(edge.click_status(BROKEN, &link).await, 302);
    let (fresh, _) = share(&edge, BROKEN, "1h").await;
    assert_eq!(get(&edge, &fresh).await.0, 200);

    // A removed domain.
    let (status, _) = edge
        .admin(Method::DELETE, &format!("/v1/domains/{BROKEN}"), None)
        .await;
    assert_eq!(status, 204);
    plain_404(get(&edge, &fresh).await);
    // Registered again (a second later: registrations are told apart by their second), by the
    // same operator or another customer: the earlier address stays revoked, a new one opens.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = edge
        .admin(Method::POST, "/v1/domains", Some(json!({ "name": BROKEN })))
        .await;
    assert_eq!(status, 201, "{body}");
    plain_404(get(&edge, &fresh).await);
    let (again, _) = share(&edge, BROKEN, "1h").await;
    assert_eq!(get(&edge, &again).await.0, 200);
    let (status, _) = edge
        .admin(Method::DELETE, &format!("/v1/domains/{BROKEN}"), None)
        .await;
    assert_eq!(status, 204);
    // Sharing needs a registered domain and a sane ttl.
    let (status, _) = edge
        .admin(Method::POST, &format!("/v1/domains/{BROKEN}/share"), None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = edge
        .admin(
            Method::POST,
            &format!("/v1/domains/{STATUS}/share"),
            Some(json!({ "ttl": "400d" })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // The status pages' own name is not removed: every shared link would stop loading.
    dns.set_cname(OTHER, TARGET).await;
    edge.add_domain(OTHER).await;
    let (live, _) = share(&edge, OTHER, "1h").await;
    let (status, body) = edge
        .admin(Method::DELETE, &format!("/v1/domains/{STATUS}"), None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("onboarding.public_url")),
        "{body}"
    );
    assert_eq!(get(&edge, &live).await.0, 200);
}

/// The customer's way through, in headless Chromium: the page of a broken domain shows the
/// record to change (screenshots at desktop and at a 390 px phone width keep it visible); the
/// DNS is fixed through the DNS server's API, the open page checks again by itself and, once
/// the first certificate is issued, turns ready without a reload and offers the test link,
/// which the customer clicks: a real redirect through the domain, logged, to a page saying it
/// works. Another domain's open page, that domain removed, says its address no longer opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_page_shows_the_fix_and_turns_ready_by_itself() {
    let (dns, edge) = start().await;
    dns.add_a(BROKEN, &["192.0.2.7"]).await;
    edge.add_domain(BROKEN).await;
    let (url, _) = share(&edge, BROKEN, "1h").await;
    // Both names on the edge's port, as port 443 would be in front of a real edge: the test
    // link names no port.
    let port = edge.https.port();
    let args = [
        format!(
            "--host-resolver-rules=MAP {STATUS} 127.0.0.1:{port}, MAP {BROKEN} 127.0.0.1:{port}"
        ),
        "--ignore-certificate-errors".to_owned(),
    ];
    let browser = common::browser::Browser::start_with(edge.dir.path(), &args).await;
    browser.goto(&url).await;
    browser.wait_for("", "data-copy=\"edge.example.net\"").await;
    // Gone if the page is reloaded rather than updated in place.
    browser.execute("window.kept = true; return true;").await;
    // Kept after the run (README's pictures come from here).
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status");
    browser.screenshot(&shots.join("broken.png")).await;
    let shown = browser.visible_text().await;
    assert!(
        shown.contains("broken.example.com. 300 IN CNAME edge.example.net."),
        "the fix is not visible at desktop width:\n{shown}"
    );
    browser
        .check_phone_width(&shots.join("broken-phone.png"), "edge.example.net")
        .await;

    dns.clear_a(BROKEN).await;
    dns.set_cname(BROKEN, TARGET).await;
    // The open page checks again by itself; once the checks pass, the first HTTPS request for
    // the name gets its certificate, as a first click would.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, text) = get(&edge, &format!("{url}.json")).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        let passing = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] == "pass" || c["id"] == "certificate");
        if passing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page's own re-checks never saw the fix: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = client(&edge)
        .get(format!("https://{BROKEN}:{}/", edge.https.port()))
        .send()
        .await;
    let page = browser.wait_for("", "is ready").await;
    assert!(page.contains("id=\"test-link\""), "{page}");
    assert_eq!(
        browser.execute("return window.kept === true;").await,
        true,
        "the page was reloaded"
    );
    browser.screenshot(&shots.join("ready.png")).await;

    // The customer clicks the test link: a real redirect through their own domain, logged as a
    // click, to a page saying it worked. The click line (read by whoever reads clicks) does not
    // carry the page's token.
    browser.click("#test-link").await;
    browser.wait_for("/s/works", "It works").await;
    assert_eq!(
        browser.current_url().await,
        format!("https://{STATUS}/s/works")
    );
    let clicks = edge.wait_for_clicks(1);
    assert_eq!(clicks[0]["domain"], BROKEN, "{clicks:?}");
    assert_eq!(clicks[0]["meta"]["clickedge"], "status-test", "{clicks:?}");
    assert_eq!(clicks[0]["url"], format!("https://{STATUS}/s/works"));
    let token = &url[url.rfind("/s/").unwrap() + 3..];
    assert!(
        !clicks[0].to_string().contains(token),
        "the share token is in the click line: {clicks:?}"
    );
    // The page that says it works checks nothing again.
    assert!(!browser.source().await.contains("page.js"));

    // A page left open on a domain that is then removed stops checking, and says why.
    edge.add_domain(OTHER).await;
    let (other, _) = share(&edge, OTHER, "1h").await;
    browser.goto(&other).await;
    browser.wait_for("", "data-ready=\"false\"").await;
    let (status, _) = edge
        .admin(Method::DELETE, &format!("/v1/domains/{OTHER}"), None)
        .await;
    assert_eq!(status, 204);
    browser.wait_for("", "This address no longer opens").await;
}
