//! TLS by SNI: registered names get a certificate chained to `ca.pem` at their first handshake,
//! concurrent first handshakes share one issuance, and names that are not registered are refused
//! with `unrecognized_name` without issuing anything.

mod common;

use std::sync::Arc;

use common::Edge;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn connector(edge: &Edge) -> TlsConnector {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(edge.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn handshake(edge: &Edge, name: &str) -> Result<(), std::io::Error> {
    handshake_to(edge.https, connector(edge), name.to_owned()).await
}

async fn handshake_to(
    addr: std::net::SocketAddr,
    connector: TlsConnector,
    name: String,
) -> Result<(), std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name).unwrap();
    connector.connect(name, tcp).await.map(drop)
}

#[tokio::test]
async fn unknown_sni_is_refused_with_unrecognized_name_and_issues_nothing() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    for name in ["other.example.com", "random-1234.example.org"] {
        let err = handshake(&edge, name).await.expect_err("must be refused");
        let text = format!("{err:?}");
        assert!(text.contains("UnrecognisedName"), "{text}");
    }
    assert_eq!(
        edge.metric("clickedge_tls_handshakes_total{outcome=\"unrecognized_name\"}")
            .await,
        2.0
    );
    assert_eq!(
        edge.metric("clickedge_certificates_issued_total{issuer=\"local\"}")
            .await,
        0.0
    );
    assert_eq!(edge.metric("clickedge_certificates_held").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_handshakes_share_one_issuance_and_verify() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        tasks.spawn(handshake_to(
            edge.https,
            connector(&edge),
            "links.example.com".into(),
        ));
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().expect("verified handshake");
    }
    assert_eq!(
        edge.metric("clickedge_certificates_issued_total{issuer=\"local\"}")
            .await,
        1.0
    );
    assert_eq!(edge.metric("clickedge_certificates_held").await, 1.0);
    assert_eq!(
        edge.metric("clickedge_tls_handshakes_total{outcome=\"ok\"}")
            .await,
        16.0
    );
}

#[tokio::test]
async fn removed_domain_is_refused_at_once() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    handshake(&edge, "links.example.com").await.expect("served");
    let (status, _) = edge
        .admin(
            reqwest::Method::DELETE,
            "/v1/domains/links.example.com",
            None,
        )
        .await;
    assert_eq!(status, 204);
    let err = handshake(&edge, "links.example.com")
        .await
        .expect_err("refused");
    assert!(format!("{err:?}").contains("UnrecognisedName"));
}

#[tokio::test]
async fn restart_serves_the_stored_certificate_without_issuing() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    handshake(&edge, "links.example.com").await.expect("served");
    let dir = edge.stop_keep_dir();
    let edge = Edge::start_in(dir, "");
    handshake(&edge, "links.example.com")
        .await
        .expect("served after restart");
    assert_eq!(
        edge.metric("clickedge_certificates_issued_total{issuer=\"local\"}")
            .await,
        0.0
    );
    assert_eq!(edge.metric("clickedge_certificates_held").await, 1.0);
}

/// Two handshakes from one client (which keeps tickets and session ids): the second resumes
/// when `tls.session_resumption` is on, and never when it is off.
async fn second_handshake_kind(edge: &Edge) -> rustls::HandshakeKind {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(edge.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let connector = TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));
    let mut kind = None;
    for _ in 0..2 {
        let tcp = TcpStream::connect(edge.https).await.unwrap();
        let name = ServerName::try_from("links.example.com").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        // Read until the server's tickets (sent after the handshake in TLS 1.3) have arrived:
        // send a request and read the response.
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tls.write_all(b"GET / HTTP/1.1\r\nHost: links.example.com\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let _ = tls.read_to_end(&mut sink).await;
        kind = tls.get_ref().1.handshake_kind();
    }
    kind.unwrap()
}

#[tokio::test]
async fn session_resumption_is_on_by_default_and_can_be_turned_off() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    assert_eq!(
        second_handshake_kind(&edge).await,
        rustls::HandshakeKind::Resumed
    );

    let edge = Edge::start_with("[tls]\nsession_resumption = false\n");
    edge.add_domain("links.example.com").await;
    assert_eq!(
        second_handshake_kind(&edge).await,
        rustls::HandshakeKind::Full
    );
}

/// The suite the edge picks for a client offering `suites`, in that order.
async fn negotiated(edge: &Edge, suites: &[rustls::SupportedCipherSuite]) -> rustls::CipherSuite {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(edge.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(edge.https).await.unwrap();
    let name = ServerName::try_from("links.example.com").unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
}

#[tokio::test]
async fn a_client_that_puts_aes_256_first_gets_aes_128_and_any_other_gets_its_first_choice() {
    use rustls::CipherSuite as S;
    use rustls::crypto::aws_lc_rs::cipher_suite::{
        TLS13_AES_128_GCM_SHA256 as AES128, TLS13_AES_256_GCM_SHA384 as AES256,
        TLS13_CHACHA20_POLY1305_SHA256 as CHACHA,
    };
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    let cases = [
        // OpenSSL's and rustls's order: AES-128 whenever offered.
        (vec![AES256, CHACHA, AES128], S::TLS13_AES_128_GCM_SHA256),
        // Browsers' orders are kept.
        (vec![AES128, AES256, CHACHA], S::TLS13_AES_128_GCM_SHA256),
        (
            vec![CHACHA, AES256, AES128],
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        // Nothing better offered: the client's only suite.
        (vec![AES256], S::TLS13_AES_256_GCM_SHA384),
        (vec![AES256, CHACHA], S::TLS13_AES_256_GCM_SHA384),
    ];
    for (offered, expected) in cases {
        let names: Vec<_> = offered.iter().map(|s| s.suite()).collect();
        assert_eq!(
            negotiated(&edge, &offered).await,
            expected,
            "offered {names:?}"
        );
    }
}
