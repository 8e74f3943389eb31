//! Tests of the PostgreSQL store against a real server: the conformance suite every store
//! passes, then what is PostgreSQL's own (migrations under concurrent starts, an unreachable
//! database, secrets sealed at rest).

#[path = "../../../tests/common/postgres.rs"]
mod harness;

use super::*;
use crate::config::StoreUrl;

async fn fresh() -> PgStore {
    let url = StoreUrl::parse(&harness::shared().fresh_database()).expect("harness URL");
    PgStore::connect(&url, None, SealKey::generate())
        .await
        .unwrap_or_else(|e| panic!("{}", crate::errors::chain(&e)))
}

crate::store_conformance_tests!(fresh());

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().expect("a database in the URL")
}

#[tokio::test]
async fn three_nodes_starting_at_once_migrate_the_schema_once() {
    let url = StoreUrl::parse(&harness::shared().fresh_database()).unwrap();
    let (pool, _, _) = connect::pool(&url, None).unwrap();
    let (mut a, mut b, mut c) = (
        pool.get().await.unwrap(),
        pool.get().await.unwrap(),
        pool.get().await.unwrap(),
    );
    let (ra, rb, rc) = tokio::join!(
        schema::migrate(&mut a),
        schema::migrate(&mut b),
        schema::migrate(&mut c)
    );
    let ran: Vec<usize> = [ra, rb, rc]
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{}", crate::errors::chain(&e))))
        .collect();
    assert_eq!(
        ran.iter().sum::<usize>(),
        schema::MIGRATIONS.len(),
        "each migration ran once among the three: {ran:?}"
    );
    assert!(ran.contains(&schema::MIGRATIONS.len()), "{ran:?}");

    // Three whole stores starting on one new database all come up and share it.
    let url = StoreUrl::parse(&harness::shared().fresh_database()).unwrap();
    let (x, y, z) = tokio::join!(
        PgStore::connect(&url, None, SealKey::generate()),
        PgStore::connect(&url, None, SealKey::generate()),
        PgStore::connect(&url, None, SealKey::generate()),
    );
    let (x, y, _z) = (x.unwrap(), y.unwrap(), z.unwrap());
    let name = Domain::parse("a.example.com").unwrap();
    x.add_domain(&name, crate::clock::from_unix_secs(1))
        .await
        .unwrap();
    assert!(y.domain(&name).await.unwrap().is_some());
    let version =
        harness::shared().psql(db_name(url.secret()), "SELECT version FROM schema_version");
    assert_eq!(version.trim(), schema::MIGRATIONS.len().to_string());
}

/// A migration that needs a table a long reader holds gives way (rolls back after a short lock
/// wait and tries again) rather than queueing its lock request, behind which every other
/// session's queries on that table would wait as long as the reader; it runs once the reader ends.
#[tokio::test]
async fn a_migration_behind_a_long_reader_lets_other_queries_through() {
    let url = StoreUrl::parse(&harness::shared().fresh_database()).unwrap();
    let (pool, _, _) = connect::pool(&url, None).unwrap();
    let altering = schema::MIGRATIONS
        .iter()
        .position(|m| m.contains("ALTER TABLE domains"))
        .expect("a migration that alters the domains table");
    let mut migrating = pool.get().await.unwrap();
    schema::migrate_to(&mut migrating, altering).await.unwrap();

    let mut reader = pool.get().await.unwrap();
    let long_read = reader.transaction().await.unwrap();
    long_read
        .batch_execute("SELECT count(*) FROM domains")
        .await
        .unwrap();
    let migration = tokio::spawn(async move {
        schema::migrate(&mut migrating)
            .await
            .map_err(|e| e.to_string())
    });

    // Let the migration ask for its lock, then read the table from a third session; the guard
    // only keeps a regression from hanging the suite.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = pool.get().await.unwrap();
    other.batch_execute("SET lock_timeout = 0").await.unwrap();
    let read = tokio::time::timeout(
        Duration::from_secs(50),
        other.query_one("SELECT count(*) FROM domains", &[]),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "another session's read waited behind the migration: {read:?}"
    );
    assert!(
        !migration.is_finished(),
        "the long reader still holds the table"
    );

    long_read.commit().await.unwrap();
    let ran = migration.await.unwrap().unwrap();
    assert_eq!(ran, schema::MIGRATIONS.len() - altering);
}

#[tokio::test]
async fn an_unreachable_database_is_named_with_its_password_redacted() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = StoreUrl::parse(&format!(
        "postgres://edge:hunter2@127.0.0.1:{port}/clickedge"
    ))
    .unwrap();
    let err = match PgStore::connect(&url, None, SealKey::generate()).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => crate::errors::chain(&e),
    };
    assert!(
        err.contains(&format!(
            "cannot reach the PostgreSQL database postgres://edge:***@127.0.0.1:{port}/clickedge"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn connections_are_configured_to_give_up_on_a_peer_that_stops_acknowledging() {
    // Keepalive alone sends no probe while a query waits unacknowledged: only the user timeout
    // bounds that wait (else the kernel retransmits for about a quarter of an hour).
    let url = StoreUrl::parse("postgres://edge@127.0.0.1:5432/clickedge").unwrap();
    let (_, listener, _) = connect::pool(&url, None).unwrap();
    assert_eq!(
        listener.config.get_tcp_user_timeout(),
        Some(&connect::USER_TIMEOUT)
    );
    // The URL's own value stands.
    let url =
        StoreUrl::parse("postgres://edge@127.0.0.1:5432/clickedge?tcp_user_timeout=5").unwrap();
    let (_, listener, _) = connect::pool(&url, None).unwrap();
    assert_eq!(
        listener.config.get_tcp_user_timeout(),
        Some(&Duration::from_secs(5))
    );
}

/// The connection that ran the migrations (which lift the bounds for themselves) goes back to
/// the pool bounded again, by the URL's `options` where they name a setting: it kept no bound
/// at all when they did, so a query on it could wait for ever on another node's lock.
#[tokio::test]
async fn the_migrating_connection_is_bounded_again_by_the_urls_options() {
    let url = format!(
        "{}?options=-c%20lock_timeout%3D7s",
        harness::shared().fresh_database()
    );
    let store = PgStore::connect(&StoreUrl::parse(&url).unwrap(), None, SealKey::generate())
        .await
        .unwrap_or_else(|e| panic!("{}", crate::errors::chain(&e)));
    let conn = store.conn("test").await.unwrap();
    let show = async |setting: &str| -> String {
        conn.query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap()
            .get(0)
    };
    assert_eq!(show("lock_timeout").await, "7s");
    assert_eq!(show("statement_timeout").await, "1min");
}

const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+6lcBwZsSYLiIDU0Ky9zrj5Fe4d8Fh\n-----END PRIVATE KEY-----\n";
const ACCOUNT: &str = "{\"id\":\"https://ca/acct/1\",\"key_pkcs8\":\"c2VjcmV0LWFjY291bnQta2V5\"}";

#[tokio::test]
async fn a_dump_of_the_database_holds_no_private_key_or_link_secret() {
    let url = harness::shared().fresh_database();
    let store = PgStore::connect(&StoreUrl::parse(&url).unwrap(), None, SealKey::generate())
        .await
        .unwrap();
    let t = crate::clock::from_unix_secs;
    let (a, b) = (
        Domain::parse("a.example.com").unwrap(),
        Domain::parse("b.example.com").unwrap(),
    );
    let cert = |key: &str| StoredCert {
        issuer: "acme".into(),
        chain_pem: "-----BEGIN CERTIFICATE-----\n".into(),
        key_pem: key.into(),
        not_before: t(1),
        not_after: t(2),
    };
    for name in [&a, &b] {
        store.add_domain(name, t(1)).await.unwrap();
    }
    store.put_certificate(&a, &cert(KEY_PEM)).await.unwrap();
    store.put_certificate(&b, &cert("other key")).await.unwrap();
    store.put_kv("acme.account", ACCOUNT).await.unwrap();
    let secret = [0xa7; 32];
    store.add_link_key(secret, t(1)).await.unwrap();

    let db = db_name(&url);
    let dump = harness::shared().dump(db);
    assert!(dump.contains("a.example.com"), "the dump holds the rows");
    let secret_hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    for clear in [
        "PRIVATE KEY",
        "MC4CAQAwBQYDK2Vw",
        "key_pkcs8",
        "c2VjcmV0LWFjY291bnQta2V5",
        &secret_hex,
    ] {
        assert!(!dump.contains(clear), "{clear:?} in the dump:\n{dump}");
    }
    let raw = harness::shared().psql(
        db,
        "SELECT encode(key_sealed, 'escape') FROM certificates UNION ALL \
         SELECT encode(value_sealed, 'escape') FROM kv UNION ALL \
         SELECT encode(secret_sealed, 'hex') FROM link_keys",
    );
    assert!(
        !raw.contains("PRIVATE KEY") && !raw.contains("key_pkcs8") && !raw.contains(&secret_hex)
    );

    // The same rows read through the store come back whole.
    assert_eq!(
        store.certificate(&a).await.unwrap().unwrap().key_pem,
        KEY_PEM
    );
    assert_eq!(
        store.kv("acme.account").await.unwrap().as_deref(),
        Some(ACCOUNT)
    );
    assert_eq!(store.link_keys().await.unwrap()[0].secret, secret);

    // A sealed key moved to another domain's row does not open there.
    harness::shared().psql(
        db,
        "UPDATE certificates SET key_sealed = \
         (SELECT key_sealed FROM certificates WHERE domain = 'a.example.com') \
         WHERE domain = 'b.example.com'",
    );
    let err = store.certificate(&b).await.unwrap_err();
    assert!(matches!(err, StoreError::Seal(_)), "{err:?}");
    // What showing the domain reads of it opens no key: it is there, valid until its time.
    let info = store.certificate_info(&b).await.unwrap().unwrap();
    assert_eq!(
        info.not_after,
        store.certificate(&a).await.unwrap().unwrap().not_after
    );
    // Read a page at a time, the bad row comes with its error and the others whole.
    let page = store.certificates_after(None, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].1.as_ref().unwrap().key_pem, KEY_PEM);
    assert!(matches!(page[1].1, Err(StoreError::Seal(_))), "{page:?}");

    // Another key (a node set up with the wrong one, or a thief without it) opens nothing.
    let stranger = PgStore::connect(&StoreUrl::parse(&url).unwrap(), None, SealKey::generate())
        .await
        .unwrap();
    assert!(matches!(
        stranger.certificate(&a).await,
        Err(StoreError::Seal(_))
    ));
    assert!(matches!(
        stranger.kv("acme.account").await,
        Err(StoreError::Seal(_))
    ));
    assert!(matches!(
        stranger.link_keys().await,
        Err(StoreError::Seal(_))
    ));
}

/// A removal that began while a certificate's first write held the writers' lock deletes that
/// certificate too: its statement took its snapshot before waiting for the lock, so the row
/// inserted meanwhile was not seen and stayed, without its domain, for ever (counted expired
/// months later; a name added again found it back).
#[tokio::test]
async fn a_removal_waiting_for_a_certificate_write_removes_that_certificate() {
    let url = StoreUrl::parse(&harness::shared().fresh_database()).unwrap();
    let store = Arc::new(
        PgStore::connect(&url, None, SealKey::generate())
            .await
            .unwrap(),
    );
    let t = crate::clock::from_unix_secs;
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, t(1)).await.unwrap();
    let (pool, _, _) = connect::pool(&url, None).unwrap();
    let mut holder = pool.get().await.unwrap();
    let held = holder.transaction().await.unwrap();
    schema::take_write_lock(&held).await.unwrap();
    let watcher = pool.get().await.unwrap();
    let waiting = async |n: i64| loop {
        let row = watcher
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>(0) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cert = StoredCert {
        issuer: "acme".into(),
        chain_pem: "-----BEGIN CERTIFICATE-----\n".into(),
        key_pem: KEY_PEM.into(),
        not_before: t(1),
        not_after: t(2),
    };
    let writing = tokio::spawn({
        let (store, name) = (store.clone(), name.clone());
        async move { store.put_certificate_fenced(&name, &cert, Fence(1)).await }
    });
    waiting(1).await;
    let removing = tokio::spawn({
        let (store, name) = (store.clone(), name.clone());
        async move { store.remove_domain(&name).await }
    });
    waiting(2).await;
    held.rollback().await.unwrap();
    assert!(writing.await.unwrap().unwrap(), "written first");
    assert!(removing.await.unwrap().unwrap(), "then removed");
    assert_eq!(store.certificate(&name).await.unwrap(), None);
    assert_eq!(store.cert_summary(t(1), t(1)).await.unwrap().count, 0);
}
