//! The file sink on a real directory, driven by the batcher: rotation, naming, `fdatasync`,
//! rollback of a torn write, recovery at open, and the cap on the log's size.

use std::num::NonZeroU64;
use std::sync::mpsc::sync_channel;

use super::*;
use crate::clicks::batcher::ClickWriter;
use crate::clicks::testing::{
    FIRST_SEQ, batch_config, encode, event, eventually, file_config, lines, spawn_writer,
    start_file, test_queue, url, urls,
};
use crate::clicks::{Batch, BatchConfig, ClickQueue};
use crate::clock::ManualClock;
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
    assert!(sink.close(), "the sink closed durably");
    let (files, lines) = lines(dir.path());
    assert!(files.len() > 1, "expected rotation, got {files:?}");
    assert_eq!(lines, urls(0..500));
    assert_eq!(metrics.clicks_logged.get(), 500);
    assert_eq!(metrics.clicks_dropped.get(), 0);
    assert_eq!(metrics.clicks_queued.get(), 0);
    // Buffered mode never waits for the disk.
    assert_eq!(metrics.click_fsyncs.get(), 0);
}

/// The names in `dir` a loader listing `clicks-*.jsonl` sees.
fn closed_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("clicks-") && n.ends_with(".jsonl"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_loader_listing_jsonl_files_never_sees_the_file_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let (sink, queue) = start_file(
        FileSinkConfig {
            max_file_bytes: 1,
            ..file_config(dir.path())
        },
        batch_config(),
        &metrics,
    );
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..3 {
        queue.push(event(i));
        eventually("the click", || metrics.clicks_logged.get() == i as u64 + 1);
        // Every file a loader finds is finished: whole, and never written again.
        let closed = closed_files(dir.path());
        assert_eq!(closed.len(), i, "{closed:?}");
        for name in closed {
            let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            assert_eq!(text.lines().count(), 1);
            assert_eq!(seen.entry(name).or_insert_with(|| text.clone()), &text);
        }
        let (files, lines) = lines(dir.path());
        assert!(
            files
                .last()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(".jsonl.open")
        );
        assert_eq!(lines, urls(0..=i));
    }
    assert!(sink.close(), "the sink closed durably");
    let closed = closed_files(dir.path());
    assert_eq!(closed.len(), 3);
    assert_eq!(seen.len(), 2);
    assert!(
        !lines(dir.path())
            .0
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "open"))
    );
    // What a loader saw of a file is what it holds closed.
    for (name, text) in &seen {
        assert_eq!(
            &std::fs::read_to_string(dir.path().join(name)).unwrap(),
            text
        );
    }
    assert_eq!(lines(dir.path()).1, urls(0..3));
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
    assert!(sink.close(), "the sink closed durably");
    let (files, lines) = lines(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(lines, urls(0..3));
}

#[test]
fn a_file_past_its_age_is_closed_though_no_click_comes() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let (sink, queue) = start_file(
        FileSinkConfig {
            rotate_interval: Duration::from_millis(50),
            ..file_config(dir.path())
        },
        batch_config(),
        &metrics,
    );
    queue.push(event(0));
    eventually(
        "the click closed in its file with no other to rotate it",
        || closed_files(dir.path()).len() == 1,
    );
    let (files, written) = lines(dir.path());
    assert_eq!(files.len(), 1, "no file open, none new: {files:?}");
    assert_eq!(written, urls(0..1));
    // The next click starts a new file.
    queue.push(event(1));
    eventually("the second click", || metrics.clicks_logged.get() == 2);
    assert!(sink.close(), "the sink closed durably");
    assert_eq!(closed_files(dir.path()).len(), 2);
    assert_eq!(lines(dir.path()).1, urls(0..2));
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
    assert!(sink.close(), "the sink closed durably");
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
    let progress = Progress::new(Default::default());
    let config = FileSinkConfig {
        shipped: Some(progress.clone()),
        ..file_config(dir.path())
    };
    let mut sink = FileSink::open(config, metrics.clone(), Clock::system()).unwrap();
    sink.faults.tear_writes = 1;
    let thread = spawn_writer(sink, &metrics, rx);
    eventually("the retry", || metrics.clicks_logged.get() == 10);
    assert_eq!(metrics.click_sink_errors.get(), 1);
    assert_eq!(metrics.click_sink_healthy.get(), 1);
    ClickWriter { tx, thread }.close();
    // No torn line, no line twice, nothing lost, same file.
    let (files, lines) = lines(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(lines, urls(0..10));
    assert_eq!(metrics.clicks_dropped.get(), 0);
    // The shipper was told where the file ends for good: all of it, after the retry.
    let name = files[0].file_name().unwrap().to_str().unwrap();
    let len = std::fs::metadata(&files[0]).unwrap().len();
    assert_eq!(progress.written_end(name), Some(len));
}

#[test]
fn start_quarantines_a_torn_tail_and_writes_new_clicks_to_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut complete = Vec::new();
    for i in 0..3 {
        encode(&event(i), &mut complete);
    }
    let mut last = Vec::new();
    encode(&event(3), &mut last);
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
    assert!(sink.close(), "the sink closed durably");
    let (files, lines) = lines(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0], crashed);
    assert_eq!(lines, [url(0), url(1), url(2), url(4)]);
}

#[test]
fn new_click_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let (sink, queue) = start_file(file_config(dir.path()), batch_config(), &metrics);
    queue.push(event(0));
    assert!(sink.close(), "the sink closed durably");
    let (files, _) = lines(dir.path());
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// A click file whose fsync fails as it closes (here a pipe in its place, where fsync says
/// `EINVAL`; in life a disk's `EIO`) is counted, and `close` says its clicks may not be on disk:
/// the edge's stop fails instead of saying every click was kept.
#[test]
fn a_failed_fsync_as_the_last_file_closes_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let mut sink =
        FileSink::open(file_config(dir.path()), metrics.clone(), Clock::system()).unwrap();
    sink.write(&Batch::new(b"{\"url\":\"a\"}\n", 1, false))
        .unwrap();
    let (_reader, writer) = io::pipe().unwrap();
    sink.file.as_mut().unwrap().file = File::from(std::os::fd::OwnedFd::from(writer));
    let err = sink.close().unwrap_err();
    assert!(matches!(err, WriteError::Sync { .. }), "{err:?}");
    assert_eq!(metrics.click_sink_errors.get(), 1);
}

/// A directory where a sink logged five clicks and closed, and the sink's metrics.
fn five_clicks_logged() -> (tempfile::TempDir, Metrics) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    let (sink, queue) = start_file(file_config(dir.path()), batch_config(), &metrics);
    for i in 0..5 {
        queue.push(event(i));
    }
    assert!(sink.close(), "the sink closed durably");
    (dir, metrics)
}

#[test]
fn click_ids_go_on_after_every_closed_file_is_deleted() {
    let (dir, metrics) = five_clicks_logged();
    // What retention, a shipping agent or an operator may do to closed files.
    let (files, _) = lines(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    for f in files {
        std::fs::remove_file(f).unwrap();
    }
    let reopened = FileSink::open(file_config(dir.path()), metrics, Clock::system()).unwrap();
    assert_eq!(reopened.next_click_seq(), FIRST_SEQ + 5);
}

/// One process writes a click log: a second sink on the directory is refused, naming the first's
/// pid and the setting to change, and gets it once the first is gone.
#[test]
fn a_second_sink_on_one_directory_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        FileSink::open(
            file_config(dir.path()),
            Metrics::unregistered(),
            Clock::system(),
        )
    };
    let first = open().unwrap();
    let refused = open().err().expect("a second sink on the same directory");
    let message = refused.to_string();
    assert!(
        message.contains(&format!("pid {}", std::process::id())) && message.contains("clicks.dir"),
        "{message}"
    );
    drop(first);
    open().unwrap();
}

/// A file a crash left open holds clicks the floor does not cover: the start that closes it
/// covers them, so deleting it afterwards does not make a later start hand out its ids again.
#[test]
fn click_ids_go_on_after_a_file_a_crash_left_open_is_closed_at_start_and_deleted() {
    let (dir, metrics) = five_clicks_logged();
    // As a crash leaves it: the file under its open name, the floor not yet moved past it.
    let (files, _) = lines(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let closed = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::rename(&files[0], dir.path().join(open_name(&closed))).unwrap();
    std::fs::remove_file(dir.path().join(floor::FLOOR_FILE)).unwrap();

    let recovered = FileSink::open(file_config(dir.path()), metrics.clone(), Clock::system());
    assert_eq!(recovered.unwrap().next_click_seq(), FIRST_SEQ + 5);
    let (files, _) = lines(dir.path());
    for f in files {
        std::fs::remove_file(f).unwrap();
    }
    let reopened = FileSink::open(file_config(dir.path()), metrics, Clock::system()).unwrap();
    assert_eq!(reopened.next_click_seq(), FIRST_SEQ + 5);
}

const DAY: Duration = Duration::from_secs(86_400);

/// A file left open that cannot take its closed name (a file of that name is there already)
/// stops the start with an error that says so, not one about torn lines.
#[test]
fn a_file_left_open_that_cannot_be_closed_says_what_to_move() {
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("clicks-20251124T160000.000Z.jsonl");
    std::fs::write(&closed, b"{}\n").unwrap();
    std::fs::write(
        dir.path()
            .join(open_name("clicks-20251124T160000.000Z.jsonl")),
        b"{}\n",
    )
    .unwrap();
    let Err(err) = FileSink::open(
        file_config(dir.path()),
        Metrics::unregistered(),
        Clock::system(),
    ) else {
        panic!("opened beside a file that cannot be closed");
    };
    assert!(matches!(err, OpenError::Close { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("left open by a crash"), "{text}");
    assert!(text.contains("move one of the two"), "{text}");
    assert!(!text.contains("torn"), "{text}");
}

mod room;
