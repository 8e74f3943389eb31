//! Clicks: the event ([`ClickEvent`]), the bounded queue the request path pushes into
//! ([`ClickQueue`]), and the writer that batches events into the sink ([`file::FileSink`]).
//!
//! The request path never waits on I/O: [`ClickQueue::push`] is a non-blocking send, and a full
//! queue is counted in `clickedge_clicks_dropped_total`, never silent. Shutdown drains the queue.

pub mod file;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::SystemTime;

use serde::Serialize;

use crate::Domain;
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

/// The JSON shape of a click line (the click log contract).
#[derive(Serialize)]
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

const TS_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// RFC 3339 UTC with milliseconds, as in the click log.
pub fn format_ts(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(TS_FORMAT)
        .unwrap_or_default()
}

impl ClickEvent {
    /// Appends the event as one JSON line (with the trailing newline) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let line = Line {
            ts: format_ts(self.ts),
            kind: "click",
            domain: self.domain.as_str(),
            url: &self.url,
            meta: self
                .meta
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            ip: self.ip,
            ua: self.ua.as_deref(),
            referer: self.referer.as_deref(),
            method: self.method,
            tls: self.tls,
            http: self.http,
            minted_at: format_ts(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(self.minted_at),
            ),
        };
        // Invariant: serialising a struct of strings and an IP into a Vec cannot fail.
        serde_json::to_writer(&mut *out, &line).expect("click line serialises");
        out.push(b'\n');
    }
}

/// What the queue carries to the writer.
pub(crate) enum Msg {
    Click(Box<ClickEvent>),
    /// Write everything queued so far, flush, and stop.
    Stop,
}

/// The request path's end of the click queue. Cheap to clone.
#[derive(Clone)]
pub struct ClickQueue {
    tx: SyncSender<Msg>,
    metrics: Metrics,
}

impl ClickQueue {
    /// Queues a click without blocking; a full or closed queue counts a drop.
    pub fn push(&self, event: ClickEvent) {
        match self.tx.try_send(Msg::Click(Box::new(event))) {
            Ok(()) => self.metrics.clicks_queued.inc(),
            Err(TrySendError::Full(_)) => {
                self.metrics.clicks_dropped.inc();
                tracing::warn!("click queue full: click dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.clicks_dropped.inc();
                tracing::error!("click writer stopped: click dropped");
            }
        }
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
}
