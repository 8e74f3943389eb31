//! Startup recovery of the click log: a crash in the middle of a write (power loss, a partial
//! write on a full disk that could not be rolled back) can leave the newest click file ending in a
//! torn line. Before the writer starts, the torn tail is copied to `<file>.torn` next to it and the
//! file is truncated to the end of its last complete line, so readers of the log see only whole
//! JSON lines and no record is lost (the tail is kept) or duplicated (nothing is rewritten).
//!
//! Only the newest non-empty click file is examined: the writer only appends to the newest file,
//! never reopens an older one, and does not start a new file while an older one may end in a
//! partial batch. New clicks always go to a new file; this module never writes clicks.
//!
//! Then every file a crash left open (`clicks-….jsonl.open`, see `naming`) is closed: renamed to
//! its closed name, with a warning. None of them is the one to append to, since the writer starts
//! a new file; so after recovery every click file is closed and whole, and a loader listing
//! `clicks-*.jsonl` sees the clicks written before the crash.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use super::access::{self, Access};
use super::naming;
use crate::metrics::Metrics;

/// Bytes read per step when searching a file backwards for a newline.
const CHUNK: usize = 64 << 10;

/// The torn tail of a click file could not be quarantined (the file was left as it was), or a
/// file left open could not be closed.
#[derive(Debug, thiserror::Error)]
#[error("recovering click file {path}")]
pub(super) struct RecoverError {
    pub(super) path: PathBuf,
    /// What failed.
    pub(super) step: Step,
    #[source]
    pub(super) source: io::Error,
}

/// The step of recovery that failed: each wants its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Listing the directory, or checking the newest file for a torn tail and moving it aside.
    Torn,
    /// Closing a file left open: renaming it to its closed name.
    Close,
}

/// What recovery did to a torn file.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Quarantined {
    /// The click file, now ending at its last complete line (by its name before closing).
    pub(super) file: PathBuf,
    /// Where the torn bytes went.
    pub(super) torn: PathBuf,
    /// Length of the click file after truncation.
    pub(super) kept_bytes: u64,
    /// Bytes moved to `torn`.
    pub(super) torn_bytes: u64,
}

/// Repairs the newest non-empty click file in `dir` if it ends in a torn line (the quarantine file
/// gets `access`'s mode): warns, counts `clickedge_click_log_torn_total`, and says what it did
/// (`None` when the log is clean). Then warns about each file named like a click file by hand
/// (`naming::is_stray`: ignored), and closes the files left open.
pub(super) fn recover(
    dir: &Path,
    access: Access,
    metrics: &Metrics,
) -> Result<Option<Quarantined>, RecoverError> {
    let err = |path: &Path, step| {
        let path = path.to_path_buf();
        move |source| RecoverError { path, step, source }
    };
    let newest = newest_click_file(dir).map_err(err(dir, Step::Torn))?;
    let quarantined = match newest {
        Some(path) => quarantine_torn_tail(&path, access).map_err(err(&path, Step::Torn))?,
        None => None,
    };
    if let Some(done) = &quarantined {
        metrics.click_log_torn.inc();
        tracing::warn!(
            file = %done.file.display(),
            kept_bytes = done.kept_bytes,
            torn_bytes = done.torn_bytes,
            quarantine = %done.torn.display(),
            "click log ended in a torn line (crash during a write); moved the partial line aside"
        );
    }
    for entry in std::fs::read_dir(dir).map_err(err(dir, Step::Torn))? {
        let name = entry.map_err(err(dir, Step::Torn))?.file_name();
        if let Some(name) = name.to_str()
            && naming::is_stray(name)
        {
            naming::warn_stray(dir, name);
        }
    }
    for path in click_files(dir).map_err(err(dir, Step::Torn))? {
        if naming::is_click_file(&name_of(&path)) {
            continue;
        }
        let closed = naming::close(&path).map_err(err(&path, Step::Close))?;
        tracing::warn!(
            file = %closed.display(),
            bytes = std::fs::metadata(&closed).map_or(0, |m| m.len()),
            "click file left open (the edge stopped without closing it): closed it"
        );
    }
    Ok(quarantined)
}

/// The last line of the newest non-empty click file (after [`recover`], a whole line), without
/// its newline: where the sequence of click ids goes on from at start. On failure, the file
/// that could not be read (the directory when listing it failed) with the error.
pub(super) fn last_line(dir: &Path) -> Result<Option<Vec<u8>>, (PathBuf, io::Error)> {
    let Some(path) = newest_click_file(dir).map_err(|e| (dir.to_path_buf(), e))? else {
        return Ok(None);
    };
    read_last_line(&path).map(Some).map_err(|e| (path, e))
}

/// The last line of the click file at `path`, which is not empty and ends in a newline.
fn read_last_line(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    // The file is not empty and ends in a newline: the line is what follows the newline before.
    let end = len.saturating_sub(1);
    let start = rfind_newline(&file, end)?.map_or(0, |nl| nl + 1);
    let mut line = vec![0; usize::try_from(end - start).map_err(io::Error::other)?];
    file.read_exact_at(&mut line, start)?;
    Ok(line)
}

/// The newest click file (open or closed) that is not empty. Names sort in time order (see
/// [`naming`]); an empty newest file means the writer opened it and died before writing, so the
/// one before it is the last that was written to.
fn newest_click_file(dir: &Path) -> io::Result<Option<PathBuf>> {
    for path in click_files(dir)?.into_iter().rev() {
        if std::fs::metadata(&path)?.len() > 0 {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The click files of `dir`, open or closed, in the order of their closed names.
fn click_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(closed) = name.to_str().and_then(naming::closed_name)
            && entry.file_type()?.is_file()
        {
            files.push((closed.to_owned(), entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Moves the torn tail of `path`, if any, to a quarantine file and truncates `path` to its clean
/// prefix.
fn quarantine_torn_tail(path: &Path, access: Access) -> io::Result<Option<Quarantined>> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let kept_bytes = clean_len(&file, len)?;
    if kept_bytes == len {
        return Ok(None);
    }
    // Named after the closed name: the tail belongs to that file whatever its state.
    let closed = path.with_file_name(naming::closed_name(&name_of(path)).unwrap_or_default());
    let torn = quarantine_path(&closed)?;
    // Quarantine first, durably, and only then truncate: a crash in between leaves the tail in
    // both places, and the next start quarantines it again rather than losing it.
    let mut out = access::create_new(&torn, access)?;
    file.seek(SeekFrom::Start(kept_bytes))?;
    let torn_bytes = io::copy(&mut (&mut file).take(len - kept_bytes), &mut out)?;
    out.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    file.set_len(kept_bytes)?;
    file.sync_all()?;
    Ok(Some(Quarantined {
        file: path.to_path_buf(),
        torn,
        kept_bytes,
        torn_bytes,
    }))
}

/// `<file>.torn`, or `<file>.torn.<n>` if that exists (left by a recovery interrupted between
/// quarantine and truncation: keep it, a duplicate in quarantine is harmless, a lost tail is not).
fn quarantine_path(path: &Path) -> io::Result<PathBuf> {
    let mut name = path.as_os_str().to_owned();
    name.push(".torn");
    let first = PathBuf::from(name);
    if !first.try_exists()? {
        return Ok(first);
    }
    for n in 1u32.. {
        let mut name = first.as_os_str().to_owned();
        name.push(format!(".{n}"));
        let candidate = PathBuf::from(name);
        if !candidate.try_exists()? {
            return Ok(candidate);
        }
    }
    Err(io::Error::other("no free quarantine file name"))
}

/// Length of the longest prefix of `file` (of length `len`) that ends with a complete line
/// holding valid JSON; 0 if there is none.
fn clean_len(file: &File, len: u64) -> io::Result<u64> {
    // Bytes after the last newline are a line cut short.
    let mut end = rfind_newline(file, len)?.map_or(0, |nl| nl + 1);
    // A newline-terminated line that is not JSON is torn too: after a power loss some file
    // systems show blocks that were allocated but never written as zeros.
    while end > 0 {
        let start = rfind_newline(file, end - 1)?.map_or(0, |nl| nl + 1);
        let mut line = vec![0; usize::try_from(end - 1 - start).map_err(io::Error::other)?];
        file.read_exact_at(&mut line, start)?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&line).is_ok() {
            break;
        }
        end = start;
    }
    Ok(end)
}

/// Offset of the last `\n` in the first `before` bytes of `file`, reading backwards.
fn rfind_newline(file: &File, before: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0; CHUNK];
    let mut hi = before;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK as u64);
        // `hi - lo <= CHUNK`, so the cast cannot truncate.
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE_A: &str = "{\"ts\":\"2025-11-24T16:00:00.000Z\",\"kind\":\"click\",\"url\":\"a\"}\n";
    const LINE_B: &str = "{\"ts\":\"2025-11-24T16:00:01.000Z\",\"kind\":\"click\",\"url\":\"b\"}\n";

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn tail_without_newline_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let clean = format!("{LINE_A}{LINE_B}");
        let torn = "{\"ts\":\"2025-11-24T16:00:02.0";
        let path = write(
            dir.path(),
            "clicks-20251124T160000.000Z.jsonl",
            format!("{clean}{torn}").as_bytes(),
        );
        let metrics = Metrics::unregistered();
        let done = recover(dir.path(), Access::Private, &metrics)
            .unwrap()
            .unwrap();
        assert_eq!(done.kept_bytes, clean.len() as u64);
        assert_eq!(done.torn_bytes, torn.len() as u64);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), clean);
        assert_eq!(std::fs::read_to_string(&done.torn).unwrap(), torn);
        assert!(done.torn.to_str().unwrap().ends_with(".jsonl.torn"));
        assert_eq!(metrics.click_log_torn.get(), 1);
        // Recovery is idempotent: the repaired file is clean now.
        assert_eq!(
            recover(dir.path(), Access::Private, &metrics).unwrap(),
            None
        );
        assert_eq!(metrics.click_log_torn.get(), 1);
    }

    #[test]
    fn trailing_lines_that_are_not_json_are_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        // Zero-filled blocks after a power loss, with a newline in them.
        let garbage = b"\0\0\0\0\n\0\0\0";
        let mut bytes = format!("{LINE_A}{LINE_B}").into_bytes();
        bytes.extend_from_slice(garbage);
        let path = write(dir.path(), "clicks-20251124T160000.000Z.jsonl", &bytes);
        let done = recover(dir.path(), Access::Private, &Metrics::unregistered())
            .unwrap()
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{LINE_A}{LINE_B}")
        );
        assert_eq!(std::fs::read(&done.torn).unwrap(), garbage);
    }

    #[test]
    fn clean_log_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "clicks-20251124T160000.000Z.jsonl",
            format!("{LINE_A}{LINE_B}").as_bytes(),
        );
        let metrics = Metrics::unregistered();
        assert_eq!(
            recover(dir.path(), Access::Private, &metrics).unwrap(),
            None
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{LINE_A}{LINE_B}")
        );
        assert_eq!(metrics.click_log_torn.get(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn only_the_newest_non_empty_file_is_examined() {
        let dir = tempfile::tempdir().unwrap();
        // Older files are never appended to again; one that is torn is not ours to judge.
        let older = write(dir.path(), "clicks-20251124T150000.000Z.jsonl", b"{\"x\"");
        let newest = write(
            dir.path(),
            "clicks-20251124T160000.000Z.jsonl",
            format!("{LINE_A}{{\"y\"").as_bytes(),
        );
        // Opened, then the process died before the first write.
        write(dir.path(), "clicks-20251124T170000.000Z.jsonl", b"");
        write(dir.path(), "notes.txt", b"not a click file");
        let done = recover(dir.path(), Access::Private, &Metrics::unregistered())
            .unwrap()
            .unwrap();
        assert_eq!(done.file, newest);
        assert_eq!(std::fs::read_to_string(&newest).unwrap(), LINE_A);
        assert_eq!(std::fs::read(&older).unwrap(), b"{\"x\"");
    }

    #[test]
    fn files_left_open_by_a_crash_are_repaired_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        // A file whose close failed, then the one being written at the crash, torn, then one
        // opened just before the crash and never written.
        write(
            dir.path(),
            "clicks-20251124T150000.000Z.jsonl.open",
            LINE_A.as_bytes(),
        );
        let open = write(
            dir.path(),
            "clicks-20251124T160000.000Z.jsonl.open",
            format!("{LINE_A}{LINE_B}{{\"y\"").as_bytes(),
        );
        write(dir.path(), "clicks-20251124T170000.000Z.jsonl.open", b"");
        let metrics = Metrics::unregistered();
        let done = recover(dir.path(), Access::Private, &metrics)
            .unwrap()
            .unwrap();
        assert_eq!(done.file, open);
        let torn = dir.path().join("clicks-20251124T160000.000Z.jsonl.torn");
        assert_eq!(done.torn, torn);
        assert_eq!(std::fs::read(&torn).unwrap(), b"{\"y\"");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "clicks-20251124T150000.000Z.jsonl",
                "clicks-20251124T160000.000Z.jsonl",
                "clicks-20251124T160000.000Z.jsonl.torn",
                "clicks-20251124T170000.000Z.jsonl",
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("clicks-20251124T160000.000Z.jsonl")).unwrap(),
            format!("{LINE_A}{LINE_B}")
        );
        assert_eq!(
            last_line(dir.path()).unwrap().unwrap(),
            LINE_B.trim_end().as_bytes()
        );
        // Nothing left to do the second time.
        assert_eq!(
            recover(dir.path(), Access::Private, &metrics).unwrap(),
            None
        );
        assert_eq!(metrics.click_log_torn.get(), 1);
    }

    /// A file named like a click file by hand sorts after every real one: were it taken for
    /// the newest, its tail would be cut and click ids would go on from its last line.
    #[test]
    fn a_file_named_by_hand_is_neither_repaired_nor_read_for_click_ids() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "clicks-20251124T160000.000Z.jsonl",
            LINE_A.as_bytes(),
        );
        let stray = format!("{LINE_B}{{\"y\"");
        let restored = write(dir.path(), "clicks-restored.jsonl", stray.as_bytes());
        let open = write(dir.path(), "clicks-restored.jsonl.open", b"{");
        let metrics = Metrics::unregistered();
        assert_eq!(
            recover(dir.path(), Access::Private, &metrics).unwrap(),
            None
        );
        assert_eq!(std::fs::read_to_string(&restored).unwrap(), stray);
        assert_eq!(std::fs::read(&open).unwrap(), b"{");
        assert_eq!(metrics.click_log_torn.get(), 0);
        assert_eq!(
            last_line(dir.path()).unwrap().unwrap(),
            LINE_A.trim_end().as_bytes()
        );
    }

    #[test]
    fn torn_tail_longer_than_a_read_chunk_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let torn = format!("{{\"url\":\"{}", "x".repeat(3 * CHUNK + 17));
        let path = write(
            dir.path(),
            "clicks-20251124T160000.000Z.jsonl",
            format!("{LINE_A}{torn}").as_bytes(),
        );
        let done = recover(dir.path(), Access::Private, &Metrics::unregistered())
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), LINE_A);
        assert_eq!(std::fs::read_to_string(&done.torn).unwrap(), torn);
    }

    #[test]
    fn file_holding_only_a_torn_line_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "clicks-20251124T160000.000Z.jsonl", b"{\"ts\"");
        let done = recover(dir.path(), Access::Private, &Metrics::unregistered())
            .unwrap()
            .unwrap();
        assert_eq!(done.kept_bytes, 0);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        assert_eq!(std::fs::read(&done.torn).unwrap(), b"{\"ts\"");
    }

    #[test]
    fn interrupted_recovery_keeps_the_earlier_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "clicks-20251124T160000.000Z.jsonl",
            format!("{LINE_A}{{\"y\"").as_bytes(),
        );
        // A quarantine written by a recovery that died before truncating.
        let first = write(
            dir.path(),
            "clicks-20251124T160000.000Z.jsonl.torn",
            b"{\"y\"",
        );
        let done = recover(dir.path(), Access::Private, &Metrics::unregistered())
            .unwrap()
            .unwrap();
        assert_ne!(done.torn, first);
        assert_eq!(std::fs::read(&first).unwrap(), b"{\"y\"");
        assert_eq!(std::fs::read(&done.torn).unwrap(), b"{\"y\"");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), LINE_A);
    }
}
