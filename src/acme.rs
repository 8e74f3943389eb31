//! The ACME issuer (RFC 8555, with instant-acme): one stored account, orders paced by an
//! account-wide budget shared through the store, an order resumed from the name's lease when a
//! node takes another's work over, HTTP-01 and TLS-ALPN-01 challenges published through the
//! store, and renewal information (RFC 9773) when the directory offers it.
//!
//! It never decides who may get a certificate (`policy` does) and never caches (`certs` does).

pub mod budget;
pub mod challenges;
pub mod client;
mod error;
pub mod limits;
mod poll;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeStatus,
    ChallengeType, ExternalAccountKey, Identifier, NewAccount, NewOrder, Order, OrderStatus,
    Problem, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::sync::OnceCell;

use crate::Domain;
use crate::clock::{Clock, from_unix_secs};
use crate::config::{self, ChallengeKind};
use crate::issuer::{IssueError, Issuer, OrderClaim, RenewalWindow};
use crate::metrics::Metrics;
use crate::store::{OrderTurn, Store, StoreError, StoredCert};
use crate::sync::lock;
use budget::OrderBudget;
use challenges::Challenges;
use client::AcmeHttp;
pub use error::AcmeError;
pub use limits::RateLimit;
use poll::{order_gone, poll_settled};

/// Extra time a published challenge stays answerable after the order's own timeout.
const CHALLENGE_SLACK: Duration = Duration::from_secs(60);

/// Issues certificates from an ACME directory.
pub struct AcmeIssuer {
    settings: config::Acme,
    store: Arc<dyn Store>,
    challenges: Arc<Challenges>,
    http: AcmeHttp,
    account: OnceCell<Account>,
    /// An account the CA created whose credentials could not be stored yet: stored at the next
    /// try instead of creating another.
    unstored: std::sync::Mutex<Option<String>>,
    budget: Arc<OrderBudget>,
    metrics: Metrics,
    clock: Clock,
}

impl AcmeIssuer {
    /// An issuer for `settings.directory`. Nothing is fetched until the first order.
    pub fn new(
        settings: config::Acme,
        store: Arc<dyn Store>,
        challenges: Arc<Challenges>,
        metrics: Metrics,
        clock: Clock,
    ) -> Result<AcmeIssuer, AcmeError> {
        let budget = Arc::new(OrderBudget::new(
            store.clone(),
            &settings.directory,
            settings.max_orders.get(),
            settings.order_window,
            clock.clone(),
        ));
        let http = AcmeHttp::new(settings.ca_root.as_deref(), budget.clone(), clock.clone())?;
        Ok(AcmeIssuer {
            settings,
            store,
            challenges,
            http,
            account: OnceCell::new(),
            unstored: std::sync::Mutex::new(None),
            budget,
            metrics,
            clock,
        })
    }

    /// Maps an instant-acme error: problem documents keep the CA's type and detail, and a rate
    /// limit says which one it is, whose orders it holds back and until when.
    fn acme_error(&self, domain: &Domain, e: instant_acme::Error) -> IssueError {
        match e {
            instant_acme::Error::Api(problem) => match self.http.rate_limit(&problem) {
                Some((limit, until)) => IssueError::RateLimited {
                    domain: domain.clone(),
                    limit,
                    until,
                    problem_type: problem.r#type.clone(),
                    detail: words(&problem),
                },
                None => refused(domain, &problem),
            },
            other => failed(domain, AcmeError::Protocol(other)),
        }
    }

    fn account_key(&self) -> String {
        account_key(&self.settings.directory)
    }

    /// The account: loaded from the store, or created once and stored. Nodes creating one at the
    /// same moment each use the one stored first; an account whose credentials could not be
    /// stored is stored at the next try rather than created again (each creation counts against
    /// the CA's registrations per address, and an EAB key may be good for one).
    async fn account(&self, domain: &Domain) -> Result<&Account, IssueError> {
        let failed = |e: AcmeError| failed(domain, e);
        self.account
            .get_or_try_init(|| async {
                let key = self.account_key();
                let json = match self.store.kv(&key).await.map_err(|e| failed(e.into()))? {
                    Some(json) => json,
                    None => {
                        let created = match self.unstored_account() {
                            Some(json) => json,
                            None => self.create_account(domain).await?,
                        };
                        let kept = self
                            .store
                            .add_kv(&key, &created)
                            .await
                            .map_err(|e| failed(e.into()))?;
                        *lock(&self.unstored) = None;
                        if kept == created {
                            tracing::info!(directory = %self.settings.directory, "ACME account created");
                        } else {
                            tracing::info!(directory = %self.settings.directory, "another node stored an ACME account first; using that one");
                        }
                        kept
                    }
                };
                let credentials: AccountCredentials = serde_json::from_str(&json)
                    .map_err(|e| failed(AcmeError::StoredAccount(e)))?;
                Account::builder_with_http(Box::new(self.http.clone()))
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| self.acme_error(domain, e))
            })
            .await
    }

    /// The credentials kept from a creation the store did not take. A function of its own so
    /// that the lock is let go here, not held over the creation that may follow.
    fn unstored_account(&self) -> Option<String> {
        lock(&self.unstored).clone()
    }

    /// Creates an account with the CA; its credentials as JSON, kept in memory until stored.
    async fn create_account(&self, domain: &Domain) -> Result<String, IssueError> {
        let failed = |e: AcmeError| failed(domain, e);
        let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
        let eab = match (&self.settings.eab_kid, &self.settings.eab_hmac_key) {
            (Some(kid), Some(hmac)) => {
                let key = URL_SAFE_NO_PAD
                    .decode(hmac.trim_end_matches('='))
                    .map_err(|_| failed(AcmeError::EabKey))?;
                Some(ExternalAccountKey::new(kid.clone(), &key))
            }
            _ => None,
        };
        let (account, credentials) = Account::builder_with_http(Box::new(self.http.clone()))
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| self.acme_error(domain, e))?;
        let json = serde_json::to_string(&credentials)
            .map_err(|e| failed(AcmeError::SerialiseAccount(e)))?;
        tracing::info!(directory = %self.settings.directory, account = account.id(), "ACME account registered with the CA");
        *lock(&self.unstored) = Some(json.clone());
        Ok(json)
    }

    /// The order kept with `claim`, if the CA still has it and it can be carried on with (its
    /// challenges not yet answered, or validated but not finalized: a finalized order's key is
    /// its previous worker's).
    async fn resumed(
        &self,
        account: &Account,
        domain: &Domain,
        claim: &dyn OrderClaim,
    ) -> Option<Order> {
        let url = claim.resume()?;
        match account.order(url.to_owned()).await {
            Ok(mut order) => match order.state().status {
                OrderStatus::Pending | OrderStatus::Ready => {
                    tracing::info!(domain = %domain, order = url, "resuming the order kept with the lease");
                    return Some(order);
                }
                status => {
                    tracing::info!(domain = %domain, order = url, ?status, "the kept order cannot be resumed: placing a new one");
                }
            },
            // The CA answered that the order is not there for this account (no such order, not
            // this account's, a malformed URL): it is gone. A problem of the CA's own (a 5xx,
            // a rate limit), or an answer that does not parse, says nothing of the order.
            Err(e) if order_gone(&e) => {
                tracing::warn!(domain = %domain, order = url, error = %crate::errors::chain(&e), "the kept order cannot be read: placing a new one");
            }
            // The CA did not answer: the order may still be there for the next try.
            Err(e) => {
                tracing::warn!(domain = %domain, order = url, error = %crate::errors::chain(&e), "the kept order could not be read now: placing a new one (the kept one stays until another is kept)");
                return None;
            }
        }
        // Not read again at the next try, should the new order not be placed.
        claim.forget().await;
        None
    }

    /// A new order, taken from the budget, naming `replacing` in `replaces` (RFC 9773) when the
    /// CA supports it and has not seen that certificate replaced already.
    async fn new_order(
        &self,
        account: &Account,
        domain: &Domain,
        replacing: Option<&StoredCert>,
        claim: &dyn OrderClaim,
    ) -> Result<Order, IssueError> {
        // NOTE: a first certificate is waited for by handshakes, which cannot wait for the
        // budget's next order (one per `order_window / max_orders`): it fails at once and the
        // name backs off, on every node. A renewal has time, and queues for up to one
        // `order_window`; past that it is rescheduled for its turn, not counted as failed.
        let turn = match replacing {
            None => self.budget.try_acquire().await,
            Some(_) => match self.budget.try_acquire().await {
                Ok(OrderTurn::Wait(_)) => {
                    claim.queued(true);
                    let turn = self.budget.acquire_within(self.settings.order_window).await;
                    claim.queued(false);
                    turn
                }
                taken => taken,
            },
        };
        if let OrderTurn::Wait(next) = turn.map_err(|e| failed(domain, e))? {
            return Err(IssueError::OrderBudget {
                domain: domain.clone(),
                next,
            });
        }
        // Spent from here on, whether the CA takes the order or not.
        self.metrics.acme_budget_taken.inc();
        // The wait may have been long: the claim (the lease, and the name still registered) is
        // confirmed again before the order is placed.
        if replacing.is_some() {
            claim.confirm().await?;
        }
        let identifiers = [Identifier::Dns(domain.to_string())];
        let replaces = replacing.and_then(|c| certificate_id(c).ok());
        match &replaces {
            Some(id) => match account
                .new_order(&NewOrder::new(&identifiers).replaces(id.clone()))
                .await
            {
                Err(e) if limits::plain_order_after(&e) => {
                    tracing::info!(domain = %domain, error = %crate::errors::chain(&e), "the CA refused an order naming the certificate it replaces: ordering without");
                    account.new_order(&NewOrder::new(&identifiers)).await
                }
                other => other,
            },
            None => account.new_order(&NewOrder::new(&identifiers)).await,
        }
        .map_err(|e| self.acme_error(domain, e))
    }

    async fn order(
        &self,
        domain: &Domain,
        replacing: Option<&StoredCert>,
        claim: &dyn OrderClaim,
        challenge: &mut Option<ChallengeKind>,
        created: &mut bool,
        published: &mut Vec<(ChallengeKind, String)>,
    ) -> Result<StoredCert, IssueError> {
        let account = self.account(domain).await?;
        let mut order = match self.resumed(account, domain, claim).await {
            Some(order) => order,
            None => {
                let order = self.new_order(account, domain, replacing, claim).await?;
                *created = true;
                // Kept before any challenge is answered: a node taking over resumes this order
                // (an ARI `replaces` is sent once per certificate).
                claim.keep(order.url()).await?;
                order
            }
        };

        let expires_at = self.clock.now() + self.settings.order_timeout + CHALLENGE_SLACK;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| self.acme_error(domain, e))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                // An authorization that is not pending or valid makes its order invalid.
                other => {
                    claim.forget().await;
                    return Err(failed(domain, AcmeError::Authorization(other)));
                }
            }
            let Some(kind) = self.settings.challenges.iter().copied().find(|k| {
                authz
                    .challenges
                    .iter()
                    .any(|c| c.r#type == challenge_type(*k))
            }) else {
                let configured = self.settings.challenges.clone();
                return Err(failed(domain, AcmeError::NoChallenge(configured)));
            };
            *challenge = Some(kind);
            let Some(mut handle) = authz.challenge(challenge_type(kind)) else {
                continue;
            };
            let key_auth = handle.key_authorization();
            let (key, value) = match kind {
                ChallengeKind::Http01 => (handle.token.clone(), key_auth.as_str().to_owned()),
                ChallengeKind::TlsAlpn01 => (
                    domain.to_string(),
                    URL_SAFE_NO_PAD.encode(key_auth.digest()),
                ),
            };
            self.challenges
                .publish(kind, &key, &value, expires_at)
                .await
                .map_err(|e| failed(domain, e))?;
            published.push((kind, key));
            // A resumed order's challenge may have been answered by the node that placed it,
            // and may turn valid between reading it and answering it (a CA can keep it pending
            // while it validates): then the CA refuses the answer, and the order's state decides.
            if handle.status == ChallengeStatus::Pending
                && let Err(e) = handle.set_ready().await
            {
                if *created {
                    return Err(self.acme_error(domain, e));
                }
                tracing::debug!(%domain, error = %e, "resumed order: the challenge was not answered again");
            }
        }

        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(self.settings.order_timeout);
        match poll_settled(&mut order, self.settings.order_timeout)
            .await
            .map_err(|e| self.acme_error(domain, e))?
        {
            OrderStatus::Ready => {}
            // Finalized by the node that held the lease while this one was stalled past it:
            // under a lost claim that is the other node's certificate, not a failure here.
            OrderStatus::Processing | OrderStatus::Valid => {
                claim.confirm().await?;
                claim.forget().await;
                return Err(failed(domain, AcmeError::FinalizedElsewhere));
            }
            _ => {
                claim.forget().await;
                // The order's own problem, as any other answer of the CA's is read (a rate
                // limit is one); else the failed challenge's.
                return Err(match order.state().error.clone() {
                    Some(problem) => self.acme_error(domain, instant_acme::Error::Api(problem)),
                    None => invalid_order(domain, &mut order).await,
                });
            }
        }

        // The last step the CA takes for us: never under a lost claim.
        claim.confirm().await?;
        let csr_failed = |e| failed(domain, AcmeError::Csr(e));
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(csr_failed)?;
        let mut params = CertificateParams::new(vec![domain.to_string()]).map_err(csr_failed)?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(csr_failed)?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| self.acme_error(domain, e))?;
        // Finalized, the order is no other holder's to resume (the certificate's key is this
        // node's), whatever comes of it: forgotten now. (One whose finalization failed may
        // still be ready, for the next holder to finalize with its own key.)
        claim.forget().await;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| self.acme_error(domain, e))?;
        let (not_before, not_after) = validity(&chain_pem).map_err(|e| failed(domain, e))?;
        Ok(StoredCert {
            issuer: "acme".into(),
            chain_pem,
            key_pem: key.serialize_pem(),
            not_before,
            not_after,
        })
    }
}

#[async_trait::async_trait]
impl Issuer for AcmeIssuer {
    fn kind(&self) -> &'static str {
        "acme"
    }

    async fn issue(
        &self,
        domain: &Domain,
        replacing: Option<&StoredCert>,
        claim: &dyn OrderClaim,
    ) -> Result<StoredCert, IssueError> {
        let mut challenge = None;
        let mut created = false;
        let mut published = Vec::new();
        let result = tokio::time::timeout(
            // The budget may queue a renewal for up to `order_window`; the order itself gets
            // `order_timeout` after that.
            self.settings.order_timeout + self.settings.order_window,
            self.order(
                domain,
                replacing,
                claim,
                &mut challenge,
                &mut created,
                &mut published,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(failed(domain, AcmeError::Timeout)));
        self.challenges.withdraw_under(claim, published).await;
        // Labelled by the challenge answered ("none": the CA reused a valid authorization, or
        // the order failed before a challenge was chosen).
        let label = challenge.map_or("none", ChallengeKind::as_str);
        if created {
            self.metrics
                .acme_orders
                .with_label_values(&[label, "started"])
                .inc();
        }
        let event = if result.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        self.metrics
            .acme_orders
            .with_label_values(&[label, event])
            .inc();
        result
    }

    async fn renewal_window(
        &self,
        domain: &Domain,
        cert: &StoredCert,
    ) -> Result<Option<RenewalWindow>, IssueError> {
        let account = self.account(domain).await?;
        let id = certificate_id(cert).map_err(|e| failed(domain, e))?;
        match account.renewal_info(&id).await {
            Ok((info, check_after)) => Ok(Some(RenewalWindow {
                start: info.suggested_window.start.into(),
                end: info.suggested_window.end.into(),
                check_after,
            })),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(self.acme_error(domain, e)),
        }
    }
}

/// The store key of the account the edge uses with the CA at `directory`.
fn account_key(directory: &str) -> String {
    format!("acme.account {directory}")
}

/// The URL of the edge's account with the CA at `directory` (what a CAA `accounturi` names,
/// RFC 8657), once one was created: by any node, the first time one ordered.
pub async fn account_url(store: &dyn Store, directory: &str) -> Result<Option<String>, StoreError> {
    /// The part of the stored credentials that names the account.
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    let stored = store.kv(&account_key(directory)).await?;
    Ok(stored.and_then(|json| serde_json::from_str::<Id>(&json).ok().map(|a| a.id)))
}

fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

/// The ARI identifier of a stored certificate's leaf.
fn certificate_id(cert: &StoredCert) -> Result<CertificateIdentifier<'static>, AcmeError> {
    let leaf = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .next()
        .ok_or(AcmeError::StoredChainEmpty)?
        .map_err(AcmeError::StoredChainPem)?;
    CertificateIdentifier::try_from(&leaf)
        .map(|id| id.into_owned())
        .map_err(AcmeError::CertificateId)
}

/// `not_before` and `not_after` of the leaf.
fn validity(chain_pem: &str) -> Result<(SystemTime, SystemTime), AcmeError> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or(AcmeError::EmptyChain)?
        .map_err(AcmeError::ChainPem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(AcmeError::Certificate)?;
    let v = cert.validity();
    let time =
        |t: x509_parser::time::ASN1Time| from_unix_secs(u64::try_from(t.timestamp()).unwrap_or(0));
    Ok((time(v.not_before), time(v.not_after)))
}

/// An order for `domain` failed for a reason other than a refusal.
fn failed(domain: &Domain, source: impl Into<AcmeError>) -> IssueError {
    IssueError::Failed {
        domain: domain.clone(),
        source: source.into(),
    }
}

fn refused(domain: &Domain, problem: &Problem) -> IssueError {
    IssueError::Refused {
        domain: domain.clone(),
        problem_type: problem.r#type.clone(),
        detail: words(problem),
    }
}

/// The detail of `problem` and of its subproblems.
fn words(problem: &Problem) -> String {
    let mut detail = problem.detail.clone().unwrap_or_default();
    for sub in &problem.subproblems {
        if let Some(d) = &sub.detail {
            detail.push_str("; ");
            detail.push_str(d);
        }
    }
    detail
}

/// The reason an order became invalid: the failed challenge's problem, if the CA says.
async fn invalid_order(domain: &Domain, order: &mut Order) -> IssueError {
    if let Some(problem) = &order.state().error {
        return refused(domain, &problem.clone());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await
            && let Some(problem) = state.challenges.iter().find_map(|c| c.error.as_ref())
        {
            return refused(domain, &problem.clone());
        }
    }
    failed(domain, AcmeError::InvalidOrder)
}
