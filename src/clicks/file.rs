//! The file sink: a dedicated thread that batches queued clicks into JSON Lines files under
//! `clicks.dir`, rotated by size and age.
//!
//! File names are `clicks-<UTC time of opening, ms>.jsonl`, so they sort in time order. Clicks are
//! written within `flush_interval` of arriving (group write: one `write` for everything that
//! arrived meanwhile). This thread is the only place that does click I/O.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{ClickQueue, Msg, format_ts};
use crate::metrics::Metrics;

/// Settings of the file sink.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// Directory of the click log.
    pub dir: PathBuf,
    /// Longest time a click waits before it is written.
    pub flush_interval: Duration,
    /// Queue capacity.
    pub queue_capacity: usize,
    /// Rotate past this size.
    pub max_file_bytes: u64,
    /// Rotate past this age.
    pub rotate_interval: Duration,
}

/// The running writer. [`FileSink::close`] writes everything queued and stops it.
pub struct FileSink {
    tx: SyncSender<Msg>,
    thread: JoinHandle<()>,
}

/// The sink could not start.
#[derive(Debug, thiserror::Error)]
#[error("click log directory {dir}")]
pub struct SinkError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

impl FileSink {
    /// Starts the writer thread; returns it and the queue for the request path.
    pub fn start(
        config: FileSinkConfig,
        metrics: Metrics,
    ) -> Result<(FileSink, ClickQueue), SinkError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| SinkError {
            dir: config.dir.clone(),
            source,
        })?;
        let (tx, rx) = sync_channel(config.queue_capacity);
        let queue = ClickQueue {
            tx: tx.clone(),
            metrics: metrics.clone(),
        };
        let writer = Writer {
            config,
            metrics,
            file: None,
            buf: Vec::with_capacity(64 << 10),
            pending: 0,
        };
        let thread = std::thread::Builder::new()
            .name("clickedge-clicks".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| SinkError {
                dir: PathBuf::new(),
                source,
            })?;
        Ok((FileSink { tx, thread }, queue))
    }

    /// Writes every click queued so far, flushes, and stops the writer. Blocks; call from a
    /// blocking context.
    pub fn close(self) {
        // A blocking send: if the queue is full this waits for the writer to make room, so the
        // stop marker lands after every click already queued.
        if self.tx.send(Msg::Stop).is_ok() && self.thread.join().is_err() {
            tracing::error!("click writer panicked");
        }
    }
}

struct OpenFile {
    file: File,
    path: PathBuf,
    bytes: u64,
    opened: Instant,
}

struct Writer {
    config: FileSinkConfig,
    metrics: Metrics,
    file: Option<OpenFile>,
    buf: Vec<u8>,
    /// Clicks in `buf`.
    pending: u64,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut deadline: Option<Instant> = None;
        loop {
            let msg = match deadline {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Click(ev)) => {
                    self.metrics.clicks_queued.dec();
                    ev.write_json(&mut self.buf);
                    self.pending += 1;
                    deadline.get_or_insert_with(|| Instant::now() + self.config.flush_interval);
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    if let Some(f) = self.file.take() {
                        close_file(f);
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || self.buf.len() >= (1 << 20) {
                self.flush();
                deadline = None;
            }
        }
    }

    /// Writes the buffered lines to the current file, rotating first if it is due.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let due = self.file.as_ref().is_some_and(|f| {
            f.bytes >= self.config.max_file_bytes
                || f.opened.elapsed() >= self.config.rotate_interval
        });
        if due && let Some(f) = self.file.take() {
            close_file(f);
        }
        if self.file.is_none() {
            match open_new(&self.config.dir) {
                Ok(f) => self.file = Some(f),
                Err(e) => return self.fail(&e),
            }
        }
        let Some(f) = self.file.as_mut() else { return };
        match f.file.write_all(&self.buf) {
            Ok(()) => {
                f.bytes += self.buf.len() as u64;
                self.metrics.clicks_logged.inc_by(self.pending);
                self.buf.clear();
                self.pending = 0;
            }
            Err(e) => {
                // The file may now end in a partial line; start a fresh one next time.
                self.file = None;
                self.fail(&e);
            }
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        tracing::error!(dir = %self.config.dir.display(), error = %e, dropped = self.pending, "writing clicks failed");
        self.metrics.click_sink_errors.inc();
        self.metrics.clicks_dropped.inc_by(self.pending);
        self.buf.clear();
        self.pending = 0;
    }
}

fn open_new(dir: &Path) -> std::io::Result<OpenFile> {
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
                });
            }
            // Two files within one millisecond: the next name must sort after this one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

fn close_file(f: OpenFile) {
    if let Err(e) = f.file.sync_all() {
        tracing::error!(path = %f.path.display(), error = %e, "syncing click file");
    }
}

/// `20261125T091000.123Z`: sortable, no characters that need quoting.
fn file_stamp(t: SystemTime) -> String {
    format_ts(t).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;
    use crate::clicks::ClickEvent;

    fn event(i: usize) -> ClickEvent {
        ClickEvent {
            ts: SystemTime::now(),
            domain: Domain::parse("a.example.com").unwrap(),
            url: format!("https://example.com/{i}"),
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

    fn lines(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let lines = files
            .iter()
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        (files, lines)
    }

    #[test]
    fn close_writes_everything_in_order_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (sink, queue) = FileSink::start(
            FileSinkConfig {
                dir: dir.path().to_path_buf(),
                flush_interval: Duration::from_millis(1),
                queue_capacity: 10_000,
                max_file_bytes: 2_000,
                rotate_interval: Duration::from_secs(3600),
            },
            metrics.clone(),
        )
        .unwrap();
        for i in 0..500 {
            queue.push(event(i));
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        sink.close();
        let (files, lines) = lines(dir.path());
        assert!(files.len() > 1, "expected rotation, got {files:?}");
        assert_eq!(lines.len(), 500);
        for (i, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["url"], format!("https://example.com/{i}"));
        }
        assert_eq!(metrics.clicks_logged.get(), 500);
        assert_eq!(metrics.clicks_dropped.get(), 0);
        assert_eq!(metrics.clicks_queued.get(), 0);
    }

    #[test]
    fn rotates_by_age_and_names_sort_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, queue) = FileSink::start(
            FileSinkConfig {
                dir: dir.path().to_path_buf(),
                flush_interval: Duration::from_millis(1),
                queue_capacity: 100,
                max_file_bytes: u64::MAX,
                rotate_interval: Duration::from_millis(20),
            },
            Metrics::unregistered(),
        )
        .unwrap();
        for i in 0..3 {
            queue.push(event(i));
            // Let the age limit pass between clicks: each lands in a file of its own.
            std::thread::sleep(Duration::from_millis(40));
        }
        sink.close();
        let (files, lines) = lines(dir.path());
        assert_eq!(files.len(), 3, "{files:?}");
        for (i, line) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["url"], format!("https://example.com/{i}"));
        }
    }

    #[test]
    fn full_queue_counts_drops() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::unregistered();
        let (tx, rx) = sync_channel(2);
        let queue = ClickQueue {
            tx,
            metrics: metrics.clone(),
        };
        for i in 0..5 {
            queue.push(event(i));
        }
        assert_eq!(metrics.clicks_dropped.get(), 3);
        drop(rx);
        drop(dir);
    }
}
