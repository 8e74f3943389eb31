//! The load generator's client side of one connection: the rustls configuration (TLS 1.3 only,
//! resumption disabled, a chosen key share), opening a TLS connection, and one HTTP/1.1 or h2
//! exchange on it.
//!
//! The HTTP/1.1 client is deliberately minimal (pre-encoded request, `Content-Length`, chunked
//! or read-to-close bodies, no pipelining) so that the client spends its core on TLS, not on
//! parsing; h2 goes through hyper's client. Nothing here schedules or counts requests.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::{cipher_suite as suites, kx_group};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::targets::USER_AGENT;

/// A TLS connection to the server under test.
pub type Tls = TlsStream<TcpStream>;
/// An h2 connection's request handle (cheap to clone; the connection runs in its own task).
pub type H2 = http2::SendRequest<Empty<Bytes>>;

/// Why a request failed, as counted in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fail {
    /// TCP connect failed (refused, or out of local ports).
    Connect,
    /// The TLS handshake failed (alert, certificate not trusted, ...).
    Tls,
    /// The connection broke after the handshake, or closed before a full response.
    Io,
    /// The response was not HTTP we understand.
    Http,
    /// The h2 layer failed (handshake, stream reset, GOAWAY).
    H2,
    /// ALPN did not select the protocol asked for.
    Alpn,
    /// No answer within the request timeout.
    Timeout,
}

impl Fail {
    /// The name used in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Fail::Connect => "connect",
            Fail::Tls => "tls",
            Fail::Io => "io",
            Fail::Http => "http",
            Fail::H2 => "h2",
            Fail::Alpn => "alpn",
            Fail::Timeout => "timeout",
        }
    }
}

/// A failure and its message (the first few messages are shown in the summary).
pub type Failure = (Fail, String);

/// Which key shares the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Kx {
    /// X25519MLKEM768 (post-quantum hybrid, what current browsers send) with X25519 beside it.
    #[value(name = "x25519mlkem768")]
    X25519Mlkem768,
    /// X25519 only.
    #[value(name = "x25519")]
    X25519,
}

/// The TLS 1.3 cipher suite the client prefers (offered first; the others follow). Servers
/// that honour the client's order (rustls, nginx and Caddy by default) pick it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Suite {
    /// TLS_AES_128_GCM_SHA256 first, as Chrome and Firefox do.
    #[value(name = "aes128")]
    Aes128,
    /// TLS_AES_256_GCM_SHA384 first, as OpenSSL-based clients and rustls do (SHA-384 key
    /// schedule: costlier where SHA-512 has no hardware help).
    #[value(name = "aes256")]
    Aes256,
    /// TLS_CHACHA20_POLY1305_SHA256 first.
    #[value(name = "chacha20")]
    Chacha20,
}

/// What [`client_config`] needs.
pub struct TlsOptions {
    /// CA certificates (PEM files) to trust.
    pub ca: Vec<PathBuf>,
    /// Accept any certificate (saves the client two ECDSA verifications per handshake).
    pub insecure_no_verify: bool,
    /// Key shares offered.
    pub kx: Kx,
    /// Offer key shares generated once, at the start (see [`crate::shares`]).
    pub reuse_key_shares: bool,
    /// Preferred cipher suite.
    pub suite: Suite,
    /// The one ALPN protocol offered.
    pub alpn: &'static [u8],
}

/// TLS 1.3 only, resumption disabled (every handshake is a full one, as an email click's is),
/// aws-lc-rs.
pub fn client_config(o: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let (x25519, hybrid) = if o.reuse_key_shares {
        crate::shares::groups()?
    } else {
        (kx_group::X25519, kx_group::X25519MLKEM768)
    };
    provider.kx_groups = match o.kx {
        Kx::X25519Mlkem768 => vec![hybrid, x25519],
        Kx::X25519 => vec![x25519],
    };
    let (a128, a256, chacha) = (
        suites::TLS13_AES_128_GCM_SHA256,
        suites::TLS13_AES_256_GCM_SHA384,
        suites::TLS13_CHACHA20_POLY1305_SHA256,
    );
    provider.cipher_suites = match o.suite {
        Suite::Aes128 => vec![a128, a256, chacha],
        Suite::Aes256 => vec![a256, a128, chacha],
        Suite::Chacha20 => vec![chacha, a128, a256],
    };
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let mut config = if o.insecure_no_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        if o.ca.is_empty() {
            return Err(
                "no CA to trust: give --ca FILE (e.g. <data_dir>/ca.pem), or --insecure-no-verify"
                    .into(),
            );
        }
        let mut roots = RootCertStore::empty();
        for file in &o.ca {
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("reading {}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
            }
        }
        if roots.is_empty() {
            return Err(format!("no certificate in {:?}", o.ca));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![o.alpn.to_vec()];
    Ok(Arc::new(config))
}

/// What one handshake negotiated.
pub struct Handshake {
    /// Full, full with HelloRetryRequest, or resumed.
    pub kind: &'static str,
    /// The key exchange group and the cipher suite.
    pub group: String,
}

/// Connects, runs the TLS handshake and checks ALPN.
pub async fn open(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    sni: &ServerName<'static>,
    alpn: &[u8],
) -> Result<(Tls, Handshake), Failure> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| (Fail::Connect, e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let tls = connector
        .connect(sni.clone(), tcp)
        .await
        .map_err(|e| (Fail::Tls, e.to_string()))?;
    let conn = tls.get_ref().1;
    if conn.alpn_protocol() != Some(alpn) {
        return Err((
            Fail::Alpn,
            format!(
                "server chose ALPN {:?}, asked for {:?}",
                conn.alpn_protocol().map(String::from_utf8_lossy),
                String::from_utf8_lossy(alpn)
            ),
        ));
    }
    let kind = match conn.handshake_kind() {
        Some(HandshakeKind::Full) => "full",
        Some(HandshakeKind::FullWithHelloRetryRequest) => "full+hello-retry",
        Some(HandshakeKind::Resumed) => "resumed",
        None => "unknown",
    };
    let group = format!(
        "{:?} {:?}",
        conn.negotiated_key_exchange_group()
            .map(|g| g.name())
            .unwrap_or(rustls::NamedGroup::Unknown(0)),
        conn.negotiated_cipher_suite()
            .map(|s| s.suite())
            .unwrap_or(rustls::CipherSuite::Unknown(0)),
    );
    Ok((tls, Handshake { kind, group }))
}

/// One HTTP/1.1 response, as far as the load generator cares.
pub struct H1Response {
    /// Status code.
    pub status: u16,
    /// The server will close the connection after it.
    pub close: bool,
}

/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;

/// Writes `request` and reads one whole response into `buf`.
pub async fn h1_exchange(
    io: &mut Tls,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<H1Response, Failure> {
    let io_err = |e: std::io::Error| (Fail::Io, e.to_string());
    io.write_all(request).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err((Fail::Http, "response head over 64 KiB".into()));
        }
        if read_more(io, buf).await.map_err(io_err)? == 0 {
            return Err((
                Fail::Io,
                "connection closed before a full response head".into(),
            ));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| (Fail::Http, "response head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| (Fail::Http, format!("bad status line {status_line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, status_line.starts_with("HTTP/1.0"));
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| (Fail::Http, format!("bad content-length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        // Good enough for the short bodies of redirects: the last chunk ends the buffer.
        while !buf[head_end..].ends_with(b"0\r\n\r\n") {
            if read_more(io, buf).await.map_err(io_err)? == 0 {
                return Err((Fail::Io, "connection closed inside a chunked body".into()));
            }
        }
    } else if let Some(n) = length {
        while buf.len() < head_end + n {
            if read_more(io, buf).await.map_err(io_err)? == 0 {
                return Err((Fail::Io, "connection closed inside the body".into()));
            }
        }
    } else if status != 204 && status != 304 && !(100..200).contains(&status) {
        // No length: the body runs to the end of the connection.
        while read_more(io, buf).await.map_err(io_err)? != 0 {}
        close = true;
    }
    Ok(H1Response { status, close })
}

/// Waits until the server closes the connection (after `Connection: close`), so the server,
/// not the client, is the side that keeps TIME_WAIT, as with a browser's one click.
pub async fn drain_to_close(io: &mut Tls, buf: &mut Vec<u8>) {
    loop {
        buf.clear();
        match read_more(io, buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn read_more(io: &mut Tls, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(4096);
    io.read_buf(buf).await
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Runs the h2 handshake on `tls` and spawns the connection task.
pub async fn h2_handshake(tls: Tls) -> Result<H2, Failure> {
    let (send, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| (Fail::H2, e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One GET over h2; returns the status once the whole body has arrived.
pub async fn h2_exchange(send: &mut H2, uri: &http::Uri) -> Result<u16, Failure> {
    let h2_err = |e: hyper::Error| (Fail::H2, e.to_string());
    send.ready().await.map_err(h2_err)?;
    let request = http::Request::get(uri.clone())
        .header(http::header::USER_AGENT, USER_AGENT)
        .body(Empty::<Bytes>::new())
        .map_err(|e| (Fail::Http, e.to_string()))?;
    let response = send.send_request(request).await.map_err(h2_err)?;
    let status = response.status().as_u16();
    response.into_body().collect().await.map_err(h2_err)?;
    Ok(status)
}

/// Accepts any certificate: `--insecure-no-verify`, to spend the client's core on load rather
/// than on verifying signatures. Signatures are not checked either.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
