//! The floor under a new-connection click's handshake: key exchange, signature and a whole
//! TLS 1.3 server handshake in memory, on this machine.

use super::*;

/// The floor under a new-connection click's handshake, on this machine: the server's key
/// exchange (its key share and the shared secret, as rustls computes them), the ECDSA P-256
/// signature of the CertificateVerify, and a whole TLS 1.3 server handshake in memory (rustls
/// alone: no sockets, no HTTP), timed on the server's side only, for each key share a browser
/// sends, with aws-lc's provider as rustls ships it and with the edge's (`_edge`). The client
/// offers AES-128-GCM first, as browsers do.
pub(super) fn bench_floor(c: &mut Criterion) {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider, kx_group};
    use rustls::crypto::{CryptoProvider, SupportedKxGroup};
    use rustls::pki_types::ServerName;

    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (certs, domain, root) = warm_certs(&rt, dir.path());
    let key = rt
        .block_on(certs.resolve(&domain))
        .expect("cached certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(
            root.as_bytes(),
        )
    {
        roots
            .add(cert.expect("root PEM"))
            .expect("root certificate");
    }
    let server = |provider: CryptoProvider| {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(key.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Arc::new(config)
    };
    // aws-lc's provider as rustls ships it, and the edge's (its TLS 1.3 key schedule, `tls::hkdf`).
    let servers = [
        ("", server(default_provider())),
        ("_edge", server(clickedge::tls::provider())),
    ];
    let client = |group: &'static dyn SupportedKxGroup| {
        let provider = CryptoProvider {
            kx_groups: vec![group],
            cipher_suites: vec![
                cipher_suite::TLS13_AES_128_GCM_SHA256,
                cipher_suite::TLS13_AES_256_GCM_SHA384,
            ],
            ..default_provider()
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    };
    let name = ServerName::try_from(DOMAIN).expect("server name");

    let mut g = c.benchmark_group("floor");
    for (label, group) in [
        ("x25519", kx_group::X25519),
        ("x25519mlkem768", kx_group::X25519MLKEM768),
    ] {
        let share = group.start().expect("client key share");
        g.bench_function(format!("kx_{label}"), |b| {
            b.iter(|| group.start_and_complete(black_box(share.pub_key())))
        });
        let client = client(group);
        for (provider, server) in &servers {
            g.bench_function(format!("handshake_{label}{provider}"), |b| {
                b.iter_custom(|iters| {
                    let mut server_time = Duration::ZERO;
                    for _ in 0..iters {
                        let mut c = rustls::ClientConnection::new(client.clone(), name.clone())
                            .expect("client");
                        let mut s = rustls::ServerConnection::new(server.clone()).expect("server");
                        while c.is_handshaking() || s.is_handshaking() {
                            let mut wire = Vec::new();
                            c.write_tls(&mut wire).expect("client writes");
                            let start = Instant::now();
                            if !wire.is_empty() {
                                s.read_tls(&mut &wire[..]).expect("server reads");
                                s.process_new_packets().expect("server handshake");
                            }
                            wire.clear();
                            s.write_tls(&mut wire).expect("server writes");
                            server_time += start.elapsed();
                            if !wire.is_empty() {
                                c.read_tls(&mut &wire[..]).expect("client reads");
                                c.process_new_packets().expect("client handshake");
                            }
                        }
                    }
                    server_time
                })
            });
        }
    }
    // One HMAC-SHA256 tag from a key set up once, the key schedule's unit of work (about 23 per
    // handshake): aws-lc's `HMAC_CTX`, and RustCrypto's `hmac` that `tls::hkdf` uses.
    let (secret, info) = ([7u8; 32], [1u8; 48]);
    let aws = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    g.bench_function("hmac_sha256_tag_aws_lc", |b| {
        b.iter(|| {
            let mut ctx = aws_lc_rs::hmac::Context::with_key(&aws);
            ctx.update(black_box(&info));
            ctx.sign()
        })
    });
    let keyed = <hmac::Hmac<sha2::Sha256> as hmac::digest::KeyInit>::new_from_slice(&secret)
        .expect("HMAC takes any key length");
    g.bench_function("hmac_sha256_tag_rustcrypto", |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            hmac::digest::Mac::update(&mut mac, black_box(&info));
            hmac::digest::Mac::finalize(mac)
        })
    });
    let signer = key
        .key
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .expect("an ECDSA P-256 key");
    // What TLS 1.3 signs: 64 spaces, the context string, a zero byte and a SHA-256 hash.
    let message = [0x20u8; 130];
    g.bench_function("ecdsa_p256_sign", |b| {
        b.iter(|| signer.sign(black_box(&message)))
    });
    g.finish();
}

/// The certificate the floor's server presents for every name.
#[derive(Debug)]
pub(super) struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}
