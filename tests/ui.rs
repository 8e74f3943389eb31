//! The onboarding web page (`/ui/` on the admin listener): protected by the admin token (typed
//! into the form, never taken from the address), refuses cross-site posts, ends sessions on the
//! server at sign-out, marks its cookie `Secure` when told the page is reached over HTTPS, and,
//! driven in headless Debian Chromium through chromedriver (WebDriver over HTTP), lets a person
//! sign in, add a domain, read its checks and fixes, fix the DNS and check again. Screenshots go
//! to `$CARGO_TARGET_TMPDIR/ui/`.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Edge;
use common::dns::Dns;
use common::pebble::free_tcp_port;
use reqwest::header;
use serde_json::{Value, json};

const TARGET: &str = "edge.example.net";

async fn start() -> (Dns, Edge) {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    let (https, http) = (free_tcp_port(), free_tcp_port());
    let config = format!(
        "[onboarding]\ncname_target = \"{TARGET}\"\naddresses = [\"127.0.0.1\"]\ndns_servers = [\"{}\"]\nhttp_port = {http}\ndanger_allow_private_addresses = true\n",
        dns.addr
    );
    let edge = Edge::start_in_at(tempfile::tempdir().unwrap(), &config, https, http);
    (dns, edge)
}

fn form_post(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_the_admin_token_and_refuses_cross_site_posts() {
    let (_dns, edge) = start().await;
    edge.add_domain("secret.example.com").await;
    let ui = format!("http://{}/ui/", edge.admin);
    let client = no_redirects();

    let res = client.get(&ui).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let body = res.text().await.unwrap();
    assert!(body.contains("Admin token"), "{body}");
    assert!(!body.contains("secret.example.com"), "{body}");

    let res = form_post(&client, &format!("{ui}domains"))
        .body(form(&[("name", "sneaky.example.com")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = form_post(&client, &format!("{ui}login"))
        .body(form(&[("token", "not-the-token-0123456789")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = form_post(&client, &format!("{ui}login"))
        .body(form(&[("token", edge.token.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    assert!(
        !session.contains(&edge.token),
        "the cookie is not the API token"
    );

    let page = client
        .get(&ui)
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("secret.example.com"));

    // A form on another site, with the session cookie (as if SameSite were ignored).
    let res = form_post(&client, &format!("{ui}domains"))
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, "http://evil.example")
        .body(form(&[("name", "sneaky.example.com")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let (status, _) = edge
        .admin(reqwest::Method::GET, "/v1/domains/sneaky.example.com", None)
        .await;
    assert_eq!(status, 404);

    // The session value does not open the API.
    let value = session.split_once('=').unwrap().1;
    let (status, _) = edge
        .admin_with_token(reqwest::Method::GET, "/v1/domains", None, Some(value))
        .await;
    assert_eq!(status, 401);
}

/// Signs in with `token` through the form; returns the status and the `Set-Cookie` value.
async fn sign_in(edge: &Edge, token: &str) -> (u16, Option<String>) {
    let res = form_post(&no_redirects(), &format!("http://{}/ui/login", edge.admin))
        .body(form(&[("token", token)]))
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    (res.status().as_u16(), cookie)
}

/// The status of the domain list for a browser sending `cookie` (a `name=value` pair).
async fn index_status(edge: &Edge, cookie: &str) -> u16 {
    no_redirects()
        .get(format!("http://{}/ui/", edge.admin))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server_so_a_copied_cookie_stops_working() {
    let edge = Edge::start();
    let (status, cookie) = sign_in(&edge, &edge.token).await;
    assert_eq!(status, 303);
    let cookie = cookie.unwrap();
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP by default: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let (_, other) = sign_in(&edge, &edge.token).await;
    let other = other.unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(index_status(&edge, &session).await, 200);

    // Someone copied the cookie; its owner signs out.
    let copy = session.clone();
    let res = form_post(&no_redirects(), &format!("http://{}/ui/logout", edge.admin))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cleared = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(index_status(&edge, &copy).await, 401, "the copy is dead");
    assert_eq!(
        index_status(&edge, &other).await,
        200,
        "other sign-ins stay"
    );
}

#[tokio::test]
async fn the_token_in_the_address_does_not_sign_in() {
    let edge = Edge::start();
    let token: String = url::form_urlencoded::byte_serialize(edge.token.as_bytes()).collect();
    let res = no_redirects()
        .get(format!("http://{}/ui/?token={token}", edge.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let body = res.text().await.unwrap();
    assert!(body.contains("not accepted in the address"), "{body}");
    assert!(body.contains("Admin token"), "the sign-in form: {body}");
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_page_is_reached_over_https() {
    let edge = Edge::start_with("[admin]\nsecure_cookie = true\n");
    let (status, cookie) = sign_in(&edge, &edge.token).await;
    assert_eq!(status, 303);
    let cookie = cookie.unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

/// chromedriver driving headless Chromium; both killed on drop.
struct Browser {
    driver: Child,
    url: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn installed(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
    })
}

impl Browser {
    async fn start(log_dir: &Path) -> Browser {
        let chromium = installed("chromium").unwrap_or_else(|| {
            panic!("chromium is not installed: install the Debian package `chromium` (scripts/test does)")
        });
        let chromedriver = installed("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver is not installed: install the Debian package `chromium-driver` (scripts/test does)")
        });
        let port = free_tcp_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log_dir.join("chromedriver.log")).unwrap())
            .spawn()
            .expect("starting chromedriver");
        let url = format!("http://{}", SocketAddr::from(([127, 0, 0, 1], port)));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(res) => res
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1200,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let res: Value = http
            .post(format!("{url}/session"))
            .json(&caps)
            .send()
            .await
            .expect("creating a browser session")
            .json()
            .await
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {res}"))
            .to_owned();
        Browser {
            driver,
            url,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.url, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(res["value"]["error"].is_null(), "{path}: {res}");
        res["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Polls until the page's URL ends with `suffix` and its source contains `text`.
    async fn wait_for(&self, suffix: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (url, source) = (self.current_url().await, self.source().await);
            if url.ends_with(suffix) && source.contains(text) {
                return source;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {suffix} with {text:?}; at {url}:\n{source}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the whole window at `path`.
    async fn screenshot(&self, path: &Path) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 1200, "height": 1500 })),
        )
        .await;
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; then chromedriver itself.
        let url = format!("{}/session/{}", self.url, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = reqwest::Client::new()
                    .delete(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
            });
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_adds_a_domain_sees_its_checks_and_checks_again_after_the_fix() {
    let (dns, edge) = start().await;
    let name = "links.shop.example.com";
    dns.add_a(name, &["192.0.2.7"]).await;
    let browser = Browser::start(edge.dir.path()).await;
    let ui = format!("http://{}/ui/", edge.admin);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");

    browser.goto(&ui).await;
    browser.wait_for("/ui/", "Admin token").await;
    browser.type_into("#token", &edge.token).await;
    browser.click("form[action='/ui/login'] button").await;
    browser.wait_for("/ui/", "Add a domain").await;

    browser.type_into("#name", name).await;
    browser.click("form[action='/ui/domains'] button").await;
    let page = browser
        .wait_for(
            &format!("/ui/domains/{name}"),
            "id=\"check-points-to-edge\"",
        )
        .await;
    assert!(
        page.contains("class=\"check fail\" id=\"check-points-to-edge\""),
        "{page}"
    );
    assert!(page.contains("an A record 192.0.2.7"), "{page}");
    assert!(
        page.contains("links.shop.example.com. 300 IN CNAME edge.example.net."),
        "{page}"
    );
    assert!(page.contains("holds back the certificate"), "{page}");
    browser.screenshot(&shots.join("domain-broken.png")).await;
    browser
        .screenshot(&edge.dir.path().join("domain-broken.png"))
        .await;

    // The customer applies the fix; "Check again" shows it working.
    dns.clear_a(name).await;
    dns.set_cname(name, TARGET).await;
    browser.click("form.busy-on-submit button").await;
    let page = browser
        .wait_for(
            &format!("/ui/domains/{name}"),
            "class=\"check pass\" id=\"check-points-to-edge\"",
        )
        .await;
    assert!(
        page.contains("class=\"check pass\" id=\"check-http-reachable\""),
        "{page}"
    );
    assert!(!page.contains("class=\"check fail\""), "{page}");
    browser.screenshot(&shots.join("domain-fixed.png")).await;

    // The list shows it at a glance.
    browser.goto(&ui).await;
    let page = browser.wait_for("/ui/", name).await;
    assert!(page.contains("<td class=\"pass\">✓ ready</td>"), "{page}");
    browser.screenshot(&shots.join("domains.png")).await;
}
