//! Static stability for certificates a node never held: every node keeps a sealed local copy of
//! every stored certificate (filled at start, kept current by propagation), so with PostgreSQL
//! stopped a node that never handled a name still answers its first handshake and click, with
//! the certificate the issuing node stored. Real processes: one throwaway PostgreSQL, three
//! nodes.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use common::postgres::PgServer;
use common::{Edge, within};
use reqwest::Method;
use serde_json::json;
use tokio::net::TcpStream;

const DEST: &str = "https://shop.example.com/sale";
const SERVED: &str = "clickedge_certificates_mirror_served_total";
const ENTRIES: &str = "clickedge_certificate_mirror_entries";
const FILLED: &str = "clickedge_certificate_mirror_filled";

/// A node `id` on the database at `url`.
fn node(url: &str, id: &str) -> Edge {
    Edge::start_with_env(
        &[("CLICKEDGE_SEAL_KEY", &"6d".repeat(32))],
        &format!(
            "[store]\nurl = \"{url}\"\n[cluster]\nnode_id = \"{id}\"\nscan_interval = \"30s\"\n"
        ),
    )
}

/// The leaf certificate (DER) `edge` presents for `domain`, verified against `issuing`'s CA
/// alone: the node whose built-in CA issued it.
async fn leaf(edge: &Edge, issuing: &Edge, domain: &str) -> Vec<u8> {
    let tcp = TcpStream::connect(edge.https).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from(domain.to_owned()).expect("name");
    let tls = tokio::time::timeout(
        Duration::from_secs(15),
        issuing.tls_connector(b"http/1.1").connect(name, tcp),
    )
    .await
    .expect("the handshake within 15 s")
    .unwrap_or_else(|e| panic!("handshake for {domain} on {}: {e}", edge.https));
    let certs = tls.get_ref().1.peer_certificates().expect("a certificate");
    certs[0].as_ref().to_vec()
}

/// The status of a click on `link` (minted on any node) sent to `edge`, trusting only
/// `issuing`'s CA.
async fn click(edge: &Edge, issuing: &Edge, domain: &str, link: &str) -> Option<u16> {
    let client = edge
        .client_trusting(&issuing.ca_pem, &[domain])
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let path = &link[link.find("/c/").expect("a link path")..];
    let url = format!("https://{domain}:{}{path}", edge.https.port());
    let res = client.get(url).send().await.ok()?;
    Some(res.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_stopped_a_node_serves_a_certificate_it_never_held_from_its_mirror() {
    let server = PgServer::start();
    let url = server.fresh_database();
    let a = node(&url, "edge-a");
    let b = node(&url, "edge-b");
    let domain = "m1.example.com";
    a.add_domain(domain).await;
    let link = a.mint(domain, DEST, json!({})).await;
    // Issued through a (its built-in CA) and stored; b never handles the name before the outage.
    assert_eq!(click(&a, &a, domain, &link).await, Some(302));
    let issued = leaf(&a, &a, domain).await;
    // b copies it as propagation tells it about the new certificate.
    assert!(
        within(Duration::from_secs(10), || async {
            b.metric(ENTRIES).await == 1.0
        })
        .await
        .is_some(),
        "b's mirror does not hold the certificate issued on a"
    );
    // c starts after the issuance: its start-up fill copies it.
    let c = node(&url, "edge-c");
    assert!(
        within(Duration::from_secs(20), || async {
            c.metric(FILLED).await == 1.0 && c.metric(ENTRIES).await == 1.0
        })
        .await
        .is_some(),
        "c's mirror is not filled with the stored certificate"
    );

    server.stop();
    for edge in [&b, &c] {
        assert_eq!(
            leaf(edge, &a, domain).await,
            issued,
            "{} presents another certificate than the one issued on a",
            edge.https
        );
        assert_eq!(click(edge, &a, domain, &link).await, Some(302));
        assert_eq!(click(edge, &a, domain, &link).await, Some(302));
        // Read from the mirror once, then from memory.
        assert_eq!(edge.metric(SERVED).await, 1.0, "{}", edge.https);
        edge.wait_for_log("served from the local mirror", 1);
        assert_eq!(edge.wait_for_clicks(2).len(), 2, "{}", edge.https);
    }
    // a never needed its mirror: the certificate was in its memory.
    assert_eq!(a.metric(SERVED).await, 0.0);

    // Back: a new certificate and a removal reach b's mirror; b reads the store again.
    server.start_again();
    let fresh = "m2.example.com";
    assert!(
        within(Duration::from_secs(30), || async {
            a.admin(Method::POST, "/v1/domains", Some(json!({ "name": fresh })))
                .await
                .0
                == 201
        })
        .await
        .is_some(),
        "admin writes still fail 30 s after the database returned"
    );
    let link2 = a.mint(fresh, DEST, json!({})).await;
    assert_eq!(click(&a, &a, fresh, &link2).await, Some(302));
    assert!(
        within(Duration::from_secs(30), || async {
            b.metric(ENTRIES).await == 2.0
        })
        .await
        .is_some(),
        "b's mirror does not copy a certificate issued after the database returned"
    );
    assert!(
        within(Duration::from_secs(30), || async {
            click(&b, &a, fresh, &link2).await == Some(302)
        })
        .await
        .is_some(),
        "b does not serve the new name"
    );
    assert_eq!(
        b.metric(SERVED).await,
        1.0,
        "the new name came from the store"
    );
    b.wait_for_log("the store answers again", 1);
    let (status, body) = a
        .admin(Method::DELETE, &format!("/v1/domains/{domain}"), None)
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(
        within(Duration::from_secs(10), || async {
            b.metric(ENTRIES).await == 1.0 && c.metric(ENTRIES).await == 1.0
        })
        .await
        .is_some(),
        "a removed domain's certificate stays in the mirrors"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_edge_keeps_no_mirror() {
    let edge = Edge::start();
    let metrics = edge.metrics().await;
    assert!(!metrics.contains(ENTRIES), "{metrics}");
    assert!(
        !edge.data_dir().join("cert-mirror.db").exists(),
        "a mirror file next to a local store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_cannot_be_opened_is_set_aside_and_filled_again() {
    let server = PgServer::start();
    let url = server.fresh_database();
    let a = node(&url, "edge-a");
    let domain = "m3.example.com";
    a.add_domain(domain).await;
    let link = a.mint(domain, DEST, json!({})).await;
    assert_eq!(click(&a, &a, domain, &link).await, Some(302));
    // b's data dir already holds, where its mirror goes, a file that is no database.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(data.join("cert-mirror.db"), [b'x'; 4096]).unwrap();
    let key = dir.path().join("seal.key");
    std::fs::write(&key, "6d".repeat(32)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b = Edge::start_in(
        dir,
        &format!(
            "[store]\nurl = \"{url}\"\n[cluster]\nnode_id = \"edge-b\"\nseal_key_file = \"{}\"\n",
            key.display()
        ),
    );
    assert!(
        within(Duration::from_secs(30), || async {
            b.metric(FILLED).await == 1.0 && b.metric(ENTRIES).await == 1.0
        })
        .await
        .is_some(),
        "b's new mirror was not filled:\n{}",
        b.stderr()
    );
    let log = b.stderr();
    assert!(
        log.contains("the certificate mirror cannot be opened"),
        "{log}"
    );
    let aside = b.data_dir().join("cert-mirror.db.damaged");
    assert_eq!(std::fs::read(aside).unwrap(), vec![b'x'; 4096]);
}
