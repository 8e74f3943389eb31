//! Clicks: the event ([`ClickEvent`]) and the pipeline that keeps it, in three rooms.
//!
//! ```text
//! request path ──push──▶ ClickQueue ──▶ batcher thread ──Batch──▶ ClickSink (FileSink, …)
//!      │                 (queue.rs)      (batcher.rs)              (sink.rs, file.rs)
//!      └─ VerdictStage (verdict.rs) judges the click before it is queued
//! ```
//!
//! - [`ClickQueue`] is the request path's end: a non-blocking send into one bounded queue, with
//!   the drop and reject accounting of what cannot be queued. The request path never waits on
//!   I/O and never blocks.
//!   - [`ClickQueue::push`] (buffered) returns at once; the click is written within the flush
//!     interval. The 302 goes out either way, so a click that cannot be kept (full queue, writer
//!     gone, sink failing past its memory bound) is counted in `clickedge_clicks_dropped_total`:
//!     acknowledged, then lost, never silently.
//!   - [`ClickQueue::push_synced`] resolves once the batch holding the click has been written
//!     and made durable (group commit: one write and one sync for everything queued meanwhile).
//!     A click that cannot be made durable is refused with [`ClickRejected`] and counted in
//!     `clickedge_clicks_rejected_total`; the caller answers 503, so it was never acknowledged.
//!   - [`ClickQueue::record`] picks between the two by the configured durability.
//! - The batcher ([`ClickWriter`]) works for any sink: it encodes clicks into JSON lines,
//!   batches them, sleeps until a batch is due, holds the batch while the sink fails (up to a
//!   memory bound), and drains the queue on close.
//! - A [`ClickSink`] only owns its medium: it writes whole batches, or fails with a typed error and
//!   keeps nothing torn, so the batcher can retry. [`file::FileSink`] writes rotated JSON Lines
//!   files; a stream sink can implement the same trait without touching the batcher.
//!
//! The click log line is the contract ([`ClickEvent::write_json`]); new fields are only ever
//! appended (the verdict is, and the list of fields cut to their bound, see [`Truncated`]).

mod batcher;
mod bounded;
pub mod file;
mod id;
mod line;
pub mod opens;
pub mod privacy;
mod queue;
mod rate;
pub mod ship;
mod sink;
#[cfg(test)]
mod testing;
pub mod verdict;

use std::net::IpAddr;
use std::time::SystemTime;

use crate::Domain;

pub use batcher::{BatchConfig, ClickWriter, DEFAULT_MAX_BUFFERED_BYTES, StartError};
pub use bounded::{MAX_REFERER_BYTES, MAX_UA_BYTES, Truncated, bounded_text};
pub use id::{ClickId, ClickIds, id_seq, line_click_id};
pub use line::format_ts;
pub use queue::{ClickQueue, ClickRejected};
pub use sink::{Batch, ClickSink};
pub use verdict::{NoVerdict, Verdict, VerdictStage};

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
    /// When the link was minted (whole seconds, as the token carries it).
    pub minted_at: SystemTime,
    /// Client address.
    pub ip: IpAddr,
    /// `User-Agent`, at most [`MAX_UA_BYTES`] (see [`bounded_text`]).
    pub ua: Option<String>,
    /// `Referer`, at most [`MAX_REFERER_BYTES`].
    pub referer: Option<String>,
    /// `GET` or `HEAD`; `POST` for an action link's confirmation.
    pub method: &'static str,
    /// TLS version (`"1.3"`, `"1.2"`), none over plain HTTP.
    pub tls: Option<&'static str>,
    /// HTTP version (`"1.1"`, `"2"`).
    pub http: &'static str,
    /// The JA4 fingerprint of the connection's ClientHello, none over plain HTTP: the line's
    /// `"tls_fp"`.
    pub tls_fp: Option<crate::tls::Ja4>,
    /// How the [`VerdictStage`] judged the click; none when it did not (the line then has no
    /// verdict fields at all).
    pub verdict: Option<Verdict>,
    /// The message context sealed in the link, if any: the line's `"message"`.
    pub message: Option<crate::links::MessageContext>,
    /// Which of `ua` and `referer` were cut to their bound; the line lists them in `"truncated"`
    /// after everything else, and has no such field when nothing was cut.
    pub truncated: Truncated,
    /// Who fetched the open pixel, when the event is an open (`"kind": "open"`, `"url": null`
    /// and `"open_class"`); none for a click.
    pub open: Option<opens::OpenClass>,
    /// A person's click on a message whose open this node had not seen: the line's
    /// `"implied_open": true` (absent when false).
    pub implied_open: bool,
    /// This event marked its message seen opened in [`ClickQueue::seen`] (an open that may be a
    /// person's, or a click saying `implied_open`): a line the writer drops unmarks it, so the
    /// next person's click on the message says the open. Not in the line.
    pub marked_seen: bool,
    /// The keyed hash of the client's network and user agent ([`privacy`]): the line's
    /// `"visitor"`, when `clicks.visitor` is on.
    pub visitor: Option<privacy::Visitor>,
}
