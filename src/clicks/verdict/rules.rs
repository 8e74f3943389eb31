//! The rule set that judges every click ([`Rules`], a [`VerdictStage`]): the request's shape, the
//! network catalogue, timing against the message's send time, and the message table.
//!
//! How reasons make a verdict (the rule set [`RULES_VERSION`]):
//! - **machine** on any decisive reason: `head`, `prefetch`, `no-ua`, `ua:<marker>`, a certain
//!   catalogue range (`net:<name>`), `decoy`, `burst`, `coverage`; or a probable range and
//!   `early` (within `probable_window` of the send); or two reasons that count against a click;
//! - **unknown** on one reason that only counts against it: a probable range alone, `early`
//!   (within `early_window` of the send, from anywhere), `no-sec-fetch` (over HTTPS, an engine
//!   that always sends `Sec-Fetch-*` there sent none), `tls:<library>` or `tls:not-browser` (the
//!   connection's JA4 fingerprint is an HTTP library's, or not a browser's under a browser user
//!   agent); and
//!   `unconfirmed`: an action link (role `unsubscribe` or `confirm`) fetched, which shows its
//!   confirm page: a person has not acted until the page's button is pressed, so a fetch of
//!   one is never human;
//! - **human** otherwise, and always for an action link's confirmation ([`Rules::confirmed`],
//!   reason `confirmed`): a `POST` from its confirm page or an RFC 8058 one-click `POST`.
//!
//! The send time is the link's `sent_at`, or its minting time. Default windows: 60 s from
//! anywhere and 600 s from a probable range (field data: scanner bursts come a median 43 s after
//! the send, 66% within 20-60 s; the best open-source classifier found uses 30-60 s, and 600 s
//! for gateway ranges). Nothing here blocks or does I/O: a lookup in a prefix trie, header scans,
//! and one entry of an in-memory cache for links that carry a message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;

use super::fingerprints;
use super::messages::{self, MessageTable};
use super::networks::{Certainty, Scope, SharedCatalogue};
use super::shape::{sec_fetch_code, shape};
use super::{Class, Facts, Revision, Verdict, VerdictStage};
use crate::links::Role;
use crate::metrics::Metrics;

/// The version of the rules and the compiled-in catalogue, the click line's `"rules"`.
pub const RULES_VERSION: &str = "r6+n2";

/// The timing windows.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A click this soon after the send counts against it, from anywhere.
    pub early_window: Duration,
    /// A click this soon after the send from a probable range is a machine.
    pub probable_window: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            early_window: Duration::from_secs(60),
            probable_window: Duration::from_secs(600),
        }
    }
}

/// Where revisions of earlier clicks go (the click queue, which writes them as `"kind":
/// "verdict"` lines). Must not block: it is called on the request path.
pub trait Revise: Send + Sync + 'static {
    /// An earlier click is judged again.
    fn revise(&self, revision: Revision);
}

/// Handles of clicks that were judged but not logged ([`VerdictStage::unlogged`]), so that no
/// later judgement names them: a fixed table (32 KiB, allocated once), a handle's slot its value
/// modulo the size, 0 for none (never handed out). Read only when a judgement revises earlier
/// clicks, written only for a click not logged: the logged path never touches it. A newer
/// unlogged handle in the same slot forgets an older one; a revision of that one then reaches
/// the batcher, which never resolved its handle to a line, and is lost there.
struct Unlogged(Box<[AtomicU64]>);

impl Unlogged {
    const SLOTS: usize = 1 << 12;

    fn new() -> Unlogged {
        Unlogged((0..Self::SLOTS).map(|_| AtomicU64::new(0)).collect())
    }

    fn slot(&self, handle: u64) -> &AtomicU64 {
        // Invariant: the remainder is below SLOTS, a usize.
        &self.0[(handle % Self::SLOTS as u64) as usize]
    }

    fn insert(&self, handle: u64) {
        self.slot(handle).store(handle, Ordering::Relaxed);
    }

    fn contains(&self, handle: u64) -> bool {
        self.slot(handle).load(Ordering::Relaxed) == handle
    }
}

/// The rule set.
pub struct Rules {
    catalogue: Arc<SharedCatalogue>,
    table: MessageTable,
    timing: Timing,
    revise: Box<dyn Revise>,
    /// The next click handle.
    handles: AtomicU64,
    /// Clicks judged here that were not logged.
    unlogged: Unlogged,
    /// Revisions not sent because the click they name was not logged
    /// (`clickedge_verdict_revisions_lost_total`).
    lost: IntCounter,
}

impl Rules {
    /// Rules over `catalogue` and a message table within `table`, revising through `revise`.
    pub fn new(
        catalogue: Arc<SharedCatalogue>,
        table: messages::Config,
        timing: Timing,
        metrics: &Metrics,
        revise: Box<dyn Revise>,
    ) -> Rules {
        Rules {
            catalogue,
            table: MessageTable::new(
                table,
                messages::Gauges {
                    entries: metrics.message_table_entries.clone(),
                    evictions: metrics.message_table_evictions.clone(),
                },
            ),
            timing,
            revise,
            handles: AtomicU64::new(1),
            unlogged: Unlogged::new(),
            lost: metrics.verdict_revisions_lost.clone(),
        }
    }

    /// Rules over `catalogue` with the windows and table bounds of `config`: what `serve` judges
    /// with.
    pub fn configured(
        catalogue: Arc<SharedCatalogue>,
        config: &crate::config::Clicks,
        metrics: &Metrics,
        revise: Box<dyn Revise>,
    ) -> Rules {
        Rules::from_config(catalogue, config, metrics, revise, true)
    }

    /// Drops the message table's expired entries and sets its gauge: without clicks the table
    /// does neither on its own (`serve` calls this every half minute).
    pub fn upkeep(&self) {
        self.table.sync();
    }

    /// [`Rules::configured`] for `classify --replay`: the message table's entries expire by the
    /// clicks' own times only, however long reading the file takes.
    pub fn replaying(
        catalogue: Arc<SharedCatalogue>,
        config: &crate::config::Clicks,
        metrics: &Metrics,
        revise: Box<dyn Revise>,
    ) -> Rules {
        Rules::from_config(catalogue, config, metrics, revise, false)
    }

    fn from_config(
        catalogue: Arc<SharedCatalogue>,
        config: &crate::config::Clicks,
        metrics: &Metrics,
        revise: Box<dyn Revise>,
        idle_expiry: bool,
    ) -> Rules {
        Rules::new(
            catalogue,
            messages::Config {
                ttl: config.message_ttl,
                max_bytes: config.message_table_bytes.get(),
                idle_expiry,
            },
            Timing {
                early_window: config.early_window,
                probable_window: config.probable_window,
            },
            metrics,
            revise,
        )
    }
}

impl VerdictStage for Rules {
    fn judge(&self, facts: &Facts<'_>) -> Option<Verdict> {
        let click = facts.click;
        let mut reasons: Vec<&'static str> = Vec::new();
        let mut decisive = false;
        let mut against = 0;
        let s = shape(click.method, facts.headers);
        for r in s.machine.iter().flatten() {
            reasons.push(r);
            decisive = true;
        }
        let net = self.catalogue.lookup(click.ip, Scope::Clicks);
        if let Some(n) = net {
            reasons.push(n.reason);
            match n.certainty {
                Certainty::Certain => decisive = true,
                Certainty::Probable => against += 1,
            }
        }
        let context = facts.context;
        let sent = context
            .and_then(|c| c.sent_at)
            .map_or(click.minted_at, crate::clock::from_unix_secs);
        // A click before the send by less than the early window is a clock apart (the minting
        // node's, or the sender's `sent_at`): at the send. Further before (a scheduled send, a
        // wrong `sent_at`), time says nothing.
        let since = match click.ts.duration_since(sent) {
            Ok(since) => Some(since),
            Err(before) if before.duration() <= self.timing.early_window => Some(Duration::ZERO),
            Err(_) => None,
        };
        let probable = net.is_some_and(|n| n.certainty == Certainty::Probable);
        match since {
            Some(since) if probable && since <= self.timing.probable_window => {
                reasons.push("early");
                decisive = true;
            }
            Some(since) if since <= self.timing.early_window => {
                reasons.push("early");
                against += 1;
            }
            _ => {}
        }
        // Browsers send `Sec-Fetch-*` only to potentially trustworthy URLs (Fetch Metadata):
        // a real Chrome following a plain-HTTP link sends none, so their absence says nothing
        // there.
        if s.no_sec_fetch && click.tls.is_some() {
            reasons.push("no-sec-fetch");
            against += 1;
        }
        let ua = facts.headers.get(http::header::USER_AGENT);
        let tls = click
            .tls_fp
            .as_ref()
            .and_then(|fp| fingerprints::judge(fp, ua.map(http::HeaderValue::as_bytes)));
        if let Some(reason) = tls {
            reasons.push(reason);
            against += 1;
        }
        let mut handle = None;
        let mut unconfirmed = false;
        if let Some(c) = context {
            let this = self.handles.fetch_add(1, Ordering::Relaxed);
            handle = Some(this);
            let f = self.table.observe(&messages::Click {
                domain: click.domain.as_str(),
                message: &c.message,
                ip: click.ip,
                link: c.index.map_or_else(
                    || messages::Link::Url(url_key(&click.url)),
                    messages::Link::Index,
                ),
                count: c.count,
                role: c.role,
                at_ms: unix_ms(click.ts),
                handle: this,
            });
            let mut found = Vec::new();
            for (hit, reason) in [
                (f.burst, "burst"),
                (f.coverage, "coverage"),
                (f.decoy, "decoy"),
            ] {
                if hit {
                    found.push(reason);
                }
            }
            if !found.is_empty() {
                for earlier in &f.revise {
                    // A click that was never logged has no line to revise.
                    if self.unlogged.contains(earlier.handle) {
                        self.lost.inc();
                        continue;
                    }
                    // Each with what it was part of, in the order the click's own are.
                    let reasons = [
                        (earlier.burst, "burst"),
                        (earlier.coverage, "coverage"),
                        (earlier.decoy, "decoy"),
                    ]
                    .into_iter()
                    .filter_map(|(hit, reason)| hit.then_some(reason))
                    .collect();
                    self.revise.revise(Revision {
                        ts: click.ts,
                        handle: earlier.handle,
                        class: Class::Machine,
                        reasons,
                        rules: RULES_VERSION,
                    });
                }
                reasons.extend(found);
                decisive = true;
            }
            if c.role == Some(Role::Decoy) {
                decisive = true;
            }
            if matches!(c.role, Some(Role::Unsubscribe | Role::Confirm)) {
                reasons.push("unconfirmed");
                unconfirmed = true;
            }
        }
        let class = if decisive || against >= 2 {
            Class::Machine
        } else if against == 1 || unconfirmed {
            Class::Unknown
        } else {
            Class::Human
        };
        Some(Verdict {
            class,
            reasons,
            rules: RULES_VERSION,
            handle,
            sec_fetch: Some(sec_fetch_code(s.sec_fetch)),
        })
    }

    /// Human, reason `confirmed`: pressing a button is what a scanner fetching links does not
    /// do. Not entered in the message table: the fetch that showed the page was.
    fn confirmed(&self, facts: &Facts<'_>) -> Option<Verdict> {
        Some(Verdict {
            class: Class::Human,
            reasons: vec!["confirmed"],
            rules: RULES_VERSION,
            handle: None,
            sec_fetch: Some(sec_fetch_code(
                shape(facts.click.method, facts.headers).sec_fetch,
            )),
        })
    }

    /// Opens are judged by [`crate::clicks::opens::classify`] with the catalogue entry of the
    /// address (scope opens or all); they never enter the message table.
    fn judge_open(&self, facts: &Facts<'_>) -> (crate::clicks::opens::OpenClass, Verdict) {
        super::open_verdict(facts, self.catalogue.lookup(facts.click.ip, Scope::Opens))
    }

    /// Remembered, so that the message table's later findings never send a revision naming it.
    /// Its request still counts as its source's behaviour on the message (a burst, coverage, a
    /// decoy hit): what the source did happened, whether or not the edge could log it.
    fn unlogged(&self, handle: u64) {
        self.unlogged.insert(handle);
    }
}

/// A link without an index is told apart from its siblings by its URL.
fn url_key(url: &str) -> u32 {
    // FNV-1a: stable, no allocation; collisions only merge two links of one message.
    let h = url.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h | 0x8000_0000
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
