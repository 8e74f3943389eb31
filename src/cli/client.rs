//! The client of a running edge's admin API that the client commands share: where the API is
//! (`--admin`, else `listen.admin`), the token (`CLICKEDGE_ADMIN_TOKEN`, `admin.token`,
//! `admin.token_file`, else the data dir's token file), and errors that say what to do.

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use super::{ClientArgs, TOKEN_ENV, health};
use crate::config::{Config, NOT_TOKEN_TEXT, is_token_text};
use crate::onboarding::escape::escape;

/// A client of the admin API.
pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Where the token was read, for the answer that refuses it.
    token_from: String,
}

impl Client {
    pub(super) fn new(config: &Config, args: &ClientArgs) -> anyhow::Result<Client> {
        let base = admin_base(config, args.admin.as_deref())?;
        let (token, token_from) = match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => (t, TOKEN_ENV.to_owned()),
            // Not passed over for the config's token, which may be another (wider) one.
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("the admin token read from {TOKEN_ENV} {NOT_TOKEN_TEXT}")
            }
            _ => match &config.admin.token {
                Some(t) => (t.clone(), "admin.token in the config".to_owned()),
                None => {
                    let path = config
                        .admin
                        .token_file
                        .clone()
                        .unwrap_or_else(|| config.data_dir.join(crate::app::ADMIN_TOKEN_FILE));
                    let token = std::fs::read_to_string(&path).with_context(|| {
                        format!(
                            "reading the admin token from {} (set {TOKEN_ENV}, or run from the directory where `clickedge serve` runs, or pass --config)",
                            path.display()
                        )
                    })?;
                    (token, path.display().to_string())
                }
            },
        };
        // Refused here rather than sent: the edge refuses such tokens when it starts, so the
        // answer would be a 401 that does not say what is wrong.
        if !is_token_text(token.trim()) {
            bail!("the admin token read from {token_from} {NOT_TOKEN_TEXT}");
        }
        let http = http_client()?;
        Ok(Client {
            http,
            base,
            token: token.trim().to_owned(),
            token_from,
        })
    }

    /// Calls the API; its answer on success, else an error saying what to do.
    pub(super) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        Ok(self.send(method, path, body).await?.1)
    }

    /// [`Client::call`], with the status of a successful answer (`201` created, `200` there
    /// already).
    pub(super) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.map_err(|e| unreachable(&self.base, &e))?;
        let status = res.status();
        let text = res.text().await.context("reading the admin API's answer")?;
        if status.is_success() {
            if text.is_empty() {
                return Ok((status, Value::Null));
            }
            // Every answer of the admin API is JSON: another server (a proxy's page) answering
            // 200 must not read as an empty list or checks that pass.
            let Ok(value) = serde_json::from_str(&text) else {
                let start: String = text.trim().chars().take(200).collect();
                bail!(
                    "{} answered {status} to {path} with something other than JSON, not as the admin API does: is it listen.admin's address? ({})",
                    self.base,
                    escape(&start)
                );
            };
            return Ok((status, value));
        }
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let Some(msg) = json
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
        else {
            // A path the admin API has answered in plain text: another server (the HTTP
            // listener, a proxy) is at this address. Other plain answers (a body too large)
            // are the API's own, shown as they are.
            if matches!(status.as_u16(), 404 | 405) {
                bail!(
                    "{} answered {status} to {path}, not as the admin API does: is it listen.admin's address? ({})",
                    self.base,
                    escape(text.trim())
                );
            }
            bail!("{} (HTTP {status})", escape(text.trim()));
        };
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "the admin API at {} refused the token read from {}: give the running edge's token (its data dir's admin-token, or its admin.token), e.g. with --config naming its config (HTTP {status})",
                self.base,
                self.token_from
            );
        }
        Err(Refused {
            status,
            message: escape(msg).into_owned(),
        }
        .into())
    }
}

/// What the admin API refused, in its own words, and its status: a caller that knows better
/// words for a status (`404` for a name asked to be removed) looks for it in the error.
#[derive(Debug, thiserror::Error)]
#[error("{message} (HTTP {status})")]
pub(super) struct Refused {
    pub(super) status: reqwest::StatusCode,
    pub(super) message: String,
}

/// The admin API's base URL: `admin` (`--admin`), else `http://` and `listen.admin`. An `admin`
/// that is not an `http://` or `https://` URL with a host is refused, naming the fix.
pub(super) fn admin_base(config: &Config, admin: Option<&str>) -> anyhow::Result<String> {
    let Some(given) = admin else {
        return Ok(format!("http://{}", health::reachable(config.listen.admin)));
    };
    let base = given.trim_end_matches('/');
    match reqwest::Url::parse(base) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(base.to_owned())
        }
        _ => {
            let example = match base.split_once("://") {
                Some((_, rest)) => format!("http://{rest}"),
                None => format!("http://{base}"),
            };
            bail!(
                "--admin {given:?} is not the admin API's URL: give http://HOST:PORT, e.g. {example}"
            )
        }
    }
}

/// The admin API at `base` could not be reached: the innermost cause (reqwest's own message
/// repeats the URL at each layer), and what to check.
/// The HTTP client of the admin API: never through a proxy from the environment (the token
/// would go to it, and a loopback address is not the proxy's to reach), and bounded: a
/// connection within [`CONNECT_TIMEOUT`], then no read waiting longer than [`READ_TIMEOUT`]
/// (a domain's checks take seconds; an edge that is stopped or wedged answers never).
pub(super) fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .context("building HTTP client")
}

/// The longest wait for the admin API's listener to take a connection.
pub(super) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest wait for the next bytes of an answer.
pub(super) const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub(super) fn unreachable(base: &str, e: &reqwest::Error) -> anyhow::Error {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    // Nothing listening is said as such; past that, with https:// the likely cause is TLS
    // spoken to the plain listener (reqwest's TLS errors reach here as text only).
    let refused = cause
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
    let hint = if base.starts_with("https://") && !refused && !e.is_timeout() {
        "listen.admin itself speaks plain HTTP: use http:// unless a TLS proxy stands in front of it"
    } else {
        "is `clickedge serve` running? --admin URL sets another address"
    };
    anyhow!("cannot reach the admin API at {base}: {cause} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_address_without_scheme_is_refused_with_the_url_to_give() {
        let config = Config::default();
        let err = admin_base(&config, Some("127.0.0.1:19180"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("e.g. http://127.0.0.1:19180"), "{err}");
        let err = admin_base(&config, Some("ftp://edge:9180"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("e.g. http://edge:9180"), "{err}");
        assert_eq!(
            admin_base(&config, Some("http://10.0.0.5:9180/")).unwrap(),
            "http://10.0.0.5:9180"
        );
        assert_eq!(admin_base(&config, None).unwrap(), "http://127.0.0.1:9180");
    }
}
