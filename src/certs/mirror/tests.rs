//! The mirror over a real SQLite file: rows round-trip sealed, are replaced only by
//! certificates issued as late or later, are deleted, survive a reopen, and a row altered or
//! moved does not open. The start-up fill copies a store and sweeps what it no longer holds.

use std::sync::Arc;
use std::time::SystemTime;

use super::*;
use crate::clock::{ManualClock, from_unix_secs};
use crate::domain::Zones;
use crate::issuer::LocalCa;
use crate::store::{SqliteStore, Store};

fn d(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

fn t(secs: u64) -> SystemTime {
    from_unix_secs(secs)
}

fn cert(tag: &str, not_after: u64) -> StoredCert {
    issued(tag, 10, not_after)
}

fn issued(tag: &str, not_before: u64, not_after: u64) -> StoredCert {
    StoredCert {
        issuer: "acme".into(),
        chain_pem: format!("chain {tag}"),
        key_pem: format!("PRIVATE KEY {tag}"),
        not_before: t(not_before),
        not_after: t(not_after),
    }
}

fn open(path: &Path, key: &Arc<SealKey>) -> CertMirror {
    CertMirror::open(path, key.clone(), MirrorMetrics::unregistered()).unwrap()
}

/// Copies of `a.example.com` and `b.example.com` (tags `a`, `b`, expiring at 100), written
/// together.
async fn two_copies(m: &CertMirror) -> (Domain, Domain) {
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    let rows = vec![(a.clone(), cert("a", 100)), (b.clone(), cert("b", 100))];
    assert_eq!(m.put_all(rows).await.unwrap(), 2);
    (a, b)
}

/// Whatever each expires: a renewal may be shorter-lived than the certificate it renews.
#[tokio::test]
async fn a_copy_reads_back_and_is_replaced_only_by_one_issued_as_late_or_later() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(
        &dir.path().join(MIRROR_FILE),
        &Arc::new(SealKey::generate()),
    );
    let a = d("a.example.com");
    assert_eq!(m.read(&a).await.unwrap(), None);
    assert!(m.put(&a, &issued("first", 10, 100)).await.unwrap());
    assert_eq!(m.read(&a).await.unwrap(), Some(issued("first", 10, 100)));
    assert!(m.put(&a, &issued("renewed", 20, 90)).await.unwrap());
    assert!(!m.put(&a, &issued("older", 15, 150)).await.unwrap());
    assert_eq!(m.read(&a).await.unwrap(), Some(issued("renewed", 20, 90)));
    assert!(m.put(&a, &issued("reissued", 20, 90)).await.unwrap());
    assert_eq!(m.read(&a).await.unwrap(), Some(issued("reissued", 20, 90)));
    assert_eq!(m.metrics.entries.get(), 1);
}

/// A mirror written before rows were ordered by issuance gains the column on opening; its rows
/// read as issued at the epoch, and the next copy of each replaces it.
#[tokio::test]
async fn a_mirror_from_before_issue_times_takes_the_next_copy_of_each_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(MIRROR_FILE);
    let key = Arc::new(SealKey::generate());
    let a = d("a.example.com");
    {
        let m = open(&path, &key);
        assert!(m.put(&a, &issued("old", 10, 500)).await.unwrap());
    }
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TABLE earlier (domain TEXT PRIMARY KEY, not_after INTEGER NOT NULL,
             sealed BLOB NOT NULL, generation INTEGER NOT NULL);
         INSERT INTO earlier SELECT domain, not_after, sealed, generation FROM certificates;
         DROP TABLE certificates;
         ALTER TABLE earlier RENAME TO certificates;",
    )
    .unwrap();
    drop(raw);
    let m = open(&path, &key);
    assert_eq!(m.read(&a).await.unwrap(), Some(issued("old", 10, 500)));
    assert!(m.put(&a, &issued("renewed", 5, 90)).await.unwrap());
    assert_eq!(m.read(&a).await.unwrap(), Some(issued("renewed", 5, 90)));
}

#[tokio::test]
async fn a_removed_copy_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(
        &dir.path().join(MIRROR_FILE),
        &Arc::new(SealKey::generate()),
    );
    let (a, b) = two_copies(&m).await;
    assert_eq!(m.metrics.entries.get(), 2);
    assert!(m.remove(&a).await.unwrap());
    assert!(!m.remove(&a).await.unwrap());
    assert_eq!(m.read(&a).await.unwrap(), None);
    assert_eq!(m.read(&b).await.unwrap(), Some(cert("b", 100)));
    assert_eq!(m.metrics.entries.get(), 1);
}

#[tokio::test]
async fn copies_survive_a_reopen_and_no_key_is_on_disk_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(MIRROR_FILE);
    let key = Arc::new(SealKey::generate());
    let a = d("a.example.com");
    {
        let m = open(&path, &key);
        m.put(&a, &cert("kept", 100)).await.unwrap();
    }
    let mut on_disk = Vec::new();
    for file in std::fs::read_dir(dir.path()).unwrap() {
        on_disk.extend(std::fs::read(file.unwrap().path()).unwrap());
    }
    let needle = b"PRIVATE KEY kept";
    assert!(
        !on_disk.windows(needle.len()).any(|w| w == needle),
        "a private key is in the mirror's files in the clear"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let m = open(&path, &key);
    assert_eq!(m.metrics.entries.get(), 1);
    assert_eq!(m.read(&a).await.unwrap(), Some(cert("kept", 100)));
    // Another seal key opens nothing.
    let other = open(&path, &Arc::new(SealKey::generate()));
    assert!(matches!(other.read(&a).await, Err(MirrorError::Seal(_))));
}

#[tokio::test]
async fn an_altered_or_moved_row_is_refused_by_the_seal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(MIRROR_FILE);
    let m = open(&path, &Arc::new(SealKey::generate()));
    let (a, b) = two_copies(&m).await;
    let raw = Connection::open(&path).unwrap();
    // One byte of a's sealed value flipped, in another process's way: straight in the file.
    let mut sealed: Vec<u8> = raw
        .query_row(
            "SELECT sealed FROM certificates WHERE domain = 'a.example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    raw.execute(
        "UPDATE certificates SET sealed = ?1 WHERE domain = 'a.example.com'",
        params![sealed],
    )
    .unwrap();
    assert!(matches!(m.read(&a).await, Err(MirrorError::Seal(_))));
    // b's intact row copied under c's name: bound to b, it does not open as c.
    let c = d("c.example.com");
    raw.execute(
        "INSERT INTO certificates (domain, not_after, sealed, generation)
         SELECT 'c.example.com', not_after, sealed, generation FROM certificates
         WHERE domain = 'b.example.com'",
        [],
    )
    .unwrap();
    assert!(matches!(m.read(&c).await, Err(MirrorError::Seal(_))));
    assert_eq!(m.read(&b).await.unwrap(), Some(cert("b", 100)));
}

#[tokio::test]
async fn the_fill_copies_every_stored_certificate_and_sweeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    // More than a page, to cross page boundaries.
    let names: Vec<_> = (0..PAGE_FOR_TESTS + 7)
        .map(|i| d(&format!("n{i}.example.com")))
        .collect();
    for (i, name) in names.iter().enumerate() {
        store.add_domain(name, t(1)).await.unwrap();
        store
            .put_certificate(name, &cert(&i.to_string(), 100))
            .await
            .unwrap();
    }
    let key = Arc::new(SealKey::generate());
    let mirror = Arc::new(open(&dir.path().join(MIRROR_FILE), &key));
    // A copy the store no longer holds (removed while this node was down).
    let stale = d("gone.example.com");
    mirror.put(&stale, &cert("gone", 100)).await.unwrap();
    let issuer =
        Arc::new(LocalCa::load_or_create(dir.path(), Zones::reserved(), clock.clock()).unwrap());
    let certs = Arc::new(
        crate::certs::tests::certs_over(&store, issuer, names.clone(), clock.clock())
            .with_mirror(Some(mirror.clone())),
    );
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    certs.clone().fill_mirror(stop_rx).await;

    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            mirror.read(name).await.unwrap(),
            Some(cert(&i.to_string(), 100))
        );
    }
    assert_eq!(mirror.read(&stale).await.unwrap(), None);
    assert_eq!(mirror.metrics.entries.get(), names.len() as i64);
    assert_eq!(mirror.metrics.filled.get(), 1);
}

/// The fill's page size, to make a store span pages.
const PAGE_FOR_TESTS: usize = fill::PAGE as usize;

#[tokio::test]
async fn a_name_removed_before_its_copy_is_written_is_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let policy = Arc::new(crate::policy::Policy::new([d("a.example.com")], None));
    let m = open(
        &dir.path().join(MIRROR_FILE),
        &Arc::new(SealKey::generate()),
    )
    .registered_by(policy.clone());
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    assert!(m.put(&a, &cert("a", 100)).await.unwrap());
    // b was read from the store, then removed, before its copy was written.
    assert!(!m.put(&b, &cert("b", 100)).await.unwrap());
    assert_eq!(m.read(&b).await.unwrap(), None);
    assert_eq!(m.metrics.entries.get(), 1);
}
