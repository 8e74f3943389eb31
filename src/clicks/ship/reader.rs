//! Tailing the click log for the shipper: from a [`Position`], the next run of whole lines, in
//! file order, and only what is on disk.
//!
//! - Order: click file names sort in time order, and the writer never writes to a file again
//!   once it has created a newer one. So a file is finished when a newer one exists: the reader
//!   reads it to its end once more after seeing the newer file, then moves on.
//! - Names: the file being written is `….jsonl.open` and is renamed `….jsonl` when closed. Files
//!   are known (and positions name them) by their closed name in both states, and opened under
//!   whichever name they have; a rename while the file is open changes nothing for the reader.
//! - Written for good: in the file the sink is writing, nothing past the end of its last write
//!   that succeeded ([`Progress::written_end`]); a failed write is rolled back, and what it left
//!   for a moment is never shipped.
//! - Whole lines: bytes after the last newline are a line still being written; they are left for
//!   the next read. A finished file cannot end in a partial line (startup recovery quarantines a
//!   torn tail), but if one does it is skipped with a warning rather than blocking the log.
//! - Durable only: before lines are handed out, the file is `fdatasync`ed (and its directory,
//!   once per file). The writer syncs only synced clicks; buffered ones may sit in the page cache.
//!   A click the stream has seen must survive a power cut, or its sequence number, recovered from
//!   the log at the next start, would be handed to another click (see `clicks::id`).
//!
//! Blocking file I/O: the shipper calls it from a blocking task.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::Progress;
use super::checkpoint::Position;
use crate::clicks::file::{closed_name, open_name};

/// Whole lines of one click file, read from `start.offset`.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Where the lines start.
    pub(super) start: Position,
    /// The lines, each with its newline.
    pub(super) bytes: Bytes,
}

/// Reads the click log in `dir` from a position on.
pub(super) struct Reader {
    dir: PathBuf,
    pos: Position,
    /// The file at `pos`, open, and whether its data and name are synced up to `synced`.
    open: Option<OpenFile>,
    max_chunk: usize,
    /// What chunks are read into. A chunk handed out shares it; once every line of the chunk has
    /// been published and dropped, the next read reuses its room (`BytesMut::reserve` reclaims
    /// it) and so writes to pages already in memory. A fresh buffer per chunk cost a page fault
    /// for every 4 KiB shipped (BENCHMARKS.md).
    buf: BytesMut,
    /// Where the file the sink is writing ends for good ([`Progress::written_end`]); none: the
    /// files' lengths (a reader for statistics).
    written: Option<Progress>,
}

struct OpenFile {
    name: String,
    file: File,
    synced: u64,
}

impl Reader {
    /// A reader of the click log in `dir` from `pos`, handing out at most `max_chunk` bytes at a
    /// time (a longer line is handed out whole).
    pub(super) fn new(dir: &Path, pos: Position, max_chunk: usize) -> Reader {
        Reader {
            dir: dir.to_path_buf(),
            pos,
            open: None,
            max_chunk,
            buf: BytesMut::new(),
            written: None,
        }
    }

    /// Reads no further into the file the sink is writing than it has written for good: bytes
    /// of a write that failed, and is rolled back, are never shipped.
    pub(super) fn written_up_to(mut self, progress: Progress) -> Reader {
        self.written = Some(progress);
        self
    }

    /// Starts over from `pos` (after a failed publish: from the last acknowledged line).
    pub(super) fn seek(&mut self, pos: Position) {
        if self.open.as_ref().is_some_and(|o| o.name != pos.file) {
            self.open = None;
        }
        self.pos = pos;
    }

    /// The next whole lines after the position, durable, and moves past them; `None` when the
    /// log holds nothing more yet.
    pub(super) fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        loop {
            let files = self.click_files()?;
            // The file at the position, or the first after it (the start of the log, or a file
            // deleted before it was shipped).
            let Some(current) = files.iter().find(|f| **f >= self.pos.file) else {
                return Ok(None);
            };
            if *current != self.pos.file {
                // Retention never deletes a file the checkpoint has not passed: someone else
                // did, whole (offset 0) or after part of it was shipped.
                if !self.pos.file.is_empty() {
                    tracing::warn!(
                        file = %self.pos.file,
                        offset = self.pos.offset,
                        "click file gone before it was fully shipped; shipping goes on with the next"
                    );
                }
                self.seek(Position {
                    file: current.clone(),
                    offset: 0,
                });
            }
            let newer = files.iter().any(|f| *f > self.pos.file);
            if let Some(chunk) = self.read_lines()? {
                return Ok(Some(chunk));
            }
            if !newer {
                return Ok(None);
            }
            // A newer file exists, so this one was finished before it was created: one more read
            // sees all of it.
            if let Some(chunk) = self.read_lines()? {
                return Ok(Some(chunk));
            }
            let len = open_file(&mut self.open, &self.dir, &self.pos)?
                .file
                .metadata()?
                .len();
            if len > self.pos.offset {
                tracing::warn!(
                    file = %self.pos.file,
                    bytes = len - self.pos.offset,
                    "finished click file ends in a partial line; skipped it"
                );
            }
            let next = files.iter().find(|f| **f > self.pos.file).cloned();
            // Invariant: `newer` said there is one.
            let next = next.unwrap_or_default();
            self.seek(Position {
                file: next,
                offset: 0,
            });
        }
    }

    /// Bytes of the log after the position: the rest of its file and every later file.
    pub(super) fn unshipped_bytes(&self) -> io::Result<u64> {
        let mut total = 0u64;
        for name in self.click_files()? {
            if name < self.pos.file {
                continue;
            }
            let len = match open_either(&self.dir, &name) {
                Ok(f) => f.metadata()?.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            };
            let skip = if name == self.pos.file {
                self.pos.offset
            } else {
                0
            };
            total += len.saturating_sub(skip);
        }
        Ok(total)
    }

    /// The first `bytes` of the first line after the position (enough for its `ts`), if there
    /// is one: in the position's file, else at the start of the first later file with anything
    /// in it. A position at the very end of a file (shipping caught up there, then the writer
    /// moved on to a new file) or at the start of the log (no checkpoint yet) has nothing at it
    /// while clicks wait in the files after it.
    pub(super) fn peek(&self, bytes: usize) -> io::Result<Option<Vec<u8>>> {
        if !self.pos.file.is_empty()
            && let Some(head) = read_head(&self.dir, &self.pos.file, self.pos.offset, bytes)?
        {
            return Ok(Some(head));
        }
        for name in self.click_files()? {
            if name > self.pos.file
                && let Some(head) = read_head(&self.dir, &name, 0, bytes)?
            {
                return Ok(Some(head));
            }
        }
        Ok(None)
    }

    /// Reads whole lines from the position in its file, syncing them first.
    fn read_lines(&mut self) -> io::Result<Option<Chunk>> {
        let (max, offset) = (self.max_chunk, self.pos.offset);
        let open = open_file(&mut self.open, &self.dir, &self.pos)?;
        let mut len = open.file.metadata()?.len();
        if let Some(end) = self
            .written
            .as_ref()
            .and_then(|p| p.written_end(&open.name))
        {
            len = len.min(end);
        }
        if len <= offset {
            return Ok(None);
        }
        let want = usize::try_from(len - offset).unwrap_or(usize::MAX);
        let buf = &mut self.buf;
        buf.clear();
        // Room for a whole chunk, whatever this read needs, so one buffer serves every read.
        buf.reserve(max);
        buf.resize(want.min(max), 0);
        let n = read_full_at(&open.file, buf, offset)?;
        buf.truncate(n);
        let mut end = buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        if end.is_none() && n == max && want > max {
            // One line longer than a chunk: read on to its end.
            let mut rest = vec![0; want - n];
            let more = read_full_at(&open.file, &mut rest, offset + n as u64)?;
            buf.extend_from_slice(&rest[..more]);
            end = buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        }
        let Some(end) = end else {
            return Ok(None);
        };
        let upto = offset + end as u64;
        if open.synced < upto {
            open.file.sync_data()?;
            if open.synced == 0 {
                File::open(&self.dir)?.sync_all()?;
            }
            open.synced = upto;
        }
        let bytes = buf.split_to(end).freeze();
        let start = self.pos.clone();
        self.pos.offset = upto;
        Ok(Some(Chunk { start, bytes }))
    }

    /// The click files' closed names, in order.
    fn click_files(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(name) = name.to_str().and_then(closed_name) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        // A file seen under both names (renamed while the directory was read) counts once.
        names.dedup();
        Ok(names)
    }
}

/// The file at `pos`, opened (in `open`) if it is not the one open already.
fn open_file<'a>(
    open: &'a mut Option<OpenFile>,
    dir: &Path,
    pos: &Position,
) -> io::Result<&'a mut OpenFile> {
    if open.as_ref().is_none_or(|o| o.name != pos.file) {
        *open = Some(OpenFile {
            name: pos.file.clone(),
            file: open_either(dir, &pos.file)?,
            synced: 0,
        });
    }
    // Invariant: set just above when it was not.
    Ok(open.as_mut().expect("file open"))
}

/// Opens the click file `closed` in `dir` under the name it has: closed, else open, else closed
/// again (it was closed between the first two tries).
fn open_either(dir: &Path, closed: &str) -> io::Result<File> {
    let not_found = |r: &io::Result<File>| {
        r.as_ref()
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
    };
    let file = File::open(dir.join(closed));
    if !not_found(&file) {
        return file;
    }
    let file = File::open(dir.join(open_name(closed)));
    if !not_found(&file) {
        return file;
    }
    File::open(dir.join(closed))
}

/// Up to `bytes` of the click file `name` in `dir` from `offset`; none if there are none there
/// (or the file is gone).
fn read_head(dir: &Path, name: &str, offset: u64, bytes: usize) -> io::Result<Option<Vec<u8>>> {
    let file = match open_either(dir, name) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0; bytes];
    let n = read_full_at(&file, &mut buf, offset)?;
    buf.truncate(n);
    Ok((n > 0).then_some(buf))
}

/// Reads into `buf` at `offset` until it is full or the file ends; how many bytes were read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
