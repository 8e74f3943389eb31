//! The verdict seam: room for judging whether a click came from a person or a machine (mail
//! scanners, link unfurlers, prefetchers), without judging anything yet.
//!
//! The request path calls a [`VerdictStage`] once per click, with what the request carries
//! ([`Facts`]), before the click is queued; its [`Verdict`] rides along in the [`ClickEvent`] and
//! is appended to the click line as `"verdict"`, `"reasons"` and `"rules"`. The default stage,
//! [`NoVerdict`], judges nothing: the line keeps exactly its old fields, and since the handler is
//! generic over its stage, the call compiles away (no allocation, no dynamic dispatch).
//!
//! This module holds the seam's types; the rule set that fills a verdict is [`rules::Rules`]
//! (request shape in [`shape`], the TLS fingerprint in [`fingerprints`], the network catalogue
//! in [`networks`], the message table in [`messages`]).
//! NOTE: [`Facts`] borrows the request's headers as the `http` crate's [`http::HeaderMap`]:
//! vocabulary types, not the server; copying the headers into a type of ours would cost an
//! allocation per click.

pub mod fingerprints;
pub mod messages;
pub mod networks;
pub mod replay;
pub mod rules;
pub mod shape;

use super::ClickEvent;
use crate::links::MessageContext;

pub use rules::{RULES_VERSION, Revise, Rules, Timing};

/// Who a click is judged to come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A person following the link.
    Human,
    /// Software fetching the link on its own (a scanner, an unfurler, a prefetch).
    Machine,
    /// The stage looked and could not tell.
    Unknown,
}

impl Class {
    /// Every class, in declaration order (so `class as usize` indexes it).
    pub const ALL: [Class; 3] = [Class::Human, Class::Machine, Class::Unknown];

    /// The value of the line's `"verdict"` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Human => "human",
            Class::Machine => "machine",
            Class::Unknown => "unknown",
        }
    }
}

/// A stage's judgement of one click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The judgement: the line's `"verdict"`.
    pub class: Class,
    /// Codes of the rules that decided it, in the order they fired: the line's `"reasons"`.
    pub reasons: Vec<&'static str>,
    /// Version of the rule set that judged: the line's `"rules"`, so a later reader knows which
    /// rules a verdict came from.
    pub rules: &'static str,
    /// The stage's name for the click, if a later judgement may revise it: the batcher learns
    /// which `click_id` the click got under it, so a [`Revision`] can name the click. A click
    /// that is not logged gives it back ([`VerdictStage::unlogged`]). Not on the line.
    pub handle: Option<u64>,
    /// Which `Sec-Fetch-*` headers came ([`shape::sec_fetch_code`]): the line's `"sec_fetch"`,
    /// none from a stage that did not look.
    pub sec_fetch: Option<&'static str>,
}

/// A later judgement of an earlier click (a burst, a decoy hit, coverage that makes it suspect),
/// written as its own `"kind": "verdict"` line naming the click by its `click_id`: click lines
/// are never rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// When it was judged: the time of the click that made the earlier one suspect.
    pub ts: std::time::SystemTime,
    /// The earlier click, by its [`Verdict::handle`].
    pub handle: u64,
    /// The new judgement.
    pub class: Class,
    /// Codes of the rules that revised it.
    pub reasons: Vec<&'static str>,
    /// Version of the rule set that revised it.
    pub rules: &'static str,
}

/// What the request path knows about a click when it judges it. Fields may be added (TLS
/// facts of the connection, say) without changing [`VerdictStage`].
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The click as it will be logged, without a verdict yet: method, address, TLS and HTTP
    /// versions, the link and its minting time.
    pub click: &'a ClickEvent,
    /// Every request header, including those the click line does not keep.
    pub headers: &'a http::HeaderMap,
    /// The message context sealed in the link, if any.
    pub context: Option<&'a MessageContext>,
}

/// Judges clicks on the request path. Called once per click, before it is queued, so it must be
/// quick and must not block or do I/O.
pub trait VerdictStage: Send + Sync + 'static {
    /// The verdict on the click `facts` describes; `None` leaves the click unjudged.
    fn judge(&self, facts: &Facts<'_>) -> Option<Verdict>;

    /// The verdict on an action link's confirmation (the `POST` of its confirm page's button,
    /// or an RFC 8058 one-click `POST`): a person's act, not a fetch to judge. `None` (the
    /// default) leaves it unjudged.
    fn confirmed(&self, facts: &Facts<'_>) -> Option<Verdict> {
        let _ = facts;
        None
    }

    /// Who fetched the open pixel `facts` describes (its `click` is the open), and the verdict
    /// on it. By default from the request alone, without the network catalogue (so never
    /// `apple_mpp`); [`Rules`] looks the address up too.
    fn judge_open(&self, facts: &Facts<'_>) -> (crate::clicks::opens::OpenClass, Verdict) {
        open_verdict(facts, None)
    }

    /// The click judged under `handle` ([`Verdict::handle`]) was not logged: dropped by the
    /// queue, or refused with a 503. No later judgement may name it, or its revision would name
    /// a line the log does not hold. Called off the logged path only; by default nothing (a
    /// stage that hands out no handles has nothing to forget).
    fn unlogged(&self, handle: u64) {
        let _ = handle;
    }
}

/// An open's class and verdict from the request and the catalogue entry `net` of its address.
pub(crate) fn open_verdict(
    facts: &Facts<'_>,
    net: Option<networks::Network>,
) -> (crate::clicks::opens::OpenClass, Verdict) {
    let ua = facts
        .headers
        .get(http::header::USER_AGENT)
        .map(http::HeaderValue::as_bytes);
    let s = shape::shape(facts.click.method, facts.headers);
    let judged = crate::clicks::opens::classify(ua, &s, net);
    let verdict = Verdict {
        class: judged.verdict,
        reasons: judged.reasons,
        rules: RULES_VERSION,
        handle: None,
        sec_fetch: None,
    };
    (judged.class, verdict)
}

/// The stage that judges nothing, the default: every click is logged without a verdict.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoVerdict;

impl VerdictStage for NoVerdict {
    #[inline]
    fn judge(&self, _facts: &Facts<'_>) -> Option<Verdict> {
        None
    }
}
