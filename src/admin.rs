//! The admin API (JSON over HTTP on `listen.admin`, see [`api`]), the onboarding web page
//! (`/ui/`, see [`ui`]), Prometheus metrics and health.
//!
//! Everything but `/metrics`, `/healthz` and `/readyz` ([`ready`]) needs the admin token: `Authorization: Bearer
//! <token>` for the API, a session the page's sign-in form starts for `/ui/`, the token compared
//! in constant time; a read-only token ([`scope`]) reads and checks but changes nothing (403). Everything but the two health checks answers only to the host names of [`hosts`]
//! (DNS rebinding). Handlers are thin: they parse the request, call the [`Domains`] or
//! [`LinkKeys`] service, and turn its answer into JSON or a page; errors get their status in
//! [`error`] and are JSON `{"error": "..."}` with a message that says what to do. This listener
//! never serves clicks.

mod api;
mod error;
mod hosts;
mod ready;
mod rewrite;
mod scope;
mod share;
mod ui;
mod views;

pub use error::error_response;
pub use hosts::Hosts;
pub use ready::Readiness;
pub use rewrite::MAX_MESSAGE_BYTES;
pub use scope::{Scope, Tokens};
pub use ui::Sessions;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder as _, Registry, TextEncoder};

use crate::Domain;
use crate::clicks::ship::Progress;
use crate::clock::Clock;
use crate::domains::{DomainState, Domains};
use crate::keys::LinkKeys;
use error::ApiError;

/// What the admin handlers share.
pub struct AdminState {
    /// The domain lifecycle.
    pub domains: Arc<Domains>,
    /// The link key lifecycle and minting.
    pub keys: Arc<LinkKeys>,
    /// Registry rendered at `/metrics`.
    pub registry: Registry,
    /// The bearer tokens: the full one and the read-only ones.
    pub tokens: Tokens,
    /// Largest request body (`limits.admin_max_body_bytes`); larger gets 413.
    pub max_body_bytes: usize,
    /// Time, for the page's sessions.
    pub clock: Clock,
    /// The host names the listener answers to (`admin.hosts` and defaults).
    pub hosts: Hosts,
    /// The page's signed-in sessions.
    pub sessions: Sessions,
    /// What `/readyz` answers.
    pub readiness: Arc<Readiness>,
    /// With a click stream: how far shipping has come, for `/healthz`.
    pub shipping: Option<Progress>,
    /// The cluster's status (`GET /v1/cluster`).
    pub cluster: Arc<crate::cluster::StatusReader>,
    /// Where customers' status pages are (`onboarding.public_url`); none: no sharing.
    pub public_url: Option<crate::config::PublicUrl>,
    /// When a read-only token last ran a domain's checks ([`AdminState::check`]).
    pub(crate) read_checks: crate::onboarding::OncePer,
}

impl AdminState {
    /// Runs the checks of `name` for a caller of `scope`. A read-only token is a dashboard's,
    /// handed out more widely than the admin token, and each run sends DNS queries and
    /// connections to the customer's addresses: with it a domain's checks run at most once per
    /// [`READ_CHECK_EVERY`] (sooner: `429` with the wait); the admin token is not bound.
    async fn check(&self, name: &Domain, scope: Scope) -> Result<DomainState, ApiError> {
        // A name the store does not hold is not remembered: its check answers 404. One this node
        // has not loaded yet (added on another node a moment ago) is bound all the same.
        if scope == Scope::Read && !self.domains.is_registered(name) {
            self.domains.stored(name).await?;
        }
        if scope == Scope::Read
            && let Err(wait) = self.read_checks.try_at(name, self.clock.now())
        {
            return Err(ApiError::too_many(
                format!(
                    "{name} was checked less than {}s ago with a read-only token: its checks run \
                     at most that often with one; try again in a few seconds (Retry-After), or \
                     use the admin token",
                    READ_CHECK_EVERY.as_secs(),
                ),
                wait,
            ));
        }
        Ok(self.domains.check(name).await?)
    }
}

/// How often a read-only token may run one domain's checks (a status page's rate too).
pub const READ_CHECK_EVERY: std::time::Duration = crate::status::RECHECK_EVERY;

type Shared = Arc<AdminState>;

/// The admin router.
pub fn router(state: Shared) -> Router {
    let api = api::router()
        .route_layer(middleware::from_fn(error::reads_unavailable))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .merge(api)
        .merge(ui::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        // Before the host check's layer, so inside it: a wrong method under a stranger's Host
        // is refused as the Host (421), not answered.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), hosts::check))
        // After the host check's layer, so outside it: health says nothing, and load balancers
        // probe it under whatever name they like.
        .route(
            "/readyz",
            get(|State(state): State<Shared>| async move { state.readiness.answer() }),
        )
        .route("/healthz", get(health))
        // The health checks' (the routes above keep theirs).
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// A method a route does not take: a JSON error like any other (axum's own has no body).
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not a method of {}: see the Allow header for those it takes",
            uri.path()
        ),
    )
}

/// `ok`, and with a click stream a second line, `shipping: current` or `shipping: behind`
/// (publishing fails, or the oldest unshipped click is older than 10 s). Healthy either way:
/// unshipped clicks are safe in the log.
async fn health(State(state): State<Shared>) -> &'static str {
    match &state.shipping {
        None => "ok\n",
        Some(p) if p.behind() => "ok\nshipping: behind\n",
        Some(_) => "ok\nshipping: current\n",
    }
}

async fn require_token(
    State(state): State<Shared>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    if let Some(scope) = presented.and_then(|t| state.tokens.scope_of(t)) {
        req.extensions_mut().insert(scope);
        next.run(req).await
    } else {
        let mut res = ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "missing or wrong admin token: send Authorization: Bearer <token> (the token is {})",
                state.tokens.whence()
            ),
        )
        .into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        res
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is matched without case
/// (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The router of `listen.metrics`: `/metrics` and nothing else (no token, no API, no page), for a
/// Prometheus that must not reach the admin API. It answers any `Host`: metrics carry no
/// domain names and no secret.
pub fn metrics_router(registry: Registry) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(registry): State<Registry>| async move { render(&registry) }),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "this listener serves only /metrics")
        })
        .with_state(registry)
}

async fn metrics(State(state): State<Shared>) -> Response {
    render(&state.registry)
}

/// The registry in Prometheus's text format.
fn render(registry: &Registry) -> Response {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut out) {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
