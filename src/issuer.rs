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
use crate::acme::AcmeError;
use crate::domain::Zones;
use crate::errors::chain as error_chain;
use crate::store::{AcmeProblem, FailureKind, IssueFailure, StoredCert};

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
        "the built-in CA vouches only for names under tls.local_ca_names ({names}), not {domain}: add its zone there, or use tls.issuer = \"acme\""
    )]
    OutsideLocalNames {
        /// The name.
        domain: Domain,
        /// The zones the built-in CA vouches for.
        names: Zones,
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
    /// Talking to the CA failed (network, protocol, timeout).
    #[error("obtaining a certificate for {domain}")]
    Failed {
        /// The name.
        domain: Domain,
        /// What went wrong.
        #[source]
        source: AcmeError,
    },
}

impl IssueError {
    /// What kind of failure this is, as recorded with the domain.
    pub fn kind(&self) -> FailureKind {
        match self {
            // NOTE: a refusal by the built-in CA is the edge's own (a setting), never a CA's
            // problem type: passing DNS checks cannot fix it, so it is not retried for them.
            IssueError::Local { .. } | IssueError::OutsideLocalNames { .. } => FailureKind::Local,
            IssueError::Refused { problem_type, .. } => problem_type
                .as_deref()
                .and_then(AcmeProblem::from_type)
                .map_or(FailureKind::Refused, FailureKind::Problem),
            IssueError::Failed { .. } => FailureKind::Order,
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

/// Something that turns a domain name into a certificate chain and key.
#[async_trait::async_trait]
pub trait Issuer: Send + Sync + 'static {
    /// Short name for metrics and status (`local`, `acme`).
    fn kind(&self) -> &'static str;

    /// Issues a certificate for `domain`; `replacing` is the certificate it renews, if any.
    async fn issue(
        &self,
        domain: &Domain,
        replacing: Option<&StoredCert>,
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
