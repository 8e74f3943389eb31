//! Why no certificate is available for a name: what the TLS acceptor gets instead of one.

use crate::Domain;
use crate::clock::{from_unix_secs, rfc3339};

/// Why no certificate is available for a name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The name is not permitted: refused without I/O.
    #[error("{0} is not a registered domain")]
    NotServed(Domain),
    /// Issuance or loading failed; the message is recorded as the domain's last error.
    #[error("no certificate for {domain}: {message}")]
    Unavailable {
        /// The name.
        domain: Domain,
        /// What went wrong, in words.
        message: String,
    },
    /// A recent attempt failed; no new order before `retry_at`.
    #[error("no certificate for {domain}: backing off until {} after: {last_error}", rfc3339(from_unix_secs(*retry_at)))]
    BackingOff {
        /// The name.
        domain: Domain,
        /// Unix seconds.
        retry_at: u64,
        /// The failure that caused it.
        last_error: String,
    },
    /// The certificate did not arrive within `tls.on_demand_timeout` (the order goes on).
    #[error("no certificate for {0} within the on-demand timeout; the order goes on")]
    Timeout(Domain),
}
