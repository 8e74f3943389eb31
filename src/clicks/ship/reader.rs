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
//!   torn tail), but if one does it is skipped with a warning rather than blocking the log, and
//!   counted (`clickedge_click_ship_skipped_total{reason="partial_line"}`).
//! - Gone: a file missing from a listing is opened before it is given up for deleted (a listing
//!   made while the file is renamed may show neither name); one that is gone before it was
//!   shipped whole is skipped with a warning, and counted (`reason="file_gone"`).
//! - Only click files: a file named like one by hand (`clicks-restored.jsonl`) is not part of
//!   the log (see `clicks::file`'s naming): warned about once, never read.
//! - Durable only: before lines are handed out, the file is `fdatasync`ed (and its directory,
//!   once per file). The writer syncs only synced clicks; buffered ones may sit in the page cache.
//!   A click the stream has seen must survive a power cut, or its sequence number, recovered from
//!   the log at the next start, would be handed to another click (see `clicks::id`). A sync that
//!   failed is not tried again on the file: the kernel reports a lost writeback once, so a
//!   second sync would pass over lines that are not on disk; shipping of that file stops there,
//!   said as an error every attempt.
//!
//! Blocking file I/O: the shipper calls it from a blocking task.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::checkpoint::Position;
use super::{Progress, ShipMetrics};
use crate::clicks::file::{closed_name, is_stray, open_name, warn_stray};

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
    /// Where what is skipped is counted; none: not counted (a reader for statistics).
    metrics: Option<ShipMetrics>,
    /// Files named like click files but not ones, warned about already.
    strays: HashSet<String>,
    /// A click file whose sync failed, and the error. Linux reports a failed writeback once and
    /// may drop the pages it could not write, so a sync tried again "succeeds" on lines that are
    /// not on disk: none past what was synced before is handed out of it again.
    sync_failed: Option<(String, io::ErrorKind, String)>,
}

/// The click files' closed names in order, and the files named like click files but not ones.
type Listing = (Vec<String>, Vec<String>);

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
            metrics: None,
            strays: HashSet::new(),
            sync_failed: None,
        }
    }

    /// Counts what is skipped in `metrics` (see [`ShipMetrics::skipped`]).
    pub(super) fn counting(mut self, metrics: ShipMetrics) -> Reader {
        self.metrics = Some(metrics);
        self
    }

    /// Reads no further into the file the sink is writing than it has written for good: bytes
    /// of a write that failed, and is rolled back, are never shipped.
    pub(super) fn written_up_to(mut self, progress: Progress) -> Reader {
        self.written = Some(progress);
        self
    }

    /// Where the next chunk starts.
    pub(super) fn position(&self) -> &Position {
        &self.pos
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
        self.next_chunk_listing(list)
    }

    /// [`Reader::next_chunk`], listing the directory with `list`.
    fn next_chunk_listing(
        &mut self,
        mut list: impl FnMut(&Path) -> io::Result<Listing>,
    ) -> io::Result<Option<Chunk>> {
        loop {
            let (files, strays) = list(&self.dir)?;
            for name in strays {
                if !self.strays.contains(&name) {
                    warn_stray(&self.dir, &name);
                    self.strays.insert(name);
                }
            }
            if self.pos.is_end() {
                // A finished file shipped whole, deleted since or not: on with the next.
                if !self.move_on(&mut list)? {
                    return Ok(None);
                }
                continue;
            }
            if files.binary_search(&self.pos.file).is_err() {
                // Not listed: the start of the log, a file deleted before it was shipped whole,
                // or one the listing missed (made while it was renamed). The first file after
                // the position is where reading goes on, once the file is known to be gone.
                if !files.iter().any(|f| *f > self.pos.file) {
                    return Ok(None);
                }
                let start = self.pos.file.is_empty();
                if start || !self.still_there()? {
                    let gone = self.pos.clone();
                    if !self.move_on(&mut list)? {
                        return Ok(None);
                    }
                    if !start {
                        // Retention deletes a file only once the checkpoint is past it or at
                        // its end as a finished file: someone else did, whole (offset 0) or
                        // after part of it was shipped.
                        tracing::warn!(
                            file = %gone.file,
                            offset = gone.offset,
                            "click file gone before it was fully shipped; shipping goes on with \
                             the next"
                        );
                        self.count_skip("file_gone");
                    }
                    continue;
                }
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
            let finished = self.pos.clone();
            if !self.move_on(&mut list)? {
                return Ok(None);
            }
            if len > finished.offset {
                tracing::warn!(
                    file = %finished.file,
                    bytes = len - finished.offset,
                    "finished click file ends in a partial line; skipped it"
                );
                self.count_skip("partial_line");
            }
        }
    }

    /// Moves the position to the start of the first click file after its file, as listings
    /// taken now show it: not the listing that showed the file finished or gone. A listing read
    /// while a file is renamed (closed) may miss it under both names, and skip it; its rename
    /// is over before the next listing begins, so the first file after the position in either
    /// of two listings is the next one. Whether it moved: it stays put when there is none (yet).
    fn move_on(&mut self, list: &mut impl FnMut(&Path) -> io::Result<Listing>) -> io::Result<bool> {
        let mut next: Option<String> = None;
        for _ in 0..2 {
            let (files, _) = list(&self.dir)?;
            let first = files.into_iter().find(|f| *f > self.pos.file);
            next = match (next, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let Some(next) = next else {
            return Ok(false);
        };
        self.seek(Position {
            file: next,
            offset: 0,
        });
        Ok(true)
    }

    /// Whether the file at the position can still be opened (or is open already), under either
    /// name.
    fn still_there(&mut self) -> io::Result<bool> {
        match open_file(&mut self.open, &self.dir, &self.pos) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Counts a skip for `reason` (one of [`super::metrics::SKIP_REASONS`]).
    fn count_skip(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.skipped.with_label_values(&[reason]).inc();
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
            && !self.pos.is_end()
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
            if let Some((name, kind, error)) = &self.sync_failed
                && *name == open.name
            {
                return Err(sync_failed(name, *kind, error));
            }
            if let Err(e) = open.file.sync_data() {
                let failed = sync_failed(&open.name, e.kind(), &e.to_string());
                self.sync_failed = Some((open.name.clone(), e.kind(), e.to_string()));
                return Err(failed);
            }
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
        Ok(list(&self.dir)?.0)
    }
}

/// The error of a click file whose sync failed, each time it would be read past what was synced.
fn sync_failed(name: &str, kind: io::ErrorKind, error: &str) -> io::Error {
    io::Error::new(
        kind,
        format!(
            "syncing {name} failed ({error}): its lines past those already shipped may not be on \
             disk, so none is shipped until the edge is restarted; check the disk (the kernel's \
             log says what failed)"
        ),
    )
}

/// The click files of `dir` by closed name, in order, and the files named like click files that
/// are not ones.
fn list(dir: &Path) -> io::Result<Listing> {
    let (mut names, mut strays) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(closed) = closed_name(name) {
            names.push(closed.to_owned());
        } else if is_stray(name) {
            strays.push(name.to_owned());
        }
    }
    names.sort();
    // A file seen under both names (renamed while the directory was read) counts once.
    names.dedup();
    Ok((names, strays))
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
mod tests;
