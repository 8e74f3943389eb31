//! A small ACME CA on loopback, for answers Pebble cannot be made to give (a rate limit for one
//! name and not another): a directory, nonces, an account, and orders that are ready at once
//! (no authorization to answer), finalized by signing the CSR with a test CA whose root the
//! client trusts. A name given a [`Refusal`] is answered with it at new-order instead.
//!
//! It checks no JWS signature and keeps no account (each new account gets a URL of its own, and
//! each new order's is noted): what is under test is the edge's client, not a CA. It runs on the test's runtime and stops when dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};

/// How the CA answers a new order for one name: `status` with a `rateLimited` problem saying
/// `detail`, and `Retry-After: retry_after` (seconds or an HTTP date).
#[derive(Clone)]
pub struct Refusal {
    pub status: u16,
    pub detail: String,
    pub retry_after: String,
}

/// A running fake CA.
pub struct FakeAcme {
    /// The directory URL (`acme.directory`).
    pub directory: String,
    /// PEM file of the test CA that signed its HTTPS certificate and issues (`acme.ca_root`).
    pub ca_root: PathBuf,
    /// The same root as PEM: what a client trusts for the certificates it issues.
    pub root_pem: String,
    /// The names new orders were asked for, in order.
    pub new_orders: Arc<Mutex<Vec<String>>>,
    /// The account (`kid`) each new order was asked under, in order.
    order_accounts: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeAcme {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every request may need: the base URL, the issuing CA, the refusals, what was issued.
struct State {
    base: String,
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    refusals: HashMap<String, Refusal>,
    issued: Mutex<HashMap<String, String>>,
    new_orders: Arc<Mutex<Vec<String>>>,
    order_accounts: Arc<Mutex<Vec<String>>>,
    accounts: AtomicU64,
    account_delay: Duration,
    nonces: AtomicU64,
}

impl FakeAcme {
    /// Starts the CA on a free loopback port, answering new orders for the names in
    /// `refusals` with their refusal.
    pub async fn start(refusals: HashMap<String, Refusal>) -> FakeAcme {
        FakeAcme::start_with(refusals, Duration::ZERO).await
    }

    /// [`FakeAcme::start`], answering each new account only after `account_delay`.
    pub async fn start_with(
        refusals: HashMap<String, Refusal>,
        account_delay: Duration,
    ) -> FakeAcme {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "fake ACME test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let dir = tempfile::tempdir().unwrap();
        let ca_root = dir.path().join("fake-acme-ca.pem");
        std::fs::write(&ca_root, root.pem()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let new_orders = Arc::new(Mutex::new(Vec::new()));
        let order_accounts = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            base: base.clone(),
            issuer,
            root_pem: root.pem(),
            refusals,
            issued: Mutex::new(HashMap::new()),
            new_orders: new_orders.clone(),
            order_accounts: order_accounts.clone(),
            accounts: 0.into(),
            account_delay,
            nonces: 0.into(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeAcme {
            directory: format!("{base}/dir"),
            ca_root,
            root_pem: root.pem(),
            new_orders,
            order_accounts,
            _dir: dir,
            task,
        }
    }

    /// `[acme]` settings for an edge ordering from this CA.
    pub fn acme_toml(&self) -> String {
        format!(
            "[acme]\ndirectory = \"{}\"\nca_root = \"{}\"\nchallenges = [\"http-01\"]\ncontact = [\"mailto:ops@example.com\"]\n",
            self.directory,
            self.ca_root.display()
        )
    }

    /// The names new orders were asked for, in order.
    pub fn new_orders(&self) -> Vec<String> {
        self.new_orders.lock().unwrap().clone()
    }

    /// The account each new order was asked under, in order.
    pub fn order_accounts(&self) -> Vec<String> {
        self.order_accounts.lock().unwrap().clone()
    }
}

/// The answer to `req`, with a fresh nonce.
async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let (protected, payload) = (jws_part(&body, "protected"), jws_part(&body, "payload"));
    let base = &state.base;
    let (status, location, content) = match (method, path.as_str()) {
        (Method::GET, "/dir") => (
            StatusCode::OK,
            None,
            json!({
                "newNonce": format!("{base}/nonce"),
                "newAccount": format!("{base}/account"),
                "newOrder": format!("{base}/order"),
            })
            .to_string(),
        ),
        (Method::HEAD | Method::GET, "/nonce") => (StatusCode::OK, None, String::new()),
        (Method::POST, "/account") => {
            tokio::time::sleep(state.account_delay).await;
            let n = state.accounts.fetch_add(1, Ordering::SeqCst) + 1;
            (
                StatusCode::CREATED,
                Some(format!("{base}/account/{n}")),
                json!({"status": "valid"}).to_string(),
            )
        }
        (Method::POST, "/order") => {
            let name = payload["identifiers"][0]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            state.new_orders.lock().unwrap().push(name.clone());
            let kid = protected["kid"].as_str().unwrap_or_default().to_owned();
            state.order_accounts.lock().unwrap().push(kid);
            if let Some(refusal) = state.refusals.get(&name) {
                return refused(state, refusal);
            }
            (
                StatusCode::CREATED,
                Some(format!("{base}/order/{name}")),
                order(state, &name),
            )
        }
        (Method::POST, p) if p.starts_with("/order/") => {
            (StatusCode::OK, None, order(state, &p["/order/".len()..]))
        }
        (Method::POST, p) if p.starts_with("/finalize/") => {
            let name = &p["/finalize/".len()..];
            let csr = URL_SAFE_NO_PAD
                .decode(payload["csr"].as_str().unwrap_or_default())
                .unwrap();
            let chain = sign(state, &csr);
            state.issued.lock().unwrap().insert(name.to_owned(), chain);
            (StatusCode::OK, None, order(state, name))
        }
        (Method::POST, p) if p.starts_with("/cert/") => {
            let chain = state
                .issued
                .lock()
                .unwrap()
                .get(&p["/cert/".len()..])
                .cloned();
            (StatusCode::OK, None, chain.unwrap_or_default())
        }
        _ => (StatusCode::NOT_FOUND, None, String::new()),
    };
    let mut rsp = Response::builder()
        .status(status)
        .header("replay-nonce", nonce(state));
    if let Some(location) = location {
        rsp = rsp.header("location", location);
    }
    rsp.body(Full::new(Bytes::from(content))).unwrap()
}

/// A new order for a name refused with `refusal`.
fn refused(state: &State, refusal: &Refusal) -> Response<Full<Bytes>> {
    let problem = json!({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": refusal.detail,
        "status": refusal.status,
    });
    Response::builder()
        .status(refusal.status)
        .header("content-type", "application/problem+json")
        .header("retry-after", &refusal.retry_after)
        .header("replay-nonce", nonce(state))
        .body(Full::new(Bytes::from(problem.to_string())))
        .unwrap()
}

/// The order for `name`: ready to finalize, or valid once finalized.
fn order(state: &State, name: &str) -> String {
    let base = &state.base;
    let issued = state.issued.lock().unwrap().contains_key(name);
    let mut order = json!({
        "status": if issued { "valid" } else { "ready" },
        "identifiers": [{"type": "dns", "value": name}],
        "authorizations": [],
        "finalize": format!("{base}/finalize/{name}"),
    });
    if issued {
        order["certificate"] = json!(format!("{base}/cert/{name}"));
    }
    order.to_string()
}

/// The certificate the CSR asks for, valid from a day ago for 90 days, and the root after it.
fn sign(state: &State, csr: &[u8]) -> String {
    let csr = rustls_pki_types::CertificateSigningRequestDer::from(csr);
    let mut request = rcgen::CertificateSigningRequestParams::from_der(&csr).unwrap();
    let now = time::OffsetDateTime::now_utc();
    request.params.not_before = now - time::Duration::days(1);
    request.params.not_after = now + time::Duration::days(90);
    let leaf = request.signed_by(&state.issuer).unwrap();
    format!("{}{}", leaf.pem(), state.root_pem)
}

/// A part (`protected`, `payload`) of a flattened JWS body (RFC 7515 §7.2.2), as JSON; null if
/// there is none.
fn jws_part(body: &[u8], part: &str) -> Value {
    let jws: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    jws[part]
        .as_str()
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null)
}

fn nonce(state: &State) -> String {
    let n = state.nonces.fetch_add(1, Ordering::SeqCst);
    format!("nonce-{n}")
}
