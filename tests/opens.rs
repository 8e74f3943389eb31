//! Opens through the real edge: a pixel token that opens writes a line of kind `open` naming
//! who fetched it (a direct open, Apple Mail Privacy Protection, Gmail's and Yahoo's image
//! proxies, scanners), GET and HEAD alike; a token that does not open gets the same GIF and
//! writes nothing; a person's click on a message whose open was not seen says it implies one;
//! and `clicks.ip = "truncated"` with `clicks.visitor` over IPv4 and IPv6.

mod common;

use std::net::IpAddr;

use common::{Edge, an_hour_ago};
use reqwest::Method;
use serde_json::{Value, json};

const DOMAIN: &str = "links.example.com";
const OTHER: &str = "other.example.com";
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/131.0.0.0 Safari/537.36";
const GMAIL: &str = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 \
                     (via ggpht.com GoogleImageProxy)";
const YAHOO: &str = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html";
/// Loopback addresses the test's network catalogue names: Apple's relays, a scanner of opens.
const APPLE: &str = "127.0.0.3";
const SCANNER: &str = "127.0.0.4";

/// An edge whose catalogue adds `APPLE` to the built-in `apple-mpp` entry and `SCANNER` as a
/// certain scanner of opens, with `extra` in `[clicks]`.
async fn start(extra: &str) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let networks = dir.path().join("networks.txt");
    std::fs::write(
        &networks,
        format!(
            "{APPLE}/32  apple-mpp  opens  probable\n{SCANNER}/32  test-scanner  opens  certain\n"
        ),
    )
    .unwrap();
    let config = format!(
        "[clicks]\nnetworks_file = \"{}\"\n{extra}",
        networks.display()
    );
    let edge = Edge::start_in(dir, &config);
    edge.add_domain(DOMAIN).await;
    edge.add_domain(OTHER).await;
    edge
}

/// Prepares `message` (one link, the pixel) on `domain`: its pixel and its link, on the edge's
/// port.
async fn prepare(edge: &Edge, domain: &str, message: &str) -> (String, String) {
    let (status, out) = edge
        .admin(
            Method::POST,
            "/v1/rewrite",
            Some(json!({
                "domain": domain, "message": message, "pixel": true, "sent_at": an_hour_ago(),
                "html": "<p><a href=\"https://shop.example/sale\">Sale</a></p>",
            })),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    (
        edge.on_port(out["pixel"].as_str().unwrap()),
        edge.on_port(out["links"][0]["link"].as_str().unwrap()),
    )
}

fn client_from(edge: &Edge, from: &str) -> reqwest::Client {
    edge.client_builder(&[DOMAIN, OTHER])
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Fetches the pixel at `url` as `ua`; its body.
async fn fetch(client: &reqwest::Client, method: Method, url: &str, ua: &str) -> Vec<u8> {
    common::fetch_pixel(client, method, url, Some(ua)).await
}

/// A person's click the way a browser sends it.
async fn click(client: &reqwest::Client, link: &str, ua: &str) {
    let res = client
        .get(link)
        .header("user-agent", ua)
        .header("sec-fetch-site", "cross-site")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-user", "?1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
}

#[tokio::test]
async fn every_open_names_who_fetched_it_and_tokens_that_do_not_open_write_nothing() {
    let edge = start("").await;
    let local = client_from(&edge, "127.0.0.1");
    let apple = client_from(&edge, APPLE);
    let scanner = client_from(&edge, SCANNER);
    let (pixel, link) = prepare(&edge, DOMAIN, "m").await;
    let (other_pixel, _) = prepare(&edge, OTHER, "m").await;
    let on_domain = |path: &str| format!("https://{DOMAIN}:{}{path}", edge.https.port());
    let path = |url: &str| url[url.find("/o/").or(url.find("/c/")).unwrap()..].to_owned();

    // First what must write nothing, each still the same GIF: a forged token, a link's token
    // as a pixel's, another domain's pixel.
    let good = fetch(&local, Method::GET, &pixel, CHROME).await;
    for url in [
        format!("{pixel}x"),
        on_domain(&path(&link).replacen("/c/", "/o/", 1)),
        on_domain(&path(&other_pixel)),
    ] {
        assert_eq!(
            fetch(&local, Method::GET, &url, CHROME).await,
            good,
            "{url}"
        );
    }
    assert_eq!(good.len(), 43);
    assert!(
        fetch(&local, Method::HEAD, &pixel, CHROME).await.is_empty(),
        "HEAD: the headers alone"
    );
    for (client, ua) in [
        (&local, GMAIL),
        (&local, YAHOO),
        (&apple, "Mozilla/5.0"),
        (&apple, CHROME),
        (&scanner, CHROME),
        (&local, "curl/8.5.0"),
    ] {
        assert_eq!(fetch(client, Method::GET, &pixel, ua).await, good);
    }

    let lines = edge.wait_for_clicks(8);
    let got: Vec<(&str, &str, Value, &str)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["kind"], "open", "{l}");
            assert_eq!(l["url"], Value::Null, "{l}");
            assert_eq!(l["domain"], DOMAIN, "{l}");
            assert_eq!(l["message"]["id"], "m", "{l}");
            assert_eq!(l["rules"], "r6+n2", "{l}");
            (
                l["open_class"].as_str().unwrap(),
                l["verdict"].as_str().unwrap(),
                l["reasons"].clone(),
                l["method"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("direct", "human", json!([]), "GET"),
            ("scanner", "machine", json!(["head"]), "HEAD"),
            (
                "gmail_proxy",
                "unknown",
                json!(["ua:googleimageproxy"]),
                "GET"
            ),
            (
                "yahoo_proxy",
                "unknown",
                json!(["ua:yahoomailproxy"]),
                "GET"
            ),
            ("apple_mpp", "machine", json!(["net:apple-mpp"]), "GET"),
            // A person browsing through Apple's relays: only the bare user agent is the prefetch.
            ("direct", "unknown", json!(["net:apple-mpp"]), "GET"),
            ("scanner", "machine", json!(["net:test-scanner"]), "GET"),
            ("scanner", "machine", json!(["ua:curl"]), "GET"),
        ],
        "{lines:#?}"
    );
    assert_eq!(lines[4]["ip"], APPLE);
    for (class, n) in [
        ("direct", 2.0),
        ("apple_mpp", 1.0),
        ("gmail_proxy", 1.0),
        ("yahoo_proxy", 1.0),
        ("scanner", 3.0),
    ] {
        assert_eq!(
            edge.metric(&format!("clickedge_opens_total{{class=\"{class}\"}}"))
                .await,
            n,
            "{class}"
        );
    }
    assert_eq!(
        edge.metric("clickedge_requests_total{outcome=\"pixel\"}")
            .await,
        11.0
    );
}

#[tokio::test]
async fn a_persons_click_on_a_message_not_seen_opened_implies_its_open_once() {
    let edge = start("").await;
    let local = client_from(&edge, "127.0.0.1");
    let apple = client_from(&edge, APPLE);
    let (read_pixel, read_link) = prepare(&edge, DOMAIN, "read").await;
    let (_, unread_link) = prepare(&edge, DOMAIN, "unread").await;
    let (mpp_pixel, mpp_link) = prepare(&edge, DOMAIN, "mpp-only").await;
    let (_, scanned_link) = prepare(&edge, DOMAIN, "scanned").await;

    fetch(&local, Method::GET, &read_pixel, CHROME).await;
    click(&local, &read_link, CHROME).await;
    click(&local, &unread_link, CHROME).await;
    click(&local, &unread_link, CHROME).await;
    // Apple's prefetch fetches whether or not anyone reads: the person's click still implies
    // the open.
    fetch(&apple, Method::GET, &mpp_pixel, "Mozilla/5.0").await;
    click(&local, &mpp_link, CHROME).await;
    // A machine's click implies nothing.
    let res = local
        .get(&scanned_link)
        .header("user-agent", "curl/8.5.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);

    let lines = edge.wait_for_clicks(7);
    let got: Vec<(&str, &str, &str, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap(),
                l["message"]["id"].as_str().unwrap(),
                l["verdict"].as_str().unwrap(),
                l.get("implied_open").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("open", "read", "human", Value::Null),
            ("click", "read", "human", Value::Null),
            ("click", "unread", "human", json!(true)),
            ("click", "unread", "human", Value::Null),
            ("open", "mpp-only", "machine", Value::Null),
            ("click", "mpp-only", "human", json!(true)),
            ("click", "scanned", "machine", Value::Null),
        ],
        "{lines:#?}"
    );
}

#[tokio::test]
async fn truncated_addresses_and_visitors_over_ipv4_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Edge::start_in(
        dir,
        "[listen]\nhttps = [\"127.0.0.1:0\", \"[::1]:0\"]\nhttp = \"127.0.0.1:0\"\n\
         admin = \"127.0.0.1:0\"\n[clicks]\nip = \"truncated\"\nvisitor = true\n",
    );
    edge.add_domain(DOMAIN).await;
    let (pixel, link) = prepare(&edge, DOMAIN, "m").await;
    let port = edge
        .listening
        .iter()
        .find(|(k, a)| k == "https" && a.is_ipv6())
        .unwrap()
        .1
        .port();
    let v6 = |url: &str| {
        let (_, path) = url
            .strip_prefix("https://")
            .unwrap()
            .split_once('/')
            .unwrap();
        format!("https://{DOMAIN}:{port}/{path}")
    };
    let local = client_from(&edge, "127.0.0.1");
    let second = client_from(&edge, "127.0.0.2");
    let six = edge
        .client_builder(&[])
        .resolve(
            DOMAIN,
            std::net::SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], port)),
        )
        .build()
        .unwrap();

    click(&local, &link, CHROME).await;
    click(&second, &link, CHROME).await;
    fetch(&local, Method::GET, &pixel, CHROME).await;
    click(
        &local,
        &link,
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0",
    )
    .await;
    click(&six, &v6(&link), CHROME).await;
    fetch(&six, Method::GET, &v6(&pixel), CHROME).await;

    let lines = edge.wait_for_clicks(6);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let ips: Vec<&str> = lines.iter().map(|l| l["ip"].as_str().unwrap()).collect();
    assert_eq!(
        ips,
        [
            "127.0.0.0",
            "127.0.0.0",
            "127.0.0.0",
            "127.0.0.0",
            "::",
            "::"
        ]
    );
    let visitor = |i: usize| lines[i]["visitor"].as_str().unwrap();
    assert_eq!(visitor(0).len(), 16);
    assert_eq!(visitor(0), visitor(1), "one /24, one browser: one visitor");
    assert_eq!(visitor(0), visitor(2), "its open too");
    assert_ne!(visitor(0), visitor(3), "another browser");
    assert_ne!(visitor(0), visitor(4), "another network");
    assert_eq!(visitor(4), visitor(5));
    // Nothing of the full address anywhere in the file.
    let text = common::read_click_files(&edge.data_dir().join("clicks")).concat();
    assert!(
        !text.contains("127.0.0.2") && !text.contains("::1"),
        "{text}"
    );
}
