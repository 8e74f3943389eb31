//! SQLite's link key rows: the ring in id order, a new key under the next id, a key retired or
//! removed. Secrets are stored as they are: the file is the node's own, mode 0600.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::rows::secs;
use crate::store::KeyChange;

/// A link key row: id, secret, created and retired (seconds since the Unix epoch).
pub(super) type Row = (i64, Vec<u8>, i64, Option<i64>);

/// Every link key, in id order.
pub(super) fn all(c: &Connection) -> rusqlite::Result<Vec<Row>> {
    let mut st =
        c.prepare_cached("SELECT id, secret, created_at, retired_at FROM link_keys ORDER BY id")?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect()
}

/// Stores `secret` under the next id, one above every id handed out before (removed keys'
/// included), in one transaction; returns the id. An id past 65535 is returned with nothing
/// stored (the transaction rolled back), for the caller to refuse: stored, it would make the
/// whole ring unreadable.
pub(super) fn insert(
    c: &Connection,
    secret: &[u8; 32],
    created_at: SystemTime,
) -> rusqlite::Result<i64> {
    let tx = c.unchecked_transaction()?;
    let id: i64 = tx.query_row(NEXT_ID, [], |r| r.get(0))?;
    if u16::try_from(id).is_err() {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO link_keys (id, secret, created_at) VALUES (?1, ?2, ?3)",
        params![id, &secret[..], secs(created_at)],
    )?;
    tx.commit()?;
    Ok(id)
}

/// Takes the next key id: one above the last handed out and every stored one.
const NEXT_ID: &str = "UPDATE link_key_ids \
     SET last = MAX(last, (SELECT COALESCE(MAX(id), 0) FROM link_keys)) + 1 \
     WHERE id = 1 RETURNING last";

/// Removes key `id` unless it is the last one not retired.
pub(super) fn remove(c: &Connection, id: u16) -> rusqlite::Result<KeyChange> {
    changed(c, id, |tx| {
        tx.execute("DELETE FROM link_keys WHERE id = ?1", [i64::from(id)])
            .map(drop)
    })
}

/// Marks key `id` retired at `at` unless it is the last one not retired, or it already was (the
/// first retirement stands).
pub(super) fn retire(c: &Connection, id: u16, at: SystemTime) -> rusqlite::Result<KeyChange> {
    changed(c, id, |tx| {
        tx.execute(
            "UPDATE link_keys SET retired_at = COALESCE(retired_at, ?2) WHERE id = ?1",
            params![i64::from(id), secs(at)],
        )
        .map(drop)
    })
}

/// Runs `change` of key `id` in one transaction with the check that another key not retired is
/// left ([`KeyChange`]).
fn changed(
    c: &Connection,
    id: u16,
    change: impl FnOnce(&Connection) -> rusqlite::Result<()>,
) -> rusqlite::Result<KeyChange> {
    let tx = c.unchecked_transaction()?;
    let retired: Option<Option<i64>> = tx
        .query_row(
            "SELECT retired_at FROM link_keys WHERE id = ?1",
            [i64::from(id)],
            |r| r.get(0),
        )
        .optional()?;
    let others: i64 = tx.query_row(
        "SELECT COUNT(*) FROM link_keys WHERE id <> ?1 AND retired_at IS NULL",
        [i64::from(id)],
        |r| r.get(0),
    )?;
    let outcome = KeyChange::of(retired.map(|r| r.is_some()), others > 0);
    if outcome == KeyChange::Done {
        change(&tx)?;
        tx.commit()?;
    }
    Ok(outcome)
}
