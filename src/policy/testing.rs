//! A real `ask` endpoint on loopback for tests, answering by how the name starts and counting the
//! requests it gets. Public so that the integration tests use the same one; not part of the
//! edge's API. It panics instead of returning errors: it only runs in tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::{Ask, AskSettings};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::Store;

/// An `ask` endpoint: names starting with `ok` get a 200, `redirect` a 302 to a URL that answers
/// 200, `empty` a 204, `fail` a 500, `busy` a 429, anything else a 403.
pub struct AskServer {
    /// `http://127.0.0.1:PORT/ask`.
    pub url: url::Url,
    hits: Arc<AtomicUsize>,
    followed: Arc<AtomicUsize>,
}

impl AskServer {
    /// Starts the endpoint on a free loopback port.
    pub async fn start() -> AskServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let followed = Arc::new(AtomicUsize::new(0));
        let (h, f) = (hits.clone(), followed.clone());
        let app = axum::Router::new()
            .route(
                "/ask",
                axum::routing::get(move |q: Query<HashMap<String, String>>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let name = q.get("domain").cloned().unwrap_or_default();
                    async move { answer(&name) }
                }),
            )
            .route(
                "/approve",
                axum::routing::get(move || {
                    f.fetch_add(1, Ordering::SeqCst);
                    async { StatusCode::OK }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the test ask endpoint");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        AskServer {
            url: format!("http://{addr}/ask")
                .parse()
                .expect("a loopback URL parses"),
            hits,
            followed,
        }
    }

    /// Requests `/ask` got so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests the URL `redirect` names are sent to got so far (none if redirects are not
    /// followed).
    pub fn followed(&self) -> usize {
        self.followed.load(Ordering::SeqCst)
    }

    /// An [`Ask`] for this endpoint remembering answers a minute, at `rate_burst` requests per
    /// second and at once (default: more than any test makes).
    pub fn ask(
        &self,
        store: Arc<dyn Store>,
        metrics: &Metrics,
        clock: Clock,
        rate_burst: Option<(u32, u32)>,
    ) -> Ask {
        let (rate, burst) = rate_burst.unwrap_or((1000, 1000));
        let settings = AskSettings {
            cache_ttl: Duration::from_secs(60),
            rate: rate.try_into().expect("a non-zero rate"),
            burst: burst.try_into().expect("a non-zero burst"),
        };
        Ask::new(self.url.clone(), settings, store, metrics, clock).expect("the ask client")
    }
}

fn answer(name: &str) -> axum::response::Response {
    if name.starts_with("ok") {
        StatusCode::OK.into_response()
    } else if name.starts_with("redirect") {
        (StatusCode::FOUND, [(header::LOCATION, "/approve")]).into_response()
    } else if name.starts_with("empty") {
        StatusCode::NO_CONTENT.into_response()
    } else if name.starts_with("fail") {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    } else if name.starts_with("busy") {
        StatusCode::TOO_MANY_REQUESTS.into_response()
    } else {
        StatusCode::FORBIDDEN.into_response()
    }
}
