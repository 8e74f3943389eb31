//! The built-in CA is constrained: its `ca.pem` carries name constraints for
//! `tls.local_ca_names`, so a client that trusts it accepts no certificate for another name, not
//! even one signed with `ca-key.pem`; the edge refuses to issue for registered names outside
//! those zones and says what to do; a root from an older version (no constraints) keeps working
//! with a warning, and one made for other zones stops the start with both sets named.

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{Edge, bin};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A verified TLS handshake to `addr` for `name`, trusting what `connector` trusts.
async fn handshake(
    addr: SocketAddr,
    connector: &TlsConnector,
    name: &str,
) -> Result<(), std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    connector.connect(name, tcp).await.map(drop)
}

/// A verified TLS handshake with the edge for `name`, trusting its `ca.pem`.
async fn edge_handshake(edge: &Edge, name: &str) -> Result<(), std::io::Error> {
    handshake(edge.https, &edge.tls_connector(b"http/1.1"), name).await
}

/// Asserts that `text` says each of `parts`.
fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part:?} in {text}");
    }
}

/// A leaf for `name` signed with the edge's `ca-key.pem`, as anyone holding that file could.
fn forge(edge: &Edge, name: &str) -> (rcgen::Certificate, KeyPair) {
    let ca_key = std::fs::read_to_string(edge.data_dir().join("ca-key.pem")).expect("ca-key.pem");
    let ca = Issuer::from_ca_cert_pem(&edge.ca_pem, KeyPair::from_pem(&ca_key).expect("CA key"))
        .expect("CA certificate");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("leaf params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    (params.signed_by(&key, &ca).expect("signing"), key)
}

/// Serves `leaf` to the first TLS client on a loopback port.
async fn serve_once(leaf: (rcgen::Certificate, KeyPair)) -> SocketAddr {
    let (cert, key) = leaf;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let _ = acceptor.accept(tcp).await;
    });
    addr
}

#[tokio::test]
async fn a_trusted_ca_pem_accepts_no_certificate_outside_local_ca_names_even_one_signed_with_its_key()
 {
    let edge = Edge::start();
    let client = edge.tls_connector(b"http/1.1");
    edge.add_domain("links.example.com").await;
    handshake(edge.https, &client, "links.example.com")
        .await
        .expect("the edge's own certificate verifies");

    // The same forgery inside the default zones verifies: the name is the only difference.
    let inside = serve_once(forge(&edge, "forged.example.com")).await;
    handshake(inside, &client, "forged.example.com")
        .await
        .expect("a leaf inside the zones verifies");
    for name in ["www.bank.com", "links.customer.com"] {
        let outside = serve_once(forge(&edge, name)).await;
        let err = handshake(outside, &client, name)
            .await
            .expect_err("a leaf outside the zones must not verify");
        let text = format!("{err:?}");
        assert!(text.contains("NameConstraintViolation"), "{name}: {text}");
    }
}

#[tokio::test]
async fn a_registered_name_outside_local_ca_names_gets_no_certificate_and_says_what_to_do() {
    let edge = Edge::start();
    edge.add_domain("links.customer.com").await;
    edge_handshake(&edge, "links.customer.com")
        .await
        .expect_err("no certificate outside the zones");
    let (status, body) = edge
        .admin(reqwest::Method::GET, "/v1/domains/links.customer.com", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let last_error = body["certificate"]["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_error in {body}"));
    assert_says(
        last_error,
        &[
            "vouches only for names under tls.local_ca_names (example, example.com,",
            "not links.customer.com",
            "add its zone there (which makes a new root: stop the edge, delete ca.pem and \
             ca-key.pem from the data dir and start it again",
            "or use tls.issuer = \"acme\"",
        ],
    );
    // Its checks say so too: not "none yet" (ready), a failure for the operator.
    let (status, body) = edge
        .admin(
            reqwest::Method::POST,
            "/v1/domains/links.customer.com/check",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let cert = body["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "certificate"))
        .unwrap_or_else(|| panic!("no certificate check in {body}"));
    assert_eq!(cert["status"], "fail", "{cert}");
    assert_says(
        cert["message"].as_str().unwrap(),
        &["none will be issued", "vouches only for names under"],
    );
    assert_eq!(
        edge.metric("clickedge_certificates_issued_total{issuer=\"local\"}")
            .await,
        0.0
    );

    // Listing the zone lets the name through (a new data dir: the root is made for it).
    let edge = Edge::start_with("[tls]\nlocal_ca_names = [\"customer.com\"]\n");
    edge.add_domain("links.customer.com").await;
    edge_handshake(&edge, "links.customer.com")
        .await
        .expect("served once its zone is listed");
}

/// Writes a root and key as versions before name constraints made them into `data`.
fn write_unconstrained_root(data: &Path) {
    std::fs::create_dir_all(data).expect("data dir");
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "clickedge local CA 00000000");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = params.self_signed(&key).expect("root");
    let key_path = data.join("ca-key.pem");
    std::fs::write(&key_path, key.serialize_pem()).expect("ca-key.pem");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(data.join("ca.pem"), root.pem()).expect("ca.pem");
}

#[tokio::test]
async fn a_root_from_before_name_constraints_keeps_serving_and_warns_how_to_replace_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_unconstrained_root(&dir.path().join("data"));
    let old_root = std::fs::read_to_string(dir.path().join("data/ca.pem")).expect("ca.pem");
    let edge = Edge::start_in(dir, "");
    assert_eq!(edge.ca_pem, old_root, "the old root is kept");
    let stderr = edge.stderr();
    assert_says(
        &stderr,
        &[
            "has no name constraints",
            "delete ca.pem and ca-key.pem",
            "trust the new ca.pem",
        ],
    );
    edge.add_domain("links.example.com").await;
    edge_handshake(&edge, "links.example.com")
        .await
        .expect("served under the old root");
}

#[test]
fn a_root_made_for_other_zones_stops_the_start_naming_both_sets() {
    let edge = Edge::start();
    let config = edge.config_path();
    // The root is written before the edge reports it is serving.
    let dir = edge.take_dir();
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[tls]\nlocal_ca_names = [\"corp.internal\"]\n");
    std::fs::write(&config, text).expect("config");
    let mut child = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning clickedge");
    // The first stdout line says it is serving; a refused start closes stdout with none.
    let started = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .next();
    if started.is_some() {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(started.is_none(), "started with another root: {stderr}");
    assert!(!status.success());
    assert_says(
        &stderr,
        &[
            "vouches for names under example, example.com, example.net, example.org, invalid, localhost, test",
            "tls.local_ca_names lists corp.internal",
            "delete ca.pem and ca-key.pem",
        ],
    );
    drop(dir);
}
