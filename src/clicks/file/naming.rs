//! Click file names: `clicks-<UTC time of opening, ms>.jsonl` (`clicks-20261125T091000.123Z.jsonl`),
//! so a plain sort of the directory is the order the files were written in (a new name always
//! sorts after the newest, even if the clock was set back), with no characters that need quoting.
//!
//! The file being written carries `.open` after that name (`clicks-….jsonl.open`) and is renamed
//! to its closed name when it is closed (on rotation, at shutdown, or by startup recovery after a
//! crash): a loader that lists `clicks-*.jsonl` only ever sees finished files, whole. The rename
//! keeps the inode, so a reader holding the file open reads on, and the closed name is the file's
//! name for good: positions in the log (the shipper's checkpoint) use it in both states.
//!
//! Both ways: naming a new file ([`create_next`]) and closing it ([`close`]), and recognising
//! them ([`is_click_file`]: closed; [`closed_name`]: either state), which startup recovery,
//! retention and the shipper rely on, and which files of the directory are the log's at all
//! ([`is_log_file`]: click files and their quarantined tails).
//!
//! A click file's name is the prefix, a time in exactly the form above, and the suffix: nothing
//! else is one, because name order is the log's order only for such names. A file named by hand
//! (`clicks-restored.jsonl`) would sort after every real one (letters after digits), and the
//! shipper would move to it and never come back, retention would count everything before it as
//! shipped, and recovery would read its tail for click ids. Such a file is left alone
//! ([`is_stray`] finds it, to warn about it): neither read, shipped, counted nor deleted.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::access::{self, Access};
use crate::clicks::format_ts;
use crate::clock::Clock;

const PREFIX: &str = "clicks-";
const SUFFIX: &str = ".jsonl";
/// After [`SUFFIX`] while the file is written.
const OPEN: &str = ".open";

/// Whether `name` is a closed click file's name: the prefix, a time as [`create_next`] writes
/// it, and the suffix (not one being written, not a quarantined tail, not a file named by hand,
/// not anything else). The one test of what belongs to the log, which everything that lists the
/// directory uses (through [`closed_name`]).
pub(in crate::clicks) fn is_click_file(name: &str) -> bool {
    name_time(name).is_some()
}

/// Whether `name` looks like a click file, closed or open, but is not one ([`is_click_file`]):
/// a file named by hand, which the log ignores and an operator should move out of the directory.
pub(in crate::clicks) fn is_stray(name: &str) -> bool {
    let closed = name.strip_suffix(OPEN).unwrap_or(name);
    closed.starts_with(PREFIX) && closed.ends_with(SUFFIX) && !is_click_file(closed)
}

/// Warns that the file `name` in `dir` is ignored ([`is_stray`]), and what to do about it.
pub(in crate::clicks) fn warn_stray(dir: &Path, name: &str) {
    tracing::warn!(
        file = %dir.join(name).display(),
        "file in the click log directory is named like a click file but not \
         clicks-<UTC time, as yyyymmddThhmmss.mmmZ>.jsonl: ignored (never read, shipped, counted \
         or deleted); move it out of the directory"
    );
}

/// The closed name of the click file `name`, in either state (`….jsonl` or `….jsonl.open`);
/// `None` if it is not a click file.
pub(in crate::clicks) fn closed_name(name: &str) -> Option<&str> {
    let closed = name.strip_suffix(OPEN).unwrap_or(name);
    is_click_file(closed).then_some(closed)
}

/// The name the click file `closed` has while it is written.
pub(in crate::clicks) fn open_name(closed: &str) -> String {
    format!("{closed}{OPEN}")
}

/// Whether `name` is one of the click log's files: a click file in either state, or a torn tail
/// quarantined next to one (`<click file>.torn`, `<click file>.torn.<n>`). A file named like a
/// click file by hand ([`is_stray`]) counts too: it is ignored by the log, but it may hold clicks,
/// so it gets the click files' mode.
pub(super) fn is_log_file(name: &str) -> bool {
    closed_name(name).is_some()
        || is_stray(name)
        || (name.starts_with(PREFIX) && name.contains(".jsonl.torn"))
}

/// Creates a new click file in `dir` for appending, with `access`'s mode, under its open name
/// for `clock`'s time, and returns it with its path. The new name sorts after every click file
/// already in `dir`, open or closed, and after `after` (the file the shipper's checkpoint is in,
/// which may be gone): the shipper, retention and startup recovery take name order for the
/// log's order, and the shipper reads only from its checkpoint's name on. So a name taken (two
/// files within a millisecond) or a clock set back (a host restored from a snapshot, a
/// corrected clock) gets the millisecond after the newest name instead of its own, the latter
/// with a warning.
pub(super) fn create_next(
    dir: &Path,
    clock: &Clock,
    access: Access,
    after: Option<&str>,
) -> io::Result<(File, PathBuf)> {
    let mut at = clock.now();
    let checkpoint = after.and_then(|name| Some((name.to_owned(), name_time(name)?)));
    let newest = match (newest_name(dir)?, checkpoint) {
        (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
        (a, b) => a.or(b),
    };
    if let Some((newest, its_time)) = newest
        && its_time >= at
    {
        if its_time > at {
            tracing::warn!(
                newest = %newest,
                now = %format_ts(at),
                "the clock is behind the newest click file; the next one is named after it, so \
                 that the log stays in order"
            );
        }
        at = its_time + Duration::from_millis(1);
    }
    loop {
        let closed = dir.join(file_name(at));
        let path = dir.join(open_name(&file_name(at)));
        let created = if closed.try_exists()? {
            Err(io::ErrorKind::AlreadyExists.into())
        } else {
            access::create_new(&path, access)
        };
        match created {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Strictly later each time: ends whether or not the clock moves (a manual one).
                at = clock.now().max(at + Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Closes the click file at `path` by name: renames `….jsonl.open` to `….jsonl` and syncs the
/// directory, so the closed name survives a crash. Returns the closed path (`path` itself if it
/// was closed already). Refuses to replace a file that has the closed name.
pub(super) fn close(path: &Path) -> io::Result<PathBuf> {
    let closed = rename_closed(path)?;
    sync_dir_of(&closed)?;
    Ok(closed)
}

/// [`close`] without the directory's sync: once renamed the file has its closed name whatever
/// the sync says, and the caller must go on with that name.
pub(super) fn rename_closed(path: &Path) -> io::Result<PathBuf> {
    let Some(closed) = path
        .to_str()
        .and_then(|p| p.strip_suffix(OPEN))
        .map(PathBuf::from)
    else {
        return Ok(path.to_path_buf());
    };
    if closed.try_exists()? {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists besides {}: move one of them away",
                closed.display(),
                path.display()
            ),
        ));
    }
    std::fs::rename(path, &closed)?;
    Ok(closed)
}

/// Syncs the directory holding `path`, so that a name given to a file in it survives a crash.
pub(super) fn sync_dir_of(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn file_name(t: SystemTime) -> String {
    format!("{PREFIX}{}{SUFFIX}", file_stamp(t))
}

/// The newest click file's closed name in `dir` (a file named otherwise by hand is none), and
/// the time it reads as; none if there is none.
fn newest_name(dir: &Path) -> io::Result<Option<(String, SystemTime)>> {
    let mut newest: Option<(String, SystemTime)> = None;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(closed) = name.to_str().and_then(closed_name)
            && let Some(at) = name_time(closed)
            && newest.as_ref().is_none_or(|(_, t)| at > *t)
        {
            newest = Some((closed.to_owned(), at));
        }
    }
    Ok(newest)
}

/// The time a click file's closed name stands for (the inverse of [`file_name`]); none for any
/// name [`file_name`] would not write, so that names in order are times in order.
fn name_time(closed: &str) -> Option<SystemTime> {
    let stamp = closed.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let format = time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:3]Z"
    );
    let t: SystemTime = time::PrimitiveDateTime::parse(stamp, format)
        .ok()?
        .assume_utc()
        .into();
    (file_stamp(t) == stamp).then_some(t)
}

/// `20261125T091000.123Z`: sortable, no characters that need quoting.
fn file_stamp(t: SystemTime) -> String {
    format_ts(t).replace(['-', ':'], "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, from_unix_secs};

    #[test]
    fn names_sort_in_time_order_even_within_one_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        // A clock that does not move: each name must still come after the last.
        let clock = ManualClock::new(from_unix_secs(1_764_000_000)).clock();
        let names: Vec<String> = (0..3)
            .map(|_| {
                let (_, path) = create_next(dir.path(), &clock, Access::Private, None).unwrap();
                path.file_name().unwrap().to_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "clicks-20251124T160000.000Z.jsonl.open",
                "clicks-20251124T160000.001Z.jsonl.open",
                "clicks-20251124T160000.002Z.jsonl.open",
            ]
        );
        assert!(names.iter().all(|n| !is_click_file(n) && is_log_file(n)));
        assert_eq!(
            closed_name(&names[0]),
            Some("clicks-20251124T160000.000Z.jsonl")
        );
        // Closed, a name is still taken: the next file does not reuse it.
        let closed = close(&dir.path().join(&names[0])).unwrap();
        assert_eq!(closed, dir.path().join("clicks-20251124T160000.000Z.jsonl"));
        assert!(!dir.path().join(&names[0]).exists());
        assert_eq!(close(&closed).unwrap(), closed);
        let clock = ManualClock::new(from_unix_secs(1_764_000_000)).clock();
        let (_, next) = create_next(dir.path(), &clock, Access::Private, None).unwrap();
        assert!(next.ends_with("clicks-20251124T160000.003Z.jsonl.open"));
        assert!(is_click_file("clicks-20251124T160000.000Z.jsonl"));
        assert_eq!(
            closed_name("clicks-20251124T160000.000Z.jsonl"),
            Some("clicks-20251124T160000.000Z.jsonl")
        );
        assert!(!is_click_file("clicks-20251124T160000.000Z.jsonl.torn"));
        assert_eq!(closed_name("clicks-20251124T160000.000Z.jsonl.torn"), None);
        assert!(is_log_file("clicks-20251124T160000.000Z.jsonl.torn"));
        assert!(is_log_file("clicks-20251124T160000.000Z.jsonl.torn.2"));
        assert!(!is_log_file("notes.txt"));
    }

    /// A clock set back (a restored snapshot, a corrected clock) must not name a file before
    /// the newest one: the shipper, retention and recovery read the log in name order.
    #[test]
    fn a_clock_set_back_names_the_next_file_after_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let later = ManualClock::new(from_unix_secs(1_764_003_600)).clock();
        let (_, first) = create_next(dir.path(), &later, Access::Private, None).unwrap();
        close(&first).unwrap();
        let earlier = ManualClock::new(from_unix_secs(1_764_000_000)).clock();
        let (_, next) = create_next(dir.path(), &earlier, Access::Private, None).unwrap();
        assert!(
            next.ends_with("clicks-20251124T170000.001Z.jsonl.open"),
            "{}",
            next.display()
        );
        // Open or closed, the newest counts; a clock ahead of it names by itself.
        let (_, after) = create_next(dir.path(), &earlier, Access::Private, None).unwrap();
        assert!(after.ends_with("clicks-20251124T170000.002Z.jsonl.open"));
        let ahead = ManualClock::new(from_unix_secs(1_764_007_200)).clock();
        let (_, own) = create_next(dir.path(), &ahead, Access::Private, None).unwrap();
        assert!(own.ends_with("clicks-20251124T180000.000Z.jsonl.open"));
        assert_eq!(
            name_time("clicks-20251124T170000.001Z.jsonl"),
            Some(from_unix_secs(1_764_003_600) + Duration::from_millis(1))
        );
        assert_eq!(name_time("clicks-notatime.jsonl"), None);
    }

    /// Every file gone (deleted by hand or by an agent) and the clock set back: the next file
    /// still sorts after the one the shipper's checkpoint is in, which the shipper reads on from.
    #[test]
    fn a_clock_set_back_names_the_next_file_after_the_shippers_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = ManualClock::new(from_unix_secs(1_764_000_000)).clock();
        let checkpoint = "clicks-20251124T170000.000Z.jsonl";
        let (_, next) =
            create_next(dir.path(), &earlier, Access::Private, Some(checkpoint)).unwrap();
        assert!(
            next.ends_with("clicks-20251124T170000.001Z.jsonl.open"),
            "{}",
            next.display()
        );
        // Before any checkpoint (an empty name): named for now.
        let fresh = tempfile::tempdir().unwrap();
        let (_, own) = create_next(fresh.path(), &earlier, Access::Private, Some("")).unwrap();
        assert!(
            own.ends_with("clicks-20251124T160000.000Z.jsonl.open"),
            "{}",
            own.display()
        );
    }

    /// Name order is the log's order only for names written as times: anything else named
    /// `clicks-*.jsonl` by hand would sort after every real file and take the log with it.
    #[test]
    fn only_a_name_written_as_a_time_is_a_click_file() {
        let real = "clicks-20251124T160000.000Z.jsonl";
        assert!(is_click_file(real));
        assert_eq!(closed_name(&open_name(real)), Some(real));
        for stray in [
            "clicks-restored.jsonl",
            "clicks-.jsonl",
            "clicks-20251124T160000.000Z-copy.jsonl",
            "clicks-20251124T160000Z.jsonl",
            "clicks-20251124t160000.000z.jsonl",
            "clicks-20251124T160000.0000Z.jsonl",
        ] {
            assert!(!is_click_file(stray), "{stray}");
            assert_eq!(closed_name(stray), None, "{stray}");
            assert_eq!(closed_name(&open_name(stray)), None, "{stray}");
            assert!(is_stray(stray) && is_stray(&open_name(stray)), "{stray}");
            // Ignored by the log, but given the click files' mode all the same.
            assert!(is_log_file(stray), "{stray}");
        }
        for other in [
            real,
            "notes.txt",
            "clicks-x.jsonl.torn",
            "ship-checkpoint.json",
        ] {
            assert!(!is_stray(other), "{other}");
        }
        // Never the newest, so never what the next name is put after.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(real), b"").unwrap();
        std::fs::write(dir.path().join("clicks-restored.jsonl"), b"").unwrap();
        assert_eq!(
            newest_name(dir.path())
                .unwrap()
                .map(|(name, _)| name)
                .as_deref(),
            Some(real)
        );
    }

    #[test]
    fn closing_never_replaces_a_closed_file() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("clicks-20251124T160000.000Z.jsonl.open");
        let closed = dir.path().join("clicks-20251124T160000.000Z.jsonl");
        std::fs::write(&open, b"a\n").unwrap();
        std::fs::write(&closed, b"b\n").unwrap();
        assert!(close(&open).is_err());
        assert_eq!(std::fs::read(&closed).unwrap(), b"b\n");
        assert_eq!(std::fs::read(&open).unwrap(), b"a\n");
    }
}
