//! The admin API (JSON over HTTP on `listen.admin`), the onboarding web page (`/ui/`, see
//! [`ui`]), Prometheus metrics and health.
//!
//! Everything but `/metrics` and `/healthz` needs the admin token: `Authorization: Bearer
//! <token>` for the API, a cookie set by the page's login form for `/ui/`, both compared in
//! constant time. Errors are JSON `{"error": "..."}` with a message that says what to do. This
//! listener never serves clicks.

mod ui;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use prometheus::{Encoder as _, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Domain;
use crate::certs::{CertStatus, Certs};
use crate::clock::{from_unix_secs, rfc3339, unix_now};
use crate::errors::chain as error_chain;
use crate::links::{self, KeyId, KeyRing, Link, LinkKey, SharedKeyRing};
use crate::onboarding::{Check, Onboarding, certificate};
use crate::policy::Policy;
use crate::store::{DomainRecord, Store, StoreError};

/// What the admin handlers share.
pub struct AdminState {
    /// Durable state.
    pub store: Arc<dyn Store>,
    /// Registered domains in memory.
    pub policy: Arc<Policy>,
    /// Certificates.
    pub certs: Arc<Certs>,
    /// Link keys in use.
    pub keys: Arc<SharedKeyRing>,
    /// Registry rendered at `/metrics`.
    pub registry: Registry,
    /// The bearer token.
    pub token: String,
    /// Largest request body (`limits.admin_max_body_bytes`); larger gets 413.
    pub max_body_bytes: usize,
    /// Domain checks.
    pub onboarding: Arc<Onboarding>,
}

type Shared = Arc<AdminState>;

/// The admin router.
pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/v1/domains", get(list_domains).post(add_domain))
        .route("/v1/domains/{name}", get(show_domain).delete(remove_domain))
        .route("/v1/domains/{name}/check", post(check_domain))
        .route("/v1/links", axum::routing::post(mint_link))
        .route("/v1/keys", get(list_keys).post(rotate_key))
        .route("/v1/keys/{id}", delete(remove_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(api)
        .merge(ui::router())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// An API error: status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %error_chain(&e), "admin request failed in the store");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal storage error; see the edge's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "error": self.message }))).into_response()
    }
}

async fn require_token(
    State(state): State<Shared>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented.is_some_and(|t| {
        aws_lc_rs::constant_time::verify_slices_are_equal(t.as_bytes(), state.token.as_bytes())
            .is_ok()
    });
    if ok {
        next.run(req).await
    } else {
        let mut res = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: send Authorization: Bearer <token> (the token is in <data_dir>/admin-token)",
        )
        .into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        res
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.registry.gather(), &mut out) {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// A domain as the API shows it.
#[derive(Serialize)]
struct DomainView {
    name: Domain,
    created_at: String,
    certificate: CertStatus,
    /// The latest onboarding checks (the certificate check describes the certificate now);
    /// empty if never checked.
    checks: Vec<Check>,
    /// When the checks ran (RFC 3339); none if never.
    checked_at: Option<String>,
}

async fn view(state: &AdminState, record: DomainRecord) -> Result<DomainView, ApiError> {
    let certificate = state.certs.status(&record).await?;
    let (checks, checked_at) = match state.onboarding.latest(&record.name) {
        Some(report) => (
            report.with_certificate(&record.name, &certificate),
            Some(rfc3339(from_unix_secs(report.checked_at))),
        ),
        None => (Vec::new(), None),
    };
    Ok(DomainView {
        name: record.name,
        created_at: rfc3339(from_unix_secs(record.created_at)),
        certificate,
        checks,
        checked_at,
    })
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn parse_name(name: &str) -> Result<Domain, ApiError> {
    Domain::parse(name)
        .map_err(|e| ApiError::bad_request(format!("invalid domain name {name:?}: {e}")))
}

async fn list_domains(State(state): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let mut out = Vec::new();
    for record in state.store.domains().await? {
        out.push(view(&state, record).await?);
    }
    Ok(axum::Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDomain {
    name: String,
}

async fn add_domain(
    State(state): State<Shared>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: AddDomain = parse_json(&body)?;
    let name = parse_name(&req.name)?;
    let (created, view) = add(&state, name).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(view)))
}

/// Registers `name` (again), runs its checks when the edge knows what they compare against,
/// and returns whether it was new, with the domain.
async fn add(state: &AdminState, name: Domain) -> Result<(bool, DomainView), ApiError> {
    let created = state.store.add_domain(&name, unix_now()).await?;
    state.policy.register(name.clone());
    if created {
        tracing::info!(domain = %name, "domain added");
    } else {
        // Adding an existing domain again is how a customer says "I fixed it, try now": the next
        // handshake may order again instead of waiting out the backoff.
        state.certs.reset_backoff(&name).await?;
    }
    let mut record =
        state.store.domain(&name).await?.ok_or_else(|| {
            ApiError::new(StatusCode::CONFLICT, "domain was removed concurrently")
        })?;
    if state.onboarding.is_configured() {
        // Before answering, so the first certificate order already knows whether DNS is right
        // and the customer sees what to fix in the answer.
        state.onboarding.check(&record, &state.certs).await?;
        record = state.store.domain(&name).await?.unwrap_or(record);
    }
    Ok((created, view(state, record).await?))
}

async fn check_domain(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let name = parse_name(&name)?;
    Ok(axum::Json(check_now(&state, &name).await?))
}

/// Runs the checks of `name` now and returns the domain.
async fn check_now(state: &AdminState, name: &Domain) -> Result<DomainView, ApiError> {
    let record = registered(state, name).await?;
    let report = state.onboarding.check(&record, &state.certs).await?;
    // Checks that pass again after a failure they can see the cause of are how a customer says
    // "fixed": the next handshake may order at once instead of waiting out the backoff.
    if report.blocking().is_none()
        && record.retry_at > unix_now()
        && record
            .last_error
            .as_deref()
            .is_some_and(certificate::checks_cover)
    {
        state.certs.reset_backoff(name).await?;
    }
    let record = registered(state, name).await?;
    view(state, record).await
}

async fn show_domain(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let name = parse_name(&name)?;
    let record = registered(&state, &name).await?;
    Ok(axum::Json(view(&state, record).await?))
}

/// The stored record of a registered domain, or 404 saying how to add it.
async fn registered(state: &AdminState, name: &Domain) -> Result<DomainRecord, ApiError> {
    state
        .store
        .domain(name)
        .await?
        .ok_or_else(|| not_registered(name))
}

fn not_registered(name: &Domain) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("domain {name} is not registered; add it with: clickedge domain add {name}"),
    )
}

async fn remove_domain(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let name = parse_name(&name)?;
    state.policy.unregister(name.as_str());
    state.certs.forget(&name);
    state.onboarding.forget(&name);
    if !state.store.remove_domain(&name).await? {
        return Err(not_registered(&name));
    }
    if let Err(e) = state.certs.refresh_gauges().await {
        tracing::warn!(error = %error_chain(&e), "refreshing certificate gauges");
    }
    tracing::info!(domain = %name, "domain removed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintLink {
    domain: String,
    url: String,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

async fn mint_link(
    State(state): State<Shared>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: MintLink = parse_json(&body)?;
    let domain = parse_name(&req.domain)?;
    if !state.policy.is_registered(domain.as_str()) {
        return Err(ApiError::bad_request(format!(
            "domain {domain} is not registered; add it first: clickedge domain add {domain}"
        )));
    }
    let link = Link::new(&req.url, req.meta.into_iter().collect(), unix_now())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let token = links::seal(&state.keys.current(), domain.as_str(), &link);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "link": format!("https://{domain}/c/{token}") })),
    ))
}

#[derive(Serialize)]
struct KeyView {
    id: u16,
    created_at: String,
    active: bool,
}

async fn list_keys(State(state): State<Shared>) -> impl IntoResponse {
    let ring = state.keys.current();
    let active = ring.active().id();
    let keys: Vec<_> = ring
        .keys()
        .iter()
        .map(|k| KeyView {
            id: k.id().0,
            created_at: rfc3339(from_unix_secs(k.created_at())),
            active: k.id() == active,
        })
        .collect();
    axum::Json(keys)
}

/// Reads the key ring from the store and puts it in use.
pub async fn reload_keys(store: &dyn Store, keys: &SharedKeyRing) -> Result<(), StoreError> {
    let ring = load_key_ring(store).await?;
    keys.replace(ring);
    Ok(())
}

/// Loads the link key ring from the store, generating the first key if there is none.
pub async fn load_key_ring(store: &dyn Store) -> Result<KeyRing, StoreError> {
    let mut stored = store.link_keys().await?;
    if stored.is_empty() {
        store.add_link_key(rand::random(), unix_now()).await?;
        stored = store.link_keys().await?;
    }
    let keys = stored
        .into_iter()
        .map(|k| LinkKey::new(KeyId(k.id), k.secret, k.created_at))
        .collect();
    KeyRing::new(keys).map_err(|_| StoreError::Corrupt("link_keys (empty after insert)"))
}

async fn rotate_key(State(state): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let id = state.store.add_link_key(rand::random(), unix_now()).await?;
    reload_keys(state.store.as_ref(), &state.keys).await?;
    tracing::info!(key = id, "link key added; it seals new links from now on");
    Ok((
        StatusCode::CREATED,
        axum::Json(KeyView {
            id,
            created_at: rfc3339(from_unix_secs(unix_now())),
            active: true,
        }),
    ))
}

async fn remove_key(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id: u16 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid key id {id:?}: expected a number")))?;
    if state.keys.current().active().id() == KeyId(id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("key {id} is the sealing key; add a new key first (clickedge keys rotate)"),
        ));
    }
    if !state.store.remove_link_key(id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no link key {id}"),
        ));
    }
    reload_keys(state.store.as_ref(), &state.keys).await?;
    tracing::warn!(key = id, "link key removed; links it sealed no longer open");
    Ok(StatusCode::NO_CONTENT)
}
