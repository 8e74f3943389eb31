//! Why no certificate is available for a name: what the TLS acceptor gets instead of one.

use std::sync::Arc;

use std::time::SystemTime;

use super::Hold;
use super::key::KeyError;
use crate::Domain;
use crate::clock::rfc3339;
use crate::store::{IssueFailure, StoreError};

/// Why no certificate is available for a name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The name is not permitted: refused without I/O.
    #[error("{0} is not a registered domain")]
    NotServed(Domain),
    /// A check holds back the first order; the reason is recorded as the domain's last error.
    #[error("no certificate for {domain}: {}", hold.message)]
    HeldBack {
        /// The name.
        domain: Domain,
        /// The failing check and what to fix.
        hold: Hold,
    },
    /// The certificate could not be loaded, stored or used.
    #[error("no certificate for {domain}")]
    Unavailable {
        /// The name.
        domain: Domain,
        /// What went wrong (shared by every handshake waiting on the same flight).
        #[source]
        source: Arc<LoadError>,
    },
    /// A recent attempt failed; no new order before `retry_at`.
    #[error("no certificate for {domain}: backing off until {} after: {last_error}", rfc3339(*retry_at))]
    BackingOff {
        /// The name.
        domain: Domain,
        /// The earliest time of the next order.
        retry_at: SystemTime,
        /// The failure that caused it.
        last_error: IssueFailure,
    },
    /// The certificate did not arrive within `tls.on_demand_timeout` (the order goes on).
    #[error("no certificate for {0} within the on-demand timeout; the order goes on")]
    Timeout(Domain),
}

/// Why a certificate could not be loaded, stored or used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The certificate does not make a usable key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A renewal came due for a name with no stored certificate.
    #[error("no certificate to renew")]
    NothingToRenew,
    /// The certificate expired and no renewal has replaced it yet.
    #[error("the certificate expired and no renewal has replaced it yet")]
    Expired,
    /// Nothing valid is stored, and the renewal waits for the account's order budget.
    #[error(
        "no valid certificate is stored, and its renewal waits for the account's order budget \
         (acme.max_orders per acme.order_window)"
    )]
    WaitsForBudget,
    /// The flight that loaded or ordered it stopped without an answer (its task unwound).
    #[error("loading or ordering the certificate stopped without an answer")]
    Abandoned,
}

impl CertError {
    /// [`CertError::Unavailable`] for `domain`.
    pub(super) fn unavailable(domain: &Domain, source: impl Into<LoadError>) -> CertError {
        CertError::Unavailable {
            domain: domain.clone(),
            source: Arc::new(source.into()),
        }
    }
}
