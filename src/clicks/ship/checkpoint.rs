//! The shipper's checkpoint: how far into the click log the stream has acknowledged, as a
//! [`Position`] (a click file's name and a byte offset in it), kept in
//! `<clicks.dir>/ship-checkpoint.json`.
//!
//! Written atomically: a temporary file is written and `fsync`ed, renamed over the checkpoint,
//! and the directory synced, so after a crash the checkpoint is either the old one or the new
//! one, never torn. It only ever names a position the stream acknowledged, so a restart
//! re-publishes at most what came after it (the stream drops those as duplicates by their
//! `Nats-Msg-Id` within its duplicate window). Nothing here talks to NATS.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The checkpoint's file name in the click log directory.
pub const CHECKPOINT_FILE: &str = "ship-checkpoint.json";

/// A place in the click log: every line of the files named before `file`, and the first
/// `offset` bytes of `file`. The empty name is the start of the log; [`Position::END`] as the
/// offset is the end of a finished file, shipped whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// A click file's name (`clicks-….jsonl`), without directory.
    pub file: String,
    /// Bytes of `file` before the position.
    pub offset: u64,
}

impl Position {
    /// The offset that says every line of a finished (closed) file is acknowledged, whatever its
    /// length. A checkpoint at a file's last byte cannot say that: the file might have been
    /// written on, and once it is deleted nobody can tell whether it was shipped whole. With
    /// this one, retention may delete the file and the shipper, finding it gone, goes on with
    /// the next without a warning.
    pub const END: u64 = u64::MAX;

    /// Whether the position is the end of its finished file ([`Position::END`]).
    pub fn is_end(&self) -> bool {
        self.offset == Position::END
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.file.is_empty() {
            f.write_str("the start of the click log")
        } else if self.is_end() {
            write!(f, "the end of {}", self.file)
        } else {
            write!(f, "{} at byte {}", self.file, self.offset)
        }
    }
}

/// The checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing or syncing the file failed.
    #[error("accessing the shipping checkpoint {path}")]
    Io {
        /// The checkpoint file (or its temporary file).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not a checkpoint.
    #[error(
        "the shipping checkpoint {path} is not valid; move it away to ship the click log from \
         its start again"
    )]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
}

/// The checkpoint of the click log in `dir`.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
}

impl Checkpoint {
    /// The checkpoint file in the click log directory `dir`.
    pub fn in_dir(dir: &Path) -> Checkpoint {
        Checkpoint {
            path: dir.join(CHECKPOINT_FILE),
            tmp: dir.join(format!("{CHECKPOINT_FILE}.tmp")),
            dir: dir.to_path_buf(),
        }
    }

    /// The stored position; the start of the log when there is none yet.
    pub fn load(&self) -> Result<Position, CheckpointError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                    path: self.path.clone(),
                    source,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Position::default()),
            Err(source) => Err(CheckpointError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the stored position with `pos`, durably. Blocking.
    pub fn store(&self, pos: &Position) -> Result<(), CheckpointError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        // Invariant: a struct of a string and an integer serialises.
        let bytes = serde_json::to_vec(pos).expect("position serialises");
        let mut f = File::create(&self.tmp).map_err(io(&self.tmp))?;
        f.write_all(&bytes).map_err(io(&self.tmp))?;
        f.sync_all().map_err(io(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_position_is_loaded_back_and_none_is_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::in_dir(dir.path());
        assert_eq!(cp.load().unwrap(), Position::default());
        let pos = Position {
            file: "clicks-20251124T160000.000Z.jsonl".into(),
            offset: 1234,
        };
        cp.store(&pos).unwrap();
        cp.store(&pos).unwrap();
        assert_eq!(Checkpoint::in_dir(dir.path()).load().unwrap(), pos);
        assert!(!dir.path().join(format!("{CHECKPOINT_FILE}.tmp")).exists());
        std::fs::write(dir.path().join(CHECKPOINT_FILE), b"{").unwrap();
        assert!(matches!(cp.load(), Err(CheckpointError::Corrupt { .. })));
    }
}
