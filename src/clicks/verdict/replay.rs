//! Replay: the rule set over recorded requests instead of live ones (`clickedge classify
//! --replay FILE`), to measure it against labelled traces and to try other cutoffs.
//!
//! A trace is one JSON line per request:
//!
//! ```text
//! {"time":"2025-11-24T09:00:41Z","address":"40.94.12.7","method":"GET",
//!  "headers":{"user-agent":"Mozilla/5.0 …"},"tls_fp":"t13d1516h2_…",
//!  "context":{"message":"m-17","index":0,"count":3,"sent_at":"2025-11-24T09:00:00Z","role":"content"},
//!  "label":"machine","note":"Safe Links sweep"}
//! ```
//!
//! `time` and `address` are required; `method` is `GET` (default) or `HEAD`; `headers` is the
//! request's header set (names case-insensitive); `context` is the message context the link
//! carried; `minted_at` (default: `context.sent_at`; one of the two is required), `domain` and
//! `url` stand for the link (`url` is required with a `context` without `index`: it tells the
//! message's links apart); `tls_fp` is the connection's JA4 fingerprint (judged as the edge
//! judges it, and written on the click line); `label` (`human`, `machine`) is the truth, when
//! known; `note` is carried along, not judged.
//!
//! Each trace is judged by the same [`Rules`] as the edge's, through [`VerdictStage::judge`],
//! with the trace's time as the click's: timing windows, bursts and the message table's TTL all
//! read the click's time, never the wall clock ([`Rules::replaying`]), so a replay judges as the
//! edge did. One difference: the edge neither logs nor judges a click past its address's click
//! rate (`clicks.max_clicks_per_ip_per_sec`), and a replay judges every trace; a source
//! sweeping a message faster than that may be found covering it in a replay and not live. Replay writes
//! what the edge would have logged: a click line per trace, and a revision line when a later
//! trace makes an earlier one suspect (`click_id` `replay-<n>`, numbered in the order the lines
//! are written: click and revision lines share the count, so `n` is not the trace's line); the [`Tally`] counts final
//! verdicts (after revisions) against the labels.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{Class, Facts, Revise, Revision, Rules, VerdictStage};
use crate::Domain;
use crate::clicks::{
    ClickEvent, ClickId, MAX_REFERER_BYTES, MAX_UA_BYTES, Truncated, bounded_text,
};
use crate::clock::{parse_rfc3339, unix_secs};
use crate::config::NodeId;
use crate::links::{MessageContext, Role};
use crate::tls::Ja4;

/// Why a trace line cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Not JSON at all (another file, a line broken in two).
    #[error(
        "trace line {line} is not JSON (at column {column}): a trace is one JSON object on one \
         line, as README's \"Replay and accuracy\" shows"
    )]
    NotJson {
        /// The line number, from 1.
        line: usize,
        /// Where the JSON broke off, from 1.
        column: usize,
    },
    /// JSON but not a trace: a missing or unknown member, a value of the wrong type.
    #[error("trace line {line} is not a trace: {what}")]
    Json {
        /// The line number, from 1.
        line: usize,
        /// What serde_json found, without its position (always line 1 of the one line).
        what: String,
    },
    /// A member with a value the edge could not have seen.
    #[error("trace line {line}: {what}")]
    Invalid {
        /// The line number, from 1.
        line: usize,
        /// What is wrong, naming the member.
        what: String,
    },
}

/// The truth about a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// A person clicked.
    Human,
    /// Software fetched the link.
    Machine,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trace {
    time: String,
    address: IpAddr,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    tls_fp: Option<String>,
    #[serde(default)]
    context: Option<TraceContext>,
    #[serde(default)]
    minted_at: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    label: Option<Label>,
    #[serde(default)]
    #[allow(dead_code)] // A comment for the reader of the trace file.
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceContext {
    message: String,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    sent_at: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

/// Labelled traces counted by final verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// `[label][verdict]`: label human, machine; verdict human, machine, unknown.
    pub counts: [[u64; 3]; 2],
    /// Traces without a label.
    pub unlabelled: u64,
}

impl Tally {
    fn add(&mut self, label: Option<Label>, class: Class) {
        let Some(label) = label else {
            self.unlabelled += 1;
            return;
        };
        let row = match label {
            Label::Human => 0,
            Label::Machine => 1,
        };
        let col = match class {
            Class::Human => 0,
            Class::Machine => 1,
            Class::Unknown => 2,
        };
        self.counts[row][col] += 1;
    }

    /// Of the clicks judged `machine`, the share that were machines (`None` before any).
    pub fn precision(&self) -> Option<f64> {
        let judged = self.counts[0][1] + self.counts[1][1];
        (judged > 0).then(|| self.counts[1][1] as f64 / judged as f64)
    }

    /// Of the machines, the share judged `machine` (`unknown` counts as missed).
    pub fn recall(&self) -> Option<f64> {
        let machines: u64 = self.counts[1].iter().sum();
        (machines > 0).then(|| self.counts[1][1] as f64 / machines as f64)
    }

    /// The confusion table and the two figures, as text.
    pub fn report(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.1}%", v * 100.0));
        let row = |name, c: [u64; 3]| format!("{name:<15}{:>8}{:>9}{:>9}\n", c[0], c[1], c[2]);
        format!(
            "label \\ verdict   human  machine  unknown\n{}{}unlabelled: {}\nmachine precision: {}\nmachine recall: {}\n",
            row("human", self.counts[0]),
            row("machine", self.counts[1]),
            self.unlabelled,
            pct(self.precision()),
            pct(self.recall()),
        )
    }
}

/// Revisions the rules send, kept until the trace that caused them is written.
#[derive(Default, Clone)]
struct Collected(Arc<Mutex<Vec<Revision>>>);

impl Revise for Collected {
    fn revise(&self, revision: Revision) {
        self.lock().push(revision);
    }
}

impl Collected {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Revision>> {
        // Pushes and drains cannot panic half-way, so a poisoned list is whole.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A replay in progress: the rules, where their revisions go, and what was judged so far.
pub struct Replay {
    rules: Rules,
    revisions: Collected,
    node: NodeId,
    /// The next line's sequence number (click and revision lines share it, as on the edge).
    next_seq: u64,
    /// Per click handle: its line's sequence number and its trace's index in `judged`.
    handles: HashMap<u64, (u64, usize)>,
    /// Per trace: its label and its final verdict.
    judged: Vec<(Option<Label>, Class)>,
}

impl Replay {
    /// A replay judging with rules built by `rules` from the revision sink it is handed.
    pub fn new(rules: impl FnOnce(Box<dyn Revise>) -> Rules) -> Replay {
        let revisions = Collected::default();
        Replay {
            rules: rules(Box::new(revisions.clone())),
            revisions,
            // Invariant: a fixed valid node id.
            node: NodeId::parse("replay").expect("valid node id"),
            next_seq: 1,
            handles: HashMap::new(),
            judged: Vec::new(),
        }
    }

    /// Judges the trace on `text` (line number `line`, from 1) and appends the lines the edge
    /// would have written (the click, then any revisions it caused) to `out`.
    pub fn trace(&mut self, line: usize, text: &str, out: &mut Vec<u8>) -> Result<(), ReplayError> {
        let trace: Trace = serde_json::from_str(text).map_err(|e| not_a_trace(line, &e))?;
        let (mut click, headers) =
            event(&trace).map_err(|what| ReplayError::Invalid { line, what })?;
        let verdict = self.rules.judge(&Facts {
            click: &click,
            headers: &headers,
            context: click.message.as_ref(),
        });
        let class = verdict.as_ref().map_or(Class::Unknown, |v| v.class);
        let seq = self.seq();
        if let Some(handle) = verdict.as_ref().and_then(|v| v.handle) {
            self.handles.insert(handle, (seq, self.judged.len()));
        }
        self.judged.push((trace.label, class));
        click.verdict = verdict;
        click.write_json(ClickId::new(&self.node, seq), out);
        let revisions: Vec<Revision> = self.revisions.lock().drain(..).collect();
        for r in revisions {
            let Some(&(revised, at)) = self.handles.get(&r.handle) else {
                continue;
            };
            self.judged[at].1 = r.class;
            let id = self.seq();
            r.write_json(
                ClickId::new(&self.node, revised),
                ClickId::new(&self.node, id),
                out,
            );
        }
        Ok(())
    }

    /// The labelled traces so far, by final verdict.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for (label, class) in &self.judged {
            t.add(*label, *class);
        }
        t
    }

    fn seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// Why trace `line` did not parse, in words that fit a file of one trace per line.
fn not_a_trace(line: usize, e: &serde_json::Error) -> ReplayError {
    if e.is_syntax() || e.is_eof() {
        return ReplayError::NotJson {
            line,
            column: e.column(),
        };
    }
    let what = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    ReplayError::Json {
        line,
        what: what.strip_suffix(&position).unwrap_or(&what).to_owned(),
    }
}

/// The click and headers a trace describes, or what is wrong with it.
fn event(t: &Trace) -> Result<(ClickEvent, HeaderMap), String> {
    let time = |name: &str, s: &str| {
        parse_rfc3339(s).ok_or_else(|| format!("{name} {s:?} is not an RFC 3339 time"))
    };
    let ts = time("time", &t.time)?;
    let method = match t.method.as_deref().unwrap_or("GET") {
        "GET" => "GET",
        "HEAD" => "HEAD",
        other => return Err(format!("method {other:?} is not GET or HEAD")),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &t.headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("header name {name:?} is not a header name"))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("header {name} has a value no request could carry"))?;
        headers.append(name, value);
    }
    let context = match &t.context {
        Some(c) => Some(MessageContext {
            message: c.message.clone(),
            index: c.index,
            count: c.count,
            sent_at: match &c.sent_at {
                Some(s) => Some(unix_secs(time("context.sent_at", s)?)),
                None => None,
            },
            role: match &c.role {
                Some(r) => Some(Role::parse(r).ok_or_else(|| format!("context.role {r:?} is not one of content, footer, unsubscribe, confirm, decoy"))?),
                None => None,
            },
        }),
        None => None,
    };
    // As the edge would have sealed it: a context minting refuses is no link the edge judged.
    if let Some(c) = &context {
        c.validate().map_err(|e| format!("context: {e}"))?;
        // Without an index, the destination tells the message's links apart: without either,
        // every link would be one, and no burst or coverage found.
        if c.index.is_none() && t.url.is_none() {
            return Err("context without index needs url (the link's destination)".into());
        }
    }
    let minted_at: SystemTime = match (&t.minted_at, context.as_ref().and_then(|c| c.sent_at)) {
        (Some(m), _) => time("minted_at", m)?,
        (None, Some(sent)) => crate::clock::from_unix_secs(sent),
        (None, None) => return Err("minted_at or context.sent_at is needed".into()),
    };
    let tls_fp = match &t.tls_fp {
        Some(s) => {
            Some(Ja4::parse(s).ok_or_else(|| format!("tls_fp {s:?} is not a JA4 fingerprint"))?)
        }
        None => None,
    };
    let domain = t.domain.as_deref().unwrap_or("links.example.com");
    let domain = Domain::parse(domain).map_err(|e| format!("domain {domain:?}: {e}"))?;
    let text = |name, max| match headers.get(name) {
        Some(v) => {
            let (text, cut) = bounded_text(v.as_bytes(), max);
            (Some(text), cut)
        }
        None => (None, false),
    };
    let (ua, ua_cut) = text(http::header::USER_AGENT, MAX_UA_BYTES);
    let (referer, referer_cut) = text(http::header::REFERER, MAX_REFERER_BYTES);
    let click = ClickEvent {
        ts,
        domain,
        url: t
            .url
            .clone()
            .unwrap_or_else(|| "https://example.com/".into()),
        meta: Vec::new(),
        minted_at,
        ip: t.address,
        ua,
        referer,
        method,
        // Not in traces, which are taken for clicks over HTTPS: the rules read only whether
        // TLS was used (`no-sec-fetch` counts only then), not its version.
        tls: Some("1.3"),
        http: "2",
        tls_fp,
        verdict: None,
        message: context,
        truncated: Truncated {
            ua: ua_cut,
            referer: referer_cut,
        },
        open: None,
        implied_open: false,
        marked_seen: false,
        visitor: None,
    };
    Ok((click, headers))
}

#[cfg(test)]
mod tests;
