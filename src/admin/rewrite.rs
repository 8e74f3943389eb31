//! `POST /v1/rewrite`: a whole message prepared in one call ([`crate::rewrite`]), its links
//! and pixel minted by the [`LinkKeys`](crate::keys::LinkKeys) service with the message's id,
//! metadata and send time. Bodies up to [`MAX_MESSAGE_BYTES`], whatever
//! `limits.admin_max_body_bytes` says: an email is larger than the other requests.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::Shared;
use super::error::{ApiError, parse_name};
use crate::Domain;
use crate::keys::{LinkKeys, MintError};
use crate::links::{EdgeRoute, Link, LinkError, MessageContext, Role};
use crate::rewrite::{self, Decoy, Made, Message, Minter, Place, RewriteError};

/// Largest `POST /v1/rewrite` body: 2 MiB.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// The route (the caller layers on the token and the full scope).
pub(super) fn router() -> Router<Shared> {
    Router::new().route(
        "/v1/rewrite",
        post(rewrite_message).layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES)),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RewriteRequest {
    domain: String,
    message: String,
    html: Option<String>,
    text: Option<String>,
    #[serde(default)]
    meta: super::api::Meta,
    /// RFC 3339.
    sent_at: Option<String>,
    #[serde(default)]
    pixel: bool,
    #[serde(default)]
    decoy: bool,
}

#[derive(Serialize)]
struct RewriteAnswer {
    html: Option<String>,
    text: Option<String>,
    links: Vec<LinkAnswer>,
    pixel: Option<String>,
    /// `added`, `kept` or `skipped`; null when not asked.
    decoy: Option<&'static str>,
    /// Why the decoy asked for was not placed.
    decoy_skipped: Option<String>,
}

#[derive(Serialize)]
struct LinkAnswer {
    index: u32,
    url: String,
    link: String,
    role: &'static str,
}

/// Mints a message's links and pixel with its id, metadata and send time.
struct KeysMinter<'a> {
    keys: &'a LinkKeys,
    domain: &'a Domain,
    message: &'a str,
    meta: &'a [(String, String)],
    sent_at: Option<u64>,
}

impl KeysMinter<'_> {
    fn context(&self, place: Option<Place>) -> MessageContext {
        MessageContext {
            message: self.message.to_owned(),
            index: place.map(|p| p.index),
            count: place.map(|p| p.count),
            sent_at: self.sent_at,
            role: place.map(|p| p.role),
        }
    }
}

impl Minter for KeysMinter<'_> {
    type Error = MintError;

    fn link(&mut self, url: &str, place: Place) -> Result<String, MintError> {
        let context = self.context(Some(place));
        self.keys
            .mint_in_message(self.domain, url, self.meta.to_vec(), Some(context))
    }

    fn pixel(&mut self) -> Result<String, MintError> {
        let context = self.context(None);
        self.keys
            .mint_pixel(self.domain, context, self.meta.to_vec())
    }

    fn is_edge_domain(&self, host: &str) -> bool {
        self.keys.is_edge_domain(host)
    }

    fn made_for_this_message(&self, url: &str) -> Option<Made> {
        let (route, link) = self.keys.open_own(self.domain, url)?;
        let context = link.context.filter(|c| c.message == self.message)?;
        Some(match route {
            EdgeRoute::Pixel => Made::Pixel,
            EdgeRoute::Link => Made::Link(context.role.unwrap_or(Role::Content)),
        })
    }
}

async fn rewrite_message(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the message is over {MAX_MESSAGE_BYTES} bytes (2 MiB), the most /v1/rewrite \
                     accepts; send one message's HTML and text parts per call"
                ),
            )
        } else {
            ApiError::bad_request(format!("reading the request body: {e}"))
        }
    })?;
    let req: RewriteRequest = super::api::parse_json(&body)?;
    let domain = parse_name(&req.domain)?;
    // Refused even when the message has nothing to mint, as a link for it would be; so is a
    // message id minting would refuse.
    state.keys.registered(&domain)?;
    MessageContext {
        message: req.message.clone(),
        ..MessageContext::default()
    }
    .validate()
    .map_err(|e| MintError::Link(LinkError::Context(e)))?;
    let sent_at = req
        .sent_at
        .as_deref()
        .map(super::api::parse_sent_at)
        .transpose()?;
    // And metadata minting would refuse (the destination is a placeholder, never sealed).
    let meta = Link::new("https://meta.invalid/", req.meta.0, 0)
        .map_err(MintError::Link)?
        .meta;
    // Off the runtime's workers, which also serve clicks: a 2 MiB message takes milliseconds.
    let keys = state.keys.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut minter = KeysMinter {
            keys: &keys,
            domain: &domain,
            message: &req.message,
            meta: &meta,
            sent_at,
        };
        let message = Message {
            html: req.html.as_deref(),
            text: req.text.as_deref(),
            pixel: req.pixel,
            decoy: req.decoy,
        };
        rewrite::rewrite(message, &mut minter)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("rewriting the message failed: {e}"),
        )
    })?
    // Every refusal (a role, the link count, a link or the message id minting refuses) is the
    // request's: 400 with the whole chain, which names the link.
    .map_err(|e: RewriteError<MintError>| ApiError::bad_request(crate::errors::chain(&e)))?;
    Ok(axum::Json(RewriteAnswer {
        html: out.html,
        text: out.text,
        links: out
            .links
            .into_iter()
            .map(|l| LinkAnswer {
                index: l.index,
                url: l.url,
                link: l.link,
                role: l.role.as_str(),
            })
            .collect(),
        pixel: out.pixel,
        decoy: out.decoy.map(Decoy::as_str),
        decoy_skipped: match out.decoy {
            Some(Decoy::Skipped(why)) => Some(why.to_string()),
            _ => None,
        },
    }))
}
