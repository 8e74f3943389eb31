//! The SQLite schema, as the migrations that build it: each runs once, in order, and
//! `PRAGMA user_version` records how many have.

use rusqlite::Connection;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
pub(super) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    last_error TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    retry_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE certificates (
    domain TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after INTEGER NOT NULL
);
CREATE TABLE link_keys (
    id INTEGER PRIMARY KEY,
    secret BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE challenges (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
",
    "
-- The latest onboarding check report (JSON), dropped with its domain.
ALTER TABLE domains ADD COLUMN checks TEXT;
",
    r"
-- The kind of the last failure (`FailureKind::code`), next to its words in `last_error`.
ALTER TABLE domains ADD COLUMN error_kind TEXT;
-- NOTE: rows written before kinds were stored get theirs derived once from the words, as the
-- edge used to read them; from here on the kind is written with the words and never derived.
UPDATE domains SET error_kind = CASE
    WHEN last_error LIKE 'no certificate order while the `%' THEN
        'held-back:' || substr(
            substr(last_error, instr(last_error, '`') + 1),
            1,
            instr(substr(last_error, instr(last_error, '`') + 1), '`') - 1
        )
    WHEN instr(last_error, 'urn:ietf:params:acme:error:') > 0 THEN
        'acme:' || substr(last_error, instr(last_error, 'urn:ietf:params:acme:error:') + 27)
    WHEN last_error LIKE 'obtaining a certificate %' THEN 'order'
    WHEN last_error LIKE 'local CA %' THEN 'local'
    ELSE 'unknown'
END
WHERE last_error IS NOT NULL;
",
    "
-- Who registered the domain: `admin` (an operator) or `ask` (approved by tls.ask at a
-- handshake). Rows from before origins were stored were all added by an operator.
ALTER TABLE domains ADD COLUMN origin TEXT NOT NULL DEFAULT 'admin';
",
    "
-- Cluster-wide certificate work. The fence a certificate was written under (0: unfenced): a
-- writer with an older fence never replaces it.
ALTER TABLE certificates ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
-- One issuance lease per name; times in milliseconds since the Unix epoch. Rows are expired,
-- never deleted, so a name's fence only grows and its unfinished order URL is kept.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    fence INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    order_url TEXT
);
-- The fence sequence: the last fence handed out, for any name.
CREATE TABLE lease_fence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO lease_fence (id, last) VALUES (1, 0);
-- Shared order budgets (GCRA): the theoretical arrival time and the CA's pause, in ms.
CREATE TABLE order_budgets (
    name TEXT PRIMARY KEY,
    tat INTEGER NOT NULL,
    paused_until INTEGER NOT NULL
);
",
    "
-- Change propagation, as in the PostgreSQL schema: every row of domains, certificates and
-- link_keys takes a fresh version from one counter on each write, and each delete leaves a
-- tombstone, so the one code path that applies changes since a version works on both stores.
CREATE TABLE row_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO row_version (id, last) VALUES (1, 0);
CREATE TABLE tombstones (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX tombstones_version ON tombstones (version);
ALTER TABLE domains ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX domains_version ON domains (version);
CREATE TRIGGER domains_inserted AFTER INSERT ON domains BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    UPDATE domains SET version = (SELECT last FROM row_version) WHERE name = NEW.name;
END;
CREATE TRIGGER domains_updated AFTER UPDATE ON domains WHEN NEW.version = OLD.version BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    UPDATE domains SET version = (SELECT last FROM row_version) WHERE name = NEW.name;
END;
CREATE TRIGGER domains_deleted AFTER DELETE ON domains BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    INSERT OR REPLACE INTO tombstones (kind, key, version)
    VALUES ('domains', CAST(OLD.name AS TEXT), (SELECT last FROM row_version));
END;
ALTER TABLE certificates ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX certificates_version ON certificates (version);
CREATE TRIGGER certificates_inserted AFTER INSERT ON certificates BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    UPDATE certificates SET version = (SELECT last FROM row_version) WHERE domain = NEW.domain;
END;
CREATE TRIGGER certificates_updated AFTER UPDATE ON certificates WHEN NEW.version = OLD.version BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    UPDATE certificates SET version = (SELECT last FROM row_version) WHERE domain = NEW.domain;
END;
CREATE TRIGGER certificates_deleted AFTER DELETE ON certificates BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    INSERT OR REPLACE INTO tombstones (kind, key, version)
    VALUES ('certificates', CAST(OLD.domain AS TEXT), (SELECT last FROM row_version));
END;
ALTER TABLE link_keys ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
CREATE INDEX link_keys_version ON link_keys (version);
CREATE TRIGGER link_keys_inserted AFTER INSERT ON link_keys BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    UPDATE link_keys SET version = (SELECT last FROM row_version) WHERE id = NEW.id;
END;
CREATE TRIGGER link_keys_updated AFTER UPDATE ON link_keys WHEN NEW.version = OLD.version BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    UPDATE link_keys SET version = (SELECT last FROM row_version) WHERE id = NEW.id;
END;
CREATE TRIGGER link_keys_deleted AFTER DELETE ON link_keys BEGIN
    UPDATE row_version SET last = last + 1 WHERE id = 1;
    INSERT OR REPLACE INTO tombstones (kind, key, version)
    VALUES ('link_keys', CAST(OLD.id AS TEXT), (SELECT last FROM row_version));
END;
-- The node (one, for SQLite): when it started, its last heartbeat and the last version it
-- applied (times in milliseconds since the Unix epoch).
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    applied INTEGER NOT NULL
);
",
    "
-- A retired link key stops sealing new links and keeps opening its own (seconds since the
-- Unix epoch; NULL while it may seal).
ALTER TABLE link_keys ADD COLUMN retired_at INTEGER;
",
    "
-- Where a link of the domain that does not open sends the recipient (an http(s) URL the
-- operator chose); NULL: the edge's page saying the link is not valid.
ALTER TABLE domains ADD COLUMN fallback_url TEXT;
",
    "
-- Tombstone pruning, as in the PostgreSQL schema: a run deletes the tombstones up to the last
-- run's mark and marks the latest version now, at most once per bound (`marked_at`, ms).
CREATE TABLE tombstone_prune (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL,
    mark INTEGER NOT NULL,
    marked_at INTEGER NOT NULL
);
INSERT INTO tombstone_prune (id, pruned_through, mark, marked_at) VALUES (1, 0, 0, 0);
",
    "
-- The certificate gauges (count, soonest expiry, expiring soon) read after every issuance,
-- answered from this index instead of every row's certificate and key.
CREATE INDEX certificates_not_after ON certificates (not_after);
",
    "
-- The highest link key id handed out, so a removed key's id never comes back: a new key under
-- it would read the old key's links as forged instead of sealed by a key that is gone.
CREATE TABLE link_key_ids (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO link_key_ids (id, last) SELECT 1, COALESCE(MAX(id), 0) FROM link_keys;
",
];

pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let done: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}
