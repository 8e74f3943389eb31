//! Certificate issuers behind the [`Issuer`] trait: [`LocalCa`] (a CA kept under the data dir,
//! the embedded default) and, with `tls.issuer = "acme"`, an ACME directory.
//!
//! An issuer only issues. Who may get a certificate is decided by `policy`, and caching, storing
//! and coalescing concurrent requests is `certs`.

mod local;

pub use local::LocalCa;

use crate::Domain;
use crate::store::StoredCert;

/// Why a certificate could not be issued.
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
}

/// Something that turns a domain name into a certificate chain and key.
#[async_trait::async_trait]
pub trait Issuer: Send + Sync + 'static {
    /// Short name for metrics and status (`local`, `acme`).
    fn kind(&self) -> &'static str;
    /// Issues a certificate for `domain`.
    async fn issue(&self, domain: &Domain) -> Result<StoredCert, IssueError>;
}
