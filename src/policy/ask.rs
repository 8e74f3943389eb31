//! The `tls.ask` endpoint (compatible with Caddy's on-demand TLS `ask`): whether a name that is
//! not registered may be, asked as `GET <url>?domain=NAME`, and the approval recorded.
//!
//! What an attacker who can send any SNI cannot make it do:
//! - Approve by redirect. Only a direct `200` approves; redirects are not followed (a 3xx is a
//!   denial), so an endpoint that redirects errors or logins elsewhere approves nothing.
//! - Amplify a flood. One token bucket (`tls.ask_rate` per second, `tls.ask_burst` at once)
//!   bounds requests for all names together; a name over it is refused without a request and
//!   nothing is remembered about it. Every answer is remembered per name: approvals and denials
//!   for `tls.ask_cache_ttl`, failures (no answer, a 5xx, a 408, 425 or 429) for at most
//!   [`FAILURE_TTL`], so the same name asks again soon after an outage but not at every
//!   handshake.
//! - Get certificates outside the books. An approval is recorded in the store as a domain of
//!   origin `ask` before the name is served, so its status, backoff (the order budget),
//!   certificate, renewal and removal are a registered name's, and `GET /v1/domains` lists it.
//!
//! NOTE: the endpoint is asked once per name. A name it approved stays registered until it is
//! removed (`DELETE /v1/domains/NAME`); a later denial does not remove it, since a registered name
//! is never asked about again. Removing a name forgets its answer, so the next handshake asks
//! afresh.
//!
//! This module asks and records; [`super::Policy`] decides and serves from memory.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use prometheus::IntCounter;

use super::bucket::TokenBucket;
use crate::Domain;
use crate::clock::Clock;
use crate::errors::chain as error_chain;
use crate::metrics::{AskRequests, Metrics};
use crate::store::Store;

/// Most answers remembered; older ones are evicted (memory stays bounded under a flood of
/// random names).
const ANSWER_CACHE_ENTRIES: u64 = 100_000;
/// How long one request may take; no answer in time is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a failed request (no answer, a 5xx, a 408, 425 or 429) is remembered for its name.
pub const FAILURE_TTL: Duration = Duration::from_secs(10);

/// Why the `ask` client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client for the ask endpoint {url}")]
pub struct AskError {
    url: url::Url,
    #[source]
    source: reqwest::Error,
}

/// How answers are remembered and requests paced (`[tls]`).
#[derive(Debug, Clone, Copy)]
pub struct AskSettings {
    /// How long an approval or a denial is remembered (`tls.ask_cache_ttl`).
    pub cache_ttl: Duration,
    /// Requests per second, sustained, for all names together (`tls.ask_rate`).
    pub rate: NonZeroU32,
    /// Requests allowed at once after a quiet spell (`tls.ask_burst`).
    pub burst: NonZeroU32,
}

/// What the endpoint said about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// A direct `200`.
    Allowed,
    /// Any other status, redirects included.
    Denied,
    /// No answer in time, a 5xx, or a status that says the question was not decided.
    Failed,
}

/// `408 Request Timeout`, `425 Too Early`, `429 Too Many Requests`: the endpoint did not decide,
/// so the name is asked about again soon rather than denied for `tls.ask_cache_ttl`.
fn not_an_answer(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
    )
}

/// Approvals and denials live for the cache TTL, failures for less.
pub(super) struct AnswerExpiry {
    pub(super) ttl: Duration,
}

impl AnswerExpiry {
    fn ttl_of(&self, answer: Answer) -> Duration {
        match answer {
            Answer::Failed => self.ttl.min(FAILURE_TTL),
            Answer::Allowed | Answer::Denied => self.ttl,
        }
    }
}

impl moka::Expiry<Domain, Answer> for AnswerExpiry {
    fn expire_after_create(&self, _: &Domain, answer: &Answer, _: Instant) -> Option<Duration> {
        Some(self.ttl_of(*answer))
    }

    /// An answer replaced (an approval the store could not record, now a failure) lives as its
    /// new kind does, not for what was left of the old one's.
    fn expire_after_update(
        &self,
        _: &Domain,
        answer: &Answer,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl_of(*answer))
    }
}

/// An `ask` endpoint, its remembered answers and its rate limit, and the store its approvals
/// are recorded in.
pub struct Ask {
    url: url::Url,
    client: reqwest::Client,
    answers: moka::future::Cache<Domain, Answer>,
    bucket: Mutex<TokenBucket>,
    store: Arc<dyn Store>,
    clock: Clock,
    requests: AskRequests,
    cache_hits: IntCounter,
}

impl Ask {
    /// The endpoint at `url`, recording approvals in `store` stamped by `clock`.
    pub fn new(
        url: url::Url,
        settings: AskSettings,
        store: Arc<dyn Store>,
        metrics: &Metrics,
        clock: Clock,
    ) -> Result<Ask, AskError> {
        let client = reqwest::Client::builder()
            // The endpoint is the operator's own, often on loopback: a proxy from the
            // environment would answer for its own host.
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            // Only a direct 200 approves: a redirect is an answer, not a way to one.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| AskError {
                url: url.clone(),
                source,
            })?;
        Ok(Ask {
            url,
            client,
            answers: moka::future::Cache::builder()
                .max_capacity(ANSWER_CACHE_ENTRIES)
                .expire_after(AnswerExpiry {
                    ttl: settings.cache_ttl,
                })
                .build(),
            bucket: Mutex::new(TokenBucket::new(
                settings.rate,
                settings.burst,
                Instant::now(),
            )),
            store,
            clock,
            requests: metrics.ask_requests.clone(),
            cache_hits: metrics.ask_cache_hits.clone(),
        })
    }

    /// True if the endpoint approves `name` (asked now, or an answer still cached). Refused over
    /// the rate limit. Serving it takes [`Ask::record`] too.
    pub(super) async fn approves(&self, name: &Domain) -> bool {
        // Concurrent questions about one name share one request, and one token.
        let answer = self
            .answers
            .entry(name.clone())
            .or_optionally_insert_with(async {
                if !self.take_token() {
                    self.requests.limited.inc();
                    return None;
                }
                Some(self.request(name).await)
            })
            .await;
        let Some(answer) = answer else {
            return false;
        };
        if !answer.is_fresh() {
            self.cache_hits.inc();
        }
        answer.into_value() == Answer::Allowed
    }

    /// Forgets the answer about `name` (after it was removed).
    pub(super) async fn forget(&self, name: &str) {
        self.answers.invalidate(name).await;
    }

    fn take_token(&self) -> bool {
        // The lock guards arithmetic only, never an `.await`; a poisoned one still holds a
        // consistent bucket.
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.take(Instant::now())
    }

    async fn request(&self, name: &Domain) -> Answer {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("domain", name.as_str());
        match self.client.get(url).send().await {
            Ok(res) if res.status() == StatusCode::OK => {
                self.requests.allowed.inc();
                Answer::Allowed
            }
            // An endpoint too busy or too slow to decide has not denied.
            Ok(res) if res.status().is_server_error() || not_an_answer(res.status()) => {
                self.requests.error.inc();
                tracing::warn!(domain = %name, status = %res.status(), "ask endpoint failed: refusing");
                Answer::Failed
            }
            Ok(res) => {
                self.requests.denied.inc();
                tracing::debug!(domain = %name, status = %res.status(), "ask endpoint denied");
                Answer::Denied
            }
            Err(e) => {
                self.requests.error.inc();
                tracing::warn!(domain = %name, error = %error_chain(&e), "ask endpoint unreachable: refusing");
                Answer::Failed
            }
        }
    }

    /// True once the approval of `name` is recorded as a domain of origin `ask` (or `name` was
    /// registered meanwhile); false when the store fails. The approval is then remembered as a
    /// failure, for at most [`FAILURE_TTL`]: while the store is down, a name's handshakes make one
    /// write a while, under the membership lock admin writes need too, not one each.
    pub(super) async fn record(&self, name: &Domain) -> bool {
        match self.store.add_approved_domain(name, self.clock.now()).await {
            Ok(created) => {
                if created {
                    tracing::info!(domain = %name, "domain approved by tls.ask: registered");
                }
                true
            }
            Err(e) => {
                tracing::warn!(domain = %name, error = %error_chain(&e), "recording a domain tls.ask approved: refusing it for now");
                self.answers.insert(name.clone(), Answer::Failed).await;
                false
            }
        }
    }
}
