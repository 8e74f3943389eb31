//! SQLite's small values: the key-value rows (the ACME account and its key) and the published
//! challenges, each challenge until it expires.

use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension as _, params};

use crate::clock::unix_secs;
use crate::config::ChallengeKind;

/// The value under `key`, if any.
pub(super) fn kv(c: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    c.query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

/// Sets `key` to `value`.
pub(super) fn put_kv(c: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO kv (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = ?2",
        params![key, value],
    )
    .map(drop)
}

/// Sets `key` to `value` unless it has a value; the value it has now.
pub(super) fn add_kv(c: &Connection, key: &str, value: &str) -> rusqlite::Result<String> {
    c.query_row(
        "INSERT INTO kv (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = value RETURNING value",
        params![key, value],
        |r| r.get(0),
    )
}

/// Publishes (or replaces) the challenge `kind` for `name` until `expires_at`.
pub(super) fn put_challenge(
    c: &Connection,
    kind: ChallengeKind,
    name: &str,
    value: &str,
    expires_at: SystemTime,
) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO challenges (kind, name, value, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(kind, name) DO UPDATE SET value = ?3, expires_at = ?4",
        params![kind.as_str(), name, value, unix_secs(expires_at) as i64],
    )
    .map(drop)
}

/// The challenge `kind` published for `name`, unless it expired by `now`.
pub(super) fn challenge(
    c: &Connection,
    kind: ChallengeKind,
    name: &str,
    now: SystemTime,
) -> rusqlite::Result<Option<String>> {
    c.query_row(
        "SELECT value FROM challenges WHERE kind = ?1 AND name = ?2 AND expires_at > ?3",
        params![kind.as_str(), name, unix_secs(now) as i64],
        |r| r.get(0),
    )
    .optional()
}

/// Removes the challenge `kind` for `name`, and every challenge expired by `now`.
pub(super) fn remove_challenge(
    c: &Connection,
    kind: ChallengeKind,
    name: &str,
    now: SystemTime,
) -> rusqlite::Result<()> {
    c.execute(
        "DELETE FROM challenges WHERE (kind = ?1 AND name = ?2) OR expires_at <= ?3",
        params![kind.as_str(), name, unix_secs(now) as i64],
    )
    .map(drop)
}
