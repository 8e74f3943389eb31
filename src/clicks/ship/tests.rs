//! The shipper's own logic: what it reads as lag, how failures back off, what a publish that
//! cannot go out leaves acknowledged. Publishing against a real `nats-server` (Debian package
//! `nats-server`) where the server is the point.

use super::*;
use crate::clicks::file::open_name;
use crate::clock::parse_rfc3339;
use std::path::Path;

const A: &str = "clicks-20251124T160000.000Z.jsonl";
const B: &str = "clicks-20251124T170000.000Z.jsonl";

fn line(ts: &str, seq: u64) -> String {
    format!("{{\"ts\":\"{ts}\",\"kind\":\"click\",\"click_id\":\"edge-a-{seq}\"}}\n")
}

/// The lag alert reads the oldest unshipped click's age: with the checkpoint at the very end
/// of a file shipped whole (or no checkpoint yet), that click is in a later file, and its
/// age must show rather than 0 while unshipped bytes grow.
#[test]
fn the_oldest_unshipped_click_is_found_past_a_checkpoint_at_the_end_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let now = parse_rfc3339("2025-11-24T17:10:00.000Z").unwrap();
    let a = line("2025-11-24T16:00:00.000Z", 1);
    std::fs::write(dir.path().join(A), &a).unwrap();
    let end_of_a = Position {
        file: A.into(),
        offset: a.len() as u64,
    };
    assert_eq!(
        unshipped(dir.path(), end_of_a.clone(), now).unwrap(),
        (0, Duration::ZERO),
        "all shipped"
    );
    // The edge restarts while NATS is away: new clicks go to a new file, still open.
    let b = line("2025-11-24T17:05:00.000Z", 2);
    std::fs::write(dir.path().join(format!("{B}.open")), &b).unwrap();
    assert_eq!(
        unshipped(dir.path(), end_of_a, now).unwrap(),
        (b.len() as u64, Duration::from_secs(300))
    );
    // Nothing shipped yet: the log's first click.
    assert_eq!(
        unshipped(dir.path(), Position::default(), now).unwrap(),
        ((a.len() + b.len()) as u64, Duration::from_secs(70 * 60))
    );
}

/// What `f` logs on this thread at warning level or above.
pub(super) fn warnings<T>(f: impl FnOnce() -> T) -> (T, String) {
    crate::logged::logged(tracing::Level::WARN, f)
}

/// A real `nats-server -js` on a free loopback port, its store and config in a temporary
/// directory; killed on drop.
struct Server {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `config` (nats-server's config file syntax) and waits until it
    /// accepts connections.
    fn start(config: &str) -> Server {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()));
        assert!(
            found,
            "nats-server is not installed: install the Debian package `nats-server`"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, config).unwrap();
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The position at byte `offset` of `file`.
fn at(file: &str, offset: u64) -> Position {
    Position {
        file: file.into(),
        offset,
    }
}

/// A shipper of the click log in `dir` for node `edge-a` to `url` (the defaults' stream
/// `CLICKS` and subject `clicks.edge-a`).
async fn shipper(dir: &Path, url: &str) -> Shipper {
    let clicks = crate::config::Clicks {
        nats_url: url::Url::parse(url).unwrap(),
        ..Default::default()
    };
    let node = crate::config::NodeId::parse("edge-a").unwrap();
    let target = NatsTarget::from_config(&clicks, &node);
    Shipper::new(
        dir.to_path_buf(),
        target,
        ShipMetrics::unregistered(),
        Clock::system(),
    )
    .await
    .unwrap()
}

/// "No responders" with a stream that is found by name but does not take the subject: the
/// lookup succeeds every time, and ending the failure there would retry at once, forever.
/// Only a publish that succeeds ends a failure a publish began.
#[tokio::test]
async fn no_responders_backs_off_though_the_stream_is_found_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the client keeps trying in the background, nothing is published.
    let mut s = shipper(dir.path(), "nats://127.0.0.1:1").await;
    let no_stream = || PublishError::NoStream {
        subject: "clicks.edge-a".into(),
        stream: "CLICKS".into(),
    };
    s.publish_failed(&no_stream());
    assert!(!s.stream_ready);
    assert_eq!(s.failure.as_ref().unwrap().backoff, MIN_BACKOFF);
    s.stream_ready(false);
    s.publish_failed(&no_stream());
    assert_eq!(s.failure.as_ref().unwrap().backoff, 2 * MIN_BACKOFF);
    assert_eq!(s.metrics.errors.get(), 2);
    // A failure of the stream's set-up alone (NATS away at start) ends when the stream is
    // found: there may be nothing to publish to show it.
    let mut s = shipper(dir.path(), "nats://127.0.0.1:1").await;
    s.failed(&std::io::Error::other("connection refused"));
    s.stream_ready(false);
    assert!(s.failure.is_none());
}

/// A checkpoint that cannot be written (a full disk) is said once and tried again every
/// CHECKPOINT_EVERY, not at every 20 ms poll with an error line each; once written, it says so.
#[tokio::test]
async fn a_checkpoint_that_cannot_be_written_is_said_once_and_tried_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = shipper(dir.path(), "nats://127.0.0.1:1").await;
    // Its temporary file cannot be created: a directory has its name.
    let tmp = dir.path().join(format!("{CHECKPOINT_FILE}.tmp"));
    std::fs::create_dir(&tmp).unwrap();
    s.acked = Position {
        file: A.into(),
        offset: 10,
    };
    s.dirty_since = Some(Instant::now() - CHECKPOINT_EVERY);
    let ((), said) = crate::logged::logged_async(tracing::Level::WARN, async {
        for _ in 0..20 {
            s.persist(false).await;
        }
    })
    .await;
    assert_eq!(
        said.matches("writing the shipping checkpoint").count(),
        1,
        "{said}"
    );
    assert!(s.dirty_since.is_some());
    std::fs::remove_dir(&tmp).unwrap();
    tokio::time::sleep(CHECKPOINT_EVERY).await;
    let ((), said) = crate::logged::logged_async(tracing::Level::INFO, s.persist(false)).await;
    assert!(said.contains("written again"), "{said}");
    assert_eq!(s.progress.shipped_file(), A);
}

/// A checkpoint that names a file named by hand (left by a version that shipped from one) says
/// nothing of where the real files stand: shipping starts over rather than wait at it forever.
#[tokio::test]
async fn a_checkpoint_in_a_file_named_by_hand_starts_shipping_over() {
    let dir = tempfile::tempdir().unwrap();
    Checkpoint::in_dir(dir.path())
        .store(&Position {
            file: "clicks-restored.jsonl".into(),
            offset: 3,
        })
        .unwrap();
    let s = shipper(dir.path(), "nats://127.0.0.1:1").await;
    assert_eq!(s.acked, Position::default());
    assert_eq!(s.progress.shipped_file(), "");
}

/// Connects the shipper's stream client, polling: it connects in the background.
async fn ensure_stream(s: &Shipper) -> Result<bool, NatsError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match s.nats.ensure_stream().await {
            Err(NatsError::GetStream { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

/// A stream of the configured name whose subjects leave this node's out: the set-up says so,
/// naming the stream, the subject and the fix, instead of "no responders" at every publish.
#[tokio::test]
async fn a_stream_that_does_not_take_the_subject_is_named_with_the_fix() {
    let server = Server::start("");
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "CLICKS".into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = shipper(dir.path(), &server.url()).await;
    let err = ensure_stream(&s).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "stream CLICKS exists but does not take subject clicks.edge-a (its subjects: other.>): \
         add clicks.edge-a (or clicks.> for every node) to the stream's subjects"
    );
    js.update_stream(async_nats::jetstream::stream::Config {
        name: "CLICKS".into(),
        subjects: vec!["other.>".into(), "clicks.*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!ensure_stream(&s).await.unwrap());
}

/// A stream that would acknowledge clicks it does not keep (interest retention with no
/// consumer), or acknowledge none (`no_ack`), is refused naming the setting, instead of the edge
/// deleting clicks the stream never stored or retrying for ever.
#[tokio::test]
async fn a_stream_that_would_lose_or_never_acknowledge_clicks_is_refused_naming_the_setting() {
    use async_nats::jetstream::stream::{Config, RetentionPolicy};
    let server = Server::start("");
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let clicks = |retention, no_ack| Config {
        name: "CLICKS".into(),
        subjects: vec!["clicks.>".into()],
        retention,
        no_ack,
        ..Default::default()
    };
    js.create_stream(clicks(RetentionPolicy::Interest, false))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = shipper(dir.path(), &server.url()).await;
    let err = ensure_stream(&s).await.unwrap_err().to_string();
    assert!(
        err.starts_with("stream CLICKS has retention interest: ") && err.contains("use limits"),
        "{err}"
    );
    js.delete_stream("CLICKS").await.unwrap();
    js.create_stream(clicks(RetentionPolicy::Limits, true))
        .await
        .unwrap();
    let err = ensure_stream(&s).await.unwrap_err().to_string();
    assert!(err.starts_with("stream CLICKS has no_ack: "), "{err}");
    js.delete_stream("CLICKS").await.unwrap();
    js.create_stream(clicks(RetentionPolicy::Limits, false))
        .await
        .unwrap();
    assert!(!ensure_stream(&s).await.unwrap());
}

/// A line over the server's max_payload in the middle of a chunk: the lines before it are
/// written, so their acknowledgements are waited for and the checkpoint moves up to it. Dropped
/// unacknowledged, they would be published again at every retry (stored twice once past the
/// stream's duplicate window), or, never written, never shipped at all.
#[tokio::test]
async fn a_line_too_large_stops_the_chunk_after_the_lines_before_it_are_acknowledged() {
    let server = Server::start("max_payload: 1024\n");
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (
        line("2025-11-24T16:00:00.000Z", 1),
        line("2025-11-24T16:00:01.000Z", 2),
    );
    let big = format!(
        "{{\"ts\":\"2025-11-24T16:00:02.000Z\",\"url\":\"{}\",\"click_id\":\"edge-a-3\"}}\n",
        "x".repeat(2000)
    );
    let four = line("2025-11-24T16:00:03.000Z", 4);
    std::fs::write(
        dir.path().join(A),
        [one.as_str(), &two, &big, &four].concat(),
    )
    .unwrap();
    let mut s = shipper(dir.path(), &server.url()).await;
    assert!(ensure_stream(&s).await.unwrap());
    let chunk = Reader::new(dir.path(), Position::default(), CHUNK)
        .next_chunk()
        .unwrap()
        .unwrap();
    let err = s.ship(chunk).await.unwrap_err();
    assert!(
        matches!(err, PublishError::TooLarge { max: 1024, .. }),
        "{err}"
    );
    assert_eq!(
        s.acked,
        Position {
            file: A.into(),
            offset: (one.len() + two.len()) as u64,
        }
    );
    assert_eq!(s.metrics.shipped.get(), 2);
    assert_eq!(s.metrics.duplicates.get(), 0);
}

/// Shipping caught up at the end of a file and the writer went on in the next: the checkpoint
/// moves to the next file with its first chunk, before a line of it is acknowledged. Left at
/// the end of the file before, it would name a file retention may delete (shipped whole), and
/// the next start would take that for a file deleted before it was shipped.
#[tokio::test]
async fn the_checkpoint_moves_to_the_next_file_with_its_first_chunk() {
    // JetStream with no stream yet: every publish is answered "no responders".
    let server = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let a = line("2025-11-24T16:00:00.000Z", 1);
    let b = line("2025-11-24T17:00:00.000Z", 2);
    std::fs::write(dir.path().join(A), &a).unwrap();
    std::fs::write(dir.path().join(B), &b).unwrap();
    let checkpoint = Checkpoint::in_dir(dir.path());
    checkpoint
        .store(&Position {
            file: A.into(),
            offset: a.len() as u64,
        })
        .unwrap();
    let mut s = shipper(dir.path(), &server.url()).await;
    let chunk = Reader::new(dir.path(), s.acked.clone(), CHUNK)
        .next_chunk()
        .unwrap()
        .unwrap();
    let start_of_b = Position {
        file: B.into(),
        offset: 0,
    };
    assert_eq!(chunk.start, start_of_b);
    let err = s.ship(chunk).await.unwrap_err();
    assert!(matches!(err, PublishError::NoStream { .. }), "{err}");
    assert_eq!(s.acked, start_of_b);
    s.persist(true).await;
    assert_eq!(checkpoint.load().unwrap(), start_of_b);
    assert_eq!(s.progress.shipped_file(), B);
    // A, shipped whole, is deleted: reading on from the checkpoint skips nothing.
    std::fs::remove_file(dir.path().join(A)).unwrap();
    let metrics = ShipMetrics::unregistered();
    let mut r =
        Reader::new(dir.path(), checkpoint.load().unwrap(), CHUNK).counting(metrics.clone());
    let chunk = r.next_chunk().unwrap().unwrap();
    assert_eq!((chunk.start, &chunk.bytes[..]), (start_of_b, b.as_bytes()));
    assert_eq!(metrics.skipped.with_label_values(&["file_gone"]).get(), 0);
}

/// A finished file whose last line is partial is skipped to its end (counted, warned about):
/// once the shipper has caught up, its checkpoint is past it, in the next file, so the lag
/// does not count the skipped bytes and retention may delete the file.
#[tokio::test]
async fn caught_up_past_a_skipped_partial_line_the_checkpoint_is_in_the_next_file() {
    let server = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let a = line("2025-11-24T16:00:00.000Z", 1);
    let partial = r#"{"ts":"2025-11-24T16:00:01.000Z","kind":"cl"#;
    std::fs::write(dir.path().join(A), format!("{a}{partial}")).unwrap();
    std::fs::write(dir.path().join(open_name(B)), "").unwrap();
    Checkpoint::in_dir(dir.path())
        .store(&at(A, a.len() as u64))
        .unwrap();
    let mut s = shipper(dir.path(), &server.url()).await;
    let mut reader = Reader::new(dir.path(), s.acked.clone(), CHUNK);
    let (next, _) = warnings(|| reader.next_chunk().unwrap());
    assert!(next.is_none(), "nothing to ship");
    s.caught_up(&reader);
    assert_eq!(s.acked, at(B, 0));
    s.update_stats().await;
    assert_eq!(s.metrics.unshipped_bytes.get(), 0);
    assert_eq!(s.metrics.oldest_unshipped_seconds.get(), 0);
}

/// A checkpoint at the last byte of a finished (closed) file becomes the end of that file,
/// persisted at the next stats pass whether or not NATS takes anything: retention may then
/// delete the file, and a start after that skips nothing and warns of nothing. A file still
/// being written is not finished, however far it is acknowledged.
#[tokio::test]
async fn a_checkpoint_at_the_last_byte_of_a_finished_file_becomes_its_end() {
    // JetStream with no stream yet: nothing is ever acknowledged.
    let server = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let a = line("2025-11-24T16:00:00.000Z", 1);
    let b = line("2025-11-24T17:00:00.000Z", 2);
    std::fs::write(dir.path().join(A), &a).unwrap();
    std::fs::write(dir.path().join(open_name(B)), &b).unwrap();
    let checkpoint = Checkpoint::in_dir(dir.path());
    checkpoint.store(&at(A, a.len() as u64)).unwrap();
    let mut s = shipper(dir.path(), &server.url()).await;
    assert!(!s.progress.fully_shipped(A, a.len() as u64));
    s.update_stats().await;
    let end_of_a = at(A, Position::END);
    assert_eq!(s.acked, end_of_a);
    assert_eq!(checkpoint.load().unwrap(), end_of_a);
    assert!(s.progress.fully_shipped(A, a.len() as u64));
    assert_eq!(s.metrics.unshipped_bytes.get(), b.len() as i64);

    checkpoint.store(&at(B, b.len() as u64)).unwrap();
    let mut s = shipper(dir.path(), &server.url()).await;
    s.update_stats().await;
    assert_eq!(s.acked, at(B, b.len() as u64), "still written");
    assert_eq!(checkpoint.load().unwrap(), at(B, b.len() as u64));
}

/// A file whose rename to its closed name failed keeps its open name (the next start renames
/// it); once the writer moved on to a newer file, it is finished all the same: a checkpoint at
/// its last byte becomes its end, and retention may delete it. It used to stay unshipped for
/// retention, and with the size cap every write failed until a restart.
#[tokio::test]
async fn a_finished_file_left_under_its_open_name_is_marked_at_its_end() {
    let server = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let a = line("2025-11-24T16:00:00.000Z", 1);
    std::fs::write(dir.path().join(open_name(A)), &a).unwrap();
    let checkpoint = Checkpoint::in_dir(dir.path());
    checkpoint.store(&at(A, a.len() as u64)).unwrap();
    let mut s = shipper(dir.path(), &server.url()).await;
    s.update_stats().await;
    assert_eq!(
        s.acked,
        at(A, a.len() as u64),
        "no newer file: still written"
    );
    let b = line("2025-11-24T17:00:00.000Z", 2);
    std::fs::write(dir.path().join(open_name(B)), &b).unwrap();
    s.update_stats().await;
    assert_eq!(s.acked, at(A, Position::END));
    assert!(s.progress.fully_shipped(A, a.len() as u64));
}

/// A failure that goes on for another reason says so at warning level (the stream found
/// missing, then found not to take the subject, which names the fix); the same one again is
/// not repeated there.
#[tokio::test]
async fn a_failure_that_changes_its_reason_is_warned_about_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = shipper(dir.path(), "nats://127.0.0.1:1").await;
    let refused = std::io::Error::other("connection refused");
    let no_stream = PublishError::NoStream {
        subject: "clicks.edge-a".into(),
        stream: "CLICKS".into(),
    };
    let ((), logged) = warnings(|| {
        s.failed(&refused);
        s.failed(&refused);
    });
    assert_eq!(logged.matches("connection refused").count(), 1, "{logged}");
    let ((), logged) = warnings(|| s.publish_failed(&no_stream));
    assert!(logged.contains("now for another reason"), "{logged}");
    assert!(logged.contains("CLICKS"), "{logged}");
}
