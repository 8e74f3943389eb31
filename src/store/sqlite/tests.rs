//! Tests of the SQLite store: the conformance suite every store passes, then what is SQLite's
//! own (reopening a file, schema migrations).

use super::schema::MIGRATIONS;
use super::*;
use crate::clock::from_unix_secs;
use crate::store::{AcmeProblem, FailureKind, Origin};

crate::store_conformance_tests!(async {
    SqliteStore::in_memory().expect("in-memory SQLite store")
});

fn d(s: &str) -> Domain {
    Domain::parse(s).unwrap()
}

fn t(secs: u64) -> SystemTime {
    from_unix_secs(secs)
}

/// A database another process holds locked past the busy timeout is away for now, as an
/// unreachable PostgreSQL is: an admin write answers 503, an issued certificate's write is
/// tried again.
#[tokio::test]
async fn a_database_locked_past_the_busy_timeout_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s = SqliteStore::open(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let e = s.add_domain(&d("a.example.com"), t(1)).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    other.execute_batch("ROLLBACK;").unwrap();
    assert!(s.add_domain(&d("a.example.com"), t(1)).await.unwrap());
}

#[test]
fn reopening_keeps_data_and_does_not_rerun_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let s = SqliteStore::open(&path).unwrap();
    rt.block_on(s.add_domain(&d("a.example.com"), t(1)))
        .unwrap();
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(rt.block_on(s.domains()).unwrap().len(), 1);
}

/// Every commit to the file is durable when it returns (`synchronous=FULL`; NORMAL in WAL mode
/// may lose the last commits to a power cut, a new link key among them).
#[test]
fn commits_to_the_file_are_synced() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db")).unwrap();
    let conn = s.conn.lock().unwrap();
    let synchronous: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(synchronous, 2, "FULL");
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

/// A domain whose origin this version does not know (written by a newer node sharing the store)
/// is read, as an operator's: refusing the row failed every start of every older node.
#[tokio::test]
async fn a_domain_of_an_origin_this_version_does_not_know_is_read_as_an_operators() {
    let s = SqliteStore::in_memory().unwrap();
    let a = d("a.example.com");
    s.add_domain(&a, t(1)).await.unwrap();
    s.conn
        .lock()
        .unwrap()
        .execute(
            "UPDATE domains SET origin = 'import' WHERE name = 'a.example.com'",
            [],
        )
        .unwrap();
    let all = s.domains().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].origin, Origin::Admin);
    assert_eq!(s.domain(&a).await.unwrap().unwrap().origin, Origin::Admin);
}

/// A store that cannot be opened is named, with what to do: a directory that does not exist is
/// not created (a typo in `store.path` would make one), and a file that is not a database is
/// said to be one, not "configuring database".
#[test]
fn a_file_that_cannot_be_a_store_is_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("clickedge.db");
    let err = SqliteStore::open(&missing).err().unwrap();
    assert!(matches!(err, StoreError::NoDirectory { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "store: the SQLite database {}: its directory does not exist: create it, or set \
             store.path to a file in one that does",
            missing.display()
        )
    );
    assert!(!missing.parent().unwrap().exists());

    let not_a_db = dir.path().join("clickedge.toml");
    std::fs::write(&not_a_db, "data_dir = \"somewhere\"\n".repeat(100)).unwrap();
    let err = SqliteStore::open(&not_a_db).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "store: the SQLite database {}: setting it up (is it a SQLite database?)",
            not_a_db.display()
        )
    );
    assert!(crate::errors::chain(&err).contains("file is not a database"));
}

#[test]
fn failures_recorded_before_kinds_get_theirs_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        // A database as the version before kinds left it.
        let conn = Connection::open(&path).unwrap();
        for (i, sql) in MIGRATIONS.iter().take(2).enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i + 1).unwrap();
        }
        for (name, error) in [
            (
                "held.example.com",
                "no certificate order while the `points-to-edge` check fails: A 192.0.2.7; `clickedge domain check held.example.com` shows the fix",
            ),
            (
                "caa.example.com",
                "the CA refused caa.example.com: urn:ietf:params:acme:error:caa: CAA record forbids",
            ),
            (
                "net.example.com",
                "obtaining a certificate for net.example.com: connection refused",
            ),
            (
                "ca.example.com",
                "local CA could not issue a certificate for ca.example.com: no key",
            ),
            ("odd.example.com", "something else"),
        ] {
            conn.execute(
                "INSERT INTO domains (name, created_at, last_error, failures, retry_at)
                 VALUES (?1, 1, ?2, 1, 100)",
                params![name, error],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO domains (name, created_at) VALUES ('ok.example.com', 1)",
            [],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let domains = rt.block_on(s.domains()).unwrap();
    assert!(
        domains.iter().all(|r| r.origin == Origin::Admin),
        "rows from before origins were added by an operator"
    );
    let kinds: Vec<_> = domains
        .into_iter()
        .map(|r| (r.name.to_string(), r.last_error.map(|f| f.kind)))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ca.example.com".into(), Some(FailureKind::Local)),
            (
                "caa.example.com".into(),
                Some(FailureKind::Problem(AcmeProblem::Caa))
            ),
            (
                "held.example.com".into(),
                Some(FailureKind::HeldBack {
                    check: "points-to-edge".into()
                })
            ),
            ("net.example.com".into(), Some(FailureKind::Order)),
            ("odd.example.com".into(), Some(FailureKind::Unknown)),
            ("ok.example.com".into(), None),
        ]
    );
    let rec = rt
        .block_on(s.domain(&d("caa.example.com")))
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.last_error.unwrap().detail,
        "the CA refused caa.example.com: urn:ietf:params:acme:error:caa: CAA record forbids"
    );
    assert_eq!((rec.failures, rec.retry_at), (1, Some(t(100))));
}

#[test]
fn a_database_from_before_key_ids_were_kept_hands_out_ids_after_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    {
        // A database as the version before the last key id was kept: keys 1 and 3 (2 removed).
        let conn = Connection::open(&path).unwrap();
        let before = MIGRATIONS.len() - 1;
        for (i, sql) in MIGRATIONS.iter().take(before).enumerate() {
            conn.execute_batch(sql).unwrap();
            conn.pragma_update(None, "user_version", i + 1).unwrap();
        }
        for id in [1, 3] {
            conn.execute(
                "INSERT INTO link_keys (id, secret, created_at) VALUES (?1, ?2, 1)",
                params![id, &[7u8; 32][..]],
            )
            .unwrap();
        }
    }
    let s = SqliteStore::open(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(s.remove_link_key(3).await.unwrap(), KeyChange::Done);
        assert_eq!(s.add_link_key([8; 32], t(2)).await.unwrap(), 4);
    });
}

/// The key id after 65535 is refused with nothing stored: stored, it made the whole ring
/// unreadable and the edge unable to start.
#[test]
fn a_key_id_past_65535_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s = SqliteStore::open(&path).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async { s.add_link_key([1; 32], t(1)).await.unwrap() });
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE link_key_ids SET last = 65535", [])
        .unwrap();
    rt.block_on(async {
        assert!(matches!(
            s.add_link_key([2; 32], t(2)).await,
            Err(StoreError::Corrupt(_))
        ));
        let keys = s.link_keys().await.unwrap();
        assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), [1]);
    });
}
