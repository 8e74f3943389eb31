//! Click file names: `clicks-<UTC time of opening, ms>.jsonl`
//! (`clicks-20261125T091000.123Z.jsonl`), so a plain sort of the directory is time order, with no
//! characters that need quoting. Both ways: naming a new file ([`create_next`]) and recognising
//! one ([`is_click_file`]), which startup recovery relies on to find the newest file, and which
//! files of the directory are the log's at all ([`is_log_file`]: click files and their
//! quarantined tails).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::access::{self, Access};
use crate::clicks::format_ts;
use crate::clock::Clock;

const PREFIX: &str = "clicks-";
const SUFFIX: &str = ".jsonl";

/// Whether `name` is a click file's name (not a quarantined tail, not anything else).
pub(in crate::clicks) fn is_click_file(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(SUFFIX)
}

/// Whether `name` is one of the click log's files: a click file, or a torn tail quarantined
/// next to one (`<click file>.torn`, `<click file>.torn.<n>`).
pub(super) fn is_log_file(name: &str) -> bool {
    name.starts_with(PREFIX) && (name.ends_with(SUFFIX) || name.contains(".jsonl.torn"))
}

/// Creates a new click file in `dir` for appending, with `access`'s mode, named for `clock`'s
/// time, and returns it with its path. Never reuses a name: if one is taken (two files within a
/// millisecond) the next millisecond is tried, so the new name still sorts after every earlier
/// one.
pub(super) fn create_next(
    dir: &Path,
    clock: &Clock,
    access: Access,
) -> io::Result<(File, PathBuf)> {
    let mut at = clock.now();
    loop {
        let path = dir.join(file_name(at));
        match access::create_new(&path, access) {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Strictly later each time: ends whether or not the clock moves (a manual one).
                at = clock.now().max(at + Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

fn file_name(t: SystemTime) -> String {
    format!("{PREFIX}{}{SUFFIX}", file_stamp(t))
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
                let (_, path) = create_next(dir.path(), &clock, Access::Private).unwrap();
                path.file_name().unwrap().to_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "clicks-20251124T160000.000Z.jsonl",
                "clicks-20251124T160000.001Z.jsonl",
                "clicks-20251124T160000.002Z.jsonl",
            ]
        );
        assert!(names.iter().all(|n| is_click_file(n) && is_log_file(n)));
        assert!(!is_click_file("clicks-20251124T160000.000Z.jsonl.torn"));
        assert!(is_log_file("clicks-20251124T160000.000Z.jsonl.torn"));
        assert!(is_log_file("clicks-20251124T160000.000Z.jsonl.torn.2"));
        assert!(!is_log_file("notes.txt"));
    }
}
