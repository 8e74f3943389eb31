//! Stored certificates made ready for the handshake: a rustls `CertifiedKey` built once from the
//! stored PEM chain and key, cached with the time it stops being valid.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Certs;
use crate::store::StoredCert;

/// A cached certificate and when it stops being valid.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) key: Arc<CertifiedKey>,
    pub(super) not_after: u64,
}

impl Certs {
    pub(super) fn entry(&self, cert: &StoredCert) -> Result<Entry, String> {
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
