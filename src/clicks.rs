//! Clicks: the event ([`ClickEvent`]), the bounded queue the request path pushes into
//! ([`ClickQueue`]), and the writer that batches events into the sink ([`file::FileSink`]).
//!
//! The request path never waits on disk I/O and never blocks: both ways in are a non-blocking send
//! into one bounded queue.
//! - [`ClickQueue::push`] (buffered) returns at once; the writer writes the click within the flush
//!   interval. The 302 goes out either way, so a click that cannot be kept (full queue, writer
//!   gone, sink failing past its memory bound) is counted in `clickedge_clicks_dropped_total`:
//!   acknowledged, then lost, never silently.
//! - [`ClickQueue::push_synced`] resolves once the batch holding the click has been written and
//!   `fdatasync`ed (group commit: one write and one sync for everything queued meanwhile). A click
//!   that cannot be made durable is refused with [`ClickRejected`] and counted in
//!   `clickedge_clicks_rejected_total`; the caller answers 503, so it was never acknowledged.
//!
//! [`ClickQueue::record`] picks between the two by the configured [`Durability`]. Shutdown drains
//! the queue. This module does no I/O itself; [`file`] does, on its own thread.

pub mod file;
mod recover;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::Thread;
use std::time::SystemTime;

use tokio::sync::oneshot;

use crate::Domain;
use crate::config::Durability;
use crate::metrics::Metrics;

/// One click, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickEvent {
    /// When the request arrived.
    pub ts: SystemTime,
    /// The link domain.
    pub domain: Domain,
    /// The destination.
    pub url: String,
    /// Metadata from the link.
    pub meta: Vec<(String, String)>,
    /// When the link was minted, Unix seconds.
    pub minted_at: u64,
    /// Client address.
    pub ip: IpAddr,
    /// `User-Agent`.
    pub ua: Option<String>,
    /// `Referer`.
    pub referer: Option<String>,
    /// `GET` or `HEAD`.
    pub method: &'static str,
    /// TLS version (`"1.3"`, `"1.2"`), none over plain HTTP.
    pub tls: Option<&'static str>,
    /// HTTP version (`"1.1"`, `"2"`).
    pub http: &'static str,
}

const TS_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// RFC 3339 UTC with milliseconds, as in the click log.
pub fn format_ts(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(TS_FORMAT)
        .unwrap_or_default()
}

/// A click line's timestamp, as [`format_ts`] writes it but without its allocation and format
/// description for years of four digits (the generic formatter was a tenth of the writer's work
/// per click).
enum Stamp {
    Fixed([u8; 24]),
    Other(String),
}

impl Stamp {
    fn new(t: SystemTime) -> Stamp {
        let dt = time::OffsetDateTime::from(t);
        let (year, month, day) = dt.to_calendar_date();
        let Some(year) = u16::try_from(year).ok().filter(|y| *y <= 9999) else {
            return Stamp::Other(format_ts(t));
        };
        let (hour, minute, second, ms) = dt.to_hms_milli();
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u16| {
            for d in b[at..at + width].iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u8::from(month).into());
        put(8, 2, day.into());
        put(11, 2, hour.into());
        put(14, 2, minute.into());
        put(17, 2, second.into());
        put(20, 3, ms);
        Stamp::Fixed(b)
    }

    fn as_str(&self) -> &str {
        match self {
            // Invariant: only ASCII digits and punctuation are written.
            Stamp::Fixed(b) => std::str::from_utf8(b).expect("ASCII timestamp"),
            Stamp::Other(s) => s,
        }
    }
}

impl ClickEvent {
    /// Appends the event as one JSON line (with the trailing newline) to `out`: the click log
    /// contract's fields, in the order and form serde_json gives the `Line` struct in the tests,
    /// which check the two byte for byte. Written out here because serde_json escapes strings
    /// byte by byte, the writer's largest cost per click; here a string needing no escape (nearly
    /// all) is checked in one branch-free pass and copied.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let ts = Stamp::new(self.ts);
        let minted_at =
            Stamp::new(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(self.minted_at));
        out.extend_from_slice(b"{\"ts\":");
        json_str(out, ts.as_str());
        out.extend_from_slice(b",\"kind\":\"click\",\"domain\":");
        json_str(out, self.domain.as_str());
        out.extend_from_slice(b",\"url\":");
        json_str(out, &self.url);
        out.extend_from_slice(b",\"meta\":{");
        let pairs = self.meta.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if self.meta.windows(2).all(|w| w[0].0 < w[1].0) {
            json_pairs(out, pairs);
        } else {
            // Sorted by key, the last of a repeated key winning, as a map collects them.
            json_pairs(out, pairs.collect::<BTreeMap<_, _>>().into_iter());
        }
        out.extend_from_slice(b"},\"ip\":\"");
        json_ip(out, self.ip);
        out.extend_from_slice(b"\",\"ua\":");
        json_opt(out, self.ua.as_deref());
        out.extend_from_slice(b",\"referer\":");
        json_opt(out, self.referer.as_deref());
        out.extend_from_slice(b",\"method\":");
        json_str(out, self.method);
        out.extend_from_slice(b",\"tls\":");
        json_opt(out, self.tls);
        out.extend_from_slice(b",\"http\":");
        json_str(out, self.http);
        out.extend_from_slice(b",\"minted_at\":");
        json_str(out, minted_at.as_str());
        out.extend_from_slice(b"}\n");
    }
}

/// `s` as a JSON string, escaped exactly as serde_json escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes control characters, '"' and '\\' only. A fold rather than `any`: no
    // early exit, so the check vectorises.
    let clean = s.bytes().fold(true, |clean, b| {
        clean & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if clean {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Invariant: serialising a string into a Vec cannot fail.
        serde_json::to_writer(&mut *out, s).expect("string serialises");
    }
}

/// The address as `Display` writes it. IPv4 digit by digit: `write!` went through the formatting
/// machinery for a thousand instructions, a quarter of the writer's work per click.
fn json_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        // Invariant: formatting into a Vec cannot fail.
        IpAddr::V6(v6) => write!(out, "{v6}").expect("IPv6 address formats"),
    }
}

/// The members of a JSON object, between its braces.
fn json_pairs<'a>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k);
        out.push(b':');
        json_str(out, v);
    }
}

fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Why a synced click was not acknowledged. Fieldless, so refusing costs no allocation on the
/// request path; the caller answers 503 for every variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClickRejected {
    /// The queue to the writer is full: the sink is not keeping up with the click rate.
    #[error("click queue full")]
    QueueFull,
    /// The sink cannot write (disk full, directory missing or unwritable); the writer logs why.
    #[error("click sink unavailable")]
    SinkUnavailable,
    /// The writer has stopped (shutdown).
    #[error("click writer stopped")]
    Stopped,
}

/// How the writer tells a synced click's waiter that the click is on disk, or why not.
pub(crate) type Ack = oneshot::Sender<Result<(), ClickRejected>>;

/// What the queue carries to the writer.
pub(crate) enum Msg {
    /// A buffered click: written within the flush interval, nobody waits for it.
    Click(Box<ClickEvent>),
    /// A synced click: written and synced at once, then acknowledged (or refused) through the
    /// sender.
    Synced(Box<ClickEvent>, Ack),
    /// Write everything queued so far, flush, and stop.
    Stop,
}

/// The request path's end of the click queue. Cheap to clone.
#[derive(Clone)]
pub struct ClickQueue {
    tx: SyncSender<Msg>,
    metrics: Metrics,
    durability: Durability,
    /// The writer thread. It sleeps while a batch waits for its flush deadline; a push wakes it
    /// only when it must act sooner (a synced click, or `wake_depth` clicks queued).
    writer: Thread,
    wake_depth: i64,
    /// Unix second of the last "queue full" log line: at most one a second, however many drops
    /// (each one is counted in the metric).
    last_full_log: Arc<AtomicU64>,
}

impl ClickQueue {
    /// A queue of `capacity` into the writer thread `writer`.
    pub(crate) fn new(
        tx: SyncSender<Msg>,
        metrics: Metrics,
        durability: Durability,
        writer: Thread,
        capacity: usize,
    ) -> ClickQueue {
        ClickQueue {
            tx,
            metrics,
            durability,
            writer,
            // A quarter full: early enough that the queue never fills while the writer sleeps,
            // late enough that a busy edge wakes it a few times per flush interval, not per click.
            wake_depth: i64::try_from(capacity / 4).unwrap_or(i64::MAX).max(1),
            last_full_log: Arc::new(AtomicU64::new(0)),
        }
    }

    fn log_full(&self) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_full_log.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                dropped_total = self.metrics.clicks_dropped.get(),
                "click queue full: clicks are being dropped (counted in clickedge_clicks_dropped_total)"
            );
        }
    }

    /// The durability the sink was configured with, which [`ClickQueue::record`] follows.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Logs a click the configured way: [`ClickQueue::push`] when buffered (always `Ok`),
    /// [`ClickQueue::push_synced`] when synced. On `Err` the caller must not acknowledge the click
    /// (answer 503).
    pub async fn record(&self, event: ClickEvent) -> Result<(), ClickRejected> {
        match self.durability {
            Durability::Buffered => {
                self.push(event);
                Ok(())
            }
            Durability::Synced => self.push_synced(event).await,
        }
    }

    /// Queues a click without blocking and without waiting for it to be written; a full or closed
    /// queue counts a drop.
    pub fn push(&self, event: ClickEvent) {
        // Counted before the send so the writer's decrement can never run first and take the
        // gauge below zero.
        self.metrics.clicks_queued.inc();
        match self.tx.try_send(Msg::Click(Box::new(event))) {
            Ok(()) => {
                if self.metrics.clicks_queued.get() >= self.wake_depth {
                    self.writer.unpark();
                }
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.clicks_queued.dec();
                self.metrics.clicks_dropped.inc();
                self.log_full();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.clicks_queued.dec();
                self.metrics.clicks_dropped.inc();
                tracing::error!("click writer stopped: click dropped");
            }
        }
    }

    /// Queues a click without blocking, then waits until the batch holding it has been written
    /// and `fdatasync`ed. `Err` means the click is not known to be on disk: answer 503, not 302.
    ///
    /// Cancel-safe in the sense that matters: if the caller gives up (the client hung up), a
    /// queued click is still written; only the acknowledgement goes nowhere.
    pub async fn push_synced(&self, event: ClickEvent) -> Result<(), ClickRejected> {
        let (ack, acked) = oneshot::channel();
        self.metrics.clicks_queued.inc();
        let refused = match self.tx.try_send(Msg::Synced(Box::new(event), ack)) {
            // The writer answers every synced click it takes and counts its own refusals.
            Ok(()) => {
                self.writer.unpark();
                match acked.await {
                    Ok(answer) => return answer,
                    // The writer dropped the sender unanswered: it died mid-batch.
                    Err(_) => ClickRejected::Stopped,
                }
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.clicks_queued.dec();
                ClickRejected::QueueFull
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.clicks_queued.dec();
                ClickRejected::Stopped
            }
        };
        self.metrics.clicks_rejected.inc();
        Err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_contract_fields() {
        let ev = ClickEvent {
            ts: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_123),
            domain: Domain::parse("links.example.com").unwrap(),
            url: "https://example.com/".into(),
            meta: vec![("c".into(), "spring".into())],
            minted_at: 1_764_000_000,
            ip: "127.0.0.1".parse().unwrap(),
            ua: Some("curl/8".into()),
            referer: None,
            method: "GET",
            tls: Some("1.3"),
            http: "2",
        };
        let mut out = Vec::new();
        ev.write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ts"], "2025-11-24T16:00:00.123Z");
        assert_eq!(v["kind"], "click");
        assert_eq!(v["domain"], "links.example.com");
        assert_eq!(v["url"], "https://example.com/");
        assert_eq!(v["meta"]["c"], "spring");
        assert_eq!(v["ip"], "127.0.0.1");
        assert_eq!(v["ua"], "curl/8");
        assert!(v["referer"].is_null());
        assert_eq!(v["method"], "GET");
        assert_eq!(v["tls"], "1.3");
        assert_eq!(v["http"], "2");
        assert_eq!(v["minted_at"], "2025-11-24T16:00:00.000Z");
    }

    /// The click log contract's line as a struct: what [`ClickEvent::write_json`] must write,
    /// byte for byte, as serde_json serialises it.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        ts: String,
        kind: &'static str,
        domain: &'a str,
        url: &'a str,
        meta: BTreeMap<&'a str, &'a str>,
        ip: IpAddr,
        ua: Option<&'a str>,
        referer: Option<&'a str>,
        method: &'static str,
        tls: Option<&'static str>,
        http: &'static str,
        minted_at: String,
    }

    fn reference_line(ev: &ClickEvent) -> Vec<u8> {
        let line = Line {
            ts: format_ts(ev.ts),
            kind: "click",
            domain: ev.domain.as_str(),
            url: &ev.url,
            meta: ev
                .meta
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            ip: ev.ip,
            ua: ev.ua.as_deref(),
            referer: ev.referer.as_deref(),
            method: ev.method,
            tls: ev.tls,
            http: ev.http,
            minted_at: format_ts(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(ev.minted_at),
            ),
        };
        let mut out = serde_json::to_vec(&line).unwrap();
        out.push(b'\n');
        out
    }

    /// Any string, weighted towards what needs escaping.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex("[a-z\"\\\\\\x00-\\x1f\\x7f/é€😀 ]{0,12}").unwrap()
    }

    proptest::proptest! {
        #[test]
        fn line_is_what_serde_json_writes_for_the_contract_struct(
            ms in 0u64..4_000_000_000_000,
            minted_at in 0u64..4_000_000_000,
            url in text(),
            meta in proptest::collection::vec((text(), text()), 0..4),
            ip in proptest::prelude::any::<IpAddr>(),
            ua in proptest::option::of(text()),
            referer in proptest::option::of(text()),
            tls in proptest::option::of(proptest::sample::select(vec!["1.3", "1.2"])),
        ) {
            let ev = ClickEvent {
                ts: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                domain: Domain::parse("links.example.com").unwrap(),
                url,
                meta,
                minted_at,
                ip,
                ua,
                referer,
                method: "GET",
                tls,
                http: "1.1",
            };
            let mut out = Vec::new();
            ev.write_json(&mut out);
            proptest::prop_assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(reference_line(&ev)).unwrap()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn stamp_writes_what_format_ts_writes(
            ms in -377_705_116_800_000i64..253_402_300_800_000
        ) {
            // Every instant `time` represents, years -9999 to 9999; negative years take the
            // generic formatter.
            let d = std::time::Duration::from_millis(ms.unsigned_abs());
            let t = if ms < 0 { SystemTime::UNIX_EPOCH - d } else { SystemTime::UNIX_EPOCH + d };
            let stamp = Stamp::new(t);
            proptest::prop_assert_eq!(stamp.as_str(), format_ts(t));
        }
    }
}
