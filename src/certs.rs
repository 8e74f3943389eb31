//! Certificates for the handshake: a bounded in-memory cache of `Arc<CertifiedKey>` in front of
//! the store, in front of the issuer.
//!
//! A miss for a registered name loads the stored certificate or, failing that, asks the issuer;
//! concurrent misses for one name share a single load or issuance. Names that are not registered
//! are refused before any of that. This module does not speak HTTP and does not decide policy.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashSet;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Domain;
use crate::issuer::Issuer;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::store::{Store, StoreError, StoredCert};

/// Why no certificate is available for a name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The name is not registered: refused without I/O.
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
    /// The certificate did not arrive within `tls.on_demand_timeout`.
    #[error("no certificate for {0} within the on-demand timeout")]
    Timeout(Domain),
}

/// A cached certificate and when it stops being valid.
#[derive(Debug, Clone)]
struct Entry {
    key: Arc<CertifiedKey>,
    not_after: u64,
}

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
    /// Last issuance error, in words.
    pub last_error: Option<String>,
}

/// The certificate source used by the TLS acceptor.
pub struct Certs {
    cache: moka::future::Cache<Domain, Entry>,
    pending: DashSet<Domain>,
    store: Arc<dyn Store>,
    issuer: Arc<dyn Issuer>,
    policy: Arc<Policy>,
    provider: Arc<CryptoProvider>,
    metrics: Metrics,
    on_demand_timeout: Duration,
}

impl Certs {
    /// A certificate source holding at most `capacity` certificates in memory.
    pub fn new(
        capacity: u64,
        store: Arc<dyn Store>,
        issuer: Arc<dyn Issuer>,
        policy: Arc<Policy>,
        provider: Arc<CryptoProvider>,
        metrics: Metrics,
        on_demand_timeout: Duration,
    ) -> Certs {
        Certs {
            cache: moka::future::Cache::new(capacity),
            pending: DashSet::new(),
            store,
            issuer,
            policy,
            provider,
            metrics,
            on_demand_timeout,
        }
    }

    /// The certificate for `name`, loading or issuing it if needed (waiting at most
    /// `tls.on_demand_timeout`). Unregistered names are refused without I/O.
    pub async fn resolve(&self, name: &Domain) -> Result<Arc<CertifiedKey>, CertError> {
        if !self.policy.is_registered(name.as_str()) {
            return Err(CertError::NotServed(name.clone()));
        }
        let now = unix_now();
        if let Some(entry) = self.cache.get(name).await {
            if entry.not_after > now {
                return Ok(entry.key);
            }
            self.cache.invalidate(name).await;
        }
        let load = self
            .cache
            .try_get_with(name.clone(), self.load_or_issue(name));
        match tokio::time::timeout(self.on_demand_timeout, load).await {
            Ok(Ok(entry)) => Ok(entry.key),
            Ok(Err(e)) => Err((*e).clone()),
            Err(_) => Err(CertError::Timeout(name.clone())),
        }
    }

    /// True if `name` has an unexpired certificate in memory or in the store.
    pub async fn has_valid(&self, name: &Domain) -> bool {
        let now = unix_now();
        if let Some(entry) = self.cache.get(name).await {
            return entry.not_after > now;
        }
        matches!(self.store.certificate(name).await, Ok(Some(c)) if c.not_after > now)
    }

    /// Drops `name` from memory (after it was unregistered).
    pub async fn forget(&self, name: &Domain) {
        self.cache.invalidate(name).await;
    }

    /// Certificate status of `name` for the admin API.
    pub async fn status(
        &self,
        name: &Domain,
        last_error: Option<String>,
    ) -> Result<CertStatus, StoreError> {
        let stored = self.store.certificate(name).await?;
        let now = unix_now();
        let status = match &stored {
            _ if self.pending.contains(name) => "pending",
            Some(c) if c.not_after > now => "valid",
            _ if last_error.is_some() => "failed",
            _ => "none",
        };
        Ok(CertStatus {
            status,
            issuer: stored.as_ref().map(|c| c.issuer.clone()),
            not_before: stored.as_ref().map(|c| rfc3339(c.not_before)),
            not_after: stored.as_ref().map(|c| rfc3339(c.not_after)),
            last_error,
        })
    }

    /// Refreshes the certificate count and soonest-expiry gauges from the store.
    pub async fn refresh_gauges(&self) -> Result<(), StoreError> {
        let summary = self.store.cert_summary().await?;
        self.metrics.certs_held.set(summary.count as i64);
        self.metrics
            .certs_soonest_expiry
            .set(summary.soonest_expiry.unwrap_or(0) as f64);
        Ok(())
    }

    async fn load_or_issue(&self, name: &Domain) -> Result<Entry, CertError> {
        let unavailable = |message: String| CertError::Unavailable {
            domain: name.clone(),
            message,
        };
        let stored = self
            .store
            .certificate(name)
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if let Some(cert) = stored.filter(|c| c.not_after > unix_now()) {
            return self.entry(&cert).map_err(unavailable);
        }
        self.pending.insert(name.clone());
        let result = self.issue(name).await;
        self.pending.remove(name);
        if let Err(e) = &result {
            tracing::warn!(domain = %name, error = %e, "certificate issuance failed");
        }
        let last_error = result.as_ref().err().map(ToString::to_string);
        if let Err(e) = self.store.set_last_error(name, last_error.as_deref()).await {
            tracing::warn!(domain = %name, error = %error_chain(&e), "recording certificate status");
        }
        result.map_err(|e| unavailable(e.to_string()))
    }

    async fn issue(&self, name: &Domain) -> Result<Entry, String> {
        let kind = self.issuer.kind();
        let started = Instant::now();
        let cert = match self.issuer.issue(name).await {
            Ok(cert) => cert,
            Err(e) => {
                self.metrics.certs_failed.with_label_values(&[kind]).inc();
                return Err(error_chain(&e));
            }
        };
        let entry = self.entry(&cert)?;
        self.store
            .put_certificate(name, &cert)
            .await
            .map_err(|e| error_chain(&e))?;
        self.metrics.certs_issued.with_label_values(&[kind]).inc();
        self.metrics
            .issuance_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = self.refresh_gauges().await {
            tracing::warn!(error = %error_chain(&e), "refreshing certificate gauges");
        }
        tracing::info!(domain = %name, issuer = kind, not_after = %rfc3339(cert.not_after), "certificate issued");
        Ok(entry)
    }

    fn entry(&self, cert: &StoredCert) -> Result<Entry, String> {
        let key = certified_key(&self.provider, cert)?;
        Ok(Entry {
            key: Arc::new(key),
            not_after: cert.not_after,
        })
    }
}

/// Builds a rustls `CertifiedKey` from a stored PEM chain and key.
pub fn certified_key(provider: &CryptoProvider, cert: &StoredCert) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("stored certificate chain does not parse: {e}"))?;
    if chain.is_empty() {
        return Err("stored certificate chain is empty".into());
    }
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        // NOTE: the error is not formatted with the key material, only its kind.
        .map_err(|_| "stored private key does not parse".to_string())?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("stored private key is not usable: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// An error and its sources, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issuer::LocalCa;
    use crate::store::SqliteStore;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        ca: LocalCa,
        calls: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Issuer for Counting {
        fn kind(&self) -> &'static str {
            "local"
        }
        async fn issue(&self, d: &Domain) -> Result<StoredCert, crate::issuer::IssueError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.ca.issue(d).await
        }
    }

    fn setup(dir: &std::path::Path) -> (Arc<Counting>, Arc<dyn Store>, Certs) {
        let issuer = Arc::new(Counting {
            ca: LocalCa::load_or_create(dir).unwrap(),
            calls: AtomicUsize::new(0),
        });
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let policy = Arc::new(Policy::new([Domain::parse("a.example.com").unwrap()]));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = Certs::new(
            100,
            store.clone(),
            issuer.clone(),
            policy,
            provider,
            Metrics::unregistered(),
            Duration::from_secs(5),
        );
        (issuer, store, certs)
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_issuance() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, store, certs) = setup(dir.path());
        let certs = Arc::new(certs);
        let name = Domain::parse("a.example.com").unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let certs = certs.clone();
                let name = name.clone();
                tokio::spawn(async move { certs.resolve(&name).await.map(|_| ()) })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
        assert!(store.certificate(&name).await.unwrap().is_some());
        assert_eq!(certs.status(&name, None).await.unwrap().status, "valid");
    }

    #[tokio::test]
    async fn unregistered_names_are_refused_without_issuing() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, _store, certs) = setup(dir.path());
        let other = Domain::parse("b.example.com").unwrap();
        assert!(matches!(
            certs.resolve(&other).await,
            Err(CertError::NotServed(_))
        ));
        assert_eq!(issuer.calls.load(Ordering::SeqCst), 0);
    }
}
