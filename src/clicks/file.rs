//! The file sink: JSON Lines files under `clicks.dir`, rotated by size and age, written only by
//! the batcher thread through [`ClickSink`]. The one place that does click I/O.
//!
//! Each batch is appended with one `write`; a durable batch is then `fdatasync`ed (and the
//! directory synced once per new file, so its name survives a crash too). A write or sync that
//! fails is rolled back: the file is truncated to its length before the batch, so a write that
//! landed in part leaves no torn or duplicate line for the batcher's retry. If even the truncation
//! fails, nothing else is written until it succeeds, so only the newest file can end torn.
//!
//! The file being written is named `clicks-….jsonl.open` and renamed to `clicks-….jsonl` when it
//! is closed (rotation, shutdown), so only finished files match `clicks-*.jsonl` (`naming`). At
//! open the directory and files get their mode (`access`), a torn tail left by a crash is
//! quarantined and files left open are closed (`recover`). File names sort in time order, so the
//! oldest files are the ones deleted to keep the log under `clicks.max_total_bytes`
//! (`retention`), which only ever deletes closed files, and with a stream only shipped ones (a
//! write that would pass the cap otherwise fails). This module never
//! reads the log back; what to do while it fails (hold, retry, drop, refuse) is the batcher's
//! business.

mod access;
mod error;
mod floor;
mod naming;
mod recover;
mod retention;

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub use access::Access;
pub use error::{OpenError, WriteError};
pub(in crate::clicks) use naming::{closed_name, is_stray, open_name, warn_stray};

use super::ship::Progress;
use super::{Batch, ClickSink, id_seq, line_click_id};
use crate::clock::Clock;
use crate::errors;
use crate::lockfile;
use crate::metrics::Metrics;
use retention::Retention;

/// Settings of the file sink.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// Directory of the click log.
    pub dir: PathBuf,
    /// Rotate past this size.
    pub max_file_bytes: u64,
    /// Rotate past this age.
    pub rotate_interval: Duration,
    /// Who may read the files: [`Access::Private`] (`0700`/`0600`, the default) or
    /// [`Access::GroupRead`].
    pub access: Access,
    /// The most the click files may add up to: past it the oldest are deleted (see
    /// `retention`). `None`: no cap.
    pub max_total_bytes: Option<NonZeroU64>,
    /// Closed files older than this are deleted (`clicks.retention`). `None`: kept.
    pub max_age: Option<Duration>,
    /// With a stream: the shipper's progress; no file is deleted before it is shipped.
    pub shipped: Option<Progress>,
}

/// The lock file in the click log directory: one process writes a click log
/// ([`OpenError::InUse`]).
pub const LOCK_FILE: &str = "clicks.lock";

/// Suggested [`FileSinkConfig::max_total_bytes`]: 10 GiB, some 20 million clicks of 450 bytes.
pub const DEFAULT_MAX_TOTAL_BYTES: NonZeroU64 = NonZeroU64::new(10 << 30).expect("non-zero");

impl Default for FileSinkConfig {
    /// The defaults of the `[clicks]` config section, under `./clickedge-data/clicks`.
    fn default() -> Self {
        FileSinkConfig {
            dir: PathBuf::from("./clickedge-data/clicks"),
            max_file_bytes: 64 << 20,
            rotate_interval: Duration::from_secs(3600),
            access: Access::Private,
            max_total_bytes: Some(DEFAULT_MAX_TOTAL_BYTES),
            max_age: None,
            shipped: None,
        }
    }
}

/// Rotated JSON Lines files in one directory. Open with [`FileSink::open`], then hand to
/// [`super::ClickWriter::start`].
pub struct FileSink {
    config: FileSinkConfig,
    metrics: Metrics,
    /// Names new files.
    clock: Clock,
    file: Option<OpenFile>,
    torn: Option<TornFile>,
    /// The closed files, and the cap they are kept under.
    retention: Retention,
    /// The sequence number after the newest click id in the log, found at open.
    next_seq: u64,
    /// The sequence number of the newest line written (0: none yet this run).
    last_seq: u64,
    /// The stored floor ([`floor`]): the newest sequence number in a closed file.
    floor: u64,
    /// With `clicks.retention`: when files past it are next looked for while no click comes
    /// (a write looks each time).
    next_sweep: Option<Instant>,
    faults: Faults,
    /// The lock on the directory ([`LOCK_FILE`]), held as long as the sink.
    _lock: File,
}

struct OpenFile {
    file: File,
    path: PathBuf,
    /// Length after the last successful write: where a failed write is rolled back to.
    bytes: u64,
    opened: Instant,
    /// When it was created or last written to (its age for `clicks.retention` once closed).
    last_write: SystemTime,
    /// Whether the directory entry has been synced (needed once before a durable batch is done).
    dir_synced: bool,
}

/// A file whose rollback failed: it may end in part of a batch. Nothing else is written until it
/// is truncated back to `bytes`, so the log never keeps a torn line or a line written twice, and
/// only the newest file can need repair (which is what startup recovery relies on).
struct TornFile {
    path: PathBuf,
    bytes: u64,
    opened: Instant,
    last_write: SystemTime,
}

impl FileSink {
    /// Creates the directory if needed, gives it and the files in it the configured mode
    /// ([`Access`]), and quarantines a torn tail left by a crash. New files are named by `clock`.
    pub fn open(
        config: FileSinkConfig,
        metrics: Metrics,
        clock: Clock,
    ) -> Result<FileSink, OpenError> {
        let dir_error = |source| OpenError::Dir {
            dir: config.dir.clone(),
            source,
        };
        access::prepare_dir(&config.dir, config.access).map_err(dir_error)?;
        let lock = match lockfile::acquire(&config.dir.join(LOCK_FILE)) {
            Ok(lock) => lock,
            Err(lockfile::Refused::Held { pid }) => {
                return Err(OpenError::InUse {
                    dir: config.dir.clone(),
                    pid,
                });
            }
            Err(lockfile::Refused::Io(source)) => return Err(dir_error(source)),
        };
        access::restrict_files(&config.dir, config.access).map_err(dir_error)?;
        recover::recover(&config.dir, config.access, &metrics).map_err(|e| match e.step {
            recover::Step::Torn => OpenError::Recover {
                path: e.path,
                source: e.source,
            },
            recover::Step::Close => OpenError::Close {
                path: e.path,
                source: e.source,
            },
        })?;
        let last = recover::last_line(&config.dir)
            .map_err(|(path, source)| OpenError::ClickIds { path, source })?;
        let floor = floor::load(&config.dir).map_err(|source| OpenError::ClickIds {
            path: config.dir.join(floor::FLOOR_FILE),
            source,
        })?;
        let next_seq = super::id::next_seq_after(last.as_deref()).max(floor.saturating_add(1));
        // Recovery may have closed a file a crash left open, whose clicks the floor does not
        // cover yet: covered now, before that file can be deleted (every file is closed after
        // the floor covers it, see `floor`).
        let newest = next_seq - 1;
        let floor = if newest > floor {
            floor::store(&config.dir, newest).map_err(|source| OpenError::ClickIds {
                path: config.dir.join(floor::FLOOR_FILE),
                source,
            })?;
            newest
        } else {
            floor
        };
        let bounds = retention::Bounds {
            cap: config.max_total_bytes,
            max_age: config.max_age,
            shipped: config.shipped.clone(),
        };
        let retention = Retention::scan(&config.dir, bounds).map_err(dir_error)?;
        metrics.click_log_bytes.set(gauge(retention.closed_bytes()));
        let next_sweep = config.max_age.map(|age| Instant::now() + sweep_every(age));
        Ok(FileSink {
            config,
            metrics,
            clock,
            file: None,
            torn: None,
            retention,
            next_seq,
            last_seq: 0,
            next_sweep,
            floor,
            faults: Faults::default(),
            _lock: lock,
        })
    }

    /// The sequence number the next click id takes up: the one after the newest click line of
    /// the log or the floor ([`floor`]), whichever is later (1 for an empty log, or one from
    /// before ids). See [`super::ClickIds`].
    pub fn next_click_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends the batch to `file`, and syncs it if it is durable.
    fn append(&mut self, file: &mut OpenFile, batch: &Batch<'_>) -> Result<(), WriteError> {
        let bytes = batch.bytes();
        let written = if self.faults.tear_next_write() {
            // Test-only: the write lands in part, then fails.
            file.file
                .write_all(&bytes[..bytes.len() / 2])
                .and(Err(io::Error::other("injected torn write")))
        } else {
            file.file.write_all(bytes)
        };
        let path = || file.path.clone();
        written.map_err(|source| WriteError::Write {
            path: path(),
            source,
        })?;
        if batch.durable() {
            self.metrics.click_fsyncs.inc();
            let mut synced = file.file.sync_data();
            if synced.is_ok() && !file.dir_synced {
                // A new file's name must be durable too before a click in it is acknowledged.
                synced = sync_dir(&self.config.dir);
                file.dir_synced = synced.is_ok();
            }
            synced.map_err(|source| WriteError::Sync {
                path: path(),
                source,
            })?;
        }
        Ok(())
    }

    /// A new file, named for now.
    fn create(&self) -> Result<OpenFile, WriteError> {
        let shipped = self.config.shipped.as_ref().map(|p| p.shipped_file());
        let (file, path) = naming::create_next(
            &self.config.dir,
            &self.clock,
            self.config.access,
            shipped.as_deref(),
        )
        .map_err(|source| WriteError::Create {
            dir: self.config.dir.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), "click file opened");
        let file = OpenFile {
            file,
            path,
            bytes: 0,
            opened: Instant::now(),
            last_write: self.clock.now(),
            dir_synced: false,
        };
        self.mark_written(&file);
        Ok(file)
    }

    /// Tells the shipper, if any, where `file` ends for good (it reads no further).
    fn mark_written(&self, file: &OpenFile) {
        let name = file.path.file_name().and_then(|n| n.to_str());
        if let (Some(progress), Some(closed)) = (&self.config.shipped, name.and_then(closed_name)) {
            progress.set_written(crate::clicks::ship::Position {
                file: closed.to_owned(),
                offset: file.bytes,
            });
        }
    }

    /// Syncs and closes the open file, renaming it to its closed name; it becomes the newest
    /// closed file. If the rename fails it keeps its open name (the next start closes it).
    /// `Err` (logged and counted here): its fsync failed, so its clicks may not be on disk;
    /// it is closed all the same (syncing again after a failure says nothing: the kernel may
    /// have dropped the pages it could not write).
    fn close_file(&mut self, f: OpenFile) -> Result<(), WriteError> {
        let synced = f.file.sync_all().map_err(|source| WriteError::Sync {
            path: f.path.clone(),
            source,
        });
        if let Err(e) = &synced {
            self.metrics.click_sink_errors.inc();
            tracing::error!(
                error = %errors::chain(e),
                "closing a click file: its clicks may not be on disk (check the disk under clicks.dir)"
            );
        }
        drop(f.file);
        if self.last_seq > self.floor {
            match floor::store(&self.config.dir, self.last_seq) {
                Ok(()) => self.floor = self.last_seq,
                Err(e) => {
                    self.metrics.click_sink_errors.inc();
                    tracing::error!(
                        dir = %self.config.dir.display(),
                        error = %e,
                        "storing the click id floor; deleting this file before the next one \
                         closes could let a restart reuse its ids"
                    );
                }
            }
        }
        // Once renamed the file goes by its closed name, whatever the directory's sync says:
        // retention must find it by that name to delete it at the cap or its age.
        let path = match naming::rename_closed(&f.path) {
            Ok(closed) => {
                if let Err(e) = naming::sync_dir_of(&closed) {
                    self.metrics.click_sink_errors.inc();
                    tracing::error!(
                        path = %closed.display(),
                        error = %e,
                        "syncing the click directory after closing a file: a crash may bring back its open name, which the next start closes again"
                    );
                }
                closed
            }
            Err(e) => {
                self.metrics.click_sink_errors.inc();
                tracing::error!(
                    path = %f.path.display(),
                    error = %e,
                    "renaming click file to its closed name; the next start closes it"
                );
                f.path
            }
        };
        tracing::info!(path = %path.display(), bytes = f.bytes, "click file closed");
        self.retention.push_closed(path, f.bytes, f.last_write);
        synced
    }

    /// Keeps the log under the cap with `incoming` more bytes: deletes the oldest closed files,
    /// and if that is not enough, closes the open file (now the oldest left) and deletes it too.
    fn make_room(&mut self, incoming: u64) -> Result<(), WriteError> {
        let deleting = |e: retention::DeleteError| match e {
            retention::DeleteError::Io { path, source } => WriteError::Delete { path, source },
            retention::DeleteError::Unshipped { path } => WriteError::Unshipped { path },
        };
        // A file past its age that cannot be deleted fails no write (only the cap can): the
        // sweep (`tick`) says so, once per sweep rather than once per write.
        if let Err(e) = self.retention.expire(self.clock.now(), &self.metrics) {
            tracing::debug!(error = %errors::chain(&e), "deleting click files past clicks.retention");
        }
        let open = self.file.as_ref().map_or(0, |f| f.bytes);
        if self
            .retention
            .make_room(open + incoming, &self.metrics)
            .map_err(deleting)?
        {
            return Ok(());
        }
        if let Some(f) = self.file.take() {
            // Closed to be deleted: whether it synced no longer matters.
            let _ = self.close_file(f);
        }
        // NOTE: a batch larger than the whole cap (a cap under one batch: 1 MiB, or
        // max_buffered_bytes after a failure) still does not fit; it is written alone, over the
        // cap, and a later write deletes its file once that is closed and, with a stream,
        // shipped (until then, that write fails with `Unshipped`).
        self.retention
            .make_room(incoming, &self.metrics)
            .map_err(deleting)?;
        Ok(())
    }

    /// [`ClickSink::write`] but for the log's size, which the caller reports after it.
    fn append_batch(&mut self, batch: &Batch<'_>) -> Result<(), WriteError> {
        if let Some(torn) = &self.torn {
            self.file = torn.repair().map_err(|source| WriteError::Repair {
                path: torn.path.clone(),
                source,
            })?;
            self.torn = None;
        }
        let due = self.file.as_ref().is_some_and(|f| {
            f.bytes >= self.config.max_file_bytes
                || f.opened.elapsed() >= self.config.rotate_interval
        });
        if due && let Some(f) = self.file.take() {
            // A failed sync is logged and counted; the clicks go on in a new file.
            let _ = self.close_file(f);
        }
        self.make_room(batch.bytes().len() as u64)?;
        let mut file = match self.file.take() {
            Some(f) => f,
            None => self.create()?,
        };
        let good = file.bytes;
        let Err(e) = self.append(&mut file, batch) else {
            file.bytes += batch.bytes().len() as u64;
            file.last_write = self.clock.now();
            self.mark_written(&file);
            if let Some(seq) = batch.last_line().and_then(line_click_id).and_then(id_seq) {
                self.last_seq = seq;
            }
            self.file = Some(file);
            return Ok(());
        };
        // Roll back: the write may have landed in part (complete lines followed by a torn one),
        // or the sync may have failed with pages the kernel could not write. Truncating to the
        // last good length means the retry neither tears nor duplicates a line; O_APPEND puts the
        // next write at the new end.
        match file.file.set_len(good) {
            Ok(()) => self.file = Some(file),
            Err(rollback) => {
                tracing::warn!(
                    path = %file.path.display(),
                    error = %rollback,
                    "click file could not be truncated after a failed write; retrying before the next write"
                );
                self.torn = Some(TornFile {
                    path: file.path,
                    bytes: good,
                    opened: file.opened,
                    last_write: file.last_write,
                });
            }
        }
        Err(e)
    }

    /// Sets `clickedge_click_log_bytes` to what the log holds now.
    fn report_bytes(&self) {
        let open = (self.file.as_ref().map(|f| f.bytes))
            .or(self.torn.as_ref().map(|t| t.bytes))
            .unwrap_or(0);
        self.metrics
            .click_log_bytes
            .set(gauge(self.retention.closed_bytes() + open));
    }
}

impl ClickSink for FileSink {
    type Error = WriteError;

    /// Appends the batch to the current file (repairing, rotating or opening one first as
    /// needed). On error the file is as it was before.
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), WriteError> {
        let written = self.append_batch(batch);
        // Failed or not, the write may have closed, deleted or rolled back a file.
        self.report_bytes();
        written
    }

    fn close(mut self) -> Result<(), WriteError> {
        if let Some(torn) = &self.torn {
            tracing::error!(
                path = %torn.path.display(),
                "click file may end in a torn line; it is repaired at the next start"
            );
        }
        match self.file.take() {
            Some(f) => self.close_file(f),
            None => Ok(()),
        }
    }

    fn target(&self) -> impl std::fmt::Display + '_ {
        self.config.dir.display()
    }

    /// The open file's age limit: a file is closed then even if no click comes to rotate it, so
    /// a loader of closed files gets the last clicks before a quiet spell within
    /// `rotate_interval`.
    /// And, with `clicks.retention`, the next look for files past it, so an edge without
    /// clicks does not keep them longer.
    fn due(&self) -> Option<Instant> {
        let close = self
            .file
            .as_ref()
            .map(|f| f.opened + self.config.rotate_interval);
        close.into_iter().chain(self.next_sweep).min()
    }

    fn tick(&mut self) {
        if let Some(f) = self
            .file
            .take_if(|f| f.opened.elapsed() >= self.config.rotate_interval)
        {
            // A failed sync is logged and counted; the clicks go on in a new file.
            let _ = self.close_file(f);
        }
        let (Some(at), Some(age)) = (self.next_sweep, self.config.max_age) else {
            return;
        };
        if Instant::now() < at {
            return;
        }
        self.next_sweep = Some(Instant::now() + sweep_every(age));
        if let Err(e) = self.retention.expire(self.clock.now(), &self.metrics) {
            self.metrics.click_sink_errors.inc();
            tracing::error!(error = %errors::chain(&e), "deleting click files past clicks.retention");
        }
        self.report_bytes();
    }
}

impl TornFile {
    /// Truncates the file back to its good length and reopens it for appending; `None` if it is
    /// gone (nothing torn remains then).
    fn repair(&self) -> io::Result<Option<OpenFile>> {
        let file = match OpenOptions::new().append(true).open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.set_len(self.bytes)?;
        tracing::info!(path = %self.path.display(), "torn click file truncated back");
        Ok(Some(OpenFile {
            file,
            path: self.path.clone(),
            bytes: self.bytes,
            opened: self.opened,
            last_write: self.last_write,
            // Not known to have been synced before the failure.
            dir_synced: false,
        }))
    }
}

/// How often files past `clicks.retention` (`age`) are looked for while no click comes: every
/// minute (the shortest retention allowed), sooner for a shorter one in tests.
fn sweep_every(age: Duration) -> Duration {
    age.min(Duration::from_secs(60))
}

fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Fault injection for the tests of the rollback path; zero-sized and inert outside tests.
#[derive(Default)]
struct Faults {
    /// How many of the next writes land in part and then fail.
    #[cfg(test)]
    tear_writes: usize,
}

impl Faults {
    fn tear_next_write(&mut self) -> bool {
        #[cfg(test)]
        if self.tear_writes > 0 {
            self.tear_writes -= 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests;
