//! Why the file sink could not open, or write a batch: each says what to do about it.

use std::io;
use std::path::PathBuf;

/// The file sink could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process writes this click log (its lock file names it).
    #[error(
        "click log dir {dir} is in use by another clickedge serve (pid {pid}); give each edge its \
         own clicks.dir (two writing one directory would close, truncate and delete each \
         other's files)"
    )]
    InUse {
        /// The click log directory.
        dir: PathBuf,
        /// The holder's pid as it wrote it, or `unknown`.
        pid: String,
    },
    /// The click log directory could not be created or read.
    #[error("preparing click log directory {dir}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The click log could not be checked for a torn last line, or a torn line could not be
    /// moved aside (the file is then left as it was).
    #[error(
        "checking {path} for a torn last line after a crash; free space or fix permissions, then restart"
    )]
    Recover {
        /// The click log directory or file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A click file left open by a crash could not be renamed to its closed name.
    #[error(
        "closing click file {path}, left open by a crash, by renaming it to its closed name; if \
         a file of that name exists, move one of the two out of the directory, else fix the \
         directory's permissions; then restart"
    )]
    Close {
        /// The file left open.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Where click ids go on from could not be read: the newest click line, or the stored floor
    /// (`click-seq`).
    #[error(
        "reading {path} to learn where click ids go on from; fix what the cause says (the file's \
         permissions or contents), then restart"
    )]
    ClickIds {
        /// The click file or the floor's file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A batch could not be written; the file is as it was before it (or, if the rollback failed
/// too, is truncated back before the next write).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A file left torn by an earlier failure could not be truncated back.
    #[error("truncating torn click file {path}")]
    Repair {
        /// The click file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The oldest click file could not be deleted to keep the log under the cap.
    #[error(
        "deleting click file {path} to keep the click log under clicks.max_total_bytes; make it \
         deletable by the edge's user, or move it away"
    )]
    Delete {
        /// The click file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The log is at `clicks.max_total_bytes` and its oldest file is not shipped yet.
    #[error(
        "click log at clicks.max_total_bytes and its oldest file {path} is not shipped to the \
         stream yet, so new clicks cannot be written; get shipping going again (the shipper's \
         errors say why it stopped) or raise clicks.max_total_bytes"
    )]
    Unshipped {
        /// The oldest click file.
        path: PathBuf,
    },
    /// A new click file could not be created.
    #[error("creating a click file in {dir}")]
    Create {
        /// The click log directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Appending the batch failed.
    #[error("writing click file {path}")]
    Write {
        /// The click file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// `fdatasync` of the file, or the sync of its directory entry, failed.
    #[error("syncing click file {path}")]
    Sync {
        /// The click file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}
