//! One serving process per data dir: an advisory lock (`flock`, non-blocking) on
//! `<data_dir>/clickedge.lock`, held for the life of the process and holding its pid.
//!
//! Two edges on one data dir would write the same click files and race on the store and the
//! local CA; the second one refuses to start instead, naming the first. The kernel releases the
//! lock when the process ends, however it ends, so a stale file never blocks a restart. Client
//! commands (which talk to the admin API) never take it.
//!
//! A SQLite store is locked the same way (`<store.path>.lock`), since `store.path` may point
//! out of the data dir: two edges with data dirs of their own on one SQLite file would each
//! take themselves for its only node (certificates renewed twice, changes never seen). A
//! cluster shares PostgreSQL instead.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::lockfile;

/// The lock file's name under the data dir.
pub const LOCK_FILE: &str = "clickedge.lock";

/// Why the data dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "data dir {dir} is in use by another clickedge serve (pid {pid}); stop that process \
         first (kill -TERM {pid}), or give this one its own data_dir"
    )]
    InUse {
        /// The data dir.
        dir: PathBuf,
        /// The holder's pid as it wrote it, or `unknown`.
        pid: String,
    },
    /// Another process holds the SQLite store's lock.
    #[error(
        "store.path {path} is in use by another clickedge serve (pid {pid}) with a data dir of \
         its own; edges must not share a SQLite file: give this one its own store.path, or run \
         them as a cluster on PostgreSQL (store.url)"
    )]
    StoreInUse {
        /// The SQLite file.
        path: PathBuf,
        /// The holder's pid as it wrote it, or `unknown`.
        pid: String,
    },
    /// The SQLite store's lock file could not be opened, locked or written.
    #[error(
        "locking store.path {path} with {lock}: the edge must be able to create files beside \
         its SQLite file (as SQLite does for its journal)"
    )]
    StoreIo {
        /// The SQLite file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The lock file could not be opened, locked or written.
    #[error("locking the data dir with {path}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    /// A SQLite store's lock ([`DataDirLock::and_store`]).
    _store: Option<File>,
}

impl DataDirLock {
    /// Takes the lock on `data_dir` without waiting and writes this process's pid into it.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        match lockfile::acquire(&path) {
            Ok(file) => Ok(DataDirLock {
                _file: file,
                _store: None,
            }),
            Err(lockfile::Refused::Held { pid }) => Err(LockError::InUse {
                dir: data_dir.to_path_buf(),
                pid,
            }),
            Err(lockfile::Refused::Io(source)) => Err(LockError::Io { path, source }),
        }
    }

    /// Takes the lock of the SQLite store at `store` too (`<store>.lock`), held as long as the
    /// data dir's. None when the store's directory does not exist: opening the store says so,
    /// with its fix.
    pub fn and_store(mut self, store: &Path) -> Result<DataDirLock, LockError> {
        if store
            .parent()
            .is_some_and(|dir| !dir.as_os_str().is_empty() && !dir.is_dir())
        {
            return Ok(self);
        }
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        match lockfile::acquire(&lock) {
            Ok(file) => {
                self._store = Some(file);
                Ok(self)
            }
            Err(lockfile::Refused::Held { pid }) => Err(LockError::StoreInUse {
                path: store.to_path_buf(),
                pid,
            }),
            Err(lockfile::Refused::Io(source)) => Err(LockError::StoreIo {
                path: store.to_path_buf(),
                lock,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_data_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in this process
        // conflicts like another process would.
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(held);
        assert!(DataDirLock::acquire(dir.path()).is_ok(), "released on drop");
    }

    #[test]
    fn two_data_dirs_on_one_sqlite_file_are_refused_naming_the_key() {
        let (a, b, shared) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let store = shared.path().join("edge.db");
        let held = DataDirLock::acquire(a.path())
            .unwrap()
            .and_store(&store)
            .unwrap();
        let err = DataDirLock::acquire(b.path())
            .unwrap()
            .and_store(&store)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("store.path {}", store.display()))
                && err.contains(&format!("pid {}", std::process::id()))
                && err.contains("store.url"),
            "{err}"
        );
        // A store in a directory that does not exist takes no lock: opening the store refuses
        // it, naming the fix (`StoreError::NoDirectory`).
        let missing = shared.path().join("no-such-dir").join("edge.db");
        assert!(
            DataDirLock::acquire(tempfile::tempdir().unwrap().path())
                .unwrap()
                .and_store(&missing)
                .is_ok()
        );
        assert!(!missing.parent().unwrap().exists());
        drop(held);
        assert!(
            DataDirLock::acquire(b.path())
                .unwrap()
                .and_store(&store)
                .is_ok(),
            "released with the data dir's"
        );
    }
}
