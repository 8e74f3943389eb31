//! The log's bounds: the size cap (`clicks.max_total_bytes`, deleting the oldest files, shipped
//! ones only with a stream) and `clicks.retention`.

use super::*;

/// Bytes of the click files in `dir`.
fn log_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum()
}

#[test]
fn log_stays_under_its_cap_by_deleting_the_oldest_files() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::unregistered();
    // Every line has the same length (fixed-width URLs, one timestamp).
    let mut one = Vec::new();
    encode(&event(0), &mut one);
    let line = one.len() as u64;
    let cap = 10 * line;
    let (sink, queue) = start_file(
        FileSinkConfig {
            max_file_bytes: 4 * line,
            max_total_bytes: NonZeroU64::new(cap),
            ..file_config(dir.path())
        },
        batch_config(),
        &metrics,
    );
    for i in 0..100 {
        queue.push(event(i));
        // One click per batch, so the cap is checked at every line.
        eventually("the click", || metrics.clicks_logged.get() == i as u64 + 1);
        let (files, _) = lines(dir.path());
        assert!(log_bytes(&files) <= cap, "over the cap after click {i}");
    }
    assert!(sink.close(), "the sink closed durably");
    let (files, kept) = lines(dir.path());
    // What is left is the newest clicks, whole and in order; the rest was deleted file by file,
    // oldest first, and counted.
    assert!(kept.len() >= 6, "{kept:?}");
    assert_eq!(kept, urls(100 - kept.len()..100));
    assert_eq!(metrics.click_log_bytes.get() as u64, log_bytes(&files));
    assert_eq!(
        metrics.click_log_deleted_bytes.get() + log_bytes(&files),
        100 * line
    );
    assert!(metrics.click_log_deleted_files.get() >= 20);
    assert_eq!(metrics.clicks_dropped.get(), 0);
}

/// A sink in `dir` whose click files may add up to 100 bytes, shipping `shipped` if a stream
/// is set; its metrics.
fn capped_at_100_bytes(dir: &Path, shipped: Option<Progress>) -> (FileSink, Metrics) {
    let metrics = Metrics::unregistered();
    let sink = FileSink::open(
        FileSinkConfig {
            max_total_bytes: NonZeroU64::new(100),
            shipped,
            ..file_config(dir)
        },
        metrics.clone(),
        Clock::system(),
    )
    .unwrap();
    (sink, metrics)
}

#[test]
fn open_file_is_deleted_too_when_it_alone_leaves_no_room() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sink, metrics) = capped_at_100_bytes(dir.path(), None);
    let a = format!("{{\"url\":\"{}\"}}\n", "a".repeat(50));
    let b = format!("{{\"url\":\"{}\"}}\n", "b".repeat(50));
    sink.write(&Batch::new(a.as_bytes(), 1, false)).unwrap();
    sink.write(&Batch::new(b.as_bytes(), 1, false)).unwrap();
    sink.close().unwrap();
    let (files, kept) = lines(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(kept, ["b".repeat(50)]);
    assert_eq!(metrics.click_log_deleted_files.get(), 1);
    assert_eq!(metrics.click_log_deleted_bytes.get(), a.len() as u64);
}

/// A sink in `dir` on `clock` that starts a new file at every write and keeps closed files 30
/// days.
fn month_kept(dir: &Path, clock: &ManualClock) -> FileSink {
    FileSink::open(
        FileSinkConfig {
            max_file_bytes: 1,
            max_age: Some(30 * DAY),
            ..file_config(dir)
        },
        Metrics::unregistered(),
        clock.clock(),
    )
    .unwrap()
}

/// `clicks.retention` counts a file's age from its last write, not from when a later write
/// closed it: a file written once and then left through a quiet month goes at the next write.
#[test]
fn retention_counts_a_files_age_from_its_last_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(crate::clock::from_unix_secs(1_000_000));
    let line = |c: char| format!("{{\"url\":\"{}\"}}\n", c.to_string().repeat(20));
    let (a, b) = (line('a'), line('b'));
    let mut sink = month_kept(dir.path(), &clock);
    sink.write(&Batch::new(a.as_bytes(), 1, false)).unwrap();
    clock.advance(40 * DAY);
    // Closes the first file (past its size) and then finds it too old.
    sink.write(&Batch::new(b.as_bytes(), 1, false)).unwrap();
    sink.close().unwrap();
    let (_, kept) = lines(dir.path());
    assert_eq!(kept, ["b".repeat(20)]);
}

/// A file past `clicks.retention` that cannot be deleted (here a directory in its place; in
/// life an immutable file, or one in a sticky directory owned by someone else) fails no write:
/// only the size cap can.
#[test]
fn a_file_past_retention_that_cannot_be_deleted_fails_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(crate::clock::from_unix_secs(1_000_000));
    let mut sink = month_kept(dir.path(), &clock);
    sink.write(&Batch::new(b"{\"url\":\"a\"}\n", 1, false))
        .unwrap();
    sink.write(&Batch::new(b"{\"url\":\"b\"}\n", 1, false))
        .unwrap();
    let first = dir.path().join(&closed_files(dir.path())[0]);
    std::fs::remove_file(&first).unwrap();
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("held"), b"").unwrap();
    clock.advance(40 * DAY);
    sink.write(&Batch::new(b"{\"url\":\"c\"}\n", 1, false))
        .unwrap();
    assert!(first.is_dir(), "still there, and the write went on");
    sink.close().unwrap();
}

#[test]
fn retention_deletes_files_past_it_while_no_click_comes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(crate::clock::from_unix_secs(1_000_000));
    let metrics = Metrics::unregistered();
    let mut sink = FileSink::open(
        FileSinkConfig {
            rotate_interval: Duration::from_millis(1),
            max_age: Some(Duration::from_millis(50)),
            ..file_config(dir.path())
        },
        metrics.clone(),
        clock.clock(),
    )
    .unwrap();
    sink.write(&Batch::new(b"{\"url\":\"a\"}\n", 1, false))
        .unwrap();
    // What the batcher does while it has nothing to write: wait for the sink's deadline, tick.
    let tick = |sink: &mut FileSink| {
        let at = sink.due().expect("a deadline while a file is open or kept");
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        sink.tick();
    };
    tick(&mut sink);
    tick(&mut sink);
    assert_eq!(closed_files(dir.path()).len(), 1, "closed, not yet old");
    assert_eq!(metrics.click_log_deleted_files.get(), 0);
    clock.advance(Duration::from_secs(60));
    tick(&mut sink);
    assert_eq!(closed_files(dir.path()), Vec::<String>::new());
    assert_eq!(metrics.click_log_deleted_files.get(), 1);
    assert_eq!(metrics.click_log_bytes.get(), 0);
    sink.close().unwrap();
}

/// With a stream, a batch that does not fit beside the file being written: the file is closed,
/// and deleted to make room only once it is shipped whole. One line short of that, the write
/// fails naming it, and the file stays. Shipped to its end (the checkpoint still in it, marked
/// the end of the finished file), it goes: were it counted as unshipped, every write after
/// would fail until a restart.
#[test]
fn a_file_shipped_to_its_end_is_deleted_to_make_room_for_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let progress = Progress::new(Default::default());
    let (mut sink, metrics) = capped_at_100_bytes(dir.path(), Some(progress.clone()));
    let a = format!("{{\"url\":\"{}\"}}\n", "a".repeat(50));
    let b = format!("{{\"url\":\"{}\"}}\n", "b".repeat(50));
    sink.write(&Batch::new(a.as_bytes(), 1, false)).unwrap();
    let (files, _) = lines(dir.path());
    let name = closed_name(files[0].file_name().unwrap().to_str().unwrap()).unwrap();
    progress.set_shipped_for_tests(name, a.len() as u64 - 1);
    let err = sink.write(&Batch::new(b.as_bytes(), 1, false)).unwrap_err();
    let closed = dir.path().join(name);
    assert!(
        matches!(&err, WriteError::Unshipped { path } if *path == closed),
        "{err:?}"
    );
    assert!(err.to_string().contains(&closed.display().to_string()));
    assert!(closed.exists());
    assert_eq!(metrics.click_log_deleted_files.get(), 0);
    // The shipper marks a closed file it acknowledged to its last byte as shipped whole.
    progress.set_shipped_for_tests(name, crate::clicks::ship::Position::END);
    sink.write(&Batch::new(b.as_bytes(), 1, false)).unwrap();
    sink.close().unwrap();
    let (files, kept) = lines(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(kept, ["b".repeat(50)]);
    assert_eq!(metrics.click_log_deleted_files.get(), 1);
}

/// A write that fails after deleting a file to make room (the next oldest is not shipped yet)
/// leaves `clickedge_click_log_bytes` at what the files hold, not at what they held before.
#[test]
fn a_failed_write_leaves_the_log_size_as_the_files_are() {
    let dir = tempfile::tempdir().unwrap();
    let progress = Progress::new(Default::default());
    let metrics = Metrics::unregistered();
    let mut sink = FileSink::open(
        FileSinkConfig {
            max_total_bytes: NonZeroU64::new(100),
            // Every write after the first closes the file before it.
            max_file_bytes: 1,
            shipped: Some(progress.clone()),
            ..file_config(dir.path())
        },
        metrics.clone(),
        Clock::system(),
    )
    .unwrap();
    let line = |c: &str, n| format!("{{\"url\":\"{}\"}}\n", c.repeat(n));
    for c in ["a", "b", "c"] {
        sink.write(&Batch::new(line(c, 20).as_bytes(), 1, false))
            .unwrap();
    }
    let (files, _) = lines(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    let oldest = closed_name(files[0].file_name().unwrap().to_str().unwrap()).unwrap();
    progress.set_shipped_for_tests(oldest, crate::clicks::ship::Position::END);
    // Room for it takes the two oldest files: the first goes, the second is not shipped.
    let err = sink
        .write(&Batch::new(line("d", 50).as_bytes(), 1, false))
        .unwrap_err();
    assert!(matches!(err, WriteError::Unshipped { .. }), "{err:?}");
    assert_eq!(metrics.click_log_deleted_files.get(), 1);
    let (files, _) = lines(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(metrics.click_log_bytes.get() as u64, log_bytes(&files));
    sink.close().unwrap();
}
