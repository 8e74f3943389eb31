//! The HTTP client instant-acme talks through: rustls with the platform's roots, or only
//! `acme.ca_root` when set (private CAs, tests). Every request is bounded in time
//! ([`REQUEST_TIMEOUT`]): a CA that stalls fails the order (which backs off) instead of holding
//! its flight and the name's lease for hours. It also watches every answer for a rate limit
//! (`429`/`503` with `Retry-After`) and pauses the order budget accordingly.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::AcmeError;
use super::budget::OrderBudget;
use crate::clock::Clock;

/// How long one request to the CA may take, from connecting to the answer's last byte: a CA
/// answers in well under a second, finalizing an order in a few.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The error of a request the CA did not answer in time ([`REQUEST_TIMEOUT`]).
#[derive(Debug, thiserror::Error)]
#[error("the CA did not answer within {}s", .0.as_secs())]
struct NoAnswer(Duration);

type Inner = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// HTTPS client for the ACME directory.
#[derive(Clone)]
pub struct AcmeHttp {
    inner: Inner,
    budget: Arc<OrderBudget>,
    clock: Clock,
    /// [`REQUEST_TIMEOUT`], shorter in tests.
    timeout: Duration,
}

impl AcmeHttp {
    /// A client trusting `ca_root` alone if given, else the platform's roots; `Retry-After`
    /// seconds count from `clock`'s now.
    pub fn new(
        ca_root: Option<&Path>,
        budget: Arc<OrderBudget>,
        clock: Clock,
    ) -> Result<AcmeHttp, AcmeError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_root {
            Some(path) => {
                let unreadable = |source| AcmeError::CaRoot {
                    path: path.to_path_buf(),
                    source,
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).map_err(unreadable)? {
                    roots.add(cert.map_err(unreadable)?).map_err(|source| {
                        AcmeError::CaRootCertificate {
                            path: path.to_path_buf(),
                            source,
                        }
                    })?;
                }
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(AcmeError::Tls)?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                builder.with_tls_config(config)
            }
            None => builder
                .with_provider_and_platform_verifier(provider)
                .map_err(AcmeError::PlatformRoots)?,
        };
        let connector = builder.https_only().enable_http1().enable_http2().build();
        Ok(AcmeHttp {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            budget,
            clock,
            timeout: REQUEST_TIMEOUT,
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = HttpClient::request(&self.inner, req);
        let budget = self.budget.clone();
        let clock = self.clock.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            // The body too: a CA that sends its headers and then stalls is bounded the same.
            let whole = async {
                let mut rsp = fut.await?;
                let body = rsp
                    .body
                    .into_bytes()
                    .await
                    .map_err(instant_acme::Error::Other)?;
                Ok::<_, instant_acme::Error>(BytesResponse {
                    parts: rsp.parts,
                    body: Box::new(body),
                })
            };
            let rsp = tokio::time::timeout(timeout, whole)
                .await
                .map_err(|_| instant_acme::Error::Other(Box::new(NoAnswer(timeout))))??;
            let status = rsp.parts.status.as_u16();
            if (status == 429 || status == 503)
                && let Some(until) = retry_after(&rsp.parts.headers, clock.now())
            {
                budget.pause_until(until).await;
            }
            Ok(rsp)
        })
    }
}

/// `Retry-After` as seconds after `now` or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(now + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::from_unix_secs;
    use crate::store::SqliteStore;

    /// A client of a CA at `port` on loopback whose root is `root`, timing out after
    /// `timeout`, and a request for its directory.
    fn client(
        root: &rcgen::Certificate,
        port: u16,
        timeout: Duration,
    ) -> (AcmeHttp, Request<BodyWrapper<Bytes>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.pem");
        std::fs::write(&path, root.pem()).unwrap();
        let store: Arc<dyn crate::store::Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let budget = Arc::new(OrderBudget::new(
            store,
            "https://ca/dir",
            300,
            Duration::from_secs(3 * 3600),
            Clock::system(),
        ));
        let mut http = AcmeHttp::new(Some(&path), budget, Clock::system()).unwrap();
        http.timeout = timeout;
        let req = Request::get(format!("https://localhost:{port}/dir"))
            .body(BodyWrapper::default())
            .unwrap();
        (http, req, dir)
    }

    /// The error of `req`, which must fail (not hang past twice `timeout`, not succeed).
    async fn failure(http: &AcmeHttp, req: Request<BodyWrapper<Bytes>>) -> instant_acme::Error {
        match tokio::time::timeout(2 * http.timeout, HttpClient::request(http, req)).await {
            Err(_) => panic!("the CA held the request past the timeout"),
            Ok(Ok(_)) => panic!("the CA answered"),
            Ok(Err(e)) => e,
        }
    }

    /// A CA that accepts the connection and never says a word: the request ends at
    /// [`REQUEST_TIMEOUT`] (on tokio's paused clock, which moves on while every task waits)
    /// with an error that says so.
    #[tokio::test(start_paused = true)]
    async fn a_ca_that_never_answers_fails_the_request_at_the_timeout() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let port = silent.local_addr().unwrap().port();
        let (http, req, _dir) = client(&ca.cert, port, REQUEST_TIMEOUT);
        let started = tokio::time::Instant::now();
        let err = failure(&http, req).await;
        assert_eq!(err.to_string(), "the CA did not answer within 30s");
        assert_eq!(started.elapsed(), REQUEST_TIMEOUT);
        drop(silent);
    }

    /// A CA that sends its answer's head and then stalls in the body is bounded the same (the
    /// body is read within the timeout, not after it). Real time, a short timeout: the head
    /// must arrive first, which a paused clock would not wait for.
    #[tokio::test]
    async fn a_ca_that_stalls_after_the_head_fails_the_request_at_the_timeout() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ca.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.cert.der().clone()], key)
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sent_head, head_sent) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut request = [0u8; 4096];
            let _ = tls.read(&mut request).await.unwrap();
            tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
                .await
                .unwrap();
            tls.flush().await.unwrap();
            let _ = sent_head.send(());
            std::future::pending::<()>().await;
        });
        let (http, req, _dir) = client(&ca.cert, port, Duration::from_secs(3));
        let err = failure(&http, req).await;
        assert_eq!(err.to_string(), "the CA did not answer within 3s");
        head_sent
            .await
            .expect("the head was sent before the timeout");
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = from_unix_secs(1_800_000_000);
        let mut h = http::HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        let t = retry_after(&h, now).unwrap();
        let secs = t.duration_since(now).unwrap().as_secs();
        assert!((118..=120).contains(&secs));
        h.insert(
            http::header::RETRY_AFTER,
            "Fri, 31 Dec 2100 23:59:59 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&h, now).unwrap(),
            httpdate::parse_http_date("Fri, 31 Dec 2100 23:59:59 GMT").unwrap()
        );
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
