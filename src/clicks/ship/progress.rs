//! How far shipping has come: the persisted checkpoint, whether shipping is behind, and where
//! the file sink's open file ends for good. Shared by the shipper (which moves it), the file
//! sink (which says what it wrote, and names new files after the checkpoint's), retention
//! (which deletes only shipped files) and the health endpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::Position;

/// How far shipping has come, shared with retention and the health endpoint.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<ProgressInner>);

#[derive(Debug, Default)]
struct ProgressInner {
    /// The persisted checkpoint.
    shipped: Mutex<Position>,
    behind: AtomicBool,
    /// The end of what the file sink has written for good in the file it is writing: a write
    /// that fails is rolled back (truncated), so bytes past this may vanish or change, and the
    /// reader does not ship them.
    written: Mutex<Option<Position>>,
}

impl Progress {
    /// Progress starting at the persisted position `shipped`.
    pub fn new(shipped: Position) -> Progress {
        Progress(Arc::new(ProgressInner {
            shipped: Mutex::new(shipped),
            behind: AtomicBool::new(false),
            written: Mutex::new(None),
        }))
    }

    /// Whether every line of the closed click file `name`, `len` bytes long, is acknowledged by
    /// the stream, by the persisted checkpoint: it is past the file, or at the end of it as a
    /// finished file ([`Position::END`]: the shipper marks so a closed file it caught up with,
    /// which may be the newest: were that one unshipped, the cap could never delete it and the
    /// writer would stop for good). An empty file holds nothing to ship.
    pub fn fully_shipped(&self, name: &str, len: u64) -> bool {
        let shipped = self
            .0
            .shipped
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        len == 0 || *name < *shipped.file || (*name == *shipped.file && shipped.is_end())
    }

    /// The click file the persisted checkpoint is in (empty before the first).
    pub fn shipped_file(&self) -> String {
        self.0
            .shipped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .file
            .clone()
    }

    /// Whether publishing fails, or the oldest unshipped click is older than 10 s.
    pub fn behind(&self) -> bool {
        self.0.behind.load(Ordering::Relaxed)
    }

    /// Test-only: the checkpoint is at byte `offset` of `file`.
    #[cfg(test)]
    pub(crate) fn set_shipped_for_tests(&self, file: &str, offset: u64) {
        self.set_shipped(Position {
            file: file.into(),
            offset,
        });
    }

    /// The file sink's open file ends, for good, at `end` (set when it opens a file, and after
    /// each write that succeeded).
    pub(crate) fn set_written(&self, end: Position) {
        *self
            .0
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(end);
    }

    /// Where the click file `name` ends for good if the file sink is writing it; none for a
    /// file it is done with.
    pub(in crate::clicks) fn written_end(&self, name: &str) -> Option<u64> {
        self.0
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|end| end.file == name)
            .map(|end| end.offset)
    }

    /// Publishing fails, or the oldest unshipped click is older than 10 s (or neither, `false`).
    pub(super) fn set_behind(&self, behind: bool) {
        self.0.behind.store(behind, Ordering::Relaxed);
    }

    pub(super) fn set_shipped(&self, pos: Position) {
        *self
            .0
            .shipped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = pos;
    }
}
