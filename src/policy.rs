//! Which names the edge serves and may get certificates for: the registered domains, held in
//! memory so that a refusal costs one hash lookup and no I/O (a random-SNI flood touches neither
//! the store nor the issuer); and, if configured, names an `ask` URL approves.
//!
//! The set is loaded from the store at start; from then on only [`crate::domains::Domains`], the
//! domain lifecycle, changes it, after the store. Policy decides; it never issues.

use std::time::Duration;

use dashmap::DashSet;

use crate::Domain;

/// Most `ask` decisions remembered; older ones are evicted (memory stays bounded under a flood
/// of random names).
const ASK_CACHE_ENTRIES: u64 = 100_000;
/// How long one `ask` request may take; no answer counts as a refusal.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the `ask` client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client for the ask endpoint {url}")]
pub struct AskError {
    url: url::Url,
    #[source]
    source: reqwest::Error,
}

/// An `ask` endpoint (compatible with Caddy's on-demand TLS `ask`): `GET <url>?domain=NAME`, a
/// 2xx answer permits the name.
pub struct Ask {
    url: url::Url,
    client: reqwest::Client,
    decisions: moka::future::Cache<Domain, bool>,
}

impl Ask {
    /// An endpoint at `url` whose answers are remembered for `ttl`.
    pub fn new(url: url::Url, ttl: Duration) -> Result<Ask, AskError> {
        let client = reqwest::Client::builder()
            .timeout(ASK_TIMEOUT)
            .build()
            .map_err(|source| AskError {
                url: url.clone(),
                source,
            })?;
        Ok(Ask {
            url,
            client,
            decisions: moka::future::Cache::builder()
                .max_capacity(ASK_CACHE_ENTRIES)
                .time_to_live(ttl)
                .build(),
        })
    }

    async fn allows(&self, name: &Domain) -> bool {
        // Concurrent questions about one name share one request.
        self.decisions
            .get_with(name.clone(), async {
                let mut url = self.url.clone();
                url.query_pairs_mut().append_pair("domain", name.as_str());
                match self.client.get(url).send().await {
                    Ok(res) => res.status().is_success(),
                    Err(e) => {
                        tracing::warn!(domain = %name, error = %e, "ask endpoint unreachable: refusing");
                        false
                    }
                }
            })
            .await
    }
}

/// The registered domains, and the optional `ask` endpoint.
#[derive(Default)]
pub struct Policy {
    registered: DashSet<Domain>,
    ask: Option<Ask>,
}

impl Policy {
    /// A policy serving exactly `domains`, plus what `ask` approves.
    pub fn new(domains: impl IntoIterator<Item = Domain>, ask: Option<Ask>) -> Policy {
        Policy {
            registered: domains.into_iter().collect(),
            ask,
        }
    }

    /// True if `name` (already normalised) is registered. No I/O.
    pub fn is_registered(&self, name: &str) -> bool {
        self.registered.contains(name)
    }

    /// True if `name` may have a certificate: registered, or approved by `ask`.
    pub async fn allows(&self, name: &Domain) -> bool {
        if self.is_registered(name.as_str()) {
            return true;
        }
        match &self.ask {
            Some(ask) => ask.allows(name).await,
            None => false,
        }
    }

    /// Starts serving `name` (the domain lifecycle's job, once the store has it).
    pub(crate) fn register(&self, name: Domain) {
        self.registered.insert(name);
    }

    /// Stops serving `name` (the domain lifecycle's job).
    pub(crate) fn unregister(&self, name: &str) {
        self.registered.remove(name);
    }

    /// How many names are registered.
    pub fn len(&self) -> usize {
        self.registered.len()
    }

    /// True when no name is registered.
    pub fn is_empty(&self) -> bool {
        self.registered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn registers_and_unregisters() {
        let p = Policy::new([Domain::parse("a.example.com").unwrap()], None);
        assert!(p.is_registered("a.example.com"));
        assert!(!p.is_registered("b.example.com"));
        p.register(Domain::parse("b.example.com").unwrap());
        p.unregister("a.example.com");
        assert!(!p.is_registered("a.example.com"));
        assert!(p.is_registered("b.example.com"));
        assert_eq!(p.len(), 1);
    }

    /// A tiny `ask` endpoint: allows names starting with "ok", counts requests.
    async fn ask_server() -> (url::Url, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/ask",
            axum::routing::get(
                move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let ok = q.get("domain").is_some_and(|d| d.starts_with("ok"));
                    async move {
                        if ok {
                            http::StatusCode::OK
                        } else {
                            http::StatusCode::FORBIDDEN
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/ask").parse().unwrap(), hits)
    }

    #[tokio::test]
    async fn ask_approves_and_decisions_are_cached() {
        let (url, hits) = ask_server().await;
        let p = Policy::new([], Some(Ask::new(url, Duration::from_secs(60)).unwrap()));
        let ok = Domain::parse("ok.example.com").unwrap();
        let no = Domain::parse("no.example.com").unwrap();
        assert!(p.allows(&ok).await);
        assert!(!p.allows(&no).await);
        assert!(p.allows(&ok).await);
        assert!(!p.allows(&no).await);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert!(!p.is_registered("ok.example.com"));
    }

    #[tokio::test]
    async fn unreachable_ask_refuses() {
        let url = "http://127.0.0.1:9/ask".parse().unwrap();
        let p = Policy::new([], Some(Ask::new(url, Duration::from_secs(60)).unwrap()));
        assert!(!p.allows(&Domain::parse("ok.example.com").unwrap()).await);
    }
}
