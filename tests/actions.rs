//! Action links (role `unsubscribe` or `confirm`) through the real edge, with a destination the
//! test serves on loopback: a scanner-like client fetching them (following every redirect)
//! gets the confirm page and never reaches the destination, while its fetches are logged as
//! `unconfirmed`; the page's button pressed in headless Chromium, on a 390 px wide window,
//! reaches the destination and logs a `human` click, reason `confirmed`; an RFC 8058 one-click
//! POST does the same; bodies are bounded and other links take no POST.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Edge;
use common::browser::Browser;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const DOMAIN: &str = "links.example.com";
const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/131.0.0.0 Safari/537.36";

/// A plain HTTP server on loopback that answers every request with a small page and keeps each
/// request's first line; stopped on drop.
struct Destination {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Destination {
    async fn start() -> Destination {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    log.lock()
                        .unwrap()
                        .push(text.lines().next().unwrap_or_default().to_owned());
                    let body = "<!doctype html><title>landed</title><p id=\"landed\">landed</p>";
                    let res = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(res.as_bytes()).await;
                });
            }
        });
        Destination { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start() -> Edge {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    edge
}

/// Mints a link to `url` with `role`, the only link of message `message` (sent an hour ago), on
/// the edge's port.
async fn mint(edge: &Edge, url: &str, message: &str, role: &str) -> String {
    let (status, body) = edge
        .admin(
            Method::POST,
            "/v1/links",
            Some(json!({
                "domain": DOMAIN, "url": url, "meta": {},
                "message": message, "index": 0, "count": 1, "role": role, "sent_at": common::an_hour_ago(),
            })),
        )
        .await;
    assert_eq!(status, 201, "minting: {body}");
    edge.on_port(body["link"].as_str().unwrap())
}

fn clicks_of<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["kind"] == "click" && l["message"]["id"] == message)
        .collect()
}

/// Polls the click log until `message` has `n` click lines (or fails after 20 s).
fn wait_for_clicks_of(edge: &Edge, message: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = edge.clicks();
        let found: Vec<Value> = clicks_of(&lines, message).into_iter().cloned().collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{n} clicks of {message} never logged: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_fetching_action_links_gets_the_confirm_page_and_reaches_nothing() {
    let edge = start().await;
    let dest = Destination::start().await;
    // A scanner follows every redirect to look at the landing page; it fills in no form.
    let scanner = edge
        .client_builder(&[DOMAIN])
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .unwrap();
    for role in ["unsubscribe", "confirm"] {
        let message = format!("scan-{role}");
        let link = mint(&edge, &dest.url("/act?u=42"), &message, role).await;
        let mut get_length = None;
        for (method, ua) in [
            (Method::GET, "Mozilla/5.0 (compatible; SafeLinks)"),
            (Method::HEAD, "Mozilla/5.0 (compatible; SafeLinks)"),
            (Method::GET, CHROME),
        ] {
            let res = scanner
                .request(method.clone(), &link)
                .header("user-agent", ua)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{method} {role}");
            assert_eq!(res.url().as_str(), link, "{method} {role}: redirected");
            let h = res.headers().clone();
            assert!(h.get("location").is_none(), "{h:?}");
            assert!(h.get("set-cookie").is_none(), "{h:?}");
            assert_eq!(h["cache-control"], "no-store");
            assert_eq!(h["referrer-policy"], "no-referrer");
            assert_eq!(h["content-type"], "text/html; charset=utf-8");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.starts_with("default-src 'none';"), "{csp}");
            assert!(csp.contains("form-action 'self'"), "{csp}");
            assert!(!csp.contains("127.0.0.1"), "{csp}");
            let length = h["content-length"].to_str().unwrap().to_owned();
            let page = res.text().await.unwrap();
            if method == Method::HEAD {
                assert_eq!(page, "");
                // The length the GET's page has (the same page: one domain, one role).
                assert_eq!(Some(length), get_length, "{role}");
                continue;
            }
            get_length = Some(length);
            assert!(
                page.contains(&format!("<strong>{DOMAIN}</strong>")),
                "{page}"
            );
            assert!(page.contains("<form method=\"post\">"), "{page}");
            for hidden in [dest.addr.to_string(), "/act".to_owned(), "u=42".to_owned()] {
                assert!(!page.contains(&hidden), "{hidden} in {page}");
            }
        }
        let lines = wait_for_clicks_of(&edge, &message, 3);
        let methods: Vec<&str> = lines
            .iter()
            .map(|c| c["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["GET", "HEAD", "GET"], "{lines:#?}");
        for (c, first) in lines.iter().zip(["ua:safelinks", "head", "no-sec-fetch"]) {
            // Logged, judged as ever, and never human: a browser's fetch neither (nobody has
            // acted until the button is pressed).
            assert_eq!(c["message"]["role"], role);
            assert_ne!(c["verdict"], "human", "{c:#}");
            let reasons: Vec<&str> = c["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert_eq!(reasons.first(), Some(&first), "{c:#}");
            assert_eq!(reasons.last(), Some(&"unconfirmed"), "{c:#}");
        }
    }
    assert_eq!(
        dest.seen(),
        Vec::<String>::new(),
        "the destination was reached"
    );
    assert_eq!(
        edge.metric("clickedge_requests_total{outcome=\"confirm_page\"}")
            .await,
        6.0
    );

    // The same client on an ordinary link lands on the destination: it would have above.
    let content = mint(&edge, &dest.url("/read"), "scan-content", "content").await;
    let res = scanner.get(&content).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.url().as_str(), dest.url("/read"));
    assert_eq!(dest.seen(), ["GET /read HTTP/1.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_confirms_and_rfc_8058_one_click_is_the_same_button_answered_without_a_redirect() {
    let edge = start().await;
    let dest = Destination::start().await;
    let client = edge.client(&[DOMAIN]);
    let link = mint(&edge, &dest.url("/unsub?u=7"), "one-click", "unsubscribe").await;
    // As a mail provider sends it (RFC 8058 §3.1), form-encoded: answered 200 by the edge,
    // never redirected (the RFC forbids it).
    let res = client
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("location").is_none());
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers().get("set-cookie").is_none());
    assert_eq!(res.text().await.unwrap(), "unsubscribed\n");
    // And as multipart/form-data, which the RFC prefers.
    let res = client
        .post(&link)
        .header("content-type", "multipart/form-data; boundary=b1")
        .body(
            "--b1\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n\
             One-Click\r\n--b1--\r\n",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("location").is_none());
    let lines = wait_for_clicks_of(&edge, "one-click", 2);
    for line in &lines {
        assert_eq!(line["method"], "POST");
        assert_eq!(line["verdict"], "human", "{line:#}");
        assert_eq!(line["reasons"], json!(["confirmed"]));
        assert_eq!(line["url"], dest.url("/unsub?u=7"));
    }
    // The confirm page's button posts an empty form: 303 to the destination.
    let res = client
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], dest.url("/unsub?u=7"));
    assert_eq!(res.headers()["cache-control"], "no-store");
    wait_for_clicks_of(&edge, "one-click", 3);

    // Bodies are bounded: refused with 413 saying the limit, nothing logged, no redirect.
    let big = "List-Unsubscribe=One-Click&pad=".to_owned() + &"x".repeat(8192);
    let res = client.post(&link).body(big.clone()).send().await.unwrap();
    assert_eq!(res.status(), 413);
    assert!(res.headers().get("location").is_none());
    // Over HTTP/1.1 the body is left unread, and the client is told the connection ends.
    let http1 = edge.client_builder(&[DOMAIN]).http1_only().build().unwrap();
    let res = http1.post(&link).body(big).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["connection"], "close");
    assert_eq!(
        res.text().await.unwrap(),
        "request body too large: at most 4096 bytes\n"
    );

    // An ordinary link takes no POST; a token that does not open stays a 404.
    let content = mint(&edge, &dest.url("/read"), "not-an-action", "content").await;
    let res = client.post(&content).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    // Other methods: 405, with the methods each link takes.
    for (url, allow) in [(&content, "GET, HEAD"), (&link, "GET, HEAD, POST")] {
        let res = client.put(url).send().await.unwrap();
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()["allow"], allow);
    }
    // Answered before its body is read: over HTTP/1.1 the client is told the connection ends.
    let last = if link.ends_with('x') { "y" } else { "x" };
    let forged = format!("{}{last}", &link[..link.len() - 1]);
    let res = http1
        .post(&forged)
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("location").is_none());
    assert_eq!(res.headers()["connection"], "close");

    assert_eq!(
        edge.metric("clickedge_requests_total{outcome=\"body_refused\"}")
            .await,
        2.0
    );
    let lines = edge.clicks();
    assert_eq!(clicks_of(&lines, "one-click").len(), 3, "{lines:#?}");
    assert_eq!(clicks_of(&lines, "not-an-action").len(), 0, "{lines:#?}");
    // Nothing above followed a redirect.
    assert_eq!(dest.seen(), Vec::<String>::new());
}

/// A one-click from a client that waits for `100 Continue` before its body, on a connection it
/// asks to close (Windows PowerShell and .NET Framework send both): the 100 comes first, then
/// the answer. (The 100 was held back with the last answer's bytes until the idle connection
/// was parked, 2 s later: that delay is not asserted here, being a time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_click_waiting_for_100_continue_on_a_closing_connection_gets_it() {
    let edge = start().await;
    let dest = Destination::start().await;
    let link = mint(&edge, &dest.url("/unsub?u=9"), "expect", "unsubscribe").await;
    let path = &link[link.find("/c/").unwrap()..];
    let tcp = tokio::net::TcpStream::connect(edge.https).await.unwrap();
    let mut tls = edge
        .tls_connector(b"http/1.1")
        .connect(rustls_pki_types::ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .unwrap();
    let body = "List-Unsubscribe=One-Click";
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nContent-Type: \
         application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    // Before the body, only the 100 may come (or, without it, the body's timeout: 408).
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(got.starts_with("HTTP/1.1 100 Continue\r\n"), "{got}");
    tls.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("unsubscribed\n"), "{rest}");
    assert_eq!(wait_for_clicks_of(&edge, "expect", 1).len(), 1);
}

/// Width and height of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_at_390_px_the_button_reaches_the_destination_as_a_confirmed_human() {
    use base64::Engine as _;

    let edge = start().await;
    let dest = Destination::start().await;
    let link = mint(
        &edge,
        &dest.url("/unsubscribe?u=9"),
        "browser",
        "unsubscribe",
    )
    .await;
    let args = [
        format!("--host-resolver-rules=MAP {DOMAIN} 127.0.0.1"),
        "--ignore-certificate-errors".to_owned(),
        // Scripts off: the page works without them.
        "--blink-settings=scriptEnabled=false".to_owned(),
    ];
    let browser = Browser::start_with(edge.dir.path(), &args).await;
    browser
        .call(
            Method::POST,
            "/window/rect",
            Some(json!({ "width": 390, "height": 844 })),
        )
        .await;
    browser.goto(&link).await;
    browser.wait_for("", "Unsubscribe</button>").await;
    assert_eq!(
        dest.seen(),
        Vec::<String>::new(),
        "reached before the button"
    );

    let shot = browser.call(Method::GET, "/screenshot", None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot.as_str().unwrap())
        .unwrap();
    let shots = edge.dir.path().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    std::fs::write(shots.join("confirm-390.png"), &png).unwrap();
    // WebDriver scripts run whatever the page's own setting.
    let layout = browser
        .call(
            Method::POST,
            "/execute/sync",
            Some(json!({
                "script": "const b = document.getElementById('confirm').getBoundingClientRect(); \
                           return [document.documentElement.scrollWidth, window.innerWidth, \
                           window.innerHeight, b.left, b.right, b.top, b.bottom, \
                           document.body.innerText.includes(arguments[0]), \
                           window.devicePixelRatio];",
                "args": [DOMAIN]
            })),
        )
        .await;
    let n = |i: usize| layout[i].as_f64().unwrap();
    assert_eq!(n(1), 390.0, "window: {layout}");
    assert!(n(0) <= n(1), "sideways scrolling at 390 px: {layout}");
    assert!(
        n(3) >= 0.0 && n(4) <= n(1) && n(5) >= 0.0 && n(6) <= n(2) && n(4) > n(3),
        "button not visible: {layout}"
    );
    assert_eq!(layout[7], true, "the domain is not visible text: {layout}");
    let (w, _) = png_size(&png);
    assert_eq!(f64::from(w), n(1) * n(8), "screenshot width: {layout}");

    browser.click("#confirm").await;
    let landed = browser.wait_for("/unsubscribe?u=9", "landed").await;
    assert!(landed.contains("id=\"landed\""), "{landed}");
    // Once, by the navigation (the browser asks the new origin for its icon besides).
    let pages: Vec<String> = dest
        .seen()
        .into_iter()
        .filter(|l| !l.starts_with("GET /favicon.ico "))
        .collect();
    assert_eq!(pages, ["GET /unsubscribe?u=9 HTTP/1.1"]);

    let lines = wait_for_clicks_of(&edge, "browser", 2);
    let (get, post) = (&lines[0], &lines[1]);
    assert_eq!(get["method"], "GET", "{lines:#?}");
    assert_ne!(get["verdict"], "human", "{get:#}");
    assert_eq!(
        get["reasons"].as_array().unwrap().last().unwrap(),
        "unconfirmed"
    );
    assert_eq!(post["method"], "POST", "{lines:#?}");
    assert_eq!(post["verdict"], "human", "{post:#}");
    assert_eq!(post["reasons"], json!(["confirmed"]));
    assert!(post["ua"].as_str().unwrap().contains("Chrome"), "{post:#}");
}
