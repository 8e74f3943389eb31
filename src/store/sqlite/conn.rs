//! Opening the SQLite file (owner-only, WAL, migrated) and running each call on tokio's
//! blocking pool behind the store's one connection.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::SqliteStore;
use super::schema::migrate;
use crate::store::StoreError;

/// `op` failed with `e`: the database away for now (busy past the busy timeout, locked, an I/O
/// error, a full disk: an admin write answers 503 and an issued certificate's write is tried
/// again, as on PostgreSQL), or failed.
pub(super) fn db(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    move |e| match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull,
        ) => StoreError::Unavailable {
            op,
            source: Box::new(e),
        },
        _ => StoreError::Db {
            op,
            source: Box::new(e),
        },
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, restricted to its owner.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let failed = |op| {
            move |e: rusqlite::Error| StoreError::Sqlite {
                path: path.to_owned(),
                op,
                source: Box::new(e),
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && std::fs::metadata(dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return Err(StoreError::NoDirectory {
                path: path.to_owned(),
            });
        }
        let conn = Connection::open(path).map_err(failed("opening it"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            StoreError::Sqlite {
                path: path.to_owned(),
                op: "restricting it to its owner (mode 0600)",
                source: Box::new(e),
            }
        })?;
        // `synchronous=FULL`: each commit is on disk before it returns. A store write is rare
        // and never on a click's path, and what it keeps must survive a power cut: a link key
        // lost after links were sealed with it leaves them unopenable, its id handed out again.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
        )
        .map_err(|e| {
            let op = if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
                "setting it up (is it a SQLite database?)"
            } else {
                "setting it up"
            };
            failed(op)(e)
        })?;
        migrate(&conn).map_err(failed("migrating its schema"))?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            queries: crate::store::query_counter(),
        })
    }

    /// An in-memory database (tests, benches).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(db("opening database"))?;
        migrate(&conn).map_err(db("migrating schema"))?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            queries: crate::store::query_counter(),
        })
    }

    /// Runs `sql` as it is (tests: a row damaged as no write of the edge's would leave it).
    #[cfg(test)]
    pub(crate) async fn execute_raw(&self, sql: &'static str) -> Result<(), StoreError> {
        self.with("a test's statement", move |c| c.execute_batch(sql))
            .await
    }

    /// Runs `f` on the connection as the operation `op`, counted as a store query.
    pub(super) async fn with<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.queries.inc();
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written (each call is one
            // statement or transaction), so a poisoned lock is still safe to use.
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Db {
            op,
            source: Box::new(e),
        })?
        .map_err(db(op))
    }
}
