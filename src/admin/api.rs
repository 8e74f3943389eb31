//! The JSON API under `/v1`: domains (add, list, show, change, check, remove), links (mint; whole
//! messages in [`super::rewrite`]), keys
//! (list, rotate, remove) and the cluster's status. Each handler parses the request, calls the service and shows the
//! answer; statuses of errors are decided in [`super::error`].

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;
use serde_json::json;

use super::Shared;
use super::error::{ApiError, Segment, parse_name, parse_new_name};
use super::scope::Scope;
use super::views::{DomainView, KeyView};
use crate::Domain;
use crate::domains::LIST_PAGE;
use crate::links::{ContextError, MessageContext, Role};

/// The `/v1` routes (the token check is layered on by the caller). Those that change something
/// need the full scope; a read-only token lists, shows and checks.
pub(super) fn router() -> Router<Shared> {
    let read = Router::new()
        .route("/v1/domains", get(list_domains))
        .route("/v1/domains/{name}", get(show_domain))
        .route("/v1/domains/{name}/check", post(check_domain))
        .route("/v1/keys", get(list_keys))
        .route("/v1/cluster", get(cluster_status));
    let write = Router::new()
        .route("/v1/domains", post(add_domain))
        .route(
            "/v1/domains/{name}",
            delete(remove_domain).merge(patch(change_domain)),
        )
        .route("/v1/domains/{name}/share", post(share_domain))
        .route("/v1/links", post(mint_link))
        .route("/v1/keys", post(rotate_key))
        .route("/v1/keys/{id}", delete(remove_key))
        .route("/v1/keys/{id}/retire", post(retire_key))
        .merge(super::rewrite::router())
        .route_layer(axum::middleware::from_fn(super::scope::require_full));
    read.merge(write)
}

async fn cluster_status(State(state): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(state.cluster.read().await?))
}

/// A request body within `limits.admin_max_body_bytes`. Taking it rather than [`Bytes`] makes a
/// body over the limit a JSON `413` naming the limit, where axum's own rejection is a text/plain
/// line that names neither the key nor its value.
pub(super) struct Body(Bytes);

impl FromRequest<Shared> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Shared) -> Result<Body, ApiError> {
        Bytes::from_request(req, state).await.map(Body).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is over {} bytes, limits.admin_max_body_bytes: send a \
                         smaller one, or raise limits.admin_max_body_bytes",
                        state.max_body_bytes
                    ),
                )
            } else {
                ApiError::bad_request(format!("reading the request body: {e}"))
            }
        })
    }
}

pub(super) fn parse_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// `GET /v1/domains[?after=NAME][&limit=N]`: every domain, or a page of them. Domains are sorted
/// by name byte by byte; `after` starts after that name (registered or not; any text, such as a
/// first letter, is a place to start), `limit` (1 to [`LIST_PAGE`]) caps the count, and a page
/// shorter than its limit is the last.
async fn list_domains(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
) -> Result<impl IntoResponse, ApiError> {
    let (after, limit) = list_query(query.as_deref().unwrap_or(""))?;
    let list = match limit {
        Some(limit) => state.domains.page(&after, limit).await?,
        None => state.domains.list(&after).await?,
    };
    Ok(axum::Json(
        list.into_iter().map(DomainView::from).collect::<Vec<_>>(),
    ))
}

/// Where a listing starts, `after` as given: a name in its stored (A-label) form, any other
/// text in lower case; a `400` past the longest name, or for a control character (which no
/// name has, and PostgreSQL's text refuses).
pub(super) fn listing_cursor(after: &str) -> Result<String, ApiError> {
    if after.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "after {after:?}: a control character is in no domain name; give the last name of \
             the page before"
        )));
    }
    if after.len() > 253 {
        return Err(ApiError::bad_request(format!(
            "after: {} bytes, longer than any domain name (253): give the last name of the \
             page before",
            after.len()
        )));
    }
    Ok(Domain::parse(after).map_or_else(
        |_| after.to_ascii_lowercase(),
        |name| name.as_str().to_owned(),
    ))
}

/// The `after` ([`listing_cursor`]) and `limit` of a listing's query string; a `400` naming
/// the bad value otherwise.
fn list_query(query: &str) -> Result<(String, Option<u32>), ApiError> {
    let (mut after, mut limit) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let given_twice =
            || ApiError::bad_request(format!("{key} is given twice in the query: give it once"));
        match &*key {
            "after" if after.is_some() => return Err(given_twice()),
            "after" => after = Some(listing_cursor(&value)?),
            "limit" if limit.is_some() => return Err(given_twice()),
            "limit" => {
                let n = value.parse().ok().filter(|n| (1..=LIST_PAGE).contains(n));
                let Some(n) = n else {
                    return Err(ApiError::bad_request(format!(
                        "limit {value:?}: give a whole number of domains from 1 to {LIST_PAGE}"
                    )));
                };
                limit = Some(n);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: a listing takes after=NAME (start after \
                     that name) and limit=N (at most N domains, 1 to {LIST_PAGE})"
                )));
            }
        }
    }
    Ok((after.unwrap_or_default(), limit))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDomain {
    name: String,
    /// Where links of the domain that do not open send recipients; absent keeps what it has.
    fallback_url: Option<String>,
}

async fn add_domain(
    State(state): State<Shared>,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: AddDomain = parse_json(&body)?;
    let added = state
        .domains
        .add(parse_new_name(&req.name)?, req.fallback_url.as_deref())
        .await?;
    let status = if added.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(DomainView::from(added.domain))))
}

async fn show_domain(
    State(state): State<Shared>,
    Segment(name): Segment,
) -> Result<impl IntoResponse, ApiError> {
    let domain = state.domains.show(&parse_name(&name)?).await?;
    Ok(axum::Json(DomainView::from(domain)))
}

/// `PATCH /v1/domains/<name> {"fallback_url": URL | null}`: what can change of a domain. The
/// one field is required (null clears it), so an empty body is a mistake, not a no-op.
async fn change_domain(
    State(state): State<Shared>,
    Segment(name): Segment,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let mut fields: serde_json::Map<String, serde_json::Value> = parse_json(&body)?;
    let fallback = match fields.remove("fallback_url") {
        Some(serde_json::Value::String(url)) => Some(url),
        Some(serde_json::Value::Null) => None,
        Some(_) => {
            return Err(ApiError::bad_request(
                "fallback_url must be a URL string, or null to clear it",
            ));
        }
        None => {
            return Err(ApiError::bad_request(
                "nothing to change: give {\"fallback_url\": URL} or {\"fallback_url\": null}",
            ));
        }
    };
    if let Some(unknown) = fields.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown field {unknown:?}: only fallback_url can be changed"
        )));
    }
    let domain = state
        .domains
        .set_fallback(&parse_name(&name)?, fallback.as_deref())
        .await?;
    Ok(axum::Json(DomainView::from(domain)))
}

async fn check_domain(
    State(state): State<Shared>,
    Extension(scope): Extension<Scope>,
    Segment(name): Segment,
) -> Result<impl IntoResponse, ApiError> {
    let domain = state.check(&parse_name(&name)?, scope).await?;
    Ok(axum::Json(DomainView::from(domain)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ShareDomain {
    /// How long the address opens (`30d`, `12h`).
    ttl: Option<String>,
}

/// `POST /v1/domains/<name>/share {"ttl"?}`: the address of the domain's status page for its
/// customer, and when it stops opening.
async fn share_domain(
    State(state): State<Shared>,
    Segment(name): Segment,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: ShareDomain = if body.is_empty() {
        ShareDomain::default()
    } else {
        parse_json(&body)?
    };
    let shared = super::share::share(&state, &parse_name(&name)?, req.ttl.as_deref()).await?;
    Ok(axum::Json(shared))
}

async fn remove_domain(
    State(state): State<Shared>,
    Segment(name): Segment,
) -> Result<impl IntoResponse, ApiError> {
    state.domains.remove(&parse_name(&name)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A request's `meta` object, its pairs sorted by key. A key given twice is kept twice, so
/// minting refuses it (`LinkError::DuplicateMeta`, 400) as the CLI does, instead of one of the
/// values winning in silence.
#[derive(Default)]
pub(super) struct Meta(pub(super) Vec<(String, String)>);

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Meta, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Meta;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Meta(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintLink {
    domain: String,
    url: String,
    #[serde(default)]
    meta: Meta,
    /// Message context, sealed in the token (all optional; the others need `message`).
    message: Option<String>,
    index: Option<u32>,
    count: Option<u32>,
    /// RFC 3339.
    sent_at: Option<String>,
    role: Option<String>,
}

impl MintLink {
    /// The message context the request gives, if any.
    fn context(&self) -> Result<Option<MessageContext>, ApiError> {
        let Some(message) = self.message.clone() else {
            if self.index.is_some()
                || self.count.is_some()
                || self.sent_at.is_some()
                || self.role.is_some()
            {
                return Err(ApiError::bad_request(ContextError::NoMessage.to_string()));
            }
            return Ok(None);
        };
        let sent_at = self.sent_at.as_deref().map(parse_sent_at).transpose()?;
        let role = match &self.role {
            Some(r) => Some(Role::parse(r).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "role {r:?} is not one of content, footer, unsubscribe, confirm, decoy"
                ))
            })?),
            None => None,
        };
        Ok(Some(MessageContext {
            message,
            index: self.index,
            count: self.count,
            sent_at,
            role,
        }))
    }
}

/// A message's send time, RFC 3339, as Unix seconds.
pub(super) fn parse_sent_at(s: &str) -> Result<u64, ApiError> {
    crate::clock::parse_rfc3339(s)
        .map(crate::clock::unix_secs)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "sent_at {s:?} is not an RFC 3339 time (e.g. 2025-11-24T09:00:00Z)"
            ))
        })
}

async fn mint_link(
    State(state): State<Shared>,
    Body(body): Body,
) -> Result<impl IntoResponse, ApiError> {
    let req: MintLink = parse_json(&body)?;
    let domain = parse_name(&req.domain)?;
    let context = req.context()?;
    let link = state
        .keys
        .mint_in_message(&domain, &req.url, req.meta.0, context)?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "link": link }))))
}

async fn list_keys(State(state): State<Shared>) -> impl IntoResponse {
    let keys: Vec<KeyView> = state.keys.list().into_iter().map(KeyView::from).collect();
    axum::Json(keys)
}

async fn rotate_key(State(state): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let key = state.keys.rotate().await?;
    Ok((StatusCode::CREATED, axum::Json(KeyView::from(key))))
}

async fn remove_key(
    State(state): State<Shared>,
    Segment(id): Segment,
) -> Result<impl IntoResponse, ApiError> {
    state.keys.remove(key_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn retire_key(
    State(state): State<Shared>,
    Segment(id): Segment,
) -> Result<impl IntoResponse, ApiError> {
    let key = state.keys.retire(key_id(&id)?).await?;
    Ok(axum::Json(KeyView::from(key)))
}

/// A key id from the path: 1 to 65535, as the store hands them out.
fn key_id(id: &str) -> Result<u16, ApiError> {
    id.parse().ok().filter(|&id: &u16| id != 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid key id {id:?}: key ids are numbers from 1 to 65535 (GET /v1/keys lists them)"
        ))
    })
}
