//! Customers' status pages: `<public_url>/s/<token>` shows one domain's onboarding checks with
//! their fixes, for the customer who owns the domain, without an admin token.
//!
//! The token is a share token ([`crate::links::share`]): sealed with the link keys, naming one
//! domain and an expiry. A token that does not open, has expired, names a domain no longer
//! registered or arrives on another name gets a plain `404`, the same for every reason. `GET`
//! shows the latest checks (`.json`: the same as JSON), `POST` runs them again, at most once per
//! [`RECHECK_EVERY`] per domain (sooner: `429` with the wait). The pages load nothing from
//! elsewhere (their style and script are served here), are never cached and send no referrer
//! (the token is in the address). What they show is only the domain's own checks and
//! certificate, the edge's resolver addresses left out ([`view`]).
//!
//! The page itself is [`page`]; this module answers requests on the public name.

mod page;
mod view;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::Domain;
use crate::clock::{Clock, unix_secs};
use crate::domains::{DomainError, Domains};
use crate::errors::chain as error_chain;
use crate::http::Body;
use crate::keys::LinkKeys;
use crate::links::share;
use crate::onboarding::OncePer;
pub use view::StatusView;

/// Least time between two check runs a status page asks for, per domain.
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);
/// The path prefix of status pages.
pub const PREFIX: &str = "/s/";
/// The test link's destination under [`PREFIX`]: a page of no domain.
const WORKS: &str = "works";

/// Serves the status pages on the public name.
pub struct StatusPages {
    host: Domain,
    keys: Arc<LinkKeys>,
    domains: Arc<Domains>,
    clock: Clock,
    /// When a page last ran the checks of a domain, for runs less than [`RECHECK_EVERY`] ago.
    last_run: OncePer,
}

impl StatusPages {
    /// Pages served on `host`, opening tokens (and minting test links) with `keys`.
    pub fn new(
        host: Domain,
        keys: Arc<LinkKeys>,
        domains: Arc<Domains>,
        clock: Clock,
    ) -> StatusPages {
        StatusPages {
            host,
            keys,
            domains,
            clock,
            last_run: OncePer::new(RECHECK_EVERY),
        }
    }

    /// The name the pages are served on.
    pub fn host(&self) -> &Domain {
        &self.host
    }

    /// Answers a request that arrived over HTTPS for [`StatusPages::host`].
    pub async fn handle<B>(&self, req: &Request<B>) -> Response<Body> {
        let Some(rest) = req.uri().path().strip_prefix(PREFIX) else {
            return not_found();
        };
        match (req.method(), rest) {
            (&Method::GET | &Method::HEAD, "style.css") => {
                return asset("text/css; charset=utf-8", page::STYLE);
            }
            (&Method::GET | &Method::HEAD, "page.js") => {
                return asset("text/javascript; charset=utf-8", page::SCRIPT);
            }
            (&Method::GET | &Method::HEAD, WORKS) => {
                return respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    Bytes::from(page::works()),
                );
            }
            _ => {}
        }
        let (token, json) = match rest.strip_suffix(".json") {
            Some(t) => (t, true),
            None => (rest, false),
        };
        let name = match self.open(token).await {
            Ok(Some(name)) => name,
            Ok(None) => return not_found(),
            Err(()) => return unavailable(),
        };
        let mut notice = None;
        let mut status = StatusCode::OK;
        match *req.method() {
            Method::GET | Method::HEAD => {}
            Method::POST => match self.recheck(&name).await {
                Ok(true) => notice = Some("Checked again just now.".to_owned()),
                Ok(false) => {
                    notice = Some("Could not check just now: try again in a moment.".to_owned());
                }
                Err(wait) => {
                    status = StatusCode::TOO_MANY_REQUESTS;
                    // Rounded up: waiting what it says is enough.
                    notice = Some(format!(
                        "Checked a moment ago: you can check again in {} s.",
                        wait.as_millis().div_ceil(1000).max(1)
                    ));
                }
            },
            _ => return not_found(),
        }
        let state = match self.domains.show(&name).await {
            Ok(state) => state,
            Err(DomainError::NotRegistered(_)) => return not_found(),
            Err(e) => {
                tracing::warn!(domain = %name, error = %error_chain(&e), "status page");
                return unavailable();
            }
        };
        let view = StatusView::new(state, self.domains.check_settings());
        if json {
            let body = serde_json::to_vec(&view).unwrap_or_default();
            return respond(status, "application/json", Bytes::from(body));
        }
        // Ready: a real link of the domain, to click through it. Not back to this page: the
        // destination is written into the click line, and the token would be a credential in
        // every reader's hands.
        let test_link = view
            .ready
            .then(|| {
                let works = format!("https://{}{PREFIX}{WORKS}", self.host);
                let meta = vec![("clickedge".to_owned(), "status-test".to_owned())];
                self.keys.mint(&name, &works, meta).ok()
            })
            .flatten();
        let html = page::render(&view, token, notice.as_deref(), test_link.as_deref());
        respond(status, "text/html; charset=utf-8", Bytes::from(html))
    }

    /// The domain `token` names, unexpired and registered: under the registration it was
    /// sealed for (not one since the name was removed). `Err` when the store could not say
    /// (logged): an open page tries again, where a 404 tells it the address is gone.
    async fn open(&self, token: &str) -> Result<Option<Domain>, ()> {
        let Ok(share) = share::open(&self.keys.ring().current(), token) else {
            return Ok(None);
        };
        if share.expires_at <= self.clock.unix_secs() {
            return Ok(None);
        }
        let Some(sealed_for) = share.registered_at else {
            return Ok(Some(share.domain));
        };
        match self.domains.show(&share.domain).await {
            Ok(state) => {
                Ok((unix_secs(state.record.created_at) == sealed_for).then_some(share.domain))
            }
            Err(DomainError::NotRegistered(_)) => Ok(None),
            Err(e) => {
                tracing::warn!(domain = %share.domain, error = %error_chain(&e), "status page");
                Err(())
            }
        }
    }

    /// Runs the checks of `name` unless a page did less than [`RECHECK_EVERY`] ago (then the
    /// time left); false if they could not run (the store failing: logged).
    async fn recheck(&self, name: &Domain) -> Result<bool, Duration> {
        self.last_run.try_at(name, self.clock.now())?;
        if let Err(e) = self.domains.check(name).await {
            tracing::warn!(domain = %name, error = %error_chain(&e), "status page check");
            return Ok(false);
        }
        Ok(true)
    }
}

/// The answer when the store could not say what an address shows: try again.
fn unavailable() -> Response<Body> {
    let mut res = respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"try again in a moment\n"),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    res
}

/// The answer to every status page address that does not open.
fn not_found() -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"not found\n"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response<Body> {
    respond(
        StatusCode::OK,
        content_type,
        Bytes::from_static(body.as_bytes()),
    )
}

/// A response with the headers every status page answer carries.
fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Body::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if status == StatusCode::TOO_MANY_REQUESTS {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    }
    res
}
