//! Certificate issuers behind the [`Issuer`] trait: [`LocalCa`] (a CA kept under the data dir,
//! the embedded default) and [`crate::acme::AcmeIssuer`] (an ACME directory, Let's Encrypt in
//! production).
//!
//! An issuer only issues. Who may get a certificate is decided by `policy`; caching, storing,
//! coalescing concurrent requests, backoff and renewal are `certs`.

mod local;

use std::time::{Duration, SystemTime};

pub use local::LocalCa;

use crate::Domain;
use crate::acme::{AcmeError, RateLimit};
use crate::clock::rfc3339;
use crate::domain::Zones;
use crate::errors::chain as error_chain;
use crate::store::{
    AcmeProblem, FailureKind, IssueFailure, RateLimitScope, StoreError, StoredCert,
};

/// Why a certificate could not be issued.
///
/// NOTE: the variants name each issuer's own error as their source (the built-in CA's
/// `rcgen::Error`, `acme`'s [`AcmeError`]), so what kind of failure it was is read from types.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The built-in CA failed to make or sign a certificate.
    #[error("local CA could not issue a certificate for {domain}")]
    Local {
        /// The name.
        domain: Domain,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The built-in CA refused a name outside the zones its root may vouch for: the edge's own
    /// configuration, not a CA's verdict.
    #[error(
        "the built-in CA vouches only for names under tls.local_ca_names ({names}), not {domain}: add its zone there (which makes a new root: stop the edge, delete ca.pem and ca-key.pem from the data dir and start it again; clients must then trust the new ca.pem), or use tls.issuer = \"acme\""
    )]
    OutsideLocalNames {
        /// The name.
        domain: Domain,
        /// The zones the built-in CA vouches for.
        names: Zones,
    },
    /// A first certificate found the account's order budget spent (or paused by the CA's
    /// `Retry-After`): no order was placed. A handshake cannot wait for the next one.
    #[error(
        "no new order for {domain} before {}: the order budget (acme.max_orders per acme.order_window, shared by every node) is spent or paused by the CA; a first certificate does not queue for it",
        rfc3339(*next)
    )]
    OrderBudget {
        /// The name.
        domain: Domain,
        /// When the budget allows the next new order.
        next: SystemTime,
    },
    /// The CA refused: an RFC 8555 problem document.
    #[error("the CA refused {domain}: {}{detail}", problem_type.as_deref().map(|t| format!("{t}: ")).unwrap_or_default())]
    Refused {
        /// The name.
        domain: Domain,
        /// The problem type (`urn:ietf:params:acme:error:...`), if the CA gave one.
        problem_type: Option<String>,
        /// The CA's explanation.
        detail: String,
    },
    /// The CA answered with a rate limit (a `rateLimited` problem, or an overload): `limit`,
    /// which holds back this name's orders or every name's ([`RateLimit::scope`]), until
    /// `until` when the CA said (`Retry-After`).
    #[error(
        "{}: {}{detail}",
        held_back_by(domain, *limit, *until),
        problem_type.as_deref().map(|t| format!("{t}: ")).unwrap_or_default()
    )]
    RateLimited {
        /// The name.
        domain: Domain,
        /// The limit, as the CA's words name it.
        limit: RateLimit,
        /// When the CA allows orders again, if it said.
        until: Option<SystemTime>,
        /// The problem type, if the CA gave one.
        problem_type: Option<String>,
        /// The CA's explanation.
        detail: String,
    },
    /// Talking to the CA failed (network, protocol, timeout).
    #[error("obtaining a certificate for {domain}")]
    Failed {
        /// The name.
        domain: Domain,
        /// What went wrong.
        #[source]
        source: AcmeError,
    },
    /// The claim on the name's certificate work was lost (its lease expired or another node
    /// took it over): the work stopped before the CA's last step, and nothing was written.
    /// Another node's work, or a name removed meanwhile: not a failure of the name.
    #[error(
        "the claim on {domain}'s certificate work no longer holds (lost to another node, or the \
         domain removed)"
    )]
    ClaimLost {
        /// The name.
        domain: Domain,
    },
    /// The order could not be kept with the claim in the store.
    #[error("keeping the order for {domain} in the store")]
    Claim {
        /// The name.
        domain: Domain,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

impl IssueError {
    /// What kind of failure this is, as recorded with the domain.
    pub fn kind(&self) -> FailureKind {
        match self {
            // NOTE: a refusal by the built-in CA is the edge's own (a setting), never a CA's
            // problem type: passing DNS checks cannot fix it, so it is not retried for them.
            // The edge's own pacing, not the CA's verdict.
            IssueError::Local { .. }
            | IssueError::OutsideLocalNames { .. }
            | IssueError::OrderBudget { .. } => FailureKind::Local,
            IssueError::Refused { problem_type, .. } => problem_type
                .as_deref()
                .and_then(AcmeProblem::from_type)
                .map_or(FailureKind::Refused, FailureKind::Problem),
            // A limit of the account paused all issuance only if the CA said until when.
            IssueError::RateLimited { limit, until, .. } => match (limit.scope(), until) {
                (RateLimitScope::Account, None) => FailureKind::Problem(AcmeProblem::RateLimited),
                (scope, _) => FailureKind::RateLimited(scope),
            },
            IssueError::Failed { .. } | IssueError::ClaimLost { .. } | IssueError::Claim { .. } => {
                FailureKind::Order
            }
        }
    }

    /// The failure as recorded with the domain: its kind, and the error with its causes in
    /// words.
    pub fn failure(&self) -> IssueFailure {
        IssueFailure {
            kind: self.kind(),
            detail: error_chain(self),
        }
    }
}

/// Whose orders the CA's rate limit `limit` holds back, and until when, in words.
fn held_back_by(domain: &Domain, limit: RateLimit, until: Option<SystemTime>) -> String {
    let (scope, limit) = (limit.scope(), limit.name());
    match (scope, until) {
        (RateLimitScope::Name, until) => {
            let until = until
                .map(|t| format!(" until {}", rfc3339(t)))
                .unwrap_or_default();
            format!(
                "the CA's rate limit \"{limit}\" pauses orders for {domain}{until}; other names keep issuing"
            )
        }
        (RateLimitScope::Account, Some(until)) => format!(
            "the CA's rate limit \"{limit}\" pauses all issuance until {}, for every name on every node (met ordering {domain})",
            rfc3339(until)
        ),
        // No time to pause until (no `Retry-After`): nothing was paused, the name backs off.
        (RateLimitScope::Account, None) => format!(
            "the CA's rate limit \"{limit}\" holds back the whole account, without a time to retry (met ordering {domain})"
        ),
    }
}

/// A renewal window suggested by the CA (ACME Renewal Information, RFC 9773).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Window start.
    pub start: SystemTime,
    /// Window end.
    pub end: SystemTime,
    /// When to ask again (the response's `Retry-After`).
    pub check_after: Duration,
}

/// The claim a node holds on a name's certificate work while it issues (its lease, in
/// `certs`): where the order being worked on is kept, so that a node taking over resumes it
/// instead of placing another, and whether the claim still holds before the CA's last step.
#[async_trait::async_trait]
pub trait OrderClaim: Send + Sync {
    /// The URL of an order placed for the name under an earlier claim and not finished.
    fn resume(&self) -> Option<&str>;
    /// Keeps `url` as the name's order with the claim; done before any challenge is answered.
    /// [`IssueError::ClaimLost`] when the claim no longer holds.
    async fn keep(&self, url: &str) -> Result<(), IssueError>;
    /// Whether the claim still holds; asked before finalizing an order.
    /// [`IssueError::ClaimLost`] when it does not.
    async fn confirm(&self) -> Result<(), IssueError>;
    /// Forgets the order kept with the claim: the CA made it invalid, it cannot be read, or it
    /// is being (or was) finalized, so the next holder places a new one instead of reading this
    /// one first, and it is not shown in flight. A failure to forget is logged, not returned:
    /// the next holder finds the order dead all the same.
    async fn forget(&self);
    /// Says whether the work waits for the account's order budget (a renewal queued for its
    /// turn, for up to `acme.order_window`): meanwhile a handshake for a name with nothing
    /// valid stored fails at once instead of waiting for it.
    fn queued(&self, _waiting: bool) {}
}

/// Work nobody else can take over (tests): no order to resume, nothing kept, always held.
#[cfg(test)]
pub(crate) struct Unclaimed;

#[cfg(test)]
#[async_trait::async_trait]
impl OrderClaim for Unclaimed {
    fn resume(&self) -> Option<&str> {
        None
    }
    async fn keep(&self, _url: &str) -> Result<(), IssueError> {
        Ok(())
    }
    async fn confirm(&self) -> Result<(), IssueError> {
        Ok(())
    }
    async fn forget(&self) {}
}

/// Something that turns a domain name into a certificate chain and key.
#[async_trait::async_trait]
pub trait Issuer: Send + Sync + 'static {
    /// Short name for metrics and status (`local`, `acme`).
    fn kind(&self) -> &'static str;

    /// Why this issuer will never vouch for `domain`, when it knows without asking anyone (the
    /// built-in CA's zones); `None` when it may.
    fn refuses(&self, _domain: &Domain) -> Option<IssueError> {
        None
    }

    /// Issues a certificate for `domain` under `claim`; `replacing` is the certificate it
    /// renews, if any. An issuer whose work is one local step may ignore the claim (`certs`
    /// checks it again before writing).
    async fn issue(
        &self,
        domain: &Domain,
        replacing: Option<&StoredCert>,
        claim: &dyn OrderClaim,
    ) -> Result<StoredCert, IssueError>;

    /// The CA's suggested renewal window for `cert`, the certificate of `domain`, if the CA
    /// offers one.
    async fn renewal_window(
        &self,
        _domain: &Domain,
        _cert: &StoredCert,
    ) -> Result<Option<RenewalWindow>, IssueError> {
        Ok(None)
    }
}
