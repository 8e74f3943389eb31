//! A headless Debian Chromium driven through chromedriver (WebDriver over HTTP), both child
//! processes killed on drop. Fails naming the package when either is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::pebble::free_tcp_port;

/// chromedriver driving headless Chromium; both killed on drop.
pub struct Browser {
    driver: Child,
    url: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

pub fn installed(binary: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(binary))
            .find(|p| p.is_file())
    })
}

impl Browser {
    pub async fn start(log_dir: &Path) -> Browser {
        Browser::start_with(log_dir, &[]).await
    }

    /// Starts Chromium with `extra` command-line arguments besides the headless defaults.
    pub async fn start_with(log_dir: &Path, extra: &[String]) -> Browser {
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
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,1000",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().cloned());
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args
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

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.url, self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(res["value"]["error"].is_null(), "{path}: {res}");
        res["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn find(&self, css: &str) -> String {
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

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Polls until the page's URL ends with `suffix` and its source contains `text`.
    pub async fn wait_for(&self, suffix: &str, text: &str) -> String {
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

    /// What `script` (a function body) returns, run in the page.
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// The text the page shows (`innerText`: what is rendered, not the markup).
    pub async fn visible_text(&self) -> String {
        self.execute("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Narrows the window to a 390 px phone and checks the page: no sideways scrolling, `text`
    /// in the visible text, every copy button inside the screen. Saves a PNG at `path`.
    pub async fn check_phone_width(&self, path: &Path, text: &str) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 390, "height": 1500 })),
        )
        .await;
        let seen = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({
                    "script": "const w = window.innerWidth; return [\
                        document.documentElement.scrollWidth, w, \
                        document.body.innerText.includes(arguments[0]), \
                        [...document.querySelectorAll('button.copy')].filter(b => \
                            b.getBoundingClientRect().right > w).length];",
                    "args": [text]
                })),
            )
            .await;
        assert!(
            seen[1].as_u64().is_some_and(|w| w <= 420),
            "the window did not narrow: {seen}"
        );
        assert!(
            seen[0].as_u64() <= seen[1].as_u64(),
            "sideways scrolling at 390 px: {seen}"
        );
        assert_eq!(
            seen[2], true,
            "{text:?} is not visible text at 390 px: {seen}"
        );
        assert_eq!(seen[3], 0, "copy buttons off the screen at 390 px: {seen}");
        self.save_png(path).await;
    }

    /// Saves a PNG of the whole window at `path`.
    pub async fn screenshot(&self, path: &Path) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": 1200, "height": 1500 })),
        )
        .await;
        self.save_png(path).await;
    }

    /// Saves a PNG of the window as it is.
    async fn save_png(&self, path: &Path) {
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
