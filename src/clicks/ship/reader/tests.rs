//! The reader on a real directory: order, names, partial lines, rollbacks and what is skipped.

use super::*;
use crate::clicks::ship::tests::warnings;

fn append(dir: &Path, name: &str, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn text(c: Option<Chunk>) -> Option<String> {
    c.map(|c| String::from_utf8(c.bytes.to_vec()).unwrap())
}

/// A listing of the directory that misses `name` the first time (as one made while the file is
/// renamed may), and not after.
fn missing_once(name: &'static str) -> impl FnMut(&Path) -> io::Result<Listing> {
    let mut first = true;
    move |dir| {
        let (mut files, strays) = list(dir)?;
        if std::mem::take(&mut first) {
            files.retain(|f| f != name);
        }
        Ok((files, strays))
    }
}

const A: &str = "clicks-20251124T160000.000Z.jsonl";
const B: &str = "clicks-20251124T170000.000Z.jsonl";

/// In the file the sink is writing, what a write left before it failed (and was rolled
/// back) is never shipped, even whole lines: only what the sink wrote for good.
#[test]
fn bytes_of_a_write_rolled_back_are_never_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let progress = Progress::new(Position::default());
    let mut r =
        Reader::new(dir.path(), Position::default(), 1 << 20).written_up_to(progress.clone());
    let open = open_name(A);
    let written = |file: &str, offset| {
        progress.set_written(Position {
            file: file.into(),
            offset,
        });
    };
    written(A, 0);
    append(dir.path(), &open, "a1\n");
    assert!(
        r.next_chunk().unwrap().is_none(),
        "not written for good yet"
    );
    written(A, 3);
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a1\n"));
    // A batch lands, then its write fails: the sink truncates it away and writes again.
    append(dir.path(), &open, "s1\nb1\n");
    assert!(r.next_chunk().unwrap().is_none());
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join(&open))
        .unwrap()
        .set_len(3)
        .unwrap();
    append(dir.path(), &open, "b1\n");
    written(A, 6);
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("b1\n"));
    // The sink moves on to a new file: that one is bounded now.
    append(dir.path(), &open_name(B), "c1\n");
    written(B, 0);
    assert!(r.next_chunk().unwrap().is_none());
    written(B, 3);
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("c1\n"));
}

#[test]
fn whole_lines_in_file_order_and_a_partial_line_waits() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Reader::new(dir.path(), Position::default(), 1 << 20);
    assert!(r.next_chunk().unwrap().is_none());
    append(dir.path(), A, "a1\na2\na3");
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a1\na2\n"));
    // The third line is still being written.
    assert!(r.next_chunk().unwrap().is_none());
    append(dir.path(), A, "\n");
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a3\n"));
    // A newer file: the old one is finished once read to its end.
    append(dir.path(), A, "a4\n");
    append(dir.path(), B, "b1\n");
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a4\n"));
    let chunk = r.next_chunk().unwrap().unwrap();
    assert_eq!(
        chunk.start,
        Position {
            file: B.into(),
            offset: 0
        }
    );
    assert_eq!(&chunk.bytes[..], b"b1\n");
    assert_eq!(r.unshipped_bytes().unwrap(), 0);
    // Back to an acknowledged position: the same lines again.
    r.seek(Position {
        file: A.into(),
        offset: 6,
    });
    assert_eq!(r.unshipped_bytes().unwrap(), 6 + 3);
    assert_eq!(r.peek(2).unwrap().as_deref(), Some(&b"a3"[..]));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a3\na4\n"));
}

#[test]
fn a_chunk_still_held_is_never_overwritten_and_a_dropped_ones_room_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Reader::new(dir.path(), Position::default(), 1 << 10);
    append(dir.path(), A, "a1\na2\n");
    let first = r.next_chunk().unwrap().unwrap();
    // Held (lines still in flight): the next read goes elsewhere.
    append(dir.path(), A, "a3\na4\n");
    let second = r.next_chunk().unwrap().unwrap();
    assert_eq!(&first.bytes[..], b"a1\na2\n");
    assert_eq!(&second.bytes[..], b"a3\na4\n");
    // Dropped (every line published): the next read lands in its room, even a longer one
    // (a size an allocator would not serve from the same place).
    let room = second.bytes.as_ptr();
    drop((first, second));
    let long = format!("a5{}\n", "x".repeat(200));
    append(dir.path(), A, &long);
    let third = r.next_chunk().unwrap().unwrap();
    assert_eq!(&third.bytes[..], long.as_bytes());
    assert_eq!(third.bytes.as_ptr(), room, "a new buffer for every chunk");
}

#[test]
fn a_file_is_read_on_across_its_close_and_known_by_its_closed_name() {
    let dir = tempfile::tempdir().unwrap();
    let open = format!("{A}.open");
    append(dir.path(), &open, "a1\na2");
    let mut r = Reader::new(dir.path(), Position::default(), 1 << 20);
    let chunk = r.next_chunk().unwrap().unwrap();
    assert_eq!(chunk.start.file, A, "positions name the closed file");
    assert_eq!(&chunk.bytes[..], b"a1\n");
    append(dir.path(), &open, "\n");
    std::fs::rename(dir.path().join(&open), dir.path().join(A)).unwrap();
    append(dir.path(), &format!("{B}.open"), "b1\n");
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a2\n"));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("b1\n"));
    // A reader starting from a checkpoint in a file that has been closed since.
    let mut r = Reader::new(
        dir.path(),
        Position {
            file: A.into(),
            offset: 3,
        },
        1 << 20,
    );
    assert_eq!(r.unshipped_bytes().unwrap(), 3 + 3);
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a2\n"));
    // And one in the file still open.
    let mut r = Reader::new(
        dir.path(),
        Position {
            file: B.into(),
            offset: 0,
        },
        1 << 20,
    );
    assert_eq!(r.peek(2).unwrap().as_deref(), Some(&b"b1"[..]));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("b1\n"));
}

/// The oldest unshipped line is looked for past a position with nothing at it: at the end
/// of a file shipped whole, or at the start of the log, the next file's first line.
#[test]
fn peek_finds_the_first_unshipped_line_in_a_later_file() {
    const C: &str = "clicks-20251124T180000.000Z.jsonl";
    let dir = tempfile::tempdir().unwrap();
    let at = |file: &str, offset| {
        Reader::new(
            dir.path(),
            Position {
                file: file.into(),
                offset,
            },
            0,
        )
    };
    assert_eq!(at("", 0).peek(2).unwrap(), None, "an empty log");
    append(dir.path(), A, "a1\na2\n");
    assert_eq!(at(A, 6).peek(2).unwrap(), None, "all shipped");
    // No checkpoint yet: the log's first line.
    assert_eq!(at("", 0).peek(2).unwrap().as_deref(), Some(&b"a1"[..]));
    // Caught up at the end of A; the writer made B (nothing in it yet), then C.
    append(dir.path(), &open_name(B), "");
    assert_eq!(at(A, 6).peek(2).unwrap(), None);
    append(dir.path(), &open_name(C), "c1\n");
    assert_eq!(at(A, 6).peek(2).unwrap().as_deref(), Some(&b"c1"[..]));
    append(dir.path(), &open_name(B), "b1\n");
    assert_eq!(at(A, 6).peek(2).unwrap().as_deref(), Some(&b"b1"[..]));
    // A line at the position comes first; a file before the position never.
    assert_eq!(at(A, 3).peek(2).unwrap().as_deref(), Some(&b"a2"[..]));
    assert_eq!(at(B, 3).peek(2).unwrap().as_deref(), Some(&b"c1"[..]));
}

#[test]
fn chunks_are_bounded_but_a_long_line_comes_whole() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), A, "0123456789\nab\ncd\n");
    let mut r = Reader::new(dir.path(), Position::default(), 4);
    assert_eq!(
        text(r.next_chunk().unwrap()).as_deref(),
        Some("0123456789\nab\ncd\n")
    );
    let mut r = Reader::new(
        dir.path(),
        Position {
            file: A.into(),
            offset: 11,
        },
        4,
    );
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("ab\n"));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("cd\n"));
}

#[test]
fn a_finished_file_ending_in_a_partial_line_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), A, "a1\ntorn");
    append(dir.path(), B, "b1\n");
    let mut r = Reader::new(dir.path(), Position::default(), 1 << 20);
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a1\n"));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("b1\n"));
}

/// A file named like a click file by hand sorts after every real one (letters after digits):
/// were it read, shipping would move to it and never come back to newer real files, and they
/// would count as shipped. It is ignored.
#[test]
fn a_file_named_by_hand_never_takes_shipping_away_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), A, "a1\n");
    append(dir.path(), "clicks-restored.jsonl", "r1\n");
    let mut r = Reader::new(dir.path(), Position::default(), 1 << 20);
    let (first, logged) = warnings(|| {
        let first = text(r.next_chunk().unwrap());
        assert!(r.next_chunk().unwrap().is_none());
        first
    });
    assert_eq!(first.as_deref(), Some("a1\n"));
    // Named in a warning, once however often the directory is listed.
    let named = dir.path().join("clicks-restored.jsonl");
    assert_eq!(
        logged.matches(&named.display().to_string()).count(),
        1,
        "{logged}"
    );
    assert!(logged.contains("move it out of the directory"), "{logged}");
    append(dir.path(), B, "c1\n");
    assert_eq!(r.unshipped_bytes().unwrap(), 3);
    assert_eq!(r.peek(2).unwrap().as_deref(), Some(&b"c1"[..]));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("c1\n"));
    assert_eq!(r.unshipped_bytes().unwrap(), 0);
}

/// A listing made while a file is renamed may show it under neither name: the file is opened
/// before it is given up for gone, and its rest is shipped, not skipped.
#[test]
fn a_file_missing_from_one_listing_is_read_on_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), A, "a1\na2\n");
    append(dir.path(), B, "b1\n");
    let metrics = ShipMetrics::unregistered();
    let mut r = Reader::new(
        dir.path(),
        Position {
            file: A.into(),
            offset: 3,
        },
        1 << 20,
    )
    .counting(metrics.clone());
    let chunk = r.next_chunk_listing(missing_once(A)).unwrap();
    assert_eq!(text(chunk).as_deref(), Some("a2\n"));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("b1\n"));
    assert_eq!(metrics.skipped.with_label_values(&["file_gone"]).get(), 0);
}

/// What the reader skips is never shipped, so it is counted, not only logged: the rest of a
/// file deleted before it was shipped whole, and a finished file's partial last line.
#[test]
fn what_is_skipped_is_counted() {
    const C: &str = "clicks-20251124T180000.000Z.jsonl";
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), A, "a1\na2\n");
    append(dir.path(), B, "b1\ntorn");
    append(dir.path(), C, "c1\n");
    let metrics = ShipMetrics::unregistered();
    let count = |reason: &str| metrics.skipped.with_label_values(&[reason]).get();
    let mut r = Reader::new(dir.path(), Position::default(), 1 << 20).counting(metrics.clone());
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a1\na2\n"));
    r.seek(Position {
        file: A.into(),
        offset: 3,
    });
    std::fs::remove_file(dir.path().join(A)).unwrap();
    // Still open from the read before: its rest is there to ship.
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a2\n"));
    assert_eq!(count("file_gone"), 0);
    r.seek(Position {
        file: A.into(),
        offset: 3,
    });
    r.open = None;
    let (b, logged) = warnings(|| text(r.next_chunk().unwrap()));
    assert_eq!(b.as_deref(), Some("b1\n"));
    assert_eq!(count("file_gone"), 1);
    assert!(
        logged.contains("gone before it was fully shipped"),
        "{logged}"
    );
    assert!(logged.contains(A), "{logged}");
    let (c, logged) = warnings(|| text(r.next_chunk().unwrap()));
    assert_eq!(c.as_deref(), Some("c1\n"));
    assert_eq!(count("partial_line"), 1);
    assert!(logged.contains("ends in a partial line"), "{logged}");
    assert!(logged.contains(B), "{logged}");
    assert_eq!(count("file_gone"), 1);
}

/// A file being closed (renamed) while the reader moves past a finished file may be missing
/// from the listing that showed the older one finished, with a newer file listed: the reader
/// moves on by a listing taken after, and ships it rather than jumping past it.
#[test]
fn a_file_missing_from_the_listing_that_finished_the_one_before_is_not_jumped() {
    const C: &str = "clicks-20251124T180000.000Z.jsonl";
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), A, "a1\n");
    append(dir.path(), B, "b1\n");
    append(dir.path(), C, "c1\n");
    let metrics = ShipMetrics::unregistered();
    let at_end_of_a = Position {
        file: A.into(),
        offset: 3,
    };
    let mut r = Reader::new(dir.path(), at_end_of_a, 1 << 20).counting(metrics.clone());
    let chunk = r.next_chunk_listing(missing_once(B)).unwrap();
    assert_eq!(text(chunk).as_deref(), Some("b1\n"));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("c1\n"));
    assert_eq!(
        metrics.skipped.with_label_values(&["partial_line"]).get(),
        0
    );
}

/// The listing the reader moves on by may itself be read while the next file is renamed, and
/// miss it: a second listing, taken after, shows it, and the reader does not jump past it.
#[test]
fn a_file_missing_from_the_listing_the_reader_moves_on_by_is_not_jumped() {
    const C: &str = "clicks-20251124T180000.000Z.jsonl";
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), A, "a1\n");
    append(dir.path(), B, "b1\n");
    append(dir.path(), C, "c1\n");
    let at_end_of_a = Position {
        file: A.into(),
        offset: 3,
    };
    let mut r = Reader::new(dir.path(), at_end_of_a, 1 << 20);
    let mut calls = 0;
    // The first listing finds A finished; the second, the reader's first to move on by, is
    // read during B's rename.
    let listing = move |dir: &Path| {
        calls += 1;
        let (mut files, strays) = list(dir)?;
        if calls == 2 {
            files.retain(|f| f != B);
        }
        Ok((files, strays))
    };
    let chunk = r.next_chunk_listing(listing).unwrap();
    assert_eq!(text(chunk).as_deref(), Some("b1\n"));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("c1\n"));
}

/// A checkpoint at the end of a finished file ([`Position::END`]) goes on with the next file,
/// whether the file is still there or retention deleted it: nothing skipped, nothing warned.
#[test]
fn the_end_of_a_finished_file_goes_on_with_the_next_whether_it_is_there_or_not() {
    let dir = tempfile::tempdir().unwrap();
    append(dir.path(), A, "a1\n");
    let metrics = ShipMetrics::unregistered();
    let end_of_a = Position {
        file: A.into(),
        offset: Position::END,
    };
    let mut r = Reader::new(dir.path(), end_of_a.clone(), 1 << 20).counting(metrics.clone());
    assert_eq!(text(r.next_chunk().unwrap()), None, "nothing after A yet");
    assert_eq!(r.unshipped_bytes().unwrap(), 0);
    assert_eq!(r.peek(40).unwrap(), None);
    append(dir.path(), B, "b1\n");
    assert_eq!(r.peek(40).unwrap().as_deref(), Some(&b"b1\n"[..]));
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("b1\n"));

    std::fs::remove_file(dir.path().join(A)).unwrap();
    let mut r = Reader::new(dir.path(), end_of_a, 1 << 20).counting(metrics.clone());
    let (b, logged) = warnings(|| text(r.next_chunk().unwrap()));
    assert_eq!(b.as_deref(), Some("b1\n"));
    assert_eq!(logged, "");
    assert_eq!(metrics.skipped.with_label_values(&["file_gone"]).get(), 0);
}

/// Once a sync of a click file failed, its later lines are never handed out: tried again, the
/// sync would "succeed" on pages the kernel could not write and dropped.
#[test]
fn after_a_failed_sync_no_later_line_of_the_file_is_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Reader::new(dir.path(), Position::default(), 1 << 20);
    append(dir.path(), A, "a1\n");
    assert_eq!(text(r.next_chunk().unwrap()).as_deref(), Some("a1\n"));
    let name = r.open.as_ref().unwrap().name.clone();
    // As `read_lines` records a sync that failed.
    r.sync_failed = Some((name, io::ErrorKind::Other, "Input/output error".into()));
    append(dir.path(), A, "a2\n");
    for _ in 0..2 {
        let e = r.next_chunk().unwrap_err().to_string();
        assert!(
            e.contains(&format!("syncing {A} failed (Input/output error)"))
                && e.contains("none is shipped until the edge is restarted"),
            "{e}"
        );
    }
}
