//! Message-level rules without a database: a bounded in-memory table per node, keyed by (link
//! domain, message id, source), remembering the last clicks each source made on one message's
//! links. From it come three reasons:
//!
//! - `burst`: at least [`BURST_LINKS`] distinct links of one message from one source within
//!   [`BURST_WINDOW`] (field data: scanners follow every link of a message within a second or
//!   two; a person reads between clicks);
//! - `coverage`: most links of a message of at least three links clicked by one source (all of
//!   three or four, four in five above: see [`covers`]), up to the largest message a rewrite
//!   makes (1000 links and its decoy): every earlier click of the source is revised;
//! - `decoy`: a hit on the message's decoy link (no person sees it), and every click of the same
//!   source on that message within [`DECOY_WINDOW`] of it, before or after.
//!
//! Earlier clicks a later one makes suspect are returned as handles to revise; each is revised
//! once. The table is a `moka` cache: entries live [`Config::ttl`] after their last click, and the
//! memory cap evicts the least recently used first (counted); an entry is weighed by what it
//! holds (a source that clicked hundreds of links weighs more than a person's few clicks). The TTL is also read against the
//! clicks' own times (a source's clicks on a message more than the TTL apart start afresh), so a
//! replay of recorded clicks (`clickedge classify --replay`) judges as the edge did. A source is a client as
//! [`crate::client::key`] counts it (an IPv6 /64). The key is a 64-bit keyed hash, so a lookup
//! allocates nothing; only a source's first click on a message allocates its entry.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use prometheus::{IntCounter, IntGauge};

use crate::links::Role;
use crate::sync::lock;

/// Distinct links of one message from one source that make a burst.
pub const BURST_LINKS: usize = 2;
/// The window of a burst.
pub const BURST_WINDOW: Duration = Duration::from_secs(5);
/// How far from a decoy hit the same source's clicks are machines too.
pub const DECOY_WINDOW: Duration = Duration::from_secs(10);
/// Clicks remembered whole per message and source, for the rules of a time window (burst,
/// decoy), the oldest forgotten first.
const RECENT: usize = 16;
/// Clicks of a message and source remembered by their handle alone once past [`RECENT`] and not
/// revised, the oldest forgotten first: with the recent ones, one per link of the largest
/// message a rewrite makes (1000 links and its decoy), so that a coverage found at its last link
/// still revises the click on its first.
const OLDER: usize = 1024 - RECENT;
/// Link indexes below this are counted in an entry's bit set, for coverage.
const INDEXED: u32 = 1024;
/// Other links (a hash of the URL, an index past [`INDEXED`]) counted per entry, for coverage.
const OTHERS: usize = 64;
/// What an entry costs at first, for the memory cap: the state, its recent clicks, the key and
/// the cache's own bookkeeping. One remembering older clicks, or links without an index, weighs
/// the room those take as well ([`State::weight`]).
pub const ENTRY_BYTES: u32 = (size_of::<State>() + RECENT * size_of::<Seen>() + 160) as u32;

/// The table's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How long an entry lives after its last click.
    pub ttl: Duration,
    /// The most memory the entries may take, in bytes.
    pub max_bytes: u64,
    /// Whether an entry also goes once `ttl` of real time passed without a click (the live
    /// edge). Without, only the clicks' own times are read (a replay, which may take longer
    /// than the TTL to read a file whose clicks are seconds apart).
    pub idle_expiry: bool,
}

/// The table's counters.
#[derive(Clone)]
pub struct Gauges {
    /// Entries now (`clickedge_message_table_entries`).
    pub entries: IntGauge,
    /// Entries evicted by the memory cap (`clickedge_message_table_evictions_total`).
    pub evictions: IntCounter,
}

/// One click of a link of a message, as the table sees it.
#[derive(Debug, Clone, Copy)]
pub struct Click<'a> {
    /// The link domain.
    pub domain: &'a str,
    /// The message id.
    pub message: &'a str,
    /// The client address.
    pub ip: IpAddr,
    /// Which link of the message.
    pub link: Link,
    /// The message's link count, if known.
    pub count: Option<u32>,
    /// The link's role, if known.
    pub role: Option<Role>,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The click's handle, named again if it is revised.
    pub handle: u64,
}

/// Which link of a message a click is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Its index in the message, as its context says.
    Index(u32),
    /// A hash of its URL: a link minted without an index.
    Url(u32),
}

/// What the table says about a click.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// A burst across the message's links.
    pub burst: bool,
    /// Most links of the message clicked.
    pub coverage: bool,
    /// A decoy hit, or near one.
    pub decoy: bool,
    /// Earlier clicks of the same source on the message to revise, each once, with what each
    /// was part of.
    pub revise: Vec<ToRevise>,
}

/// An earlier click to revise, and the findings it was part of (a click minutes before a burst
/// was in no burst: only coverage takes every click of the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToRevise {
    /// The click's handle.
    pub handle: u64,
    /// Within the burst's window.
    pub burst: bool,
    /// Coverage fired.
    pub coverage: bool,
    /// Within the decoy's window.
    pub decoy: bool,
}

impl Findings {
    /// The handles to revise, in order.
    pub fn handles(&self) -> Vec<u64> {
        self.revise.iter().map(|r| r.handle).collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at_ms: u64,
    link: Link,
    handle: u64,
    revised: bool,
}

#[derive(Debug, Default)]
struct State {
    clicks: Vec<Seen>,
    /// The handles of clicks past the recent ones, not revised yet, at most [`OLDER`].
    older: VecDeque<u64>,
    /// The distinct links clicked with an index below [`INDEXED`], a bit each.
    indexed: [u64; INDEXED as usize / 64],
    /// The other distinct links clicked, at most [`OTHERS`].
    others: Vec<Link>,
    decoy_at_ms: Option<u64>,
    /// The latest click's time.
    last_ms: Option<u64>,
}

/// The table.
pub struct MessageTable {
    cache: moka::sync::Cache<u64, Arc<Mutex<State>>>,
    hasher: std::collections::hash_map::RandomState,
    gauges: Gauges,
    ttl_ms: u64,
}

impl MessageTable {
    /// An empty table within `config`, counting into `gauges`.
    pub fn new(config: Config, gauges: Gauges) -> MessageTable {
        let evictions = gauges.evictions.clone();
        let mut builder = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_, state: &Arc<Mutex<State>>| lock(state).weight());
        if config.idle_expiry {
            builder = builder.time_to_idle(config.ttl);
        }
        let cache = builder
            // moka's default (TinyLFU) admits a new entry only if it is used more often than
            // those it would push out: at the cap, a new source's first click would be kept
            // nowhere, and its second link seconds later would find no burst.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        MessageTable {
            cache,
            hasher: std::collections::hash_map::RandomState::new(),
            gauges,
            ttl_ms: u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Records `click` and judges it against the same source's earlier clicks on the message.
    pub fn observe(&self, click: &Click<'_>) -> Findings {
        let key = self
            .hasher
            .hash_one((click.domain, click.message, crate::client::key(click.ip)));
        let entry = self
            .cache
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(State::default())));
        if entry.is_fresh() {
            self.gauges
                .entries
                .set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
        }
        let state = entry.into_value();
        let (findings, grew) = {
            let mut held = lock(&state);
            let weight = held.weight();
            let findings = held.judge(click, self.ttl_ms);
            (findings, held.weight() > weight)
        };
        // Put back to be weighed again (a few times in an entry's life: its room doubles).
        if grew {
            self.put_back(key, state);
        }
        findings
    }

    /// Puts `state` back under `key`, unless the entry was evicted meanwhile and another click
    /// made a new one: overwriting it would lose that click.
    fn put_back(&self, key: u64, state: Arc<Mutex<State>>) {
        self.cache.entry(key).and_compute_with(|now| match now {
            Some(e) if !Arc::ptr_eq(e.value(), &state) => Op::Nop,
            _ => Op::Put(state),
        });
    }

    /// Runs the cache's pending maintenance (evictions, expiry) now, and sets the entries gauge.
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
        self.gauges
            .entries
            .set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
    }
}

impl State {
    fn judge(&mut self, c: &Click<'_>, ttl_ms: u64) -> Findings {
        // Either way: a click more than the TTL before the latest (a replay out of order, a
        // clock stepped back) is another visit too.
        if self
            .last_ms
            .is_some_and(|last| c.at_ms.abs_diff(last) > ttl_ms)
        {
            *self = State::default();
        }
        self.last_ms = Some(self.last_ms.map_or(c.at_ms, |last| last.max(c.at_ms)));
        let mut f = Findings::default();
        // Coverage is read against the links a person sees: the decoy is not one. Only a click
        // that reaches a link anew covers: once a source has covered the message, its clicks
        // again on links it reached (a person behind the gateway's address, minutes later) are
        // judged on their own.
        let new_link = c.role != Some(Role::Decoy) && self.count_distinct(c.link);
        let near = |at: u64, window: Duration| {
            at.abs_diff(c.at_ms) <= u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
        };
        if c.role == Some(Role::Decoy) {
            self.decoy_at_ms = Some(c.at_ms);
        }
        f.decoy = self.decoy_at_ms.is_some_and(|d| near(d, DECOY_WINDOW));
        let mut in_burst: Vec<Link> = Vec::new();
        for s in self.clicks.iter().filter(|s| near(s.at_ms, BURST_WINDOW)) {
            if s.link != c.link && !in_burst.contains(&s.link) {
                in_burst.push(s.link);
            }
        }
        f.burst = in_burst.len() + 1 >= BURST_LINKS;
        f.coverage = new_link && c.count.is_some_and(|n| covers(self.distinct(), n));
        if f.coverage {
            f.revise.extend(self.older.drain(..).map(|handle| ToRevise {
                handle,
                burst: false,
                coverage: true,
                decoy: false,
            }));
        }
        for s in &mut self.clicks {
            let why = ToRevise {
                handle: s.handle,
                burst: f.burst && near(s.at_ms, BURST_WINDOW),
                coverage: f.coverage,
                decoy: f.decoy && near(s.at_ms, DECOY_WINDOW),
            };
            if (why.burst || why.coverage || why.decoy) && !s.revised {
                s.revised = true;
                f.revise.push(why);
            }
        }
        if self.clicks.len() == RECENT {
            let oldest = self.clicks.remove(0);
            if !oldest.revised {
                if self.older.len() == OLDER {
                    self.older.pop_front();
                }
                self.older.push_back(oldest.handle);
            }
        }
        self.clicks.push(Seen {
            at_ms: c.at_ms,
            link: c.link,
            handle: c.handle,
            revised: f.burst || f.coverage || f.decoy,
        });
        f
    }

    /// Counts `link` as reached by the source; whether it was not before.
    fn count_distinct(&mut self, link: Link) -> bool {
        match link {
            Link::Index(i) if i < INDEXED => {
                let (word, bit) = (&mut self.indexed[i as usize / 64], 1 << (i % 64));
                let new = *word & bit == 0;
                *word |= bit;
                new
            }
            other => {
                let new = !self.others.contains(&other) && self.others.len() < OTHERS;
                if new {
                    self.others.push(other);
                }
                new
            }
        }
    }

    /// The distinct links clicked.
    fn distinct(&self) -> usize {
        let indexed: u32 = self.indexed.iter().map(|w| w.count_ones()).sum();
        indexed as usize + self.others.len()
    }

    /// What the entry costs, for the memory cap: [`ENTRY_BYTES`], and the room for its older
    /// clicks and its links without an index.
    fn weight(&self) -> u32 {
        let more =
            self.older.capacity() * size_of::<u64>() + self.others.capacity() * size_of::<Link>();
        ENTRY_BYTES.saturating_add(u32::try_from(more).unwrap_or(u32::MAX))
    }
}

/// Whether `clicked` distinct links cover a message of `count`: at least three links, all of
/// them up to four, four in five above.
pub fn covers(clicked: usize, count: u32) -> bool {
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    count >= 3 && clicked * 5 >= count.saturating_mul(4).max(count.min(4) * 5)
}

#[cfg(test)]
mod tests;
