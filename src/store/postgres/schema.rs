//! The PostgreSQL schema, as the migrations that build it: each runs once, in order, and the
//! `schema_version` row records how many have. Nodes starting at the same moment serialise on
//! one advisory lock held by the migrating transaction, so each migration runs exactly once.
//! A migration's statement waits at most [`TABLE_LOCK_WAIT`] for a table another session holds
//! (a long query, a transaction left open), then the whole transaction rolls back and is tried
//! again: queued behind that session, its lock request would hold every other node's queries
//! on the table for as long.
//!
//! Every mutable row carries a `version` drawn from one sequence (`row_version`), set anew on
//! every write, so that a node can later fetch what changed since the last version it saw.
//! Secrets (`key_sealed`, `secret_sealed`, `value_sealed`) are sealed by the store, never
//! stored in the clear. Times are whole Unix seconds, as in the SQLite schema.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// Schema migrations, applied in order; `schema_version.version` records how many have run.
pub(super) const MIGRATIONS: &[&str] = &[
    "
CREATE SEQUENCE row_version;
CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_error TEXT,
    error_kind TEXT,
    failures BIGINT NOT NULL DEFAULT 0,
    retry_at BIGINT NOT NULL DEFAULT 0,
    checks TEXT,
    version BIGINT NOT NULL DEFAULT nextval('row_version')
);
CREATE TABLE certificates (
    domain TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    key_sealed BYTEA NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT nextval('row_version')
);
CREATE TABLE link_keys (
    id INTEGER PRIMARY KEY,
    secret_sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT nextval('row_version')
);
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value_sealed BYTEA NOT NULL,
    version BIGINT NOT NULL DEFAULT nextval('row_version')
);
CREATE TABLE challenges (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (kind, name)
);
",
    "
-- Cluster-wide certificate work. The fence a certificate was written under (0: unfenced): a
-- writer with an older fence never replaces it.
ALTER TABLE certificates ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
-- Fencing tokens, for every name.
CREATE SEQUENCE lease_fence;
-- One issuance lease per name; times in milliseconds since the Unix epoch. Rows are expired,
-- never deleted, so a name's fence only grows and its unfinished order URL is kept.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    fence BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    order_url TEXT
);
-- Shared order budgets (GCRA): the theoretical arrival time and the CA's pause, in ms.
CREATE TABLE order_budgets (
    name TEXT PRIMARY KEY,
    tat BIGINT NOT NULL,
    paused_until BIGINT NOT NULL
);
",
    r"
-- Change propagation. Every write to a propagated table (domains, certificates, link_keys)
-- first takes one transaction-scoped advisory lock (a statement trigger, before any row lock,
-- so writers never deadlock on it): writers commit one at a time, versions are handed out in
-- commit order, and a scan `version > last_seen` never skips a row committed later under a
-- lower version. Each row write takes a fresh version and sends a `clickedge_changes`
-- notification, delivered at commit (a hint only); each delete leaves a tombstone.
CREATE TABLE tombstones (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX domains_version ON domains (version);
CREATE INDEX certificates_version ON certificates (version);
CREATE INDEX link_keys_version ON link_keys (version);
CREATE INDEX tombstones_version ON tombstones (version);
CREATE FUNCTION clickedge_write_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7162863372592195174);
    RETURN NULL;
END $$;
CREATE FUNCTION clickedge_versioned() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := nextval('row_version');
    PERFORM pg_notify('clickedge_changes', '');
    RETURN NEW;
END $$;
CREATE FUNCTION clickedge_tombstone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tombstones (kind, key, version)
    VALUES (TG_TABLE_NAME, to_jsonb(OLD) ->> TG_ARGV[0], nextval('row_version'))
    ON CONFLICT (kind, key) DO UPDATE SET version = EXCLUDED.version;
    PERFORM pg_notify('clickedge_changes', '');
    RETURN OLD;
END $$;
CREATE TRIGGER domains_lock BEFORE INSERT OR UPDATE OR DELETE ON domains
    FOR EACH STATEMENT EXECUTE FUNCTION clickedge_write_lock();
CREATE TRIGGER domains_version BEFORE INSERT OR UPDATE ON domains
    FOR EACH ROW EXECUTE FUNCTION clickedge_versioned();
CREATE TRIGGER domains_tombstone AFTER DELETE ON domains
    FOR EACH ROW EXECUTE FUNCTION clickedge_tombstone('name');
CREATE TRIGGER certificates_lock BEFORE INSERT OR UPDATE OR DELETE ON certificates
    FOR EACH STATEMENT EXECUTE FUNCTION clickedge_write_lock();
CREATE TRIGGER certificates_version BEFORE INSERT OR UPDATE ON certificates
    FOR EACH ROW EXECUTE FUNCTION clickedge_versioned();
CREATE TRIGGER certificates_tombstone AFTER DELETE ON certificates
    FOR EACH ROW EXECUTE FUNCTION clickedge_tombstone('domain');
CREATE TRIGGER link_keys_lock BEFORE INSERT OR UPDATE OR DELETE ON link_keys
    FOR EACH STATEMENT EXECUTE FUNCTION clickedge_write_lock();
CREATE TRIGGER link_keys_version BEFORE INSERT OR UPDATE ON link_keys
    FOR EACH ROW EXECUTE FUNCTION clickedge_versioned();
CREATE TRIGGER link_keys_tombstone AFTER DELETE ON link_keys
    FOR EACH ROW EXECUTE FUNCTION clickedge_tombstone('id');
-- The nodes of the cluster: when each started, its last heartbeat and the last version it
-- applied (times in milliseconds since the Unix epoch).
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    applied BIGINT NOT NULL
);
",
    "
-- A retired link key stops sealing new links and keeps opening its own (seconds since the
-- Unix epoch; NULL while it may seal).
ALTER TABLE link_keys ADD COLUMN retired_at BIGINT;
",
    "
-- Where a link of the domain that does not open sends the recipient (an http(s) URL the
-- operator chose); NULL: the edge's page saying the link is not valid. Setting it is an update
-- of the row: the version trigger propagates it like any other domain change.
ALTER TABLE domains ADD COLUMN fallback_url TEXT;
",
    "
-- Tombstone pruning, paced by one row: a run deletes the tombstones up to the last run's mark
-- (the latest version then) and marks the latest version now, at most once per bound for all
-- nodes together (`marked_at`, ms since the Unix epoch). `pruned_through` is the highest version
-- a pruned tombstone may have had.
CREATE TABLE tombstone_prune (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    pruned_through BIGINT NOT NULL,
    mark BIGINT NOT NULL,
    marked_at BIGINT NOT NULL
);
INSERT INTO tombstone_prune (pruned_through, mark, marked_at) VALUES (0, 0, 0);
",
    "
-- The certificate gauges (count, soonest expiry, expiring soon) read after every issuance:
-- an index-only scan instead of the table's rows.
CREATE INDEX certificates_not_after ON certificates (not_after);
",
    "
-- The highest link key id handed out, so a removed key's id never comes back: a new key under
-- it would read the old key's links as forged instead of sealed by a key that is gone.
CREATE TABLE link_key_ids (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last INTEGER NOT NULL
);
INSERT INTO link_key_ids (last) SELECT COALESCE(MAX(id), 0) FROM link_keys;
",
    "
-- Certificates whose domain is gone: a removal that began while a name's first certificate was
-- being written could leave that certificate behind, counted as expired once it expires.
DELETE FROM certificates WHERE domain NOT IN (SELECT name FROM domains);
",
    "
-- Names in byte order, as listings page through them (`GET /v1/domains`): each page a range
-- of this index, where the primary key's order is the database's collation.
CREATE INDEX domains_name_bytes ON domains (name COLLATE \"C\");
",
];

/// The advisory lock every write to a propagated table takes first (`clickedge_write_lock`, a
/// statement trigger): a transaction that locks such a row or table before it writes (a read
/// `FOR UPDATE`, a `LOCK TABLE`) takes this lock before that, as the trigger would, or it and a
/// writer holding the lock and waiting for the row deadlock.
const WRITE_LOCK: i64 = 7162863372592195174;

/// Takes [`WRITE_LOCK`] in `tx`, before any row or table lock of a propagated table.
pub(super) async fn take_write_lock(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .await
        .map(drop)
}

/// The advisory lock key the migrating transaction holds (`clickedg` in ASCII): any number
/// would do, as long as every node uses the same one.
const MIGRATION_LOCK: i64 = 0x636c_6963_6b65_6467;

/// How long a migration's statement waits for a table's lock before giving way.
const TABLE_LOCK_WAIT: &str = "5s";

/// The pause before a migration that gave way is tried again, and how many tries in all (some
/// six minutes): past them, the start fails naming the lock timeout.
const GIVE_WAY_PAUSE: Duration = Duration::from_secs(1);
const MIGRATE_TRIES: u32 = 60;

/// Applies the migrations this database has not seen, in one transaction holding
/// [`MIGRATION_LOCK`]: a node that starts while another migrates waits, then finds the work done.
/// Returns how many ran.
pub(super) async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    migrate_to(client, MIGRATIONS.len()).await
}

/// [`migrate`], up to the first `upto` migrations.
pub(super) async fn migrate_to(
    client: &mut Client,
    upto: usize,
) -> Result<usize, tokio_postgres::Error> {
    // Another node may be migrating (this waits for its lock), and a migration may rewrite a
    // large table: neither is bounded here, unlike every other statement (the caller bounds
    // the session again after). Waiting for a table's lock is bounded per transaction.
    client
        .batch_execute("SET lock_timeout = 0; SET statement_timeout = 0")
        .await?;
    let mut tries = 1;
    loop {
        match migrate_once(client, upto).await {
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) && tries < MIGRATE_TRIES => {
                tracing::warn!(
                    tries,
                    "a schema migration waited {TABLE_LOCK_WAIT} for a table another session holds (a long query, or a transaction left open): rolled back so the others' queries go on, trying again"
                );
                tries += 1;
                tokio::time::sleep(GIVE_WAY_PAUSE).await;
            }
            result => return result,
        }
    }
}

async fn migrate_once(client: &mut Client, upto: usize) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{TABLE_LOCK_WAIT}'"))
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
             version INTEGER NOT NULL
         );
         INSERT INTO schema_version (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )
    .await?;
    let done: i32 = tx
        .query_one("SELECT version FROM schema_version", &[])
        .await?
        .get(0);
    let done = usize::try_from(done).unwrap_or(0);
    let mut ran = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().take(upto).skip(done) {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE schema_version SET version = $1", &[&version])
            .await?;
        ran += 1;
    }
    tx.commit().await?;
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction that takes the write lock before its row lock takes the trigger's.
    #[test]
    fn the_write_lock_is_the_triggers() {
        let taken = format!("pg_advisory_xact_lock({WRITE_LOCK})");
        assert!(MIGRATIONS.iter().any(|m| m.contains(&taken)), "{taken}");
    }
}
