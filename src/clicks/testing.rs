//! Helpers shared by the click pipeline's tests: numbered clicks, reading a click directory back,
//! breaking a directory the way a lost mount does, and polling for a state.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::file::{FileSink, FileSinkConfig};
use super::queue::Queued;
use super::{
    BatchConfig, ClickEvent, ClickId, ClickIds, ClickQueue, ClickSink, ClickWriter,
    DEFAULT_MAX_BUFFERED_BYTES, Truncated,
};
use crate::Domain;
use crate::clock::{Clock, ManualClock, from_unix_secs};
use crate::config::{Durability, NodeId};
use crate::metrics::Metrics;

pub(super) fn url(i: usize) -> String {
    // Fixed width, so every line of a test has the same length.
    format!("https://example.com/{i:04}")
}

/// Click number `i`: its URL says which.
pub(super) fn event(i: usize) -> ClickEvent {
    ClickEvent {
        ts: from_unix_secs(1_764_000_000),
        domain: Domain::parse("a.example.com").unwrap(),
        url: url(i),
        meta: vec![],
        minted_at: from_unix_secs(0),
        ip: "127.0.0.1".parse().unwrap(),
        ua: None,
        referer: None,
        method: "GET",
        tls: Some("1.3"),
        http: "1.1",
        tls_fp: None,
        verdict: None,
        message: None,
        truncated: Truncated::default(),
        open: None,
        implied_open: false,
        marked_seen: false,
        visitor: None,
    }
}

/// The node of the tests' clicks.
pub(super) static NODE: LazyLock<NodeId> = LazyLock::new(|| NodeId::parse("edge-t").unwrap());

/// The first sequence number of the tests' clicks: wide enough that every line of a test has
/// the same length.
pub(super) const FIRST_SEQ: u64 = 1_000_000;

/// The line of `event` as the first click of a test's batcher writes it.
pub(super) fn encode(event: &ClickEvent, out: &mut Vec<u8>) {
    event.write_json(ClickId::new(&NODE, FIRST_SEQ), out);
}

pub(super) fn urls(range: impl IntoIterator<Item = usize>) -> Vec<String> {
    range.into_iter().map(url).collect()
}

/// A clock standing still, for queues whose clicks are stamped by the test itself.
pub(super) fn still_clock() -> Clock {
    ManualClock::new(from_unix_secs(1_764_000_000)).clock()
}

/// A queue whose writer is started by hand, or not at all: it wakes the test thread instead,
/// which is harmless.
pub(super) fn test_queue(
    tx: SyncSender<Queued>,
    metrics: &Metrics,
    durability: Durability,
    capacity: usize,
) -> ClickQueue {
    let thread = std::thread::current();
    ClickQueue::new(
        tx,
        metrics.clone(),
        durability,
        thread,
        capacity,
        still_clock(),
        Default::default(),
    )
}

/// The writer thread over `sink` with the test batch config and a seen-opens table of its
/// own, draining `rx` (the other end of a [`test_queue`]).
pub(super) fn spawn_writer<S: ClickSink>(
    sink: S,
    metrics: &Metrics,
    rx: Receiver<Queued>,
) -> JoinHandle<bool> {
    super::batcher::spawn(
        sink,
        batch_config(),
        metrics.clone(),
        rx,
        Default::default(),
    )
    .unwrap()
}

/// A file sink in `dir` that never rotates.
pub(super) fn file_config(dir: &Path) -> FileSinkConfig {
    FileSinkConfig {
        dir: dir.to_path_buf(),
        max_file_bytes: u64::MAX,
        rotate_interval: Duration::from_secs(3600),
        access: super::file::Access::Private,
        max_total_bytes: None,
        max_age: None,
        shipped: None,
    }
}

/// A buffered batcher that writes a millisecond after a click, with room for every test's clicks.
pub(super) fn batch_config() -> BatchConfig {
    BatchConfig {
        flush_interval: Duration::from_millis(1),
        queue_capacity: 10_000,
        durability: Durability::Buffered,
        max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        ids: ClickIds::new(NODE.clone(), FIRST_SEQ),
    }
}

/// The batcher over a file sink, as the app starts them.
pub(super) fn start_file(
    file: FileSinkConfig,
    batch: BatchConfig,
    metrics: &Metrics,
) -> (ClickWriter, ClickQueue) {
    let sink = FileSink::open(file, metrics.clone(), Clock::system()).unwrap();
    ClickWriter::start(sink, batch, metrics.clone(), Clock::system()).unwrap()
}

/// Polls `done` until it holds; fails the test after a generous deadline.
pub(super) fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The click files of `dir` (closed, and the one being written) in time order, and the URLs of
/// their lines in file order. Every line must be JSON.
pub(super) fn lines(dir: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let closed = super::file::closed_name(p.file_name()?.to_str()?)?.to_owned();
            Some((closed, p))
        })
        .collect();
    files.sort();
    let files: Vec<PathBuf> = files.into_iter().map(|(_, p)| p).collect();
    let urls = files
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'), "{p:?} ends torn");
            text.lines().map(line_url).collect::<Vec<_>>()
        })
        .collect();
    (files, urls)
}

/// The `url` of a click line.
pub(super) fn line_url(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["url"].as_str().unwrap().to_owned()
}

/// Makes `dir` unusable the way a lost mount or a full disk is, in a way that also holds for
/// root (tests run as root, where permissions do not stop writes): the directory is moved away
/// and a regular file takes its place. Returns the undo.
pub(super) fn break_dir(dir: &Path) -> impl FnOnce() + use<> {
    let away = dir.with_extension("away");
    std::fs::rename(dir, &away).unwrap();
    std::fs::write(dir, b"").unwrap();
    let dir = dir.to_path_buf();
    move || {
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&away, &dir).unwrap();
    }
}
