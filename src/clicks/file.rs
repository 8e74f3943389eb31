//! The file sink: a dedicated thread that batches queued clicks into JSON Lines files under
//! `clicks.dir`, rotated by size and age. This thread is the only place that does click I/O.
//!
//! File names are `clicks-<UTC time of opening, ms>.jsonl`, so they sort in time order.
//!
//! Group commit: the writer takes everything queued (up to [`BATCH_BYTES`]) and writes it with one
//! `write`. Buffered clicks wait at most `flush_interval` for that. A batch holding a synced click
//! is written at once, `fdatasync`ed once, and then every synced click in it is acknowledged.
//!
//! Failure (disk full, directory gone or unwritable): the file is truncated back to its last good
//! length, so a write that landed in part leaves no torn or duplicate line behind; synced clicks
//! of the batch are refused; buffered clicks are held in memory, up to `max_buffered_bytes`, and
//! retried with a backoff of at most [`MAX_RETRY_BACKOFF`]. Past the bound new buffered clicks are
//! dropped and counted. The first successful write puts everything held on disk, in arrival
//! order. One log line starts a failure episode and one ends it, whatever the number of retries.
//!
//! At start a torn tail left by a crash is quarantined ([`super::recover`]). This module never
//! reads the log back and never deletes files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{Ack, ClickEvent, ClickQueue, ClickRejected, Msg, format_ts, recover};
use crate::config::Durability;
use crate::metrics::Metrics;

/// Suggested [`FileSinkConfig::max_buffered_bytes`]: 64 MiB, some 150 000 clicks of 450 bytes.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;

/// A batch is written once it reaches this size, whatever the flush interval.
const BATCH_BYTES: usize = 1 << 20;

/// Longest wait between two write attempts while the sink is failing.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Settings of the file sink.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// Directory of the click log.
    pub dir: PathBuf,
    /// Longest time a buffered click waits before it is written.
    pub flush_interval: Duration,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Rotate past this size.
    pub max_file_bytes: u64,
    /// Rotate past this age.
    pub rotate_interval: Duration,
    /// What [`ClickQueue::record`] does: `Buffered` returns at once, `Synced` waits until the
    /// click is written and `fdatasync`ed.
    pub durability: Durability,
    /// Encoded clicks held in memory while the sink is failing, in bytes; past it new buffered
    /// clicks are dropped (counted) and synced ones refused. See [`DEFAULT_MAX_BUFFERED_BYTES`].
    pub max_buffered_bytes: usize,
}

impl Default for FileSinkConfig {
    /// The defaults of the `[clicks]` config section, under `./clickedge-data/clicks`.
    fn default() -> Self {
        FileSinkConfig {
            dir: PathBuf::from("./clickedge-data/clicks"),
            flush_interval: Duration::from_millis(100),
            queue_capacity: 65_536,
            max_file_bytes: 64 << 20,
            rotate_interval: Duration::from_secs(3600),
            durability: Durability::Buffered,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// The running writer. [`FileSink::close`] writes everything queued and stops it.
pub struct FileSink {
    tx: SyncSender<Msg>,
    thread: JoinHandle<()>,
}

/// The sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The click log directory could not be created.
    #[error("creating click log directory {dir}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The click log could not be checked for a torn last line, or a torn line could not be
    /// moved aside (the file is then left as it was).
    #[error(
        "checking {path} for a torn last line after a crash; free space or fix permissions, then restart"
    )]
    Recover {
        /// The click log directory or file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The writer thread could not be spawned.
    #[error("starting the click writer thread")]
    Spawn(#[source] io::Error),
}

impl FileSink {
    /// Quarantines a torn tail left by a crash, then starts the writer thread; returns it and
    /// the queue for the request path.
    pub fn start(
        config: FileSinkConfig,
        metrics: Metrics,
    ) -> Result<(FileSink, ClickQueue), SinkError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| SinkError::Dir {
            dir: config.dir.clone(),
            source,
        })?;
        recover::recover(&config.dir, &metrics).map_err(|e| SinkError::Recover {
            path: e.path,
            source: e.source,
        })?;
        let (tx, rx) = sync_channel(config.queue_capacity);
        let (capacity, durability) = (config.queue_capacity, config.durability);
        let thread = Writer::new(config, metrics.clone()).spawn(rx)?;
        let writer = thread.thread().clone();
        let queue = ClickQueue::new(tx.clone(), metrics, durability, writer, capacity);
        Ok((FileSink { tx, thread }, queue))
    }

    /// Writes every click queued so far, flushes, and stops the writer. Blocks; call from a
    /// blocking context. If the sink is failing, makes one last attempt; clicks it cannot write
    /// are counted as dropped.
    pub fn close(self) {
        // A blocking send: if the queue is full this waits for the writer to make room, so the
        // stop marker lands after every click already queued. The writer may be asleep until
        // its flush deadline: wake it first to make that room, and again to see the marker.
        let writer = self.thread.thread();
        writer.unpark();
        let sent = self.tx.send(Msg::Stop).is_ok();
        writer.unpark();
        if sent && self.thread.join().is_err() {
            tracing::error!("click writer panicked");
        }
    }
}

struct OpenFile {
    file: File,
    path: PathBuf,
    /// Length after the last successful write: where a failed write is rolled back to.
    bytes: u64,
    opened: Instant,
    /// Whether the directory entry has been synced (needed once before a synced ack).
    dir_synced: bool,
}

/// A file whose rollback failed: it may end in part of a batch. Nothing else is written until it
/// is truncated back to `bytes`, so the log never keeps a torn line or a line written twice, and
/// only the newest file can need repair (which is what startup recovery relies on).
struct TornFile {
    path: PathBuf,
    bytes: u64,
    opened: Instant,
}

/// A synced click in the batch: its bytes in [`Writer::buf`] and who waits for it.
struct Waiter {
    lines: Range<usize>,
    ack: Ack,
}

/// A failure episode: from the first failed write to the next successful one.
struct Failure {
    since: Instant,
    retry_at: Instant,
    backoff: Duration,
    /// Buffered clicks dropped past the memory bound during this episode.
    dropped: u64,
}

struct Writer {
    config: FileSinkConfig,
    metrics: Metrics,
    file: Option<OpenFile>,
    torn: Option<TornFile>,
    /// Encoded lines not yet written, in arrival order (held here while the sink fails).
    buf: Vec<u8>,
    /// Clicks in `buf`.
    pending: u64,
    /// Synced clicks in `buf`, in order.
    waiters: Vec<Waiter>,
    /// When the oldest click in `buf` is due to be written.
    flush_at: Option<Instant>,
    failure: Option<Failure>,
    faults: Faults,
}

impl Writer {
    fn new(config: FileSinkConfig, metrics: Metrics) -> Writer {
        metrics.click_sink_healthy.set(1);
        Writer {
            config,
            metrics,
            file: None,
            torn: None,
            buf: Vec::with_capacity(64 << 10),
            pending: 0,
            waiters: Vec::new(),
            flush_at: None,
            failure: None,
            faults: Faults::default(),
        }
    }

    fn spawn(self, rx: Receiver<Msg>) -> Result<JoinHandle<()>, SinkError> {
        std::thread::Builder::new()
            .name("clickedge-clicks".into())
            .spawn(move || self.run(rx))
            .map_err(SinkError::Spawn)
    }

    /// Waits for work, batches it and writes it. With clicks in the batch the writer sleeps until
    /// the batch is due instead of watching the queue, so buffered clicks queue up without waking
    /// it one by one; [`ClickQueue`] wakes it early for a synced click, the stop marker, or a
    /// queue a quarter full.
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let mut stop = match self.wake_at() {
                None => rx.recv().map_or(true, |msg| self.accept(msg)),
                Some(at) => {
                    std::thread::park_timeout(at.saturating_duration_since(Instant::now()));
                    false
                }
            };
            // Group commit: whatever is already queued joins this batch. While the sink fails the
            // batch is held, not written, so it keeps taking past BATCH_BYTES (`take` drops past
            // `max_buffered_bytes`), or the queue would fill and the stop marker never be seen;
            // at most a queue's worth per pass, so a flood cannot put off the retry.
            let mut taken = 0;
            while !stop
                && (self.buf.len() < BATCH_BYTES || self.failure.is_some())
                && taken < self.config.queue_capacity
            {
                match rx.try_recv() {
                    Ok(msg) => stop = self.accept(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => stop = true,
                }
                taken += 1;
            }
            if stop {
                // Clones of the queue may have pushed after the stop marker; take those too.
                while let Ok(msg) = rx.try_recv() {
                    self.accept(msg);
                }
                return self.finish();
            }
            self.step(Instant::now());
        }
    }

    /// When the writer must act without a new message: the flush deadline, or the next retry.
    fn wake_at(&self) -> Option<Instant> {
        if self.buf.is_empty() {
            return None;
        }
        match &self.failure {
            Some(f) => Some(f.retry_at),
            None => self.flush_at,
        }
    }

    /// Adds a message to the batch; true for the stop marker.
    fn accept(&mut self, msg: Msg) -> bool {
        let (event, ack) = match msg {
            Msg::Click(event) => (event, None),
            Msg::Synced(event, ack) => (event, Some(ack)),
            Msg::Stop => return true,
        };
        self.take(&event, ack);
        // Counted out of the queue last, once the click is batched, dropped or refused: whoever
        // sees the queue empty sees every other counter settled.
        self.metrics.clicks_queued.dec();
        false
    }

    /// Encodes a click into the batch, or drops (refuses) it past the memory bound while failing.
    fn take(&mut self, event: &ClickEvent, ack: Option<Ack>) {
        let start = self.buf.len();
        event.write_json(&mut self.buf);
        if let Some(failure) = &mut self.failure
            && self.buf.len() > self.config.max_buffered_bytes
        {
            // Tail drop: what is held stays a gapless run of the oldest clicks.
            self.buf.truncate(start);
            match ack {
                Some(ack) => {
                    self.metrics.clicks_rejected.inc();
                    // The waiter may have gone (client hung up); nothing to tell then.
                    let _ = ack.send(Err(ClickRejected::SinkUnavailable));
                }
                None => {
                    self.metrics.clicks_dropped.inc();
                    if failure.dropped == 0 {
                        tracing::error!(
                            max_buffered_bytes = self.config.max_buffered_bytes,
                            "click sink still failing and its memory bound is reached: dropping new clicks"
                        );
                    }
                    failure.dropped += 1;
                }
            }
            return;
        }
        self.pending += 1;
        if let Some(ack) = ack {
            self.waiters.push(Waiter {
                lines: start..self.buf.len(),
                ack,
            });
        }
        self.flush_at
            .get_or_insert_with(|| Instant::now() + self.config.flush_interval);
        if self.failure.is_some() {
            self.metrics
                .click_sink_held_bytes
                .set(gauge(self.buf.len()));
        }
    }

    /// Writes the batch if it is due; while failing and no retry is due, refuses synced clicks at
    /// once rather than letting them wait for a disk that is not there.
    fn step(&mut self, now: Instant) {
        if self.buf.is_empty() {
            return;
        }
        let write_now = match &self.failure {
            None => {
                !self.waiters.is_empty()
                    || self.buf.len() >= BATCH_BYTES
                    || self.flush_at.is_some_and(|at| now >= at)
            }
            Some(f) => now >= f.retry_at,
        };
        if write_now {
            self.flush();
        } else if self.failure.is_some() {
            self.refuse_waiters();
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.write_batch() {
            Ok(()) => self.written(),
            Err(e) => self.failed(&e),
        }
    }

    /// Appends `buf` to the current file (rotating, opening or repairing first as needed) and
    /// syncs it if a synced click is in it. On error the file is as it was before.
    fn write_batch(&mut self) -> io::Result<()> {
        if let Some(torn) = &self.torn {
            self.file = torn.repair()?;
            self.torn = None;
        }
        let due = self.file.as_ref().is_some_and(|f| {
            f.bytes >= self.config.max_file_bytes
                || f.opened.elapsed() >= self.config.rotate_interval
        });
        if due && let Some(f) = self.file.take() {
            self.close_file(f);
        }
        let mut file = match self.file.take() {
            Some(f) => f,
            None => open_new(&self.config.dir)?,
        };
        let sync = !self.waiters.is_empty();
        let good = file.bytes;
        let mut result = if self.faults.tear_next_write() {
            // Test-only: the write lands in part, then fails.
            file.file
                .write_all(&self.buf[..self.buf.len() / 2])
                .and(Err(io::Error::other("injected torn write")))
        } else {
            file.file.write_all(&self.buf)
        };
        if result.is_ok() && sync {
            self.metrics.click_fsyncs.inc();
            result = file.file.sync_data();
            if result.is_ok() && !file.dir_synced {
                // A new file's name must be durable too before a click in it is acknowledged.
                result = sync_dir(&self.config.dir);
                file.dir_synced = result.is_ok();
            }
        }
        let Err(e) = result else {
            file.bytes += self.buf.len() as u64;
            self.file = Some(file);
            return Ok(());
        };
        // Roll back: the write may have landed in part (complete lines followed by a torn one),
        // or the sync may have failed with pages the kernel could not write. Truncating to the
        // last good length means the retry neither tears nor duplicates a line; O_APPEND puts the
        // next write at the new end.
        match file.file.set_len(good) {
            Ok(()) => self.file = Some(file),
            Err(rollback) => {
                tracing::warn!(
                    path = %file.path.display(),
                    error = %rollback,
                    "click file could not be truncated after a failed write; retrying before the next write"
                );
                self.torn = Some(TornFile {
                    path: file.path,
                    bytes: good,
                    opened: file.opened,
                });
            }
        }
        Err(e)
    }

    /// The batch is on disk (and synced, if it held synced clicks).
    fn written(&mut self) {
        // Every counter and gauge is settled before the first acknowledgement, so a waiter that
        // looks at the metrics sees the state that acknowledged it.
        if let Some(failure) = self.failure.take() {
            self.metrics.click_sink_healthy.set(1);
            self.metrics.click_sink_held_bytes.set(0);
            tracing::info!(
                dir = %self.config.dir.display(),
                failing_for = ?failure.since.elapsed(),
                written = self.pending,
                dropped = failure.dropped,
                "click sink recovered: held clicks written"
            );
        }
        self.metrics.clicks_logged.inc_by(self.pending);
        for waiter in self.waiters.drain(..) {
            // The waiter may have gone (client hung up); the click is on disk all the same.
            let _ = waiter.ack.send(Ok(()));
        }
        self.buf.clear();
        // Give back what a long failure episode made the buffer grow to.
        self.buf.shrink_to(2 * BATCH_BYTES);
        self.pending = 0;
        self.flush_at = None;
    }

    /// The batch could not be written: refuse its synced clicks, hold the rest, schedule a retry.
    fn failed(&mut self, e: &io::Error) {
        self.metrics.click_sink_errors.inc();
        let refused = self.take_waiters();
        self.metrics
            .click_sink_held_bytes
            .set(gauge(self.buf.len()));
        let now = Instant::now();
        match &mut self.failure {
            None => {
                tracing::error!(
                    dir = %self.config.dir.display(),
                    error = %e,
                    held = self.pending,
                    refused = refused.len(),
                    "writing clicks failed: holding buffered clicks in memory, refusing synced ones, retrying"
                );
                self.metrics.click_sink_healthy.set(0);
                let backoff = self.config.flush_interval.min(MAX_RETRY_BACKOFF);
                self.failure = Some(Failure {
                    since: now,
                    retry_at: now + backoff,
                    backoff,
                    dropped: 0,
                });
            }
            Some(failure) => {
                tracing::debug!(error = %e, "click sink still failing");
                failure.backoff = (failure.backoff * 2).min(MAX_RETRY_BACKOFF);
                failure.retry_at = now + failure.backoff;
            }
        }
        refuse(refused);
    }

    /// Refuses the synced clicks of the batch (no write is due while the sink is failing).
    fn refuse_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let refused = self.take_waiters();
        self.metrics
            .click_sink_held_bytes
            .set(gauge(self.buf.len()));
        refuse(refused);
    }

    /// Takes the synced clicks out of the batch, counting them as rejected; the buffered clicks
    /// around them stay, in order. The caller refuses them once every gauge is settled, so a
    /// waiter that looks at the metrics sees the state that refused it.
    fn take_waiters(&mut self) -> Vec<Waiter> {
        if self.waiters.is_empty() {
            return Vec::new();
        }
        let mut kept = Vec::with_capacity(self.buf.len());
        let mut from = 0;
        for waiter in &self.waiters {
            kept.extend_from_slice(&self.buf[from..waiter.lines.start]);
            from = waiter.lines.end;
        }
        kept.extend_from_slice(&self.buf[from..]);
        self.buf = kept;
        let refused = std::mem::take(&mut self.waiters);
        self.pending -= refused.len() as u64;
        self.metrics.clicks_rejected.inc_by(refused.len() as u64);
        if self.buf.is_empty() {
            self.flush_at = None;
        }
        refused
    }

    /// Shutdown: one last attempt, even inside a retry backoff, then close the file.
    fn finish(mut self) {
        self.flush();
        if self.pending > 0 {
            self.metrics.clicks_dropped.inc_by(self.pending);
            tracing::error!(
                dir = %self.config.dir.display(),
                dropped = self.pending,
                "click sink still failing at shutdown: held clicks dropped"
            );
        }
        if let Some(torn) = &self.torn {
            tracing::error!(
                path = %torn.path.display(),
                "click file may end in a torn line; it is repaired at the next start"
            );
        }
        if let Some(f) = self.file.take() {
            self.close_file(f);
        }
    }

    fn close_file(&self, f: OpenFile) {
        if let Err(e) = f.file.sync_all() {
            self.metrics.click_sink_errors.inc();
            tracing::error!(path = %f.path.display(), error = %e, "syncing click file");
        }
    }
}

impl TornFile {
    /// Truncates the file back to its good length and reopens it for appending; `None` if it is
    /// gone (nothing torn remains then).
    fn repair(&self) -> io::Result<Option<OpenFile>> {
        let file = match OpenOptions::new().append(true).open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.set_len(self.bytes)?;
        tracing::info!(path = %self.path.display(), "torn click file truncated back");
        Ok(Some(OpenFile {
            file,
            path: self.path.clone(),
            bytes: self.bytes,
            opened: self.opened,
            // Not known to have been synced before the failure.
            dir_synced: false,
        }))
    }
}

fn open_new(dir: &Path) -> io::Result<OpenFile> {
    loop {
        let path = dir.join(format!("clicks-{}.jsonl", file_stamp(SystemTime::now())));
        match OpenOptions::new().append(true).create_new(true).open(&path) {
            Ok(file) => {
                tracing::info!(path = %path.display(), "click file opened");
                return Ok(OpenFile {
                    file,
                    path,
                    bytes: 0,
                    opened: Instant::now(),
                    dir_synced: false,
                });
            }
            // Two files within one millisecond: the next name must sort after this one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Tells waiters their clicks were not written.
fn refuse(waiters: Vec<Waiter>) {
    for waiter in waiters {
        // The waiter may have gone (client hung up); nothing to tell then.
        let _ = waiter.ack.send(Err(ClickRejected::SinkUnavailable));
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `20261125T091000.123Z`: sortable, no characters that need quoting.
fn file_stamp(t: SystemTime) -> String {
    format_ts(t).replace(['-', ':'], "")
}

fn gauge(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Fault injection for the tests of the rollback path; zero-sized and inert outside tests.
#[derive(Default)]
struct Faults {
    /// How many of the next writes land in part and then fail.
    #[cfg(test)]
    tear_writes: usize,
}

impl Faults {
    fn tear_next_write(&mut self) -> bool {
        #[cfg(test)]
        if self.tear_writes > 0 {
            self.tear_writes -= 1;
            return true;
        }
        false
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;
    use crate::clicks::ClickEvent;

    fn url(i: usize) -> String {
        // Fixed width, so every line of a test has the same length.
        format!("https://example.com/{i:04}")
    }

    fn event(i: usize) -> ClickEvent {
        ClickEvent {
            ts: SystemTime::now(),
            domain: Domain::parse("a.example.com").unwrap(),
            url: url(i),
            meta: vec![],
            minted_at: 0,
            ip: "127.0.0.1".parse().unwrap(),
            ua: None,
            referer: None,
            method: "GET",
            tls: Some("1.3"),
            http: "1.1",
        }
    }

    /// A queue whose writer is started by hand, or not at all: it wakes the test thread instead,
    /// which is harmless.
    fn test_queue(
        tx: SyncSender<Msg>,
        metrics: &Metrics,
        durability: Durability,
        capacity: usize,
    ) -> ClickQueue {
        let thread = std::thread::current();
        ClickQueue::new(tx, metrics.clone(), durability, thread, capacity)
    }

    fn config(dir: &Path) -> FileSinkConfig {
        FileSinkConfig {
            dir: dir.to_path_buf(),
            flush_interval: Duration::from_millis(1),
            queue_capacity: 10_000,
            max_file_bytes: u64::MAX,
            rotate_interval: Duration::from_secs(3600),
            durability: Durability::Buffered,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }

    /// The click files of `dir` in name order, and the URLs of their lines in file order. Every
    /// line must be JSON.
    fn lines(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        let urls = files
            .iter()
            .flat_map(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                assert!(text.is_empty() || text.ends_with('\n'), "{p:?} ends torn");
                text.lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        v["url"].as_str().unwrap().to_owned()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        (files, urls)
    }

    fn urls(range: impl IntoIterator<Item = usize>) -> Vec<String> {
        range.into_iter().map(url).collect()
    }

    /// Polls `done` until it holds; fails the test after a generous deadline.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Makes `dir` unusable the way a lost mount or a full disk is, in a way that also holds for
    /// root (tests run as root, where permissions do not stop writes): the directory is moved away
    /// and a regular file takes its place. Returns the undo.
    fn break_dir(dir: &Path) -> impl FnOnce() + use<> {
        let away = dir.with_extension("away");
        std::fs::rename(dir, &away).unwrap();
        std::fs::write(dir, b"").unwrap();
        let dir = dir.to_path_buf();
        move || {
            std::fs::remove_file(&dir).unwrap();
            std::fs::rename(&away, &dir).unwrap();
        }
    }

    /// A buffered sink under `root/clicks` (`config` changed by `with`) whose first click is on
    /// disk and whose directory is then broken. Every later write fails: `max_file_bytes` 1 makes
    /// each one open a new file. Returns the sink, its queue, the directory and the undo.
    fn failing_sink(
        root: &Path,
        metrics: &Metrics,
        with: impl FnOnce(FileSinkConfig) -> FileSinkConfig,
    ) -> (FileSink, ClickQueue, PathBuf, Box<dyn FnOnce()>) {
        let dir = root.join("clicks");
        let config = with(FileSinkConfig {
            max_file_bytes: 1,
            ..config(&dir)
        });
        let (sink, queue) = FileSink::start(config, metrics.clone()).unwrap();
        assert_eq!(metrics.click_sink_healthy.get(), 1);
        queue.push(event(0));
        eventually("the first click", || metrics.clicks_logged.get() == 1);
        let restore = Box::new(break_dir(&dir));
        (sink, queue, dir, restore)
    }

    #[test]
    fn close_writes_everything_in_order_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (sink, queue) = FileSink::start(
            FileSinkConfig {
                max_file_bytes: 2_000,
                ..config(dir.path())
            },
            metrics.clone(),
        )
        .unwrap();
        for i in 0..500 {
            queue.push(event(i));
            // Several batches, each past the size limit, whatever the machine's speed.
            if i % 50 == 0 {
                eventually("a batch", || metrics.clicks_logged.get() == i as u64 + 1);
            }
        }
        sink.close();
        let (files, lines) = lines(dir.path());
        assert!(files.len() > 1, "expected rotation, got {files:?}");
        assert_eq!(lines, urls(0..500));
        assert_eq!(metrics.clicks_logged.get(), 500);
        assert_eq!(metrics.clicks_dropped.get(), 0);
        assert_eq!(metrics.clicks_queued.get(), 0);
        // Buffered mode never waits for the disk.
        assert_eq!(metrics.click_fsyncs.get(), 0);
    }

    #[test]
    fn rotates_by_age_and_names_sort_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let rotate_interval = Duration::from_millis(20);
        let (sink, queue) = FileSink::start(
            FileSinkConfig {
                queue_capacity: 100,
                rotate_interval,
                ..config(dir.path())
            },
            metrics.clone(),
        )
        .unwrap();
        for i in 0..3 {
            queue.push(event(i));
            // Written alone, then older than the age limit when the next click comes: each click
            // lands in a file of its own however slow the machine is.
            eventually("the click", || metrics.clicks_logged.get() == i as u64 + 1);
            std::thread::sleep(rotate_interval);
        }
        sink.close();
        let (files, lines) = lines(dir.path());
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(lines, urls(0..3));
    }

    #[test]
    fn a_writer_sleeping_until_its_flush_deadline_is_woken_before_the_queue_fills() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (sink, queue) = FileSink::start(
            FileSinkConfig {
                // The writer's own deadline never comes during the test.
                flush_interval: Duration::from_secs(3600),
                queue_capacity: 8,
                ..config(dir.path())
            },
            metrics.clone(),
        )
        .unwrap();
        // Ten times the queue's capacity, a click at a time: only the wake at a quarter full
        // drains the queue while the batch waits for its deadline.
        for i in 0..80 {
            eventually("room in the queue", || metrics.clicks_queued.get() < 8);
            queue.push(event(i));
        }
        assert_eq!(metrics.clicks_dropped.get(), 0);
        assert_eq!(
            metrics.clicks_logged.get(),
            0,
            "written before its deadline"
        );
        sink.close();
        assert_eq!(lines(dir.path()).1, urls(0..80));
    }

    #[test]
    fn full_queue_counts_drops() {
        let metrics = Metrics::unregistered();
        let (tx, rx) = sync_channel(2);
        let queue = test_queue(tx, &metrics, Durability::Buffered, 2);
        for i in 0..5 {
            queue.push(event(i));
        }
        assert_eq!(metrics.clicks_dropped.get(), 3);
        assert_eq!(metrics.clicks_queued.get(), 2);
        drop(rx);
    }

    #[tokio::test]
    async fn full_queue_refuses_synced_clicks_as_rejected_not_dropped() {
        let metrics = Metrics::unregistered();
        let (tx, rx) = sync_channel(1);
        let queue = test_queue(tx, &metrics, Durability::Synced, 1);
        queue.push(event(0));
        assert_eq!(
            queue.push_synced(event(1)).await,
            Err(ClickRejected::QueueFull)
        );
        assert_eq!(queue.record(event(2)).await, Err(ClickRejected::QueueFull));
        drop(rx);
        assert_eq!(
            queue.push_synced(event(3)).await,
            Err(ClickRejected::Stopped)
        );
        assert_eq!(metrics.clicks_rejected.get(), 3);
        assert_eq!(metrics.clicks_dropped.get(), 0);
        assert_eq!(metrics.clicks_queued.get(), 1);
    }

    #[tokio::test]
    async fn synced_click_is_acknowledged_only_once_its_line_is_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (sink, queue) = FileSink::start(
            FileSinkConfig {
                // Only a synced click can get anything written before close.
                flush_interval: Duration::from_secs(3600),
                durability: Durability::Synced,
                ..config(dir.path())
            },
            metrics.clone(),
        )
        .unwrap();
        assert_eq!(queue.durability(), Durability::Synced);
        queue.push(event(0));
        queue.push_synced(event(1)).await.unwrap();
        // Read at the moment of the acknowledgement, before any close: the synced click is in
        // the file, and the buffered one queued before it rode along in the same batch.
        assert_eq!(lines(dir.path()).1, urls(0..2));
        assert_eq!(metrics.click_fsyncs.get(), 1);
        assert_eq!(metrics.clicks_logged.get(), 2);
        // `record` follows the configured durability.
        queue.record(event(2)).await.unwrap();
        assert_eq!(lines(dir.path()).1, urls(0..3));
        assert_eq!(metrics.click_fsyncs.get(), 2);
        sink.close();
        assert_eq!(metrics.clicks_rejected.get(), 0);
    }

    #[tokio::test]
    async fn synced_clicks_queued_together_share_one_write_and_one_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (tx, rx) = sync_channel(1_000);
        let queue = test_queue(tx, &metrics, Durability::Synced, 1_000);
        let mut waiting = tokio::task::JoinSet::new();
        for i in 0..200 {
            let queue = queue.clone();
            waiting.spawn(async move { queue.push_synced(event(i)).await });
        }
        drop(queue);
        // Every click is queued before the writer looks, as under load while it syncs the
        // previous batch. On this single-threaded runtime a task's count and send happen in one
        // poll, so once the gauge reads 200 all 200 are in the queue.
        let deadline = Instant::now() + Duration::from_secs(20);
        while metrics.clicks_queued.get() < 200 {
            assert!(Instant::now() < deadline, "clicks not queued");
            tokio::task::yield_now().await;
        }
        let writer = Writer::new(config(dir.path()), metrics.clone())
            .spawn(rx)
            .unwrap();
        while let Some(acked) = waiting.join_next().await {
            acked.unwrap().unwrap();
        }
        assert_eq!(metrics.click_fsyncs.get(), 1);
        assert_eq!(metrics.clicks_logged.get(), 200);
        // Every queue clone is gone: the writer stops on its own.
        writer.join().unwrap();
        let (files, mut lines) = lines(dir.path());
        assert_eq!(files.len(), 1);
        lines.sort();
        assert_eq!(lines, urls(0..200));
    }

    #[test]
    fn write_that_lands_in_part_is_rolled_back_before_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (tx, rx) = sync_channel(100);
        let queue = test_queue(tx.clone(), &metrics, Durability::Buffered, 100);
        // Queued before the writer starts: one batch, whose write stops in the middle of a line
        // after several complete ones.
        for i in 0..10 {
            queue.push(event(i));
        }
        let mut writer = Writer::new(config(dir.path()), metrics.clone());
        writer.faults.tear_writes = 1;
        let thread = writer.spawn(rx).unwrap();
        eventually("the retry", || metrics.clicks_logged.get() == 10);
        assert_eq!(metrics.click_sink_errors.get(), 1);
        assert_eq!(metrics.click_sink_healthy.get(), 1);
        FileSink { tx, thread }.close();
        // No torn line, no line twice, nothing lost, same file.
        let (files, lines) = lines(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(lines, urls(0..10));
        assert_eq!(metrics.clicks_dropped.get(), 0);
    }

    #[test]
    fn buffered_clicks_are_held_while_the_directory_is_unwritable_and_written_in_order_after() {
        let root = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (sink, queue, dir, restore) = failing_sink(root.path(), &metrics, |c| c);
        for i in 1..=20 {
            queue.push(event(i));
        }
        eventually("the failure", || {
            metrics.click_sink_healthy.get() == 0 && metrics.clicks_queued.get() == 0
        });
        assert_eq!(metrics.clicks_logged.get(), 1);
        assert!(metrics.click_sink_errors.get() >= 1);
        assert!(metrics.click_sink_held_bytes.get() > 0);

        restore();
        eventually("the recovery", || metrics.clicks_logged.get() == 21);
        assert_eq!(metrics.click_sink_healthy.get(), 1);
        assert_eq!(metrics.click_sink_held_bytes.get(), 0);
        sink.close();
        assert_eq!(lines(&dir).1, urls(0..=20));
        assert_eq!(metrics.clicks_dropped.get(), 0);
    }

    #[tokio::test]
    async fn synced_clicks_are_refused_while_the_directory_is_unwritable() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("clicks");
        let metrics = Metrics::unregistered();
        let (sink, queue) = FileSink::start(
            FileSinkConfig {
                max_file_bytes: 1,
                durability: Durability::Synced,
                ..config(&dir)
            },
            metrics.clone(),
        )
        .unwrap();
        queue.push_synced(event(0)).await.unwrap();

        let restore = break_dir(&dir);
        assert_eq!(
            queue.push_synced(event(1)).await,
            Err(ClickRejected::SinkUnavailable)
        );
        assert_eq!(metrics.click_sink_healthy.get(), 0);
        assert_eq!(metrics.clicks_rejected.get(), 1);

        restore();
        // Until the next attempt is due (within the retry backoff) clicks are refused at once.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 2;
        loop {
            match queue.push_synced(event(i)).await {
                Ok(()) => break,
                Err(ClickRejected::SinkUnavailable) => {
                    assert!(Instant::now() < deadline, "sink did not recover");
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(metrics.click_sink_healthy.get(), 1);
        sink.close();
        // Refused clicks were never written: the 503 told the truth.
        assert_eq!(lines(&dir).1, [url(0), url(i)]);
        assert_eq!(metrics.clicks_rejected.get(), i as u64 - 1);
        assert_eq!(metrics.clicks_dropped.get(), 0);
    }

    #[test]
    fn clicks_past_the_memory_bound_are_dropped_and_counted_while_failing() {
        let root = tempfile::tempdir().unwrap();
        let mut line = Vec::new();
        event(0).write_json(&mut line);
        let metrics = Metrics::unregistered();
        let (sink, queue, dir, restore) = failing_sink(root.path(), &metrics, |c| FileSinkConfig {
            max_buffered_bytes: 3 * line.len(),
            ..c
        });
        queue.push(event(1));
        eventually("the failure", || metrics.click_sink_healthy.get() == 0);
        for i in 2..10 {
            queue.push(event(i));
        }
        eventually("the queue to drain", || metrics.clicks_queued.get() == 0);
        // Clicks 1 to 3 fill the bound; 4 to 9 are dropped.
        assert_eq!(metrics.clicks_dropped.get(), 6);
        assert_eq!(metrics.click_sink_held_bytes.get(), 3 * line.len() as i64);

        restore();
        eventually("the recovery", || metrics.clicks_logged.get() == 4);
        sink.close();
        assert_eq!(lines(&dir).1, urls(0..4));
        assert_eq!(metrics.clicks_dropped.get(), 6);
    }

    #[test]
    fn close_while_failing_counts_held_clicks_as_dropped() {
        let root = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (sink, queue, dir, restore) = failing_sink(root.path(), &metrics, |c| c);
        for i in 1..4 {
            queue.push(event(i));
        }
        eventually("the failure", || {
            metrics.click_sink_healthy.get() == 0 && metrics.clicks_queued.get() == 0
        });
        sink.close();
        assert_eq!(metrics.clicks_dropped.get(), 3);
        assert_eq!(metrics.clicks_logged.get(), 1);
        restore();
        assert_eq!(lines(&dir).1, urls(0..1));
    }

    #[test]
    fn a_failing_sink_holds_more_than_a_batch_and_still_closes() {
        let root = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (sink, queue, dir, restore) = failing_sink(root.path(), &metrics, |c| FileSinkConfig {
            queue_capacity: 64,
            ..c
        });
        // Well past BATCH_BYTES held in memory (each line is over 100 bytes), a queue's room at
        // a time: the writer must keep taking clicks while it cannot write them.
        let n = 2 * BATCH_BYTES / 100;
        for i in 1..=n {
            eventually("room in the queue", || metrics.clicks_queued.get() < 64);
            queue.push(event(i));
        }
        eventually("every click held", || metrics.clicks_queued.get() == 0);
        assert_eq!(metrics.clicks_dropped.get(), 0, "held, not dropped");
        assert!(metrics.click_sink_held_bytes.get() > BATCH_BYTES as i64);
        // Shutdown while still failing: one last attempt, then the held clicks are counted.
        sink.close();
        assert_eq!(metrics.clicks_dropped.get(), n as u64);
        restore();
        assert_eq!(lines(&dir).1, urls(0..1));
    }

    #[test]
    fn start_quarantines_a_torn_tail_and_writes_new_clicks_to_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut complete = Vec::new();
        for i in 0..3 {
            event(i).write_json(&mut complete);
        }
        let mut last = Vec::new();
        event(3).write_json(&mut last);
        let torn = &last[..last.len() / 2];
        let crashed = dir.path().join("clicks-20251124T160000.000Z.jsonl");
        std::fs::write(&crashed, [complete.as_slice(), torn].concat()).unwrap();

        let metrics = Metrics::unregistered();
        let (sink, queue) = FileSink::start(config(dir.path()), metrics.clone()).unwrap();
        assert_eq!(std::fs::read(&crashed).unwrap(), complete);
        assert_eq!(
            std::fs::read(dir.path().join("clicks-20251124T160000.000Z.jsonl.torn")).unwrap(),
            torn
        );
        assert_eq!(metrics.click_log_torn.get(), 1);

        queue.push(event(4));
        sink.close();
        let (files, lines) = lines(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0], crashed);
        assert_eq!(lines, [url(0), url(1), url(2), url(4)]);
    }
}
