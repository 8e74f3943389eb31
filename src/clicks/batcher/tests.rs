//! The batcher's policy: waking before the queue fills, group commit, holding while the sink
//! fails, dropping past the memory bound, refusing synced clicks, draining on close. Over the
//! real file sink with its directory broken the way a lost mount breaks it, and over a fake sink
//! where what the batcher hands the sink is the point.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use super::*;
use crate::clicks::file::{FileSink, FileSinkConfig};
use crate::clicks::queue::SYNCED_WAIT;
use crate::clicks::testing::{
    FIRST_SEQ, batch_config, break_dir, encode, event, eventually, file_config, line_url, lines,
    spawn_writer, start_file, test_queue, url, urls,
};
use crate::clicks::verdict::{Class, Revise as _, Revision, Verdict};
use crate::clicks::{Batch, line_click_id};
use crate::clock::from_unix_secs;

mod revisions;
mod stalled;

/// A buffered sink under `root/clicks` (the batcher's config changed by `with`) whose first click
/// is on disk and whose directory is then broken. Every later write fails: `max_file_bytes` 1
/// makes each one open a new file. Returns the writer, its queue, the directory and the undo.
fn failing_sink(
    root: &Path,
    metrics: &Metrics,
    with: impl FnOnce(BatchConfig) -> BatchConfig,
) -> (ClickWriter, ClickQueue, PathBuf, Box<dyn FnOnce()>) {
    let dir = root.join("clicks");
    let file = FileSinkConfig {
        max_file_bytes: 1,
        ..file_config(&dir)
    };
    let (sink, queue) = start_file(file, with(batch_config()), metrics);
    assert_eq!(metrics.click_sink_healthy.get(), 1);
    queue.push(event(0));
    eventually("the first click", || metrics.clicks_logged.get() == 1);
    let restore = Box::new(break_dir(&dir));
    (sink, queue, dir, restore)
}

#[test]
fn a_writer_sleeping_until_its_flush_deadline_is_woken_before_the_queue_fills() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let (sink, queue) = start_file(
        file_config(dir.path()),
        BatchConfig {
            // The writer's own deadline never comes during the test.
            flush_interval: Duration::from_secs(3600),
            queue_capacity: 8,
            ..batch_config()
        },
        &metrics,
    );
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
    let sink = FileSink::open(file_config(dir.path()), metrics.clone(), Clock::system()).unwrap();
    let writer = spawn_writer(sink, &metrics, rx);
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
    let (sink, queue) = start_file(
        FileSinkConfig {
            max_file_bytes: 1,
            ..file_config(&dir)
        },
        BatchConfig {
            durability: Durability::Synced,
            ..batch_config()
        },
        &metrics,
    );
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
    encode(&event(0), &mut line);
    let metrics = Metrics::unregistered();
    let (sink, queue, dir, restore) = failing_sink(root.path(), &metrics, |c| BatchConfig {
        max_buffered_bytes: 3 * line.len(),
        ..c
    });
    queue.push(event(1));
    eventually("the failure", || metrics.click_sink_healthy.get() == 0);
    // Click 9 says the open of message m-9 (which it marked seen).
    let domain = event(0).domain;
    let saying_its_open = |i: usize| {
        let message = format!("m-{i}");
        assert!(queue.seen().click_implies_open(domain.as_str(), &message));
        ClickEvent {
            message: Some(crate::links::MessageContext {
                message,
                index: None,
                count: None,
                sent_at: None,
                role: None,
            }),
            implied_open: true,
            marked_seen: true,
            ..event(i)
        }
    };
    for i in 2..10 {
        queue.push(if i == 9 { saying_its_open(i) } else { event(i) });
    }
    eventually("the queue to drain", || metrics.clicks_queued.get() == 0);
    // Clicks 1 to 3 fill the bound; 4 to 9 are dropped.
    assert_eq!(metrics.clicks_dropped.get(), 6);
    assert_eq!(metrics.click_sink_held_bytes.get(), 3 * line.len() as i64);
    // The dropped click's open goes back, so the next person's click says it.
    assert!(queue.seen().click_implies_open(domain.as_str(), "m-9"));

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
    let (sink, queue, dir, restore) = failing_sink(root.path(), &metrics, |c| BatchConfig {
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

/// A sink that cannot make what it wrote durable as it closes makes the writer's close say so
/// (the edge's stop then fails), the clicks it wrote being counted logged all the same.
#[test]
fn a_sink_that_fails_to_close_durably_makes_the_close_say_so() {
    let metrics = Metrics::unregistered();
    let sink = FakeSink::default();
    let (writer, queue) = start_fake(&sink, &metrics);
    queue.push(event(0));
    assert!(writer.close(), "a sink that closed durably");
    let sink = FakeSink::default();
    *sink.close_fails.lock().unwrap() = true;
    let (writer, queue) = start_fake(&sink, &metrics);
    queue.push(event(1));
    assert!(!writer.close(), "the failed close was not told");
    assert!(*sink.closed.lock().unwrap());
    assert_eq!(metrics.clicks_logged.get(), 2);
}

/// One call of [`ClickSink::write`] as the fake saw it.
#[derive(Debug, PartialEq, Eq)]
struct Attempt {
    urls: Vec<String>,
    durable: bool,
    ok: bool,
}

/// A sink in memory that records every write and fails the first `failures` of them.
#[derive(Clone, Default)]
struct FakeSink {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    failures: Arc<Mutex<usize>>,
    closed: Arc<Mutex<bool>>,
    /// A queue that a click is pushed into while the sink closes (a connection still answering
    /// at shutdown).
    push_while_closing: Arc<Mutex<Option<ClickQueue>>>,
    /// Panics at the next write (a bug in a sink).
    panic_on_write: Arc<Mutex<bool>>,
    /// Writes wait while this is set (a disk that stopped answering).
    stalled: Arc<Mutex<bool>>,
    /// Closing fails (a file's fsync failing as it closes).
    close_fails: Arc<Mutex<bool>>,
}

impl FakeSink {
    fn failing(failures: usize) -> FakeSink {
        let sink = FakeSink::default();
        *sink.failures.lock().unwrap() = failures;
        sink
    }

    fn attempts(&self) -> Vec<Attempt> {
        std::mem::take(&mut *self.attempts.lock().unwrap())
    }
}

impl ClickSink for FakeSink {
    type Error = io::Error;

    fn write(&mut self, batch: &Batch<'_>) -> io::Result<()> {
        assert!(!*self.closed.lock().unwrap(), "write after close");
        while *self.stalled.lock().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if std::mem::take(&mut *self.panic_on_write.lock().unwrap()) {
            panic!("a bug in the sink");
        }
        let urls: Vec<String> = batch
            .lines()
            .map(|l| fake_line(std::str::from_utf8(l).unwrap()))
            .collect();
        assert_eq!(urls.len() as u64, batch.clicks());
        let mut failures = self.failures.lock().unwrap();
        let ok = *failures == 0;
        *failures = failures.saturating_sub(1);
        self.attempts.lock().unwrap().push(Attempt {
            urls,
            durable: batch.durable(),
            ok,
        });
        if ok {
            Ok(())
        } else {
            Err(io::Error::other("injected failure"))
        }
    }

    fn close(self) -> io::Result<()> {
        if let Some(queue) = self.push_while_closing.lock().unwrap().take() {
            queue.push(event(99));
        }
        *self.closed.lock().unwrap() = true;
        match *self.close_fails.lock().unwrap() {
            true => Err(io::Error::other("injected failure to sync")),
            false => Ok(()),
        }
    }

    fn target(&self) -> impl std::fmt::Display + '_ {
        "memory"
    }
}

/// What [`FakeSink`] records of a line: a click's URL, or which click a revision names.
fn fake_line(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    match v["kind"].as_str() {
        Some("verdict") => format!("revises {}", v["click_id"].as_str().unwrap()),
        _ => line_url(line),
    }
}

#[tokio::test]
async fn a_failed_batch_is_retried_in_arrival_order_without_its_refused_synced_clicks() {
    let metrics = Metrics::unregistered();
    let (tx, rx) = sync_channel(100);
    let queue = test_queue(tx.clone(), &metrics, Durability::Buffered, 100);
    // All three queued before the batcher starts: one batch, durable for its synced click.
    queue.push(event(0));
    let synced = tokio::spawn({
        let queue = queue.clone();
        async move { queue.push_synced(event(1)).await }
    });
    while metrics.clicks_queued.get() < 2 {
        tokio::task::yield_now().await;
    }
    queue.push(event(2));
    let sink = FakeSink::failing(1);
    let thread = spawn_writer(sink.clone(), &metrics, rx);
    assert_eq!(synced.await.unwrap(), Err(ClickRejected::SinkUnavailable));
    eventually("the retry", || metrics.clicks_logged.get() == 2);
    ClickWriter { tx, thread }.close();
    assert_eq!(
        sink.attempts(),
        [
            Attempt {
                urls: urls(0..3),
                durable: true,
                ok: false
            },
            // The same held lines, the refused synced click taken out.
            Attempt {
                urls: vec![url(0), url(2)],
                durable: false,
                ok: true
            },
        ]
    );
    assert!(*sink.closed.lock().unwrap());
    assert_eq!(metrics.clicks_rejected.get(), 1);
    assert_eq!(metrics.click_sink_errors.get(), 1);
    assert_eq!(metrics.click_sink_healthy.get(), 1);
    assert_eq!(metrics.clicks_dropped.get(), 0);
}

#[test]
fn close_hands_the_sink_everything_queued_in_one_batch_then_closes_it() {
    let metrics = Metrics::unregistered();
    let sink = FakeSink::default();
    let (writer, queue) = ClickWriter::start(
        sink.clone(),
        BatchConfig {
            // Nothing is due before close.
            flush_interval: Duration::from_secs(3600),
            ..batch_config()
        },
        metrics.clone(),
        crate::clicks::testing::still_clock(),
    )
    .unwrap();
    for i in 0..5 {
        queue.push(event(i));
    }
    // Whether the batcher has taken them yet or not, nothing is due before close.
    assert!(sink.attempts().is_empty(), "written before its deadline");
    writer.close();
    assert_eq!(
        sink.attempts(),
        [Attempt {
            urls: urls(0..5),
            durable: false,
            ok: true
        }]
    );
    assert!(*sink.closed.lock().unwrap());
    assert_eq!(metrics.clicks_logged.get(), 5);
}

/// A writer over `sink` with the test batch config, counting into `metrics`.
fn start_fake(sink: &FakeSink, metrics: &Metrics) -> (ClickWriter, ClickQueue) {
    ClickWriter::start(
        sink.clone(),
        batch_config(),
        metrics.clone(),
        crate::clicks::testing::still_clock(),
    )
    .unwrap()
}

/// A click answered while the writer makes its last write at shutdown (a connection still open
/// after the grace) is refused and counted as dropped, not left in a queue nobody reads.
#[test]
fn a_click_pushed_during_the_last_write_is_counted_as_dropped() {
    let (sink, metrics) = (FakeSink::default(), Metrics::unregistered());
    let (writer, queue) = start_fake(&sink, &metrics);
    queue.push(event(0));
    *sink.push_while_closing.lock().unwrap() = Some(queue.clone());
    writer.close();
    assert!(*sink.closed.lock().unwrap());
    assert_eq!(metrics.clicks_logged.get(), 1);
    assert_eq!(metrics.clicks_dropped.get(), 1);
    assert_eq!(metrics.clicks_queued.get(), 0);
}

/// A writer thread that panics does not leave the sink reported healthy, and both the click
/// it held when it panicked and the clicks answered after it are counted as dropped.
#[test]
fn a_panicking_writer_marks_the_sink_unhealthy_and_counts_every_click_it_loses() {
    let (sink, metrics) = (FakeSink::default(), Metrics::unregistered());
    *sink.panic_on_write.lock().unwrap() = true;
    let (writer, queue) = start_fake(&sink, &metrics);
    assert_eq!(metrics.click_sink_healthy.get(), 1);
    queue.push(event(0));
    eventually("the writer's end", || metrics.click_sink_healthy.get() == 0);
    assert_eq!(metrics.clicks_dropped.get(), 1, "the click it held");
    queue.push(event(1));
    assert_eq!(metrics.clicks_dropped.get(), 2);
    writer.close();
}
