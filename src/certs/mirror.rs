//! The certificate mirror: this node's local copy of every certificate the cluster's store
//! holds, so that a handshake for a registered name whose certificate this node never held in
//! memory is still answered while the database is unreachable (static stability).
//!
//! One SQLite file under the data dir ([`MIRROR_FILE`], mode 0600), one row per name. The whole
//! certificate (issuer, chain, private key, validity) is one value sealed with the cluster's seal
//! key and bound to its name (`cert-mirror:<domain>`): no private key is on disk in the clear,
//! and a row altered, or moved to another name, does not open. Its validity is kept beside it
//! in the clear only to guard writes: a row is replaced by a certificate issued at the same time
//! or later, never by one issued earlier (the store's own guard, whatever each expires), so a
//! start-up copy that read a row before a renewal never undoes the renewal.
//!
//! SQLite rather than a file per certificate: 100 000 certificates are 200 batched
//! transactions rather than 100 000 files written, synced and renamed, a replace is atomic, and
//! rusqlite is in the build already. The copy is a cache: a write lost in a crash is copied
//! again by the next start's fill.
//!
//! Here: the file and its rows. In `mirror/`: `fill` (the start-up copy of the whole table, in
//! the background, and the sweep of rows the store no longer holds), `fallback` (what `Certs`
//! does with it: read when the store fails, kept current by change propagation), `metrics`.
//! Not built with SQLite: that store is local already.

mod fallback;
mod fill;
mod metrics;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use crate::Domain;
use crate::clock::{from_unix_secs, unix_secs};
use crate::seal::{SealError, SealKey};
use crate::store::StoredCert;
pub use metrics::MirrorMetrics;

/// The mirror's file under the data dir.
pub const MIRROR_FILE: &str = "cert-mirror.db";

/// Why the mirror could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// SQLite refused or failed an operation.
    #[error("certificate mirror: {op}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file's permissions could not be restricted to its owner.
    #[error("certificate mirror: restricting {path} to its owner")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A row could not be sealed, or does not open (altered, moved, another seal key).
    #[error("certificate mirror: sealed row")]
    Seal(#[source] SealError),
    /// A row opened but does not hold a certificate (never written by this code).
    #[error("certificate mirror: the row of {0} does not hold a certificate")]
    Corrupt(Domain),
    /// The blocking task running the operation failed.
    #[error("certificate mirror: {op} did not finish")]
    Task {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The sealed content of a row: everything [`StoredCert`] holds.
#[derive(Serialize, Deserialize)]
struct Sealed {
    issuer: String,
    chain_pem: String,
    key_pem: String,
    not_before: u64,
    not_after: u64,
}

/// This node's local copy of the store's certificates, sealed. Every operation runs on tokio's
/// blocking pool behind one connection: a slow disk never blocks the runtime.
pub struct CertMirror {
    conn: Arc<Mutex<Connection>>,
    seal: Arc<SealKey>,
    /// The fill generation: rows written now are stamped with it, and a finished fill deletes
    /// the rows stamped earlier (nothing confirmed them). Read and changed under the connection's
    /// lock, so a write and the start of a fill are ordered.
    generation: Arc<AtomicU64>,
    metrics: MirrorMetrics,
    /// Set while handshakes are served from the mirror, cleared when the store answers: the
    /// outage is logged once, at its first use.
    in_use: AtomicBool,
    /// Names copied only while registered, checked under the connection's lock: a copy read
    /// before its domain was removed cannot be written after its removal deleted it.
    registered: Option<Arc<crate::policy::Policy>>,
}

impl CertMirror {
    /// Opens (creating if needed) the mirror at `path`, restricted to its owner, its rows sealed
    /// with `seal`.
    pub fn open(
        path: &Path,
        seal: Arc<SealKey>,
        metrics: MirrorMetrics,
    ) -> Result<CertMirror, MirrorError> {
        let conn = Connection::open(path).map_err(db("opening"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| MirrorError::Permissions {
                path: path.to_path_buf(),
                source,
            },
        )?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS certificates (
                 domain TEXT PRIMARY KEY,
                 not_after INTEGER NOT NULL,
                 sealed BLOB NOT NULL,
                 generation INTEGER NOT NULL,
                 not_before INTEGER NOT NULL DEFAULT 0
             );",
        )
        .map_err(db("creating the table"))?;
        // A mirror made before rows were ordered by issuance: its rows read as issued at the
        // epoch, so the next copy of each replaces it.
        let ordered: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('certificates') WHERE name = 'not_before'",
                [],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )
            .map_err(db("reading the table's columns"))?;
        if !ordered {
            conn.execute_batch(
                "ALTER TABLE certificates ADD COLUMN not_before INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(db("adding the issue time"))?;
        }
        let (rows, generation): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(MAX(generation), 0) FROM certificates",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db("counting rows"))?;
        metrics.entries.set(rows);
        Ok(CertMirror {
            conn: Arc::new(Mutex::new(conn)),
            seal,
            generation: Arc::new(AtomicU64::new(u64::try_from(generation).unwrap_or(0))),
            metrics,
            in_use: AtomicBool::new(false),
            registered: None,
        })
    }

    /// Copies only names `policy` holds registered when the copy is written.
    pub fn registered_by(mut self, policy: Arc<crate::policy::Policy>) -> CertMirror {
        self.registered = Some(policy);
        self
    }

    /// Copies `name`'s certificate, unless the copy is of one issued later; whether it wrote.
    pub async fn put(&self, name: &Domain, cert: &StoredCert) -> Result<bool, MirrorError> {
        Ok(self.put_all(vec![(name.clone(), cert.clone())]).await? == 1)
    }

    /// Copies certificates in one transaction, each unless its copy is of one issued later; how
    /// many were written.
    pub async fn put_all(&self, certs: Vec<(Domain, StoredCert)>) -> Result<usize, MirrorError> {
        let seal = self.seal.clone();
        let generation = self.generation.clone();
        let entries = self.metrics.entries.clone();
        let registered = self.registered.clone();
        self.blocking("writing certificates", move |conn| {
            let generation = generation.load(Ordering::SeqCst) as i64;
            let tx = conn.unchecked_transaction().map_err(db("writing"))?;
            let mut written = 0;
            let mut added = 0;
            for (name, cert) in &certs {
                if registered
                    .as_ref()
                    .is_some_and(|p| !p.is_registered(name.as_str()))
                {
                    continue;
                }
                let (not_before, not_after) = (
                    secs(unix_secs(cert.not_before)),
                    secs(unix_secs(cert.not_after)),
                );
                let sealed = seal_row(&seal, name, cert)?;
                let before: Option<i64> = tx
                    .query_row(
                        "SELECT not_before FROM certificates WHERE domain = ?1",
                        [name.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db("reading"))?;
                // The stamp is renewed either way: the store holds the name.
                tx.execute(
                    "INSERT INTO certificates (domain, not_before, not_after, sealed, generation)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(domain) DO UPDATE SET generation = excluded.generation,
                         sealed = CASE WHEN excluded.not_before >= certificates.not_before
                             THEN excluded.sealed ELSE certificates.sealed END,
                         not_after = CASE WHEN excluded.not_before >= certificates.not_before
                             THEN excluded.not_after ELSE certificates.not_after END,
                         not_before = MAX(excluded.not_before, certificates.not_before)",
                    params![name.as_str(), not_before, not_after, sealed, generation],
                )
                .map_err(db("writing"))?;
                match before {
                    None => {
                        added += 1;
                        written += 1;
                    }
                    Some(old) if not_before >= old => written += 1,
                    Some(_) => {}
                }
            }
            tx.commit().map_err(db("committing"))?;
            entries.add(added);
            Ok(written)
        })
        .await
    }

    /// Deletes the copy of `name`'s certificate; whether there was one.
    pub async fn remove(&self, name: &Domain) -> Result<bool, MirrorError> {
        let name = name.clone();
        let entries = self.metrics.entries.clone();
        self.blocking("removing a certificate", move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM certificates WHERE domain = ?1",
                    [name.as_str()],
                )
                .map_err(db("removing"))?;
            entries.sub(n as i64);
            Ok(n > 0)
        })
        .await
    }

    /// The copy of `name`'s certificate, opened; none when there is none. A row that does not
    /// open with the seal key (altered, moved from another name) is an error, never served.
    pub async fn read(&self, name: &Domain) -> Result<Option<StoredCert>, MirrorError> {
        let name = name.clone();
        let seal = self.seal.clone();
        self.blocking("reading a certificate", move |conn| {
            let sealed: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT sealed FROM certificates WHERE domain = ?1",
                    [name.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db("reading"))?;
            sealed.map(|s| open_row(&seal, &name, &s)).transpose()
        })
        .await
    }

    /// Starts a fill: rows written from now on carry a new generation; returns it.
    async fn begin_fill(&self) -> Result<u64, MirrorError> {
        let generation = self.generation.clone();
        // Under the connection's lock: a write in progress keeps its stamp, later ones the new.
        self.blocking("starting a fill", move |_| {
            Ok(generation.fetch_add(1, Ordering::SeqCst) + 1)
        })
        .await
    }

    /// Ends the fill of `generation`: deletes every row stamped earlier (the store no longer
    /// holds it, and no change since rewrote it); how many rows are left.
    async fn sweep(&self, generation: u64) -> Result<(usize, i64), MirrorError> {
        let entries = self.metrics.entries.clone();
        self.blocking("sweeping", move |conn| {
            let gone = conn
                .execute(
                    "DELETE FROM certificates WHERE generation < ?1",
                    [generation as i64],
                )
                .map_err(db("sweeping"))?;
            let rows: i64 = conn
                .query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))
                .map_err(db("counting rows"))?;
            entries.set(rows);
            Ok((gone, rows))
        })
        .await
    }

    /// Runs `f` on the connection on the blocking pool, as the operation `op`.
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, MirrorError> + Send + 'static,
    ) -> Result<T, MirrorError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // Each call is one statement or transaction: a panic while holding the lock leaves
            // no half-written row, so a poisoned lock is still safe to use.
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|source| MirrorError::Task { op, source })?
    }
}

/// What a row is bound to: its name.
fn binding(name: &Domain) -> String {
    format!("cert-mirror:{name}")
}

fn seal_row(seal: &SealKey, name: &Domain, cert: &StoredCert) -> Result<Vec<u8>, MirrorError> {
    let row = Sealed {
        issuer: cert.issuer.clone(),
        chain_pem: cert.chain_pem.clone(),
        key_pem: cert.key_pem.clone(),
        not_before: unix_secs(cert.not_before),
        not_after: unix_secs(cert.not_after),
    };
    // Serializing a struct of strings and integers to JSON cannot fail.
    let plain = serde_json::to_vec(&row).map_err(|_| MirrorError::Corrupt(name.clone()))?;
    seal.seal(&binding(name), &plain).map_err(MirrorError::Seal)
}

fn open_row(seal: &SealKey, name: &Domain, sealed: &[u8]) -> Result<StoredCert, MirrorError> {
    let plain = seal
        .open(&binding(name), sealed)
        .map_err(MirrorError::Seal)?;
    let row: Sealed =
        serde_json::from_slice(&plain).map_err(|_| MirrorError::Corrupt(name.clone()))?;
    Ok(StoredCert {
        issuer: row.issuer,
        chain_pem: row.chain_pem,
        key_pem: row.key_pem,
        not_before: from_unix_secs(row.not_before),
        not_after: from_unix_secs(row.not_after),
    })
}

/// A time in seconds as the table keeps it.
fn secs(unix: u64) -> i64 {
    i64::try_from(unix).unwrap_or(i64::MAX)
}

fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> MirrorError {
    move |source| MirrorError::Db { op, source }
}

#[cfg(test)]
mod tests;
