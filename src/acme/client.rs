//! The HTTP client instant-acme talks through: rustls with the platform's roots, or only
//! `acme.ca_root` when set (private CAs, tests). Every request is bounded in time
//! ([`REQUEST_TIMEOUT`]): a CA that stalls fails the order (which backs off) instead of holding
//! its flight and the name's lease for hours. It also watches every answer for a rate limit
//! (`429`/`503` with `Retry-After`): one that holds back every name pauses the order budget until
//! then, and every one is kept for the order that met it ([`SeenLimits`]), which backs off its
//! name alone for a limit of the name's (see `acme/limits`).

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
use super::limits::{RateLimit, SeenLimits, problem_words};
use crate::clock::Clock;
use crate::store::RateLimitScope;

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
    /// The rate limits met, for the orders that met them.
    limits: Arc<SeenLimits>,
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
            limits: Arc::default(),
            clock,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// The rate limit `problem` reports, if it is one, and until when if its answer said
    /// (`Retry-After`): as this client met it, or else as the problem alone says.
    pub fn rate_limit(
        &self,
        problem: &instant_acme::Problem,
    ) -> Option<(RateLimit, Option<SystemTime>)> {
        let detail = problem.detail.as_deref().unwrap_or_default();
        // Only a rate limit's problem takes what its answer said: another problem that happens
        // to read the same never does.
        let limit = RateLimit::of(problem.status, problem.r#type.as_deref(), detail)?;
        match self.limits.take(detail) {
            Some((noted, until)) => Some((noted, Some(until))),
            None => Some((limit, None)),
        }
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = HttpClient::request(&self.inner, req);
        let budget = self.budget.clone();
        let limits = self.limits.clone();
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
                Ok::<_, instant_acme::Error>((rsp.parts, body))
            };
            let (mut parts, body) = tokio::time::timeout(timeout, whole)
                .await
                .map_err(|_| instant_acme::Error::Other(Box::new(NoAnswer(timeout))))??;
            bound_retry_after(&mut parts.headers);
            let status = parts.status.as_u16();
            if (status == 429 || status == 503)
                && let Some(until) = retry_after(&parts.headers, clock.now())
            {
                let (problem_type, detail) = problem_words(&body);
                let limit = RateLimit::of(Some(status), problem_type.as_deref(), &detail)
                    .unwrap_or(RateLimit::Unrecognised);
                if limit.scope() == RateLimitScope::Account {
                    budget.pause_until(until, limit, &detail).await;
                }
                // A body without a problem's words (an HTML page of a proxy) reaches no order as
                // a problem: nothing to keep for one.
                if !detail.is_empty() {
                    limits.note(detail, limit, until);
                }
            }
            Ok(BytesResponse {
                parts,
                body: Box::new(problem_with_status(status, body)),
            })
        })
    }
}

/// A `404` answer's body, as a problem document when it is none (Pebble's empty answer for an
/// unknown order): `{"status": 404, "detail"}`, so that reading an order that is gone says so
/// instead of failing to parse. Other error answers without one (a proxy's 502 page) are left
/// to fail as they did: a CA that did not answer, its order kept for the next try.
fn problem_with_status(status: u16, body: Bytes) -> Bytes {
    if status != 404 || serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        return body;
    }
    let detail = format!("the CA answered HTTP {status} without a problem document");
    Bytes::from(serde_json::json!({ "status": status, "detail": detail }).to_string())
}

/// The furthest a CA's `Retry-After` is taken to reach: Let's Encrypt's longest limit window.
/// A later time (a CA or a proxy in front of it gone wrong) is taken as this, so that one answer
/// cannot stop issuance for good, and a number of seconds too large for the clock does not
/// overflow it.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// The shortest pause a CA's rate limit is taken to ask for: a `Retry-After` of 0, or a date
/// this node's clock has passed already (a skewed clock), would otherwise pause nothing, and
/// every handshake would order again straight into the same limit.
const SHORTEST_RETRY_AFTER: Duration = Duration::from_secs(60);

/// `Retry-After` as seconds after `now` or an HTTP date (RFC 9110 §10.2.3), at least
/// [`SHORTEST_RETRY_AFTER`] and at most [`LONGEST_RETRY_AFTER`] ahead.
fn retry_after(headers: &http::HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let latest = now + LONGEST_RETRY_AFTER;
    let until = match value.parse::<u64>() {
        Ok(secs) => now.checked_add(Duration::from_secs(secs)).unwrap_or(latest),
        Err(_) => httpdate::parse_http_date(value).ok()?,
    };
    Some(until.clamp(now + SHORTEST_RETRY_AFTER, latest))
}

/// Caps a `Retry-After` in seconds at [`LONGEST_RETRY_AFTER`], in place, on every answer:
/// instant-acme adds the seconds to the clock wherever it reads one (renewal information, an
/// order polled), and a number too large for the clock would panic there.
fn bound_retry_after(headers: &mut http::HeaderMap) {
    let longest = LONGEST_RETRY_AFTER.as_secs();
    let too_far = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|secs| secs > longest);
    if too_far {
        headers.insert(http::header::RETRY_AFTER, longest.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, from_unix_secs};
    use crate::store::{OrderTurn, SqliteStore};

    /// A 404 without a problem document gets one carrying its status; a problem document, any
    /// other error answer, and any answer that is not an error, are left as they are.
    #[test]
    fn a_404_without_a_problem_document_gets_one_with_its_status() {
        let problem = |status, body: &'static [u8]| {
            let body = problem_with_status(status, Bytes::from_static(body));
            serde_json::from_slice::<serde_json::Value>(&body).ok()
        };
        assert_eq!(
            problem(404, b""),
            Some(serde_json::json!({
                "status": 404,
                "detail": "the CA answered HTTP 404 without a problem document"
            }))
        );
        let page = b"<html>bad gateway</html>";
        assert_eq!(
            problem_with_status(502, Bytes::from_static(page)),
            &page[..]
        );
        let doc = br#"{"type":"urn:ietf:params:acme:error:malformed","status":404}"#;
        assert_eq!(problem_with_status(404, Bytes::from_static(doc)), &doc[..]);
        assert_eq!(problem_with_status(200, Bytes::from_static(b"")), &b""[..]);
    }

    /// A client of a CA at `port` on loopback whose root is `root`, timing out after
    /// `timeout`, and a request for its directory.
    fn client(
        root: &rcgen::Certificate,
        port: u16,
        timeout: Duration,
    ) -> (AcmeHttp, Request<BodyWrapper<Bytes>>, tempfile::TempDir) {
        client_at(root, port, timeout, Clock::system())
    }

    /// [`client`] reading the time from `clock`.
    fn client_at(
        root: &rcgen::Certificate,
        port: u16,
        timeout: Duration,
        clock: Clock,
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
            clock.clone(),
        ));
        let mut http = AcmeHttp::new(Some(&path), budget, clock).unwrap();
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

    /// A CA on loopback (its self-signed certificate for `localhost`) that reads one request
    /// and writes `answer`, then calls `after` and holds the connection open; its certificate
    /// and port.
    async fn ca_answering(
        answer: Vec<u8>,
        after: impl FnOnce() + Send + 'static,
    ) -> (rcgen::CertifiedKey<rcgen::KeyPair>, u16) {
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
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut request = [0u8; 4096];
            let _ = tls.read(&mut request).await.unwrap();
            tls.write_all(&answer).await.unwrap();
            tls.flush().await.unwrap();
            after();
            std::future::pending::<()>().await;
        });
        (ca, port)
    }

    /// A CA that sends its answer's head and then stalls in the body is bounded the same (the
    /// body is read within the timeout, not after it). Real time, a short timeout: the head
    /// must arrive first, which a paused clock would not wait for.
    #[tokio::test]
    async fn a_ca_that_stalls_after_the_head_fails_the_request_at_the_timeout() {
        let (sent_head, head_sent) = tokio::sync::oneshot::channel();
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
        let (ca, port) = ca_answering(head.to_vec(), move || {
            let _ = sent_head.send(());
        })
        .await;
        let (http, req, _dir) = client(&ca.cert, port, Duration::from_secs(3));
        let err = failure(&http, req).await;
        assert_eq!(err.to_string(), "the CA did not answer within 3s");
        head_sent
            .await
            .expect("the head was sent before the timeout");
    }

    /// Let's Encrypt's answers to a new order, as Boulder words them (its `ratelimits`
    /// package), each with `Retry-After: 120`: a limit of the order's name leaves the account's
    /// order budget alone, one of the account (or an overload, or words the edge does not
    /// recognise) pauses it until then; either way the order that met it reads which limit it
    /// was and until when from the problem instant-acme hands it, once.
    #[tokio::test]
    async fn only_a_rate_limit_of_the_account_pauses_the_order_budget() {
        for (status, detail, limit) in [
            (
                429,
                "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after 2027-01-15 08:02:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers",
                RateLimit::ExactSet,
            ),
            (
                429,
                "too many failed authorizations (5) for \"links.example.com\" in the last 1h0m0s, retry after 2027-01-15 08:02:00 UTC: see https://letsencrypt.org/docs/rate-limits/#authorization-failures-per-identifier-per-account",
                RateLimit::FailedAuthorizations,
            ),
            (
                429,
                "too many certificates (50) already issued for \"example.com\" in the last 168h0m0s, retry after 2027-01-15 08:02:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-registered-domain",
                RateLimit::RegisteredDomain,
            ),
            (
                429,
                "too many new orders (300) from this account in the last 3h0m0s, retry after 2027-01-15 08:02:00 UTC: see https://letsencrypt.org/docs/rate-limits/#new-orders-per-account",
                RateLimit::NewOrders,
            ),
            (503, "Service busy; retry later.", RateLimit::Overload),
            (429, "slow down", RateLimit::Unrecognised),
        ] {
            let body = serde_json::json!({
                "type": "urn:ietf:params:acme:error:rateLimited",
                "detail": detail,
                "status": status,
            })
            .to_string();
            let answer = format!(
                "HTTP/1.1 {status} Rate Limited\r\ncontent-type: application/problem+json\r\nretry-after: 120\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let (ca, port) = ca_answering(answer.into_bytes(), || {}).await;
            let wall = ManualClock::new(from_unix_secs(1_800_000_000));
            let (http, req, _dir) = client_at(&ca.cert, port, REQUEST_TIMEOUT, wall.clock());
            let rsp = HttpClient::request(&http, req).await.unwrap();
            assert_eq!(rsp.parts.status.as_u16(), status);
            let until = wall.clock().now() + Duration::from_secs(120);
            let turn = http.budget.try_acquire().await.unwrap();
            match limit.scope() {
                RateLimitScope::Name => assert_eq!(turn, OrderTurn::Taken, "{detail}"),
                RateLimitScope::Account => assert_eq!(turn, OrderTurn::Wait(until), "{detail}"),
            }
            let problem: instant_acme::Problem = serde_json::from_str(&body).unwrap();
            // Another problem reading the same is no rate limit, and takes nothing.
            let other: instant_acme::Problem = serde_json::from_value(serde_json::json!({
                "type": "urn:ietf:params:acme:error:unauthorized",
                "detail": detail,
                "status": 403,
            }))
            .unwrap();
            assert_eq!(http.rate_limit(&other), None);
            assert_eq!(http.rate_limit(&problem), Some((limit, Some(until))));
            assert_eq!(http.rate_limit(&problem), Some((limit, None)), "read once");
        }
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
            "Sun, 17 Jan 2027 08:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&h, now).unwrap(),
            httpdate::parse_http_date("Sun, 17 Jan 2027 08:00:00 GMT").unwrap()
        );
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    /// A time past the longest limit window, or seconds past what the clock can hold (it
    /// panicked: the flight's task unwound), is taken as 7 days.
    #[test]
    fn retry_after_reaches_at_most_seven_days() {
        let now = from_unix_secs(1_800_000_000);
        let week = now + Duration::from_secs(7 * 24 * 3600);
        let mut h = http::HeaderMap::new();
        for far in [
            "18446744073709551615",
            "31536000",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            h.insert(http::header::RETRY_AFTER, far.parse().unwrap());
            assert_eq!(retry_after(&h, now), Some(week), "{far}");
        }
    }

    /// A pause of nothing (0 s, or a date the clock has passed) is taken as a minute: the
    /// limit's next order would otherwise go out at once, into the same limit.
    #[test]
    fn retry_after_pauses_at_least_a_minute() {
        let now = from_unix_secs(1_800_000_000);
        let mut h = http::HeaderMap::new();
        for soon in ["0", "30", "Thu, 01 Jan 2015 00:00:00 GMT"] {
            h.insert(http::header::RETRY_AFTER, soon.parse().unwrap());
            assert_eq!(
                retry_after(&h, now),
                Some(now + SHORTEST_RETRY_AFTER),
                "{soon}"
            );
        }
    }

    /// Any answer's `Retry-After` in seconds reaches instant-acme capped at 7 days (it adds
    /// the seconds to the clock for renewal information and polled orders, and panicked on a
    /// number the clock cannot hold); a date, or a smaller number, reaches it as sent.
    #[tokio::test]
    async fn a_retry_after_past_the_clock_reaches_instant_acme_capped() {
        for (sent, seen) in [
            ("18446744073709551615", "604800"),
            ("120", "120"),
            (
                "Sun, 17 Jan 2027 08:00:00 GMT",
                "Sun, 17 Jan 2027 08:00:00 GMT",
            ),
        ] {
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nretry-after: {sent}\r\ncontent-length: 2\r\n\r\n{{}}"
            );
            let (ca, port) = ca_answering(answer.into_bytes(), || {}).await;
            let (http, req, _dir) = client(&ca.cert, port, REQUEST_TIMEOUT);
            let rsp = HttpClient::request(&http, req).await.unwrap();
            assert_eq!(
                rsp.parts.headers[http::header::RETRY_AFTER]
                    .to_str()
                    .unwrap(),
                seen,
                "{sent}"
            );
        }
    }
}
