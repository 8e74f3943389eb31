//! Stored certificates made ready for the handshake: a rustls `CertifiedKey` built once from the
//! stored PEM chain and key, cached with the time it stops being valid.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Certs;
use crate::store::StoredCert;

/// Why a stored certificate cannot be used for handshakes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM chain does not parse.
    #[error("stored certificate chain does not parse")]
    Chain(#[source] rustls_pki_types::pem::Error),
    /// The PEM chain holds no certificate.
    #[error("stored certificate chain is empty")]
    EmptyChain,
    /// The PEM private key does not parse.
    // NOTE: no source: the parser's error could quote key material.
    #[error("stored private key does not parse")]
    Key,
    /// The crypto provider refuses the key.
    #[error("stored private key is not usable")]
    Unusable(#[source] rustls::Error),
}

/// A cached certificate and when it stops being valid.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) key: Arc<CertifiedKey>,
    /// When the certificate was issued: a later issue replaces it, an earlier one never does.
    pub(super) not_before: SystemTime,
    pub(super) not_after: SystemTime,
}

impl Entry {
    /// True when `cert` is the certificate this entry was built from: the same chain, so the
    /// same key (the leaf carries its public half), and building it again would change nothing.
    /// A certificate this node wrote comes back to it through change propagation; the check
    /// decodes the chain's base64 and skips the private key's load, which costs far more.
    pub(super) fn is_of(&self, cert: &StoredCert) -> bool {
        self.not_after == cert.not_after
            && CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
                .map(|der| der.ok())
                .eq(self.key.cert.iter().map(|c| Some(c.clone())))
    }
}

impl Certs {
    /// The cache entry for `cert`.
    pub(super) fn entry(&self, cert: &StoredCert) -> Result<Entry, KeyError> {
        let key = certified_key(&self.provider, cert)?;
        Ok(Entry {
            key: Arc::new(key),
            not_before: cert.not_before,
            not_after: cert.not_after,
        })
    }
}

/// Builds a rustls `CertifiedKey` from a stored PEM chain and key.
pub fn certified_key(
    provider: &CryptoProvider,
    cert: &StoredCert,
) -> Result<CertifiedKey, KeyError> {
    let chain = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(KeyError::Chain)?;
    if chain.is_empty() {
        return Err(KeyError::EmptyChain);
    }
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|_| KeyError::Key)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(KeyError::Unusable)?;
    // A key that is not the leaf's (a row written wrong, a restored backup mixing two) would
    // fail every handshake at the client; refused here, it is reported and backed off.
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(e) => Err(KeyError::Unusable(e)),
    }
}
