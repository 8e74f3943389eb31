//! The acceptor against a real rustls client over an in-memory pipe: a client asked for another
//! key share (HelloRetryRequest, RFC 8446 §4.1.4) finishes its handshake, on the edge's
//! certificates and on a TLS-ALPN-01 challenge certificate alike.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::kx_group;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::*;
use crate::certs::Settings;
use crate::clock::ManualClock;
use crate::config::ChallengeKind;
use crate::domain::Zones;
use crate::issuer::LocalCa;
use crate::policy::Policy;
use crate::store::{SqliteStore, Store as _};

const DOMAIN: &str = "links.example.com";

/// The acceptor of an edge serving [`DOMAIN`] from a local CA, and its challenges.
async fn acceptor(dir: &std::path::Path) -> (Acceptor, Arc<Challenges>, ManualClock) {
    let metrics = Metrics::unregistered();
    let domain = Domain::parse(DOMAIN).unwrap();
    let manual = ManualClock::starting_now();
    let clock = manual.clock();
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    store.add_domain(&domain, clock.now()).await.unwrap();
    let policy = Arc::new(Policy::new([domain], None));
    let provider = Arc::new(provider());
    let certs = Arc::new(Certs::new(
        Settings {
            cache_capacity: 10,
            on_demand_timeout: Duration::from_secs(30),
        },
        store.clone(),
        Arc::new(LocalCa::load_or_create(dir, Zones::reserved(), clock.clone()).unwrap()),
        policy.clone(),
        provider.clone(),
        metrics.clone(),
        clock.clone(),
    ));
    let challenges = Arc::new(Challenges::new(store, policy, provider.clone(), clock));
    let acceptor = Acceptor::new(
        server_config(provider.clone(), true).unwrap(),
        challenge_config(provider).unwrap(),
        challenges.clone(),
        certs,
        metrics,
        Duration::from_secs(30),
    );
    (acceptor, challenges, manual)
}

/// Trusts any certificate: what is checked here is that the handshake completes, not whose
/// certificate it carries (the challenge certificate is self-signed).
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client whose first key share is for pure ML-KEM-768, which the edge does not enable: the
/// edge picks X25519, the client's next group, and asks for its share with a HelloRetryRequest.
fn hello_retry_client(alpn: &[u8]) -> TlsConnector {
    let provider = CryptoProvider {
        kx_groups: vec![kx_group::MLKEM768, kx_group::X25519],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Runs one handshake of `client` against `acceptor`; the client's result (and how it went) and
/// the acceptor's.
async fn handshake(
    acceptor: &Acceptor,
    client: TlsConnector,
) -> (
    io::Result<Option<HandshakeKind>>,
    Result<Accepted<tokio::io::DuplexStream>, HandshakeError>,
) {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(DOMAIN).unwrap();
    let client = async move {
        let tls = client.connect(name, client_io).await?;
        // Open until the edge is done too: it writes its session tickets after the handshake.
        Ok((tls.get_ref().1.handshake_kind(), tls))
    };
    let (client, server) = tokio::join!(client, acceptor.accept(server_io));
    (client.map(|(kind, _)| kind), server)
}

#[tokio::test]
async fn a_client_asked_to_retry_its_hello_gets_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, _, _) = acceptor(dir.path()).await;
    let (client, server) = handshake(&acceptor, hello_retry_client(b"http/1.1")).await;
    let accepted = server
        .map_err(|e| crate::errors::chain(&e))
        .expect("edge handshake");
    assert_eq!(accepted.domain.as_str(), DOMAIN);
    assert_eq!(accepted.tls_version, "1.3");
    assert_eq!(
        client.expect("client handshake"),
        Some(HandshakeKind::FullWithHelloRetryRequest)
    );
}

#[tokio::test]
async fn a_tls_alpn01_validation_asked_to_retry_its_hello_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, challenges, clock) = acceptor(dir.path()).await;
    let digest = URL_SAFE_NO_PAD.encode([5u8; 32]);
    let expires = clock.clock().now() + Duration::from_secs(300);
    challenges
        .publish(ChallengeKind::TlsAlpn01, DOMAIN, &digest, expires)
        .await
        .unwrap();
    let (client, server) = handshake(&acceptor, hello_retry_client(ACME_TLS_ALPN)).await;
    assert_eq!(
        client.expect("client handshake"),
        Some(HandshakeKind::FullWithHelloRetryRequest)
    );
    assert!(
        matches!(server, Err(HandshakeError::ChallengeAnswered)),
        "{:?}",
        server.err()
    );
}
