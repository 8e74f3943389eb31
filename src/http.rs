//! The edge's HTTP side: the request handler ([`Edge`]) that turns `/c/<token>` into a 302 and a
//! click and answers `/o/<token>` with the open pixel, the router, and the listeners
//! ([`serve`]).
//!
//! Nothing that fails to open redirects anywhere the token says: a link that does not open is
//! a 404 page without `Location` and without a click, or a 302 to the fallback URL the operator
//! fixed for its domain ([`unopened`]). A link whose role is `unsubscribe` or `confirm` answers
//! a GET with a confirm page and redirects only the POST its button sends ([`action`]). This
//! module knows nothing about SQL or the CA.

mod action;
mod answer;
mod page;
mod pixel;
mod request;
pub mod router;
pub mod serve;
mod unopened;

use answer::{close_unread, text, text_owned};

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus::IntCounter;

use crate::Domain;
use crate::acme::challenges::Challenges;
use crate::certs::Certs;
use crate::clicks::opens::OpenClass;
use crate::clicks::privacy::Privacy;
use crate::clicks::verdict::{Class, Facts, NoVerdict, VerdictStage};
use crate::clicks::{
    ClickEvent, ClickQueue, ClickRejected, MAX_REFERER_BYTES, MAX_UA_BYTES, Truncated,
};
use crate::clock::from_unix_secs;
use crate::links::{self, Role, SharedKeyRing};
use crate::metrics::{Metrics, outcome};
use crate::policy::Policy;
use request::{header_text, http_version, request_host, same_name};
use router::{Route, route};

/// The edge as it serves: every click judged by the rule set.
pub type JudgingEdge = Edge<crate::clicks::verdict::Rules>;

/// Response body type of the edge.
pub type Body = Full<Bytes>;

/// Per-outcome request counters, resolved once (no label lookup per request).
struct Counters {
    redirect: IntCounter,
    upgrade: IntCounter,
    bad_token: IntCounter,
    not_found: IntCounter,
    method: IntCounter,
    misdirected: IntCounter,
    acme: IntCounter,
    unavailable: IntCounter,
    pixel: IntCounter,
    confirm_page: IntCounter,
    confirmed: IntCounter,
    body_refused: IntCounter,
    bad_request: IntCounter,
    /// Clicks whose `User-Agent` / `Referer` was cut to its bound.
    ua_truncated: IntCounter,
    referer_truncated: IntCounter,
    /// Opens logged, in the order of [`OpenClass::ALL`].
    opens: [IntCounter; 5],
}

impl Counters {
    fn new(m: &Metrics) -> Counters {
        let c = |o| m.requests.with_label_values(&[o]);
        Counters {
            redirect: c(outcome::REDIRECT),
            upgrade: c(outcome::UPGRADE),
            bad_token: c(outcome::BAD_TOKEN),
            not_found: c(outcome::NOT_FOUND),
            method: c(outcome::METHOD),
            misdirected: c(outcome::MISDIRECTED),
            acme: c(outcome::ACME_CHALLENGE),
            unavailable: c(outcome::UNAVAILABLE),
            pixel: c(outcome::PIXEL),
            confirm_page: c(outcome::CONFIRM_PAGE),
            confirmed: c(outcome::CONFIRMED),
            body_refused: c(outcome::BODY_REFUSED),
            bad_request: c(outcome::BAD_REQUEST),
            ua_truncated: m.click_fields_truncated.with_label_values(&["ua"]),
            referer_truncated: m.click_fields_truncated.with_label_values(&["referer"]),
            opens: OpenClass::ALL.map(|c| m.opens.with_label_values(&[c.as_str()])),
        }
    }
}

/// What the handler knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// SNI name for HTTPS; none on the plain HTTP listener.
    pub sni: Option<Domain>,
    /// TLS version for HTTPS.
    pub tls: Option<&'static str>,
    /// The JA4 fingerprint of the ClientHello, for HTTPS.
    pub tls_fp: Option<crate::tls::Ja4>,
}

/// The request handler shared by both listeners. Generic over the [`VerdictStage`] that judges
/// each click, so the default ([`NoVerdict`]) costs nothing per click.
pub struct Edge<V = NoVerdict> {
    keys: Arc<SharedKeyRing>,
    clicks: ClickQueue,
    certs: Arc<Certs>,
    policy: Arc<Policy>,
    challenges: Arc<Challenges>,
    max_uri_bytes: usize,
    counters: Counters,
    check_nonces: Option<Arc<crate::onboarding::reach::Nonces>>,
    /// Customers' status pages, on their public name (`onboarding.public_url`).
    status: Option<Arc<crate::status::StatusPages>>,
    /// What every line keeps of its client (`clicks.ip`, `clicks.visitor`).
    privacy: Privacy,
    verdict: V,
}

const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

impl Edge {
    /// A handler opening tokens with `keys` and logging to `clicks` (stamped by the queue's
    /// clock), judging no click.
    pub fn new(
        keys: Arc<SharedKeyRing>,
        clicks: ClickQueue,
        certs: Arc<Certs>,
        policy: Arc<Policy>,
        challenges: Arc<Challenges>,
        max_uri_bytes: usize,
        metrics: &Metrics,
    ) -> Edge {
        Edge {
            keys,
            clicks,
            certs,
            policy,
            challenges,
            max_uri_bytes,
            counters: Counters::new(metrics),
            check_nonces: None,
            status: None,
            privacy: Privacy::default(),
            verdict: NoVerdict,
        }
    }
}

impl<V> Edge<V> {
    /// What judges the clicks.
    pub fn verdict(&self) -> &V {
        &self.verdict
    }
}

impl<V: VerdictStage> Edge<V> {
    /// Judges every click with `verdict` before it is logged.
    pub fn with_verdict<W: VerdictStage>(self, verdict: W) -> Edge<W> {
        Edge {
            keys: self.keys,
            clicks: self.clicks,
            certs: self.certs,
            policy: self.policy,
            challenges: self.challenges,
            max_uri_bytes: self.max_uri_bytes,
            counters: self.counters,
            check_nonces: self.check_nonces,
            status: self.status,
            privacy: self.privacy,
            verdict,
        }
    }

    /// Answers the onboarding reachability nonces in `nonces` on the plain HTTP listener.
    pub fn with_check_nonces(mut self, nonces: Arc<crate::onboarding::reach::Nonces>) -> Self {
        self.check_nonces = Some(nonces);
        self
    }

    /// Serves customers' status pages (`/s/…` over HTTPS on their public name).
    pub fn with_status_pages(mut self, pages: Arc<crate::status::StatusPages>) -> Self {
        self.status = Some(pages);
        self
    }

    /// Keeps of every line's client what `privacy` says (`clicks.ip`, `clicks.visitor`).
    pub fn with_privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = privacy;
        self
    }

    /// Handles one request.
    pub async fn handle<B>(&self, conn: &ConnInfo, mut req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Unpin,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // Longer than any link we mint: refused before routing, so it costs no cryptography.
        if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > self.max_uri_bytes {
            self.counters.not_found.inc();
            return close_unread(&req, text(StatusCode::URI_TOO_LONG, "URI too long\n"));
        }
        let host = request_host(&req);
        // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without one, its
        // target in absolute form (`GET https://name/…`) too. Looked for only when no host was
        // found or the target names one, so a click pays nothing for it.
        if (host.is_none() || req.uri().authority().is_some())
            && req.version() == http::Version::HTTP_11
            && !req.headers().contains_key(header::HOST)
        {
            self.counters.bad_request.inc();
            return close_unread(
                &req,
                text(
                    StatusCode::BAD_REQUEST,
                    "an HTTP/1.1 request needs a Host header\n",
                ),
            );
        }
        if let (Some(pages), Some(sni)) = (&self.status, &conn.sni)
            && sni == pages.host()
            && req.uri().path().starts_with(crate::status::PREFIX)
            && host.is_none_or(|h| same_name(h, sni.as_str()))
        {
            return close_unread(&req, pages.handle(&req).await);
        }
        let token = match route(req.uri().path()) {
            Route::Click(token) => token,
            Route::Open(token) => return self.open(conn, &req, token),
            Route::AcmeChallenge(_) | Route::OnboardingCheck(_)
                if !matches!(*req.method(), Method::GET | Method::HEAD) =>
            {
                return close_unread(&req, self.method_not_allowed(LINK_METHODS));
            }
            Route::AcmeChallenge(token) if conn.sni.is_none() => {
                return close_unread(&req, self.http01(host, token).await);
            }
            // The edge reaching itself through a customer's name: the nonce back, or 404.
            Route::OnboardingCheck(nonce)
                if conn.sni.is_none()
                    && self.check_nonces.as_ref().is_some_and(|n| n.answers(nonce)) =>
            {
                // Counted with the ACME challenges: both are validation requests.
                self.counters.acme.inc();
                return close_unread(&req, text_owned(StatusCode::OK, nonce.to_owned()));
            }
            Route::AcmeChallenge(_) | Route::OnboardingCheck(_) | Route::NotFound => {
                self.counters.not_found.inc();
                return close_unread(&req, text(StatusCode::NOT_FOUND, "not found\n"));
            }
        };
        // Any other method is refused once the link opens: an action link takes POST too, and
        // its Allow says so.
        let method = match *req.method() {
            Method::GET => Some("GET"),
            Method::HEAD => Some("HEAD"),
            Method::POST => Some("POST"),
            _ => None,
        };
        let domain = match &conn.sni {
            Some(sni) => {
                // A Host for another name on this connection (domain fronting, or a client
                // coalescing connections) is not ours to answer (RFC 9110 §15.5.20).
                if host.is_some_and(|h| !same_name(h, sni.as_str())) {
                    self.counters.misdirected.inc();
                    return close_unread(
                        &req,
                        text(StatusCode::MISDIRECTED_REQUEST, "misdirected request\n"),
                    );
                }
                // A domain removed while this connection stayed open: its links stop with it,
                // as on the plain HTTP listener (one in-memory lookup, before any crypto).
                if !self.policy.is_registered(sni.as_str()) {
                    self.counters.not_found.inc();
                    return close_unread(&req, self.unopened(Some(sni), &req));
                }
                sni.clone()
            }
            None => match host.map(Domain::parse) {
                Some(Ok(d)) if self.policy.is_registered(d.as_str()) => {
                    if self.certs.has_valid(&d).await {
                        return close_unread(&req, self.upgrade(&d, &req));
                    }
                    d
                }
                _ => {
                    self.counters.not_found.inc();
                    return close_unread(&req, self.unopened(None, &req));
                }
            },
        };
        let link = match links::open(&self.keys.current(), domain.as_str(), token) {
            Ok(link) if links::is_redirectable(&link.url) => link,
            _ => {
                self.counters.bad_token.inc();
                return close_unread(&req, self.unopened(Some(&domain), &req));
            }
        };
        let Ok(location) = HeaderValue::from_str(&link.url) else {
            self.counters.bad_token.inc();
            return close_unread(&req, self.unopened(Some(&domain), &req));
        };
        let role = action::role(link.context.as_ref());
        // An action link's POST may be a one-click, whose repeats are told apart by their token:
        // kept, as reading the body takes the request (one copy, for a rare request).
        let action_token = (role.is_some() && method == Some("POST")).then(|| token.to_owned());
        let answer = match (role, method) {
            (None, Some("POST") | None) => {
                return close_unread(&req, self.method_not_allowed(LINK_METHODS));
            }
            (Some(_), None) => return close_unread(&req, self.method_not_allowed(ACTION_METHODS)),
            (None, Some(_)) => Answer::Found,
            (Some(role), Some("POST")) => match action::take_body(&mut req).await {
                Ok(body) if action::is_one_click(&body) => Answer::OneClick(role),
                Ok(_) => Answer::Confirmed,
                Err(e) => {
                    self.counters.body_refused.inc();
                    return close_unread(&req, e.response());
                }
            },
            // Built before the link's parts move into the click; returned once it is recorded.
            (Some(role), Some(_)) => {
                Answer::ConfirmPage(action::confirm_page(&domain, role, &link.url))
            }
        };
        let method = method.unwrap_or_default();
        // Past its address's click rate a client is still answered, but not logged (the queue
        // counts it): asked before the event is built, so a flood costs no allocation. A
        // one-click's line is the only word of it the sender gets (nothing follows the 200), and
        // a provider's one-clicks come from a few addresses: only its link's repeats are bound.
        let one_click = match (&answer, &action_token) {
            (Answer::OneClick(_), Some(token)) => Some(token.as_str()),
            _ => None,
        };
        let admitted = match one_click {
            Some(token) => self.clicks.admit_one_click(conn.peer.ip(), token),
            None => self.clicks.admit(conn.peer.ip()),
        };
        if !admitted {
            return close_unread(&req, self.answer(answer, location));
        }
        let mut event = self.event(conn, &req, domain, link, method);
        let facts = Facts {
            click: &event,
            headers: req.headers(),
            context: event.message.as_ref(),
        };
        event.verdict = match &answer {
            Answer::Confirmed | Answer::OneClick(_) => self.verdict.confirmed(&facts),
            _ => self.verdict.judge(&facts),
        };
        // A person's click implies the message was opened: said once per message this node did
        // not see opened, so an analyst counts opens without joining clicks to them.
        if let (Some(m), Some(v)) = (&event.message, &event.verdict) {
            event.implied_open = v.class == Class::Human
                && self
                    .clicks
                    .seen()
                    .click_implies_open(event.domain.as_str(), &m.message);
            event.marked_seen = event.implied_open;
        }
        self.privacy.apply(&mut event);
        // Kept (once per message) to give the implied open back if the click is refused (the
        // writer gives back one it drops): the next click of a person on the message says it.
        let implied = event
            .implied_open
            .then(|| {
                event
                    .message
                    .as_ref()
                    .map(|m| (event.domain.clone(), m.message.clone()))
            })
            .flatten();
        let handle = event.verdict.as_ref().and_then(|v| v.handle);
        // Buffered: queued without waiting. Synced: the 302 waits for the click to be on disk,
        // and a click that cannot be kept is refused rather than acknowledged. A one-click is
        // always synced: its 200 says the unsubscribe is kept, and a 503 makes the provider
        // try again.
        let recorded = if let Some(token) = one_click {
            self.clicks
                .push_one_click(event, token)
                .await
                .map(|()| true)
        } else {
            self.clicks.record(event).await
        };
        // A click answered 503 because the log stalled is still queued, to be written once the
        // disk answers: it keeps its verdict handle and its implied open.
        if !matches!(recorded, Ok(true) | Err(ClickRejected::Stalled)) {
            // Not logged: no later judgement may name it (a revision of a line that is not in
            // the log), and its implied open goes back.
            if let Some(handle) = handle {
                self.verdict.unlogged(handle);
            }
            if let Some((domain, message)) = implied {
                self.clicks.seen().forget(domain.as_str(), &message);
            }
        }
        if recorded.is_err() {
            self.counters.unavailable.inc();
            let mut res = text(StatusCode::SERVICE_UNAVAILABLE, "try again\n");
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return close_unread(&req, res);
        }
        close_unread(&req, self.answer(answer, location))
    }

    /// A link's answer once it opened: the redirect, or an action link's confirm page or
    /// confirmation.
    fn answer(&self, answer: Answer, location: HeaderValue) -> Response<Body> {
        match answer {
            Answer::Found => self.found(location),
            Answer::ConfirmPage(page) => {
                self.counters.confirm_page.inc();
                page
            }
            Answer::Confirmed => {
                self.counters.confirmed.inc();
                action::see_other(location)
            }
            Answer::OneClick(role) => {
                self.counters.confirmed.inc();
                action::done(role)
            }
        }
    }

    /// The event of a request for `link` on `domain`: what the client sent kept within bounds,
    /// so a line stays small whatever the headers (`clicks::bounded`); not judged yet.
    fn event<B>(
        &self,
        conn: &ConnInfo,
        req: &Request<B>,
        domain: Domain,
        link: links::Link,
        method: &'static str,
    ) -> ClickEvent {
        let (ua, ua_cut) = header_text(req, header::USER_AGENT, MAX_UA_BYTES);
        let (referer, referer_cut) = header_text(req, header::REFERER, MAX_REFERER_BYTES);
        if ua_cut {
            self.counters.ua_truncated.inc();
        }
        if referer_cut {
            self.counters.referer_truncated.inc();
        }
        ClickEvent {
            ts: self.clicks.clock().now(),
            domain,
            url: link.url,
            meta: link.meta,
            minted_at: from_unix_secs(link.minted_at),
            ip: conn.peer.ip(),
            ua,
            referer,
            method,
            tls: conn.tls,
            http: http_version(req.version()),
            tls_fp: conn.tls_fp,
            verdict: None,
            message: link.context,
            truncated: Truncated {
                ua: ua_cut,
                referer: referer_cut,
            },
            open: None,
            implied_open: false,
            marked_seen: false,
            visitor: None,
        }
    }

    /// `405` naming the methods the target takes (`allow`).
    fn method_not_allowed(&self, allow: HeaderValue) -> Response<Body> {
        self.counters.method.inc();
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        res.headers_mut().insert(header::ALLOW, allow);
        res
    }

    /// The click's answer: `302 Found` to the destination, never cached.
    fn found(&self, location: HeaderValue) -> Response<Body> {
        self.counters.redirect.inc();
        let mut res = Response::new(Body::default());
        *res.status_mut() = StatusCode::FOUND;
        let h = res.headers_mut();
        h.insert(header::LOCATION, location);
        h.insert(header::CACHE_CONTROL, NO_STORE);
        res
    }

    /// The answer to a link of `domain` (none: no domain served) that does not open: the
    /// domain's fallback URL if the operator set one (from memory), else the 404 page. Nothing
    /// in it comes from the token.
    fn unopened<B>(&self, domain: Option<&Domain>, req: &Request<B>) -> Response<Body> {
        match domain.and_then(|d| self.policy.fallback(d.as_str())) {
            Some(location) => unopened::fallback(location),
            None => unopened::not_valid(domain, req.headers().get(header::ACCEPT)),
        }
    }

    /// Answers an HTTP-01 validation request (RFC 8555 §8.3) from the published challenges.
    async fn http01(&self, host: Option<&str>, token: &str) -> Response<Body> {
        let key_auth = match host.map(Domain::parse) {
            Some(Ok(host)) => self.challenges.http01(&host, token).await,
            _ => None,
        };
        match key_auth {
            Some(key_auth) => {
                self.counters.acme.inc();
                let mut res = Response::new(Body::new(Bytes::from(key_auth)));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                res
            }
            None => {
                self.counters.not_found.inc();
                text(StatusCode::NOT_FOUND, "not found\n")
            }
        }
    }

    fn upgrade<B>(&self, domain: &Domain, req: &Request<B>) -> Response<Body> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        // A target that cannot make a `Location` value (the URI parser lets none through that
        // we know of) is not a link: 404, never a 308 that leads nowhere.
        let Ok(location) = HeaderValue::from_str(&format!("https://{domain}{path}")) else {
            self.counters.not_found.inc();
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        self.counters.upgrade.inc();
        let mut res = Response::new(Body::default());
        *res.status_mut() = StatusCode::PERMANENT_REDIRECT;
        res.headers_mut().insert(header::LOCATION, location);
        res.headers_mut().insert(header::CACHE_CONTROL, NO_STORE);
        res
    }
}

/// What a link that opened answers.
enum Answer {
    /// `302` to the destination.
    Found,
    /// An action link fetched: its confirm page.
    ConfirmPage(Response<Body>),
    /// An action link's confirmation by its button: `303` to the destination.
    Confirmed,
    /// An action link's RFC 8058 one-click confirmation: `200`, no redirect.
    OneClick(Role),
}

/// The methods a link takes, and an action link (unsubscribe, confirm).
const LINK_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD");
const ACTION_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, POST");

#[cfg(test)]
mod tests;
