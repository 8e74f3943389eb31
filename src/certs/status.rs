//! A domain's certificate status for the admin API: state, validity, next renewal, backoff and
//! the last error.

use super::{Certs, lock};
use crate::clock::rfc3339;
use crate::store::{CertInfo, DomainRecord, IssueFailure, StoreError};

/// Status of a domain's certificate, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertStatus {
    /// `none`, `pending`, `valid` or `failed`.
    pub status: &'static str,
    /// Issuer of the current certificate.
    pub issuer: Option<String>,
    /// Validity start (RFC 3339).
    pub not_before: Option<String>,
    /// Validity end (RFC 3339).
    pub not_after: Option<String>,
    /// When the certificate is next renewed (or renewal information checked), RFC 3339.
    pub next_renewal: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// No new order before this time (RFC 3339), after a failure.
    pub retry_at: Option<String>,
    /// Why the last attempt failed. The API shows its words (with the CA's problem type and
    /// detail); its kind is for the code that explains it.
    #[serde(serialize_with = "words")]
    pub last_error: Option<IssueFailure>,
}

/// `last_error` as the API shows it: the words only.
fn words<S: serde::Serializer>(failure: &Option<IssueFailure>, s: S) -> Result<S::Ok, S::Error> {
    match failure {
        Some(f) => s.serialize_some(&f.detail),
        None => s.serialize_none(),
    }
}

impl Certs {
    /// Certificate status of `name` for the admin API.
    pub async fn status(&self, record: &DomainRecord) -> Result<CertStatus, StoreError> {
        let stored = self.store.certificate_info(&record.name).await?;
        Ok(self.status_of(record, stored.as_ref()))
    }

    /// Certificate status of a domain whose stored certificate (`stored`, none without one) was
    /// read already, as a listing reads them a page at a time.
    pub fn status_of(&self, record: &DomainRecord, stored: Option<&CertInfo>) -> CertStatus {
        let name = &record.name;
        let now = self.clock.now();
        let pending = lock(&self.inflight).contains_key(name);
        // A valid certificate stored is what handshakes get, a renewal in flight or not:
        // "pending" is only for a name waiting for its first (or a replacing) certificate.
        let status = match stored {
            Some(c) if c.not_after > now => "valid",
            _ if pending => "pending",
            _ if record.last_error.is_some() => "failed",
            _ => "none",
        };
        let next_renewal = lock(&self.schedule).by_name.get(name).copied();
        CertStatus {
            status,
            issuer: stored.map(|c| c.issuer.clone()),
            not_before: stored.map(|c| rfc3339(c.not_before)),
            not_after: stored.map(|c| rfc3339(c.not_after)),
            next_renewal: stored.and(next_renewal).map(rfc3339),
            failures: record.failures,
            retry_at: record.retry_at.filter(|t| *t > now).map(rfc3339),
            last_error: record.last_error.clone(),
        }
    }
}
