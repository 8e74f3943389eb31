//! Change propagation, as the store offers it: every row of `domains`, `certificates` and
//! `link_keys` carries a version from one counter, set anew on every write, and every delete
//! leaves a tombstone with a version of its own; [`Changes::changes_since`] lists what changed
//! after a version, oldest first. A node keeps the last version it applied and asks again, so
//! nothing is missed however many notifications are lost: [`Changes::listen`] only hints that
//! it is worth asking now.
//!
//! Tombstones do not pile up: [`Changes::prune_tombstones`] deletes those older than a bound
//! (a day, from one node at a time), and [`Changes::pruned_through`] tells a node that was away
//! longer to compare instead of reading deletes.
//!
//! Versions are handed out in commit order (PostgreSQL: writers serialise on one advisory lock
//! taken before any row lock; SQLite: one writer), so a row committed after a scan never carries
//! a version below what that scan returned.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use super::StoreError;
use crate::Domain;

/// What a change is about; the current state is read from the store when it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Changed {
    /// A domain was added, updated (origin, issuance status, checks) or removed.
    Domain(Domain),
    /// A certificate was stored, renewed or removed.
    Certificate(Domain),
    /// A link key was added or removed.
    LinkKey(u16),
    /// A row whose key does not read as its table's (a damaged row): listed so that the scan
    /// goes past it, applied as nothing but an error in the log.
    Unreadable {
        /// The table, as the change list names it.
        table: String,
        /// The key as stored.
        key: String,
    },
}

/// One change: what, the version it took, and whether it was a delete (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The version the write took.
    pub version: u64,
    /// The row it touched.
    pub what: Changed,
    /// True for a delete.
    pub removed: bool,
}

/// Changes since a version, and hints that there are new ones.
#[async_trait::async_trait]
pub trait Changes: Send + Sync + 'static {
    /// At most `limit` changes with a version above `version`, oldest first: rows written and
    /// tombstones of rows deleted since. A row written several times is listed once, under its
    /// latest version.
    async fn changes_since(&self, version: u64, limit: u32) -> Result<Vec<Change>, StoreError>;
    /// The highest version of any row or tombstone committed, or the prune mark if higher (the
    /// last write a delete whose tombstone is gone): what a node that loads everything now has
    /// seen (0 for none).
    async fn latest_version(&self) -> Result<u64, StoreError>;
    /// Deletes the tombstones at least `keep` old, in one step that is due at most once per
    /// `keep` for every node sharing the store together (the call that finds it due does it):
    /// each run deletes the tombstones the run before saw committed (its mark), and marks the
    /// latest version for the next. How many were deleted; none when it was not due.
    async fn prune_tombstones(
        &self,
        now: SystemTime,
        keep: Duration,
    ) -> Result<Option<u64>, StoreError>;
    /// The highest version a pruned tombstone may have had (0: none pruned): a node that applied
    /// less may have missed a delete, and compares what it holds with the store instead.
    async fn pruned_through(&self) -> Result<u64, StoreError>;
    /// Wakes `hint` once listening has begun and after every change another writer commits,
    /// until the connection that listens is lost (then returns: the caller scans and listens
    /// again). A store only this process writes (SQLite) has nothing to hint and never returns.
    async fn listen(&self, hint: Arc<Notify>) -> Result<(), StoreError>;
}

/// The [`Change`] of a row as listed by both stores: its table (`kind`) and key as text. A key
/// that does not read as its table's is [`Changed::Unreadable`]: one damaged row must not stop
/// every later change on every node.
pub(super) fn to_change(version: i64, kind: &str, key: &str, removed: bool) -> Change {
    let what = match kind {
        "domains" => Domain::parse(key).ok().map(Changed::Domain),
        "certificates" => Domain::parse(key).ok().map(Changed::Certificate),
        "link_keys" => key.parse().ok().map(Changed::LinkKey),
        _ => None,
    };
    let what = what.unwrap_or_else(|| Changed::Unreadable {
        table: kind.to_owned(),
        key: key.to_owned(),
    });
    Change {
        version: u64::try_from(version).unwrap_or(0),
        what,
        removed,
    }
}

/// The query listing changes since `?1`/`$1` (limit `?2`/`$2`), the same text for both stores
/// but for the placeholders and the removed flag's literals.
pub(super) fn changes_query(placeholder: char, removed: (&str, &str)) -> String {
    let (row, tomb) = removed;
    let p = placeholder;
    format!(
        "SELECT version, 'domains', name, {row} FROM domains WHERE version > {p}1
         UNION ALL SELECT version, 'certificates', domain, {row} FROM certificates
             WHERE version > {p}1
         UNION ALL SELECT version, 'link_keys', CAST(id AS TEXT), {row} FROM link_keys
             WHERE version > {p}1
         UNION ALL SELECT version, kind, key, {tomb} FROM tombstones WHERE version > {p}1
         ORDER BY 1 LIMIT {p}2"
    )
}

/// The row that paces tombstone pruning, for both stores: the highest version pruned, the
/// mark (the latest version at the last run: what the next run deletes) and when that run was
/// (ms since the Unix epoch).
pub(super) const PRUNED_THROUGH: &str = "SELECT pruned_through FROM tombstone_prune";

/// The query for [`Changes::latest_version`], for both stores.
pub(super) const LATEST_VERSION: &str = "SELECT COALESCE(MAX(v), 0) FROM (
    SELECT MAX(version) AS v FROM domains
    UNION ALL SELECT MAX(version) FROM certificates
    UNION ALL SELECT MAX(version) FROM link_keys
    UNION ALL SELECT MAX(version) FROM tombstones
    UNION ALL SELECT pruned_through FROM tombstone_prune
) AS versions";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_does_not_read_as_its_tables_is_listed_as_unreadable() {
        for (kind, key) in [
            ("domains", "not a name!"),
            ("certificates", ""),
            ("link_keys", "70000"),
            ("other", "x"),
        ] {
            let c = to_change(7, kind, key, true);
            assert_eq!(
                c.what,
                Changed::Unreadable {
                    table: kind.into(),
                    key: key.into()
                }
            );
            assert_eq!(c.version, 7);
        }
        assert_eq!(
            to_change(8, "link_keys", "3", false).what,
            Changed::LinkKey(3)
        );
    }
}
