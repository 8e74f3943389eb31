//! The file sink on a real directory, driven by the batcher: rotation, naming, `fdatasync`,
//! rollback of a torn write, and recovery at open.

use std::sync::mpsc::sync_channel;

use super::*;
use crate::clicks::batcher::{self, ClickWriter};
use crate::clicks::testing::{
    batch_config, event, eventually, file_config, lines, start_file, test_queue, url, urls,
};
use crate::clicks::{BatchConfig, ClickQueue};
use crate::config::Durability;

#[test]
fn close_writes_everything_in_order_and_rotates_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let (sink, queue) = start_file(
        FileSinkConfig {
            max_file_bytes: 2_000,
            ..file_config(dir.path())
        },
        batch_config(),
        &metrics,
    );
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
    let (sink, queue) = start_file(
        FileSinkConfig {
            rotate_interval,
            ..file_config(dir.path())
        },
        BatchConfig {
            queue_capacity: 100,
            ..batch_config()
        },
        &metrics,
    );
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

#[tokio::test]
async fn synced_click_is_acknowledged_only_once_its_line_is_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let (sink, queue): (ClickWriter, ClickQueue) = start_file(
        file_config(dir.path()),
        BatchConfig {
            // Only a synced click can get anything written before close.
            flush_interval: Duration::from_secs(3600),
            durability: Durability::Synced,
            ..batch_config()
        },
        &metrics,
    );
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
    let mut sink =
        FileSink::open(file_config(dir.path()), metrics.clone(), Clock::system()).unwrap();
    sink.faults.tear_writes = 1;
    let thread = batcher::spawn(sink, batch_config(), metrics.clone(), rx).unwrap();
    eventually("the retry", || metrics.clicks_logged.get() == 10);
    assert_eq!(metrics.click_sink_errors.get(), 1);
    assert_eq!(metrics.click_sink_healthy.get(), 1);
    ClickWriter { tx, thread }.close();
    // No torn line, no line twice, nothing lost, same file.
    let (files, lines) = lines(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(lines, urls(0..10));
    assert_eq!(metrics.clicks_dropped.get(), 0);
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
    let (sink, queue) = start_file(file_config(dir.path()), batch_config(), &metrics);
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
