//! What the load generator asks for: SNI names, and the paths requested under each name.
//!
//! Names come from patterns with numeric ranges (`links{0..9999}.example.com`) or a file; paths
//! from `--path`, from a file of URLs, or are minted as sealed links through a clickedge admin
//! API. Requests are pre-encoded here once, so the hot loop only writes bytes.
//! This module opens no connection to the server under test.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::pki_types::ServerName;

/// `User-Agent` of every request.
pub const USER_AGENT: &str = "clickedge-loadgen/0.1";

/// One SNI name and the requests made under it.
pub struct Name {
    /// The SNI name and `Host`.
    pub host: String,
    /// The same, as rustls wants it.
    pub sni: ServerName<'static>,
    /// The requests, in the order they are cycled through.
    pub paths: Vec<Request>,
}

/// One pre-encoded request.
pub struct Request {
    /// HTTP/1.1 bytes for a kept-alive connection.
    pub h1_keep: Vec<u8>,
    /// HTTP/1.1 bytes with `Connection: close`.
    pub h1_close: Vec<u8>,
    /// The URI for h2 (`https://host/path`).
    pub uri: http::Uri,
}

/// Expands `{A..B}` ranges (inclusive, any number of them) in `pattern`:
/// `links{0..2}.example.com` gives `links0`, `links1`, `links2` `.example.com`.
pub fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_owned()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| format!("{pattern}: '{{' without '}}'"))?;
    let (a, b) = pattern[open + 1..close]
        .split_once("..")
        .ok_or_else(|| format!("{pattern}: a range is written {{A..B}}, e.g. {{0..9999}}"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("{pattern}: {s:?} is not a number"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if b < a || b - a >= 10_000_000 {
        return Err(format!("{pattern}: range {a}..{b} is empty or too large"));
    }
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let tails = expand(tail)?;
    let mut out = Vec::with_capacity(((b - a + 1) as usize).saturating_mul(tails.len()));
    for i in a..=b {
        for t in &tails {
            out.push(format!("{head}{i}{t}"));
        }
    }
    Ok(out)
}

/// Names (or patterns) one a line; blank lines and `#` comments are skipped.
pub fn names_from_text(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if !line.is_empty() && !line.starts_with('#') {
            out.extend(expand(line)?);
        }
    }
    Ok(out)
}

/// Splits `https://host[:port]/path` into the host (lowercase, no port) and the path.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url}: not an https:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok((host.to_ascii_lowercase(), path.to_owned()))
}

/// URLs one a line (`https://host[:port]/path`); blank lines and `#` comments are skipped.
pub fn urls_from_text(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(split_url)
        .collect()
}

/// Groups `(host, path)` pairs by host, in order of first appearance, and pre-encodes requests.
pub fn build(pairs: &[(String, String)]) -> Result<Vec<Name>, String> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<Name> = Vec::new();
    for (host, path) in pairs {
        let i = match index.get(host.as_str()) {
            Some(&i) => i,
            None => {
                let sni = ServerName::try_from(host.clone())
                    .map_err(|_| format!("{host}: not a valid server name"))?;
                names.push(Name {
                    host: host.clone(),
                    sni,
                    paths: Vec::new(),
                });
                index.insert(host, names.len() - 1);
                names.len() - 1
            }
        };
        names[i].paths.push(request(host, path)?);
    }
    if names.is_empty() {
        return Err(
            "no names to request: give --sni, --sni-file, --urls-file or --mint-admin".into(),
        );
    }
    Ok(names)
}

fn request(host: &str, path: &str) -> Result<Request, String> {
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "{path:?}: a path starts with '/' and has no spaces or controls"
        ));
    }
    let h1 = |extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n{extra}\r\n")
            .into_bytes()
    };
    let uri = format!("https://{host}{path}")
        .parse()
        .map_err(|e| format!("https://{host}{path}: {e}"))?;
    Ok(Request {
        h1_keep: h1(""),
        h1_close: h1("Connection: close\r\n"),
        uri,
    })
}

/// A clickedge admin API client, to register names and mint sealed links.
#[derive(Clone)]
pub struct Admin {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Admin {
    /// `base` is `http://host:port` of `listen.admin`.
    pub fn new(base: &str, token: &str) -> Admin {
        Admin {
            base: base.trim_end_matches('/').to_owned(),
            token: token.trim().to_owned(),
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `method path` with the token and `body` as JSON; the answer as JSON, an error naming the
    /// call otherwise (with the answer's text when it is short).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {url}");
        let mut req = self.client.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let res = req.send().await.map_err(|e| format!("{what}: {e}"))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| format!("{what}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{what}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| {
            let shown = if text.len() <= 1024 {
                text.as_str()
            } else {
                "(long answer)"
            };
            format!("{what}: {e}: {shown}")
        })
    }

    /// Registers `name` (`POST /v1/domains`); an existing name is fine.
    pub async fn add_domain(&self, name: &str) -> Result<(), String> {
        self.post("/v1/domains", serde_json::json!({ "name": name }))
            .await
            .map(drop)
    }

    /// Mints a link (`POST /v1/links`) and returns it as `(host, path)`.
    pub async fn mint(
        &self,
        domain: &str,
        url: &str,
        meta: serde_json::Value,
    ) -> Result<(String, String), String> {
        let v = self
            .post(
                "/v1/links",
                serde_json::json!({ "domain": domain, "url": url, "meta": meta }),
            )
            .await?;
        let link = v["link"]
            .as_str()
            .ok_or_else(|| format!("minting for {domain}: no link in {v}"))?;
        split_url(link)
    }

    /// Optionally registers every name, then mints `per_name` links under each (destination
    /// about 80 bytes, two metadata pairs: the "typical link"), eight calls at a time. Returns
    /// `(host, path)` pairs, names interleaved.
    pub async fn mint_all(
        &self,
        names: &[String],
        per_name: usize,
        register: bool,
    ) -> Result<Vec<(String, String)>, String> {
        let names: Arc<[String]> = names.into();
        let jobs = names.len() * per_name;
        let mut out: Vec<Option<(String, String)>> = vec![None; jobs];
        if register {
            self.in_parallel(names.len(), {
                let names = names.clone();
                move |admin, i| {
                    let name = names[i].clone();
                    async move { admin.add_domain(&name).await.map(|()| None) }
                }
            })
            .await?;
        }
        let minted = self
            .in_parallel(jobs, {
                let names = names.clone();
                move |admin, job| {
                    // Job j is link j / names of name j % names: names interleaved.
                    let (name, k) = (names[job % names.len()].clone(), job / names.len());
                    async move {
                        let url = format!(
                            "https://shop.example.com/spring/{k}?utm_source=email&utm_campaign=bench&n={}",
                            name.len()
                        );
                        let meta = serde_json::json!({ "campaign": "bench", "recipient": job.to_string() });
                        admin.mint(&name, &url, meta).await.map(Some)
                    }
                }
            })
            .await?;
        for (job, pair) in minted {
            out[job] = pair;
        }
        Ok(out.into_iter().flatten().collect())
    }

    async fn in_parallel<F, Fut>(
        &self,
        jobs: usize,
        f: F,
    ) -> Result<Vec<(usize, Option<(String, String)>)>, String>
    where
        F: Fn(Admin, usize) -> Fut,
        Fut: Future<Output = Result<Option<(String, String)>, String>> + Send + 'static,
    {
        let mut set = tokio::task::JoinSet::new();
        let mut out = Vec::with_capacity(jobs);
        let mut next = 0;
        while next < jobs || !set.is_empty() {
            while next < jobs && set.len() < 8 {
                let fut = f(self.clone(), next);
                let job = next;
                set.spawn(async move { fut.await.map(|r| (job, r)) });
                next += 1;
            }
            if let Some(done) = set.join_next().await {
                out.push(done.map_err(|e| format!("admin call panicked: {e}"))??);
            }
        }
        Ok(out)
    }
}
