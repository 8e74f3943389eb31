//! The click id floor: `<clicks.dir>/click-seq` holds the sequence number of the newest click in a
//! closed file, written (atomically and durably) as each file is closed.
//!
//! Why: the next click's id is recovered from the newest line of the log at start
//! ([`crate::clicks::ClickIds`]). Closed files can then disappear (`clicks.retention`,
//! `clicks.max_total_bytes`, a shipping agent that removes what it shipped, an operator); were
//! the newest one gone, a restart would hand out numbers the stream and its consumers have already
//! seen, and consumers deduplicating by `click_id` would discard new clicks as repeats. Only
//! closed files are ever deleted, and each is closed after the floor covers it, so the sequence
//! goes on after `max(newest line, floor)` and no number is handed out twice.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;

/// The floor's file name in the click log directory.
pub(super) const FLOOR_FILE: &str = "click-seq";

/// The stored floor: 0 when there is none yet.
pub(super) fn load(dir: &Path) -> io::Result<u64> {
    match std::fs::read_to_string(dir.join(FLOOR_FILE)) {
        Ok(text) => text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{FLOOR_FILE} holds {:?}, not a click sequence number; it must name the \
                     newest click id's number (see the newest click file's last line)",
                    text.trim()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Replaces the floor with `seq`, durably: a temporary file synced, renamed over it, and the
/// directory synced.
pub(super) fn store(dir: &Path, seq: u64) -> io::Result<()> {
    let tmp = dir.join(format!("{FLOOR_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    writeln!(f, "{seq}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FLOOR_FILE))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_floor_loads_back_and_none_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), 0);
        store(dir.path(), 41).unwrap();
        store(dir.path(), 42).unwrap();
        assert_eq!(load(dir.path()).unwrap(), 42);
    }

    #[test]
    fn a_floor_that_is_not_a_number_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FLOOR_FILE), "forty-two\n").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("forty-two"), "{e}");
    }
}
