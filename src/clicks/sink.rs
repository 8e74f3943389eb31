//! The seam between the batcher and a medium: [`ClickSink`] writes whole [`Batch`]es of encoded
//! click lines, and [`Batch`] is what it is handed.
//!
//! Split of duties: the batcher owns everything about clicks in flight (queueing, batching,
//! when to write, holding a batch while the sink fails, retrying, dropping past the memory
//! bound, acknowledging synced clicks, and every click counter); a sink owns only its medium
//! (files, a stream) and says "written" (and, for a durable batch, "durable") or fails with its
//! own typed error.
//!
//! Batches are encoded lines, not events: what is held while the sink fails is bounded in bytes
//! and encoded once, however many retries. A sink that sends one message per click splits the
//! batch with [`Batch::lines`]; the line is the click log contract in every medium.
//!
//! The trait is blocking and driven by the batcher's own thread (not a tokio worker). A sink over
//! an async client (a JetStream stream, acknowledged per message and deduplicated by message id)
//! blocks that thread on a runtime handle until every message of the batch is acknowledged;
//! the batcher then retries a failed batch as a whole, so per-message ids make the retry
//! harmless.

use std::fmt;
use std::time::Instant;

/// Encoded click lines for one write, in arrival order.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    bytes: &'a [u8],
    clicks: u64,
    durable: bool,
}

impl<'a> Batch<'a> {
    /// A batch of `clicks` newline-terminated lines in `bytes` (clicks and revisions).
    pub(super) fn new(bytes: &'a [u8], clicks: u64, durable: bool) -> Batch<'a> {
        Batch {
            bytes,
            clicks,
            durable,
        }
    }

    /// Every line of the batch, newlines included, back to back.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The lines one by one, each with its newline (a line holds no other newline).
    pub fn lines(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.bytes.split_inclusive(|&b| b == b'\n')
    }

    /// The batch's last line, with its newline: found from the end, without reading the lines
    /// before it (a scan of the whole batch was a thousand instructions per click).
    pub fn last_line(&self) -> Option<&'a [u8]> {
        let body = self.bytes.strip_suffix(b"\n").unwrap_or(self.bytes);
        let start = memchr::memrchr(b'\n', body).map_or(0, |at| at + 1);
        (start < self.bytes.len()).then(|| &self.bytes[start..])
    }

    /// How many lines the batch holds (clicks, and revisions of earlier clicks' verdicts); never
    /// zero.
    pub fn clicks(&self) -> u64 {
        self.clicks
    }

    /// Whether a synced click is in the batch: [`ClickSink::write`] must then return `Ok` only once
    /// the batch is durable (synced to disk, acknowledged by the stream), because the click's
    /// waiter is acknowledged right after.
    pub fn durable(&self) -> bool {
        self.durable
    }
}

/// A medium for click lines, driven by the batcher thread.
pub trait ClickSink: Send + 'static {
    /// Why a write failed. Logged by the batcher with its causes; never shown to a client.
    type Error: std::error::Error + Send + 'static;

    /// Writes the whole batch, after whatever earlier batches wrote, and makes it durable if
    /// [`Batch::durable`]. On `Ok` every line is kept. On `Err` the batcher holds the batch and
    /// retries it later (possibly with lines added or refused synced ones taken out), so the
    /// medium must not be left holding part of it: roll back (a file truncates to its last good
    /// length), or be a medium where writing a line again is harmless (messages deduplicated by
    /// id).
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), Self::Error>;

    /// Flushes and releases the medium at shutdown, after the last write, logging what it
    /// cannot finish. `Err`: what it took may not be durable (a file's fsync failed), so the stop
    /// cannot say every click was kept.
    fn close(self) -> Result<(), Self::Error>;

    /// When the medium has work of its own to do with no batch to write (a file to close at its
    /// age limit while no click comes); `None` when it has none. The batcher calls
    /// [`ClickSink::tick`] then, if it has nothing to write by that time.
    fn due(&self) -> Option<Instant> {
        None
    }

    /// Does the medium's own work once [`ClickSink::due`] has come. Logs what fails.
    fn tick(&mut self) {}

    /// Where the clicks go (a directory, a stream), for the batcher's log lines.
    fn target(&self) -> impl fmt::Display + '_;
}

#[cfg(test)]
mod tests {
    use super::Batch;

    #[test]
    fn the_last_line_is_the_one_lines_ends_with() {
        for bytes in [
            &b"a\nbc\n"[..],
            b"only\n",
            b"a\n\n",
            b"x\ny\nz\n",
            b"a\nbc",
            b"\n",
        ] {
            let batch = Batch::new(bytes, 1, false);
            assert_eq!(batch.last_line(), batch.lines().last(), "{bytes:?}");
        }
        assert_eq!(Batch::new(b"", 1, false).last_line(), None);
    }
}
