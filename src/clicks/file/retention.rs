//! The cap on the click log's size (`clicks.max_total_bytes`): before a batch is written, the
//! oldest click files are deleted until the log, the batch included, fits under the cap, the way
//! `logrotate`'s `maxsize` or journald's `SystemMaxUse` keep a log directory bounded.
//!
//! Why delete the oldest rather than stop writing: the directory is a spool that a shipping agent
//! drains, so its oldest files are the ones shipped long ago, and an edge that stopped logging
//! at the cap would lose every new click until someone came to clean up. Never silently: each
//! deletion logs a warning naming the file and counts its bytes
//! (`clickedge_click_log_deleted_files_total`, `clickedge_click_log_deleted_bytes_total`), and
//! `clickedge_click_log_bytes` shows how close the log is to the cap.
//!
//! Age (`clicks.retention`): closed files older than the bound (by their last write) are deleted
//! too, at the next write (and while no click comes, every minute: `FileSink::tick`), each
//! logged and counted the same way.
//!
//! With a stream (`clicks.stream`), a file is deleted by neither rule before the shipper's
//! checkpoint is past it or at its end as a finished file ([`Progress::fully_shipped`],
//! `Position::END`; an empty file holds nothing to ship): at the cap with the
//! oldest file not yet shipped, the write fails instead ([`DeleteError::Unshipped`]), and the
//! batcher holds, then drops and counts new clicks, as for a full disk. Clicks already kept are
//! never the ones lost.
//!
//! What counts is the click files (`clicks-<time>.jsonl` as `naming` writes them, all closed
//! once startup recovery has run; a file named so by hand is not one),
//! found at open and then tracked as they are written, closed and deleted; only closed files are
//! ever deleted (the open one is closed first, see `FileSink::make_room`); quarantined tails (`.torn`, at most one partial batch each) and
//! anything else in the directory are neither counted nor deleted. A file someone else deleted
//! (a shipping agent that removes what it shipped) is simply forgotten.

use std::collections::VecDeque;
use std::io;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::naming;
use crate::clicks::ship::Progress;
use crate::metrics::Metrics;

/// A click file could not be deleted to keep the log under the cap; it stays the oldest.
#[derive(Debug, thiserror::Error)]
pub(super) enum DeleteError {
    /// Deleting it failed.
    #[error("deleting click file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// It is not shipped yet.
    #[error("click file {path} is not shipped to the stream yet")]
    Unshipped { path: PathBuf },
}

/// A closed click file.
struct Closed {
    path: PathBuf,
    bytes: u64,
    /// Its last write.
    closed_at: SystemTime,
}

/// What the closed files are kept under.
#[derive(Clone, Default)]
pub(super) struct Bounds {
    /// `clicks.max_total_bytes`.
    pub(super) cap: Option<NonZeroU64>,
    /// `clicks.retention`.
    pub(super) max_age: Option<Duration>,
    /// With a stream: how far it has shipped.
    pub(super) shipped: Option<Progress>,
}

/// The closed click files, oldest first, and the bounds they are kept under.
pub(super) struct Retention {
    cap: Option<NonZeroU64>,
    max_age: Option<Duration>,
    shipped: Option<Progress>,
    /// Closed click files (every one but the file being written), oldest first.
    closed: VecDeque<Closed>,
    /// Sum of the sizes in `closed`.
    closed_bytes: u64,
}

impl Retention {
    /// The click files already in `dir`, all of them closed (new clicks go to a new file).
    pub(super) fn scan(dir: &Path, bounds: Bounds) -> io::Result<Retention> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !entry
                .file_name()
                .to_str()
                .is_some_and(naming::is_click_file)
            {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_file() {
                files.push((entry.path(), meta.len(), meta.modified()?));
            }
        }
        // Names sort in time order.
        files.sort();
        Ok(Retention {
            cap: bounds.cap,
            max_age: bounds.max_age,
            shipped: bounds.shipped,
            closed_bytes: files.iter().map(|(_, len, _)| len).sum(),
            closed: files
                .into_iter()
                .map(|(path, bytes, closed_at)| Closed {
                    path,
                    bytes,
                    closed_at,
                })
                .collect(),
        })
    }

    /// Bytes of the closed files.
    pub(super) fn closed_bytes(&self) -> u64 {
        self.closed_bytes
    }

    /// A file was closed at `bytes` at `now`: it is now the newest closed file.
    pub(super) fn push_closed(&mut self, path: PathBuf, bytes: u64, now: SystemTime) {
        self.closed_bytes += bytes;
        self.closed.push_back(Closed {
            path,
            bytes,
            closed_at: now,
        });
    }

    /// Deletes the closed files older than `clicks.retention` at `now` that are shipped (if a
    /// stream is configured), oldest first.
    pub(super) fn expire(&mut self, now: SystemTime, metrics: &Metrics) -> Result<(), DeleteError> {
        let Some(max_age) = self.max_age else {
            return Ok(());
        };
        while let Some(oldest) = self.closed.front() {
            let old = now
                .duration_since(oldest.closed_at)
                .is_ok_and(|age| age > max_age);
            if !old || !self.is_shipped(oldest) {
                return Ok(());
            }
            self.delete_oldest(
                metrics,
                "click file older than clicks.retention: deleted it",
            )?;
        }
        Ok(())
    }

    /// Deletes the oldest closed files until they and `more` bytes (the open file and the batch
    /// about to be written) fit under the cap. True if they fit (always, without a cap); false
    /// if every closed file is gone and they still do not.
    pub(super) fn make_room(&mut self, more: u64, metrics: &Metrics) -> Result<bool, DeleteError> {
        let Some(cap) = self.cap else {
            return Ok(true);
        };
        while self.closed_bytes.saturating_add(more) > cap.get() {
            let Some(oldest) = self.closed.front() else {
                return Ok(false);
            };
            if !self.is_shipped(oldest) {
                return Err(DeleteError::Unshipped {
                    path: oldest.path.clone(),
                });
            }
            self.delete_oldest(
                metrics,
                "click log at clicks.max_total_bytes: deleted its oldest file",
            )?;
        }
        Ok(true)
    }

    /// Whether the file may go as far as shipping is concerned.
    fn is_shipped(&self, file: &Closed) -> bool {
        let name = file
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Positions name files by their closed name (one whose rename failed keeps `.open`).
        let name = naming::closed_name(name).unwrap_or(name);
        self.shipped
            .as_ref()
            .is_none_or(|p| p.fully_shipped(name, file.bytes))
    }

    /// Deletes the oldest closed file (one there is), logging `why`.
    fn delete_oldest(&mut self, metrics: &Metrics, why: &'static str) -> Result<(), DeleteError> {
        let Some(Closed { path, bytes, .. }) = self.closed.front() else {
            return Ok(());
        };
        match std::fs::remove_file(path) {
            Ok(()) => {
                metrics.click_log_deleted_files.inc();
                metrics.click_log_deleted_bytes.inc_by(*bytes);
                tracing::warn!(
                    path = %path.display(),
                    bytes,
                    max_total_bytes = self.cap.map_or(0, NonZeroU64::get),
                    retention = ?self.max_age,
                    "{why}"
                );
            }
            // Shipped and removed by someone else: nothing to delete, and not our deletion.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "click file already gone");
            }
            Err(source) => {
                return Err(DeleteError::Io {
                    path: path.clone(),
                    source,
                });
            }
        }
        self.closed_bytes -= bytes;
        self.closed.pop_front();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cap(bytes: u64) -> Bounds {
        Bounds {
            cap: NonZeroU64::new(bytes),
            ..Bounds::default()
        }
    }

    /// Retention of `dir` under a cap of `bytes` (and `max_age`) with a stream, nothing shipped
    /// yet: the progress the test moves along.
    fn shipping(dir: &Path, bytes: u64, max_age: Option<Duration>) -> (Retention, Progress) {
        let shipped = Progress::new(crate::clicks::ship::Position::default());
        let bounds = Bounds {
            cap: NonZeroU64::new(bytes),
            max_age,
            shipped: Some(shipped.clone()),
        };
        (Retention::scan(dir, bounds).unwrap(), shipped)
    }

    #[test]
    fn old_files_go_only_once_shipped_and_unshipped_ones_stop_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "clicks-20251124T160000.000Z.jsonl", 100);
        let b = file(dir.path(), "clicks-20251124T170000.000Z.jsonl", 100);
        let metrics = Metrics::unregistered();
        let day = Duration::from_secs(86_400);
        let (mut r, shipped) = shipping(dir.path(), 250, Some(day));
        let written = std::fs::metadata(&b).unwrap().modified().unwrap();
        let later = written + 2 * day;
        // Old, but nothing is shipped: kept, and the cap cannot be kept either.
        r.expire(later, &metrics).unwrap();
        assert!(a.exists() && b.exists());
        assert!(matches!(
            r.make_room(100, &metrics),
            Err(DeleteError::Unshipped { path }) if path == a
        ));
        assert!(a.exists());
        // The checkpoint is in the second file: the first is shipped and goes, the second stays.
        shipped.set_shipped_for_tests("clicks-20251124T170000.000Z.jsonl", 0);
        r.expire(later, &metrics).unwrap();
        assert!(!a.exists() && b.exists());
        assert_eq!(metrics.click_log_deleted_files.get(), 1);
        // Not old yet: kept.
        r.expire(written, &metrics).unwrap();
        assert!(b.exists());
    }

    /// Shipping caught up at the very end of a closed file (the newest, closed to make room),
    /// and the shipper marked it so (`Position::END`): it is shipped, and the cap deletes it,
    /// or the writer could never write again.
    #[test]
    fn a_closed_file_shipped_to_its_end_is_deleted_to_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let name = "clicks-20251124T160000.000Z.jsonl";
        let f = file(dir.path(), name, 100);
        let metrics = Metrics::unregistered();
        let (mut r, shipped) = shipping(dir.path(), 150, None);
        // At its last byte, as a file still written could be: not known to be shipped whole.
        for offset in [99, 100] {
            shipped.set_shipped_for_tests(name, offset);
            assert!(matches!(
                r.make_room(60, &metrics),
                Err(DeleteError::Unshipped { path }) if path == f
            ));
        }
        shipped.set_shipped_for_tests(name, crate::clicks::ship::Position::END);
        assert!(r.make_room(60, &metrics).unwrap());
        assert!(!f.exists());
        assert_eq!(r.closed_bytes(), 0);
        assert_eq!(metrics.click_log_deleted_files.get(), 1);
    }

    /// An empty closed file (a crash right after a new file was made) holds nothing to ship:
    /// the cap deletes it though the checkpoint has not reached it, or, the newest, it would
    /// stop every write with a batch larger than the cap.
    #[test]
    fn an_empty_closed_file_is_deleted_whatever_the_checkpoint_says() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file(dir.path(), "clicks-20251124T160000.000Z.jsonl", 0);
        let metrics = Metrics::unregistered();
        let (mut r, _shipped) = shipping(dir.path(), 150, None);
        assert!(!r.make_room(200, &metrics).unwrap(), "over the cap alone");
        assert!(!empty.exists());
    }

    /// A file named like a click file by hand is not the log's: never counted, never deleted.
    #[test]
    fn a_file_named_by_hand_is_neither_counted_nor_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "clicks-20251124T160000.000Z.jsonl", 100);
        let stray = file(dir.path(), "clicks-restored.jsonl", 1000);
        let metrics = Metrics::unregistered();
        let (mut r, _shipped) = shipping(dir.path(), 150, None);
        assert_eq!(r.closed_bytes(), 100);
        assert!(r.make_room(50, &metrics).unwrap());
        assert!(matches!(
            r.make_room(60, &metrics),
            Err(DeleteError::Unshipped { path }) if path == a
        ));
        assert!(a.exists() && stray.exists());
    }

    fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![b'x'; len]).unwrap();
        path
    }

    #[test]
    fn oldest_files_go_first_until_the_new_bytes_fit() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "clicks-20251124T160000.000Z.jsonl", 100);
        let b = file(dir.path(), "clicks-20251124T170000.000Z.jsonl", 100);
        let c = file(dir.path(), "clicks-20251124T180000.000Z.jsonl", 100);
        let torn = file(dir.path(), "clicks-20251124T160000.000Z.jsonl.torn", 1000);
        let other = file(dir.path(), "notes.txt", 1000);
        let metrics = Metrics::unregistered();
        let mut r = Retention::scan(dir.path(), cap(350)).unwrap();
        assert_eq!(r.closed_bytes(), 300);
        // 300 + 50 fits exactly.
        assert!(r.make_room(50, &metrics).unwrap());
        assert!(a.exists());
        // 300 + 51 does not: the oldest goes, and only it.
        assert!(r.make_room(51, &metrics).unwrap());
        assert!(!a.exists() && b.exists() && c.exists());
        assert_eq!(r.closed_bytes(), 200);
        assert_eq!(metrics.click_log_deleted_files.get(), 1);
        assert_eq!(metrics.click_log_deleted_bytes.get(), 100);
        // A closed file joins at the new end.
        let d = file(dir.path(), "clicks-20251124T190000.000Z.jsonl", 100);
        r.push_closed(d.clone(), 100, crate::clock::from_unix_secs(1_764_000_000));
        assert!(r.make_room(100, &metrics).unwrap());
        assert!(!b.exists() && c.exists() && d.exists());
        // More than the cap: everything closed goes, and it still does not fit.
        assert!(!r.make_room(400, &metrics).unwrap());
        assert!(!c.exists() && !d.exists());
        assert_eq!(r.closed_bytes(), 0);
        assert_eq!(metrics.click_log_deleted_files.get(), 4);
        // Not click files: never counted, never deleted.
        assert!(torn.exists() && other.exists());
    }

    #[test]
    fn files_deleted_by_someone_else_are_forgotten_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "clicks-20251124T160000.000Z.jsonl", 100);
        let b = file(dir.path(), "clicks-20251124T170000.000Z.jsonl", 100);
        let metrics = Metrics::unregistered();
        let mut r = Retention::scan(dir.path(), cap(200)).unwrap();
        std::fs::remove_file(&a).unwrap();
        assert!(r.make_room(50, &metrics).unwrap());
        assert!(b.exists());
        assert_eq!(r.closed_bytes(), 100);
        assert_eq!(metrics.click_log_deleted_files.get(), 0);
    }

    #[test]
    fn without_a_cap_nothing_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "clicks-20251124T160000.000Z.jsonl", 100);
        let mut r = Retention::scan(dir.path(), Bounds::default()).unwrap();
        assert!(r.make_room(u64::MAX, &Metrics::unregistered()).unwrap());
        assert!(a.exists());
    }

    #[test]
    fn a_file_that_cannot_be_deleted_stops_the_write_and_stays_first() {
        let dir = tempfile::tempdir().unwrap();
        // A directory with a click file's name: remove_file fails on it, even for root.
        let stuck = dir.path().join("clicks-20251124T160000.000Z.jsonl");
        std::fs::create_dir(&stuck).unwrap();
        let mut r = Retention::scan(dir.path(), cap(100)).unwrap();
        r.push_closed(
            stuck.clone(),
            100,
            crate::clock::from_unix_secs(1_764_000_000),
        );
        let err = r.make_room(1, &Metrics::unregistered()).unwrap_err();
        assert!(matches!(err, DeleteError::Io { path, .. } if path == stuck));
        assert_eq!(r.closed_bytes(), 100);
    }
}
