//! How far the stream is behind the click log: the unshipped bytes and the age of the oldest
//! unshipped click (the lag metrics and health), and the checkpoint marked at the end of a
//! finished file. Blocking file reads, run on the blocking pool.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::Position;
use super::reader::Reader;
use crate::clicks::file::{closed_name, open_name};

/// `acked` at the end of its file ([`Position::END`]) when that file is finished and
/// acknowledged to its last byte; else `acked` as it is. Blocking.
///
/// Finished: its closed name is there (it is never written again), or, when its rename to that
/// name failed (the next start renames it), a newer click file is: the writer moved on.
pub(super) fn at_end_if_finished(dir: &Path, acked: Position) -> Position {
    if acked.file.is_empty() || acked.is_end() {
        return acked;
    }
    let len = match std::fs::metadata(dir.join(&acked.file)) {
        Ok(m) => m.len(),
        // The writer's file, usually: finished once a newer file is there, which is looked for
        // first. Once there is one the writer never writes this file again, so the length read
        // after is its last (read before, a batch appended and a rotation between the two reads
        // would mark unshipped lines shipped).
        Err(_) if newer_exists(dir, &acked.file) => {
            match std::fs::metadata(dir.join(open_name(&acked.file))) {
                Ok(m) => m.len(),
                Err(_) => return acked,
            }
        }
        Err(_) => return acked,
    };
    if len <= acked.offset {
        Position {
            offset: Position::END,
            ..acked
        }
    } else {
        acked
    }
}

/// Whether `dir` holds a click file newer than `file` (a closed name), under either name.
fn newer_exists(dir: &Path, file: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.file_name()
                .to_str()
                .and_then(closed_name)
                .is_some_and(|closed| closed > file)
        })
    })
}

/// Bytes of the log in `dir` after the acknowledged position `acked`, and the age at `now` of
/// the oldest click among them; zero when there is none. Blocking.
///
/// The oldest click is the first line after `acked`, which may be in a later file: when
/// shipping caught up at the end of a file and the writer went on in a new one (or nothing was
/// shipped yet), nothing is at `acked` itself while the clicks after it wait.
pub(super) fn unshipped(
    dir: &Path,
    acked: Position,
    now: SystemTime,
) -> std::io::Result<(u64, Duration)> {
    let r = Reader::new(dir, acked, 0);
    let bytes = r.unshipped_bytes()?;
    if bytes == 0 {
        return Ok((0, Duration::ZERO));
    }
    // `{"ts":"2025-11-24T16:00:00.123Z"`: the timestamp is the first member.
    let head = r.peek(40)?;
    // No `ts` to read (a line still being written, not yet as long as its timestamp): 0, as
    // the metric's documentation says; the bytes still show.
    let age = head
        .as_deref()
        .and_then(line_ts)
        .and_then(|ts| now.duration_since(ts).ok())
        .unwrap_or_default();
    Ok((bytes, age))
}

/// The `ts` of a click line from its first bytes.
fn line_ts(head: &[u8]) -> Option<SystemTime> {
    let rest = head.strip_prefix(b"{\"ts\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.into())
}
