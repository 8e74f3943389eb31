//! The client of a running edge's admin API that the client commands share: where the API is
//! (`--admin`, else `listen.admin`), the token (`CLICKEDGE_ADMIN_TOKEN`, `admin.token`,
//! `admin.token_file`, else the data dir's token file), and errors that say what to do.

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{ClientArgs, TOKEN_ENV, health};
use crate::config::Config;
use crate::onboarding::escape::escape;

/// A client of the admin API.
pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub(super) fn new(config: &Config, args: &ClientArgs) -> anyhow::Result<Client> {
        let base = args
            .admin
            .clone()
            .unwrap_or_else(|| format!("http://{}", health::reachable(config.listen.admin)));
        let token = match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => match &config.admin.token {
                Some(t) => t.trim().to_owned(),
                None => {
                    let path = config
                        .admin
                        .token_file
                        .clone()
                        .unwrap_or_else(|| config.data_dir.join(crate::app::ADMIN_TOKEN_FILE));
                    std::fs::read_to_string(&path)
                        .with_context(|| {
                            format!(
                                "reading the admin token from {} (set {TOKEN_ENV}, or run from the directory where `clickedge serve` runs, or pass --config)",
                                path.display()
                            )
                        })?
                        .trim()
                        .to_owned()
                }
            },
        };
        let http = reqwest::Client::builder()
            .build()
            .context("building HTTP client")?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.with_context(|| {
            format!("reaching the admin API at {url} (is `clickedge serve` running? --admin URL sets another address)")
        })?;
        let status = res.status();
        let text = res.text().await.context("reading the admin API's answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_owned);
            bail!("{} (HTTP {status})", escape(&msg));
        }
        Ok(value)
    }
}
