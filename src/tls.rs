//! TLS termination: read the ClientHello, normalise SNI, pick the certificate, finish the
//! handshake with one shared `ServerConfig`.
//!
//! rustls's certificate resolver is synchronous, so the certificate is found (and, on a first
//! handshake, issued) in the acceptor before the handshake continues, then handed to the resolver
//! through a task-local set for the whole handshake (after a HelloRetryRequest rustls resolves
//! again, on the second ClientHello): the resolver itself never does I/O or a cache lookup. This
//! module does not talk to a CA.
//!
//! The bytes up to the ClientHello are kept while rustls reads it ([`recorder`]), and the
//! connection's JA4 fingerprint ([`ja4`]) is computed from them once the handshake is done.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::Domain;
use crate::acme::challenges::{ACME_TLS_ALPN, Challenges};
use crate::certs::{CertError, Certs};
use crate::metrics::Metrics;

mod hkdf;
pub mod ja4;
pub mod recorder;

pub use hkdf::provider;

pub use ja4::Ja4;
use recorder::Recorder;

tokio::task_local! {
    /// The certificate the acceptor chose for the handshake being driven on this task.
    static SELECTED: Arc<CertifiedKey>;
}

/// Hands rustls the certificate the acceptor selected for this connection.
#[derive(Debug)]
struct SelectedCert;

impl ResolvesServerCert for SelectedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        SELECTED.try_with(Arc::clone).ok()
    }
}

/// Session cache entries kept when resumption is on.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// The edge's two server configurations, alike but for the cipher suite choice (see
/// [`ServerConfigs::for_hello`]).
#[derive(Clone)]
pub struct ServerConfigs {
    /// The client's order decides: browsers put AES-128-GCM first, or ChaCha20-Poly1305 where
    /// they have no AES instructions.
    by_client: Arc<ServerConfig>,
    /// AES-128-GCM whenever offered, for clients that put AES-256-GCM first (OpenSSL's and rustls's
    /// defaults: curl, Python, many scanners and scripts): the same security margin for TLS here, and
    /// AES-256-GCM's suite hashes the transcript with SHA-384, which costs more per handshake.
    aes128_first: Arc<ServerConfig>,
}

impl ServerConfigs {
    /// The configuration for a client offering `suites`, in its order of preference.
    fn for_hello(&self, suites: &[rustls::CipherSuite]) -> &Arc<ServerConfig> {
        use rustls::CipherSuite::{
            TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
        };
        let first = suites.iter().find(|s| {
            matches!(
                s,
                TLS13_AES_128_GCM_SHA256
                    | TLS13_AES_256_GCM_SHA384
                    | TLS13_CHACHA20_POLY1305_SHA256
            )
        });
        match first {
            Some(TLS13_AES_256_GCM_SHA384) => &self.aes128_first,
            _ => &self.by_client,
        }
    }
}

/// The shared server configurations: TLS 1.3 and 1.2, ALPN h2 and http/1.1, resumption (tickets
/// and a bounded session cache, shared by both) unless `session_resumption` is false.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    session_resumption: bool,
) -> Result<ServerConfigs, rustls::Error> {
    let build = |provider: Arc<CryptoProvider>| -> Result<ServerConfig, rustls::Error> {
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SelectedCert));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    };
    let mut by_client = build(provider.clone())?;
    if session_resumption {
        by_client.session_storage =
            rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        by_client.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    } else {
        by_client.session_storage = Arc::new(NoServerSessionStorage {});
        by_client.send_tls13_tickets = 0;
    }
    let mut suites = provider.cipher_suites.clone();
    // Stable: AES-128-GCM's suites first, the others after them in the provider's order.
    suites.sort_by_key(|s| {
        use rustls::CipherSuite::{
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            TLS13_AES_128_GCM_SHA256,
        };
        !matches!(
            s.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let mut aes128_first = build(Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..(*provider).clone()
    }))?;
    aes128_first.ignore_client_order = true;
    aes128_first.session_storage = by_client.session_storage.clone();
    aes128_first.ticketer = by_client.ticketer.clone();
    aes128_first.send_tls13_tickets = by_client.send_tls13_tickets;
    Ok(ServerConfigs {
        by_client: Arc::new(by_client),
        aes128_first: Arc::new(aes128_first),
    })
}

/// The configuration for TLS-ALPN-01 validation handshakes (RFC 8737 §3): ALPN `acme-tls/1`
/// only, TLS 1.2 and later, no resumption.
pub fn challenge_config(provider: Arc<CryptoProvider>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SelectedCert));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A finished handshake.
pub struct Accepted<IO> {
    /// The TLS stream.
    pub stream: TlsStream<IO>,
    /// The normalised SNI name.
    pub domain: Domain,
    /// `"1.3"` or `"1.2"`.
    pub tls_version: &'static str,
    /// True if ALPN selected h2.
    pub h2: bool,
    /// The JA4 fingerprint of the client's ClientHello (none if it was over the recorder's
    /// bound).
    pub tls_fp: Option<Ja4>,
}

/// Why a handshake did not complete. Each variant is one `outcome` label value.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// No ClientHello or no finished handshake within the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The ClientHello had no SNI or an invalid name.
    #[error("missing or invalid SNI")]
    BadName,
    /// The name is not registered (refused with `unrecognized_name`, no I/O).
    #[error("{0} is not served")]
    Unrecognized(Domain),
    /// A registered name has no certificate (issuance failed or timed out).
    #[error("no certificate")]
    NoCertificate(#[source] CertError),
    /// A TLS-ALPN-01 validation handshake was answered; there is nothing to serve on it.
    #[error("answered an ACME TLS-ALPN-01 challenge")]
    ChallengeAnswered,
    /// A TLS-ALPN-01 handshake for a name with no published challenge.
    #[error("no ACME TLS-ALPN-01 challenge for {0}")]
    NoChallenge(Domain),
    /// The TLS exchange itself failed (garbage, protocol error, client hung up).
    #[error("tls")]
    Io(#[source] io::Error),
}

impl HandshakeError {
    /// The `outcome` label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            HandshakeError::Timeout => "timeout",
            HandshakeError::BadName => "bad_sni",
            HandshakeError::Unrecognized(_) => "unrecognized_name",
            HandshakeError::NoCertificate(_) => "no_certificate",
            HandshakeError::ChallengeAnswered => "acme_challenge",
            HandshakeError::NoChallenge(_) => "acme_no_challenge",
            HandshakeError::Io(_) => "failed",
        }
    }
}

/// TLS alert descriptions we send ourselves before any handshake state exists (RFC 8446 §6).
#[derive(Clone, Copy)]
enum Alert {
    UnrecognizedName = 112,
    InternalError = 80,
}

/// Terminates TLS for the edge.
pub struct Acceptor {
    configs: ServerConfigs,
    challenge_config: Arc<ServerConfig>,
    challenges: Arc<Challenges>,
    certs: Arc<Certs>,
    metrics: Metrics,
    handshake_timeout: Duration,
}

impl Acceptor {
    /// An acceptor using `configs` (from [`server_config`]) and `certs`, answering TLS-ALPN-01
    /// validation with `challenges` and `challenge_config` (from [`challenge_config`]).
    pub fn new(
        configs: ServerConfigs,
        challenge_config: Arc<ServerConfig>,
        challenges: Arc<Challenges>,
        certs: Arc<Certs>,
        metrics: Metrics,
        handshake_timeout: Duration,
    ) -> Acceptor {
        Acceptor {
            configs,
            challenge_config,
            challenges,
            certs,
            metrics,
            handshake_timeout,
        }
    }

    /// Runs the handshake on `io` and counts its outcome.
    pub async fn accept<IO>(&self, io: IO) -> Result<Accepted<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let result = self.handshake(io).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.handshakes.with_label_values(&[outcome]).inc();
        result
    }

    async fn handshake<IO>(&self, io: IO) -> Result<Accepted<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let lazy = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), Recorder::new(io));
        let start = tokio::time::timeout(self.handshake_timeout, lazy)
            .await
            .map_err(|_| HandshakeError::Timeout)?
            .map_err(HandshakeError::Io)?;
        // The hello is read: the connection goes on over the bare transport, and the bytes are
        // kept for the fingerprint until the handshake is done.
        let (io, hello) = start.io.into_parts();
        let start = tokio_rustls::StartHandshake::from_parts(start.accepted, io);
        let name = start
            .client_hello()
            .server_name()
            .map(Domain::parse)
            .and_then(Result::ok);
        let Some(domain) = name else {
            refuse(start.io, Alert::UnrecognizedName).await;
            return Err(HandshakeError::BadName);
        };
        let acme = start
            .client_hello()
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return self.answer_challenge(start, domain).await;
        }
        // Memory answers most handshakes at once; anything else (an `ask` approval, a store
        // read, then the wait for an order, which `tls.on_demand_timeout` bounds) within the
        // handshake timeout on top of that, so a store or endpoint that hangs holds no
        // connection past it.
        let resolved = match self.certs.cached(&domain) {
            Some(key) => Ok(key),
            None => {
                let bound = self.handshake_timeout + self.certs.on_demand_timeout();
                tokio::time::timeout(bound, self.certs.resolve(&domain))
                    .await
                    .unwrap_or_else(|_| Err(CertError::Timeout(domain.clone())))
            }
        };
        let key = match resolved {
            Ok(key) => key,
            Err(CertError::NotServed(d)) => {
                refuse(start.io, Alert::UnrecognizedName).await;
                return Err(HandshakeError::Unrecognized(d));
            }
            Err(e) => {
                refuse(start.io, Alert::InternalError).await;
                return Err(HandshakeError::NoCertificate(e));
            }
        };
        let config = self
            .configs
            .for_hello(start.client_hello().cipher_suites())
            .clone();
        let stream = finished(self.finish(start, config, key).await)?;
        let conn = stream.get_ref().1;
        let tls_version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
            _ => "1.3",
        };
        let h2 = conn.alpn_protocol() == Some(b"h2");
        let tls_fp = hello.as_deref().and_then(ja4::fingerprint);
        Ok(Accepted {
            stream,
            domain,
            tls_version,
            h2,
            tls_fp,
        })
    }
}

impl Acceptor {
    /// Completes a TLS-ALPN-01 validation handshake with the challenge certificate, then ends.
    async fn answer_challenge<IO>(
        &self,
        start: tokio_rustls::StartHandshake<IO>,
        domain: Domain,
    ) -> Result<Accepted<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let lookup =
            tokio::time::timeout(self.handshake_timeout, self.challenges.tls_alpn01(&domain));
        let Some(key) = lookup.await.ok().flatten() else {
            refuse(start.io, Alert::UnrecognizedName).await;
            return Err(HandshakeError::NoChallenge(domain));
        };
        let config = self.challenge_config.clone();
        let mut stream = finished(self.finish(start, config, key).await)?;
        tracing::debug!(%domain, "answered TLS-ALPN-01 validation");
        let _ = stream.shutdown().await;
        Err(HandshakeError::ChallengeAnswered)
    }

    /// The rest of the handshake `start` began on `config`, serving `key`, within the handshake
    /// timeout.
    ///
    /// rustls asks the resolver for the certificate on every ClientHello it reads: the first
    /// while `into_stream` builds the connection, and after a HelloRetryRequest (RFC 8446
    /// §4.1.4: the client sent no key share for the group chosen) the second, which arrives
    /// while the handshake is awaited. So the task-local is set for the whole handshake, not only
    /// the call that starts it. A plain function wrapping the started handshake, not an `async`
    /// frame around `into_stream`: the connection's future grows by the key's slot alone, where
    /// a frame keeping `start` beside the handshake grew it by more than a kilobyte; the price is
    /// one more reference count on the key.
    fn finish<IO>(
        &self,
        start: tokio_rustls::StartHandshake<IO>,
        config: Arc<ServerConfig>,
        key: Arc<CertifiedKey>,
    ) -> impl Future<Output = Result<io::Result<TlsStream<IO>>, tokio::time::error::Elapsed>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = SELECTED.sync_scope(key.clone(), || start.into_stream(config));
        SELECTED.scope(key, tokio::time::timeout(self.handshake_timeout, handshake))
    }
}

/// The outcome of [`Acceptor::finish`].
fn finished<IO>(
    outcome: Result<io::Result<TlsStream<IO>>, tokio::time::error::Elapsed>,
) -> Result<TlsStream<IO>, HandshakeError> {
    outcome
        .map_err(|_| HandshakeError::Timeout)?
        .map_err(HandshakeError::Io)
}

/// Sends a fatal alert as a plaintext TLS record and closes. Before the ServerHello no keys
/// exist, so a plaintext alert is what RFC 8446 §6 prescribes.
async fn refuse<IO: AsyncWrite + Unpin>(mut io: IO, alert: Alert) {
    let record = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, alert as u8];
    // Best effort: the peer may already be gone.
    let _ = io.write_all(&record).await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests;
