//! An advisory lock on a file that holds its holder's pid: `flock`, taken without waiting, held
//! while the file stays open. The kernel releases it when the process ends, however it ends, so
//! a stale file never blocks a restart. The data dir's lock (`app::DataDirLock`) and the click
//! log directory's (`clicks::FileSink`) are such locks.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

/// Why a lock was not taken.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Another open file holds it (another process, or another open in this one); `pid` as the
    /// holder wrote it, or `unknown`.
    Held { pid: String },
    /// The file could not be opened, locked or written.
    Io(io::Error),
}

/// Takes the lock on the file at `path` (created with mode 0600 if missing) and writes this
/// process's pid into it. Dropping the file releases it.
pub(crate) fn acquire(path: &Path) -> Result<File, Refused> {
    // Not truncated on open: a refused second process must still read the holder's pid.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(Refused::Io)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(Refused::Held {
                pid: if pid.is_empty() { "unknown" } else { pid }.to_owned(),
            });
        }
        Err(e) => return Err(Refused::Io(e.into())),
    }
    file.set_len(0).map_err(Refused::Io)?;
    file.rewind().map_err(Refused::Io)?;
    writeln!(file, "{}", std::process::id()).map_err(Refused::Io)?;
    Ok(file)
}
