//! Cluster mode, one node at a time: `clickedge serve` on a PostgreSQL store (a throwaway server
//! per test process), the seal key it requires, and `clickedge cluster keygen`.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fake_acme::FakeAcme;
use common::postgres;
use common::{Edge, bin, refused_start, refused_start_as};
use serde_json::json;

const DOMAIN: &str = "links.example.com";
const DEST: &str = "https://shop.example.com/sale";

fn store_config(url: &str) -> String {
    format!("[store]\nurl = \"{url}\"\n")
}

/// A new seal key, as `clickedge cluster keygen` writes it.
fn keygen(path: &Path) -> std::process::Output {
    Command::new(bin())
        .args(["cluster", "keygen"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("running clickedge cluster keygen")
}

/// A node's config on the store at `url`, with a seal key made by `cluster keygen` in the
/// returned directory (keep it while the node runs).
fn cluster_config(url: &str) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    assert!(keygen(&key).status.success());
    let config = format!(
        "{}[cluster]\nseal_key_file = \"{}\"\n",
        store_config(url),
        key.display()
    );
    (config, dir)
}

#[tokio::test]
async fn two_nodes_on_one_postgres_store_share_domains_links_and_certificates() {
    let url = postgres::shared().fresh_database();
    let (config, _dir) = cluster_config(&url);
    let a = Edge::start_with(&config);
    a.add_domain(DOMAIN).await;
    let link = a.mint(DOMAIN, DEST, json!({ "c": "1" })).await;
    let res = a
        .client(&[DOMAIN])
        .get(&link)
        .send()
        .await
        .expect("click on a");
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], DEST);
    assert_eq!(a.wait_for_clicks(1).len(), 1);

    // A second node started on the same store and key knows the domain, opens the link minted
    // on the first, and serves the certificate the first stored: both serve under the one
    // built-in CA root the first stored, each node's ca.pem.
    let b = Edge::start_with(&config);
    assert_eq!(b.ca_pem, a.ca_pem, "each node made a root of its own");
    let on_b = link.replace(
        &format!(":{}/", a.https.port()),
        &format!(":{}/", b.https.port()),
    );
    let res = b
        .client(&[DOMAIN])
        .get(&on_b)
        .send()
        .await
        .expect("click on b");
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], DEST);
    let (status, body) = b
        .admin(reqwest::Method::GET, &format!("/v1/domains/{DOMAIN}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["certificate"]["status"], "valid", "{body}");

    // Nothing the nodes stored is readable in the clear.
    let dump = postgres::shared().dump(url.rsplit('/').next().unwrap());
    assert!(dump.contains(DOMAIN));
    assert!(!dump.contains("PRIVATE KEY"), "a private key in the dump");
}

/// A stored certificate whose sealed key does not open here (a row damaged, or written under
/// another seal key) still shows by its issuer and validity, and its domain can be removed:
/// showing a domain opens no key (it answered 500, and `domain remove`, which shows the domain
/// first, could not remove it).
#[tokio::test]
async fn a_certificate_whose_key_does_not_open_is_shown_and_its_domain_removed() {
    let url = postgres::shared().fresh_database();
    let (config, _dir) = cluster_config(&url);
    let edge = Edge::start_with(&config);
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, DEST, json!({})).await;
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
    let db = url.rsplit('/').next().unwrap();
    postgres::shared().psql(
        db,
        &format!(
            "UPDATE certificates SET key_sealed = key_sealed || '\\x00'::bytea \
             WHERE domain = '{DOMAIN}'"
        ),
    );

    let (status, body) = edge
        .admin(reqwest::Method::GET, &format!("/v1/domains/{DOMAIN}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["certificate"]["status"], "valid", "{body}");
    assert!(body["certificate"]["not_after"].is_string(), "{body}");
    edge.cli(&["domain", "remove", DOMAIN, "--yes"]);
    let (status, body) = edge
        .admin(reqwest::Method::GET, &format!("/v1/domains/{DOMAIN}"), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        !postgres::shared()
            .psql(db, "SELECT domain FROM certificates")
            .contains(DOMAIN)
    );
}

/// A node whose data dir holds a built-in CA root of its own, not the cluster's (clients may
/// trust it), refuses to start naming both ways out, its files untouched; a node with none
/// takes the cluster's.
#[tokio::test]
async fn a_node_with_a_root_of_its_own_refuses_to_start_and_keeps_it() {
    let url = postgres::shared().fresh_database();
    let (config, _dir) = cluster_config(&url);
    let first = Edge::start_with(&config);
    let solo = Edge::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for file in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(solo.data_dir().join(file), data.join(file)).unwrap();
    }
    let err = refused_start_as(
        Command::new(bin()),
        dir.path(),
        &format!(
            "[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{config}"
        ),
    );
    assert!(err.contains("is not the cluster's"), "{err}");
    assert!(
        err.contains("DELETE FROM kv WHERE key = 'local-ca'"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("ca.pem")).unwrap(),
        solo.ca_pem,
        "the node's own root was replaced"
    );
    assert_ne!(solo.ca_pem, first.ca_pem);
}

/// A node given another seal key than the one the store's secrets were sealed with refuses to
/// start, naming its key's file and the fix.
#[tokio::test]
async fn a_node_with_another_seal_key_refuses_to_start_naming_its_key() {
    let url = postgres::shared().fresh_database();
    let (config, _dir) = cluster_config(&url);
    let first = Edge::start_with(&config);
    drop(first);
    let (other, dir) = cluster_config(&url);
    let err = refused_start(&other, &[]);
    let key = dir.path().join("seal.key");
    assert!(err.contains(&key.display().to_string()), "{err}");
    assert!(
        err.contains("key file of the cluster's other nodes"),
        "{err}"
    );
}

#[test]
fn a_postgres_store_without_a_seal_key_refuses_to_start_saying_how_to_make_one() {
    let url = postgres::shared().fresh_database();
    let err = refused_start(&store_config(&url), &[]);
    for needed in [
        "cluster.seal_key_file",
        "CLICKEDGE_SEAL_KEY",
        "clickedge cluster keygen",
    ] {
        assert!(err.contains(needed), "{needed} not named: {err}");
    }
}

#[test]
fn a_seal_key_file_others_can_read_refuses_the_start_naming_the_fix() {
    let url = postgres::shared().fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    assert!(keygen(&key).status.success());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = refused_start(
        &format!(
            "{}[cluster]\nseal_key_file = \"{}\"\n",
            store_config(&url),
            key.display()
        ),
        &[],
    );
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
}

#[test]
fn an_unreachable_database_stops_the_start_naming_it_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let err = refused_start(
        &store_config(&format!(
            "postgres://edge:hunter2@127.0.0.1:{port}/clickedge"
        )),
        &[("CLICKEDGE_SEAL_KEY", &"ab".repeat(32))],
    );
    assert!(
        err.contains(&format!("postgres://edge:***@127.0.0.1:{port}/clickedge")),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn keygen_writes_a_private_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    let out = keygen(&key);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("seal_key_file"));
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.trim().len(), 64);
    assert!(text.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = keygen(&key);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not overwriting"),
        "{again:?}"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
}

#[tokio::test]
async fn with_sslmode_require_the_store_talks_tls_and_verifies_the_server() {
    let certs = common::test_certs("database test CA", &["127.0.0.1"]);
    let server = postgres::PgServer::start_with_tls(&certs.cert, &certs.key);
    let url = format!("{}?sslmode=require", server.fresh_database());
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("db-ca.pem");
    std::fs::write(&roots, &certs.ca).unwrap();
    let seal = "cd".repeat(32);

    // The system's roots do not vouch for the test CA: the start is refused.
    let err = refused_start(
        &store_config(&url),
        &[
            ("CLICKEDGE_SEAL_KEY", &seal),
            ("SSL_CERT_FILE", "/dev/null"),
        ],
    );
    assert!(
        err.contains("cannot reach the PostgreSQL database") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // Trusting it, the node starts, and its connections are encrypted.
    let roots = roots.display().to_string();
    let edge = Edge::start_with_env(
        &[("CLICKEDGE_SEAL_KEY", &seal), ("SSL_CERT_FILE", &roots)],
        &store_config(&url),
    );
    edge.add_domain(DOMAIN).await;
    let encrypted = server.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'clickedge' AND ssl",
    );
    assert_ne!(
        encrypted.trim(),
        "0",
        "no encrypted connection from the edge"
    );
    let plain = server.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'clickedge' AND NOT ssl",
    );
    assert_eq!(plain.trim(), "0");
}

/// A session that stopped while holding the cluster's write lock (a node paused mid-write) does
/// not hang every other write: the write waits at most the lock bound and answers 503, and the
/// node writes again once the session is gone.
#[tokio::test]
async fn a_write_lock_held_elsewhere_fails_the_write_in_bounded_time_instead_of_hanging() {
    let server = postgres::shared();
    let url = server.fresh_database();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let (config, _dir) = cluster_config(&url);
    let edge = Edge::start_with(&config);
    let mut holder = server.psql_in_background(
        &db,
        "BEGIN; SELECT pg_advisory_xact_lock(7162863372592195174); SELECT pg_sleep(120);",
    );
    // The lock is taken once the session shows up waiting in pg_sleep.
    let held = common::within(Duration::from_secs(30), || async {
        server
            .psql(
                &db,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            )
            .trim()
            == "1"
    })
    .await;
    assert!(held.is_some(), "the lock taken");
    let add = edge.admin(
        reqwest::Method::POST,
        "/v1/domains",
        Some(json!({ "name": DOMAIN })),
    );
    // Within the lock bound (10 s) and well short of the statement bound (60 s).
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), add)
        .await
        .expect("the write answered, not hung");
    assert_eq!(status, 503, "{body}");
    // The server notices a client gone only when it next talks to it: end the session there.
    server.psql(
        &db,
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let again = common::within(Duration::from_secs(30), || async {
        edge.admin(
            reqwest::Method::POST,
            "/v1/domains",
            Some(json!({ "name": DOMAIN })),
        )
        .await
        .0 == 201
    })
    .await;
    assert!(again.is_some(), "written once the session is gone");
}

/// Two nodes of a fresh cluster meeting their first handshakes at once each find no ACME account
/// stored and have the CA create one: both then order under the one stored first (the account a
/// CAA `accounturi` must name), never each under its own.
#[tokio::test]
async fn nodes_creating_the_acme_account_at_once_order_under_the_one_stored_first() {
    let url = postgres::shared().fresh_database();
    // Slow enough that the second node asks before the first has stored its account.
    let ca = FakeAcme::start_with(HashMap::new(), Duration::from_millis(500)).await;
    let seal = "c1".repeat(32);
    let node = |id: &str| {
        let config = format!(
            "[tls]\nissuer = \"acme\"\n{}{}[cluster]\nnode_id = \"{id}\"\n",
            ca.acme_toml(),
            store_config(&url)
        );
        Edge::start_with_env(&[("CLICKEDGE_SEAL_KEY", &seal)], &config)
    };
    let (a, b) = (node("edge-a"), node("edge-b"));
    a.add_domain("a.example.com").await;
    b.add_domain("b.example.com").await;
    let on_a = a.mint("a.example.com", DEST, json!({})).await;
    let on_b = b.mint("b.example.com", DEST, json!({})).await;
    let click = |edge: &Edge, name: &str, link: String| {
        let client = edge
            .client_trusting(&ca.root_pem, &[name])
            .build()
            .expect("client");
        async move { client.get(&link).send().await.map(|r| r.status()) }
    };
    let (res_a, res_b) = tokio::join!(
        click(&a, "a.example.com", on_a),
        click(&b, "b.example.com", on_b)
    );
    assert_eq!(res_a.expect("click on a"), 302);
    assert_eq!(res_b.expect("click on b"), 302);
    let accounts = ca.order_accounts();
    assert_eq!(accounts.len(), 2, "{accounts:?}");
    assert_eq!(accounts[0], accounts[1], "one account for the cluster");
}
