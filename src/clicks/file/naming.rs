//! Click file names: `clicks-<UTC time of opening, ms>.jsonl`
//! (`clicks-20261125T091000.123Z.jsonl`), so a plain sort of the directory is time order, with no
//! characters that need quoting. Both ways: naming a new file ([`create_next`]) and recognising
//! one ([`is_click_file`]), which startup recovery relies on to find the newest file.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::clicks::format_ts;
use crate::clock::Clock;

const PREFIX: &str = "clicks-";
const SUFFIX: &str = ".jsonl";

/// Whether `name` is a click file's name (not a quarantined tail, not anything else).
pub(super) fn is_click_file(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(SUFFIX)
}

/// Creates a new click file in `dir` for appending, named for `clock`'s time, and returns it
/// with its path. Never reuses a name: if one is taken (two files within a millisecond) the
/// next millisecond is tried, so the new name still sorts after every earlier one.
pub(super) fn create_next(dir: &Path, clock: &Clock) -> io::Result<(File, PathBuf)> {
    let mut at = clock.now();
    loop {
        let path = dir.join(file_name(at));
        match OpenOptions::new().append(true).create_new(true).open(&path) {
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
                let (_, path) = create_next(dir.path(), &clock).unwrap();
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
        assert!(names.iter().all(|n| is_click_file(n)));
        assert!(!is_click_file("clicks-20251124T160000.000Z.jsonl.torn"));
    }
}
