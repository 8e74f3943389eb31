//! What the certificate cache does with the mirror: a handshake whose certificate is not in
//! memory reads the store as always, and only when the store fails (an error, never "none")
//! the mirror; every certificate change propagation applies is copied to the mirror too, cached
//! or not, and a forgotten name's copy is deleted.
//!
//! Names the policy does not permit never get this far (refused from memory in
//! [`Certs::resolve`]): unknown SNI touches neither the database nor the mirror.

use std::sync::atomic::Ordering;

use super::super::key::Entry;
use super::super::{CertError, Certs};
use crate::Domain;
use crate::errors::chain as error_chain;
use crate::store::{StoreError, StoredCert};

impl Certs {
    /// The certificate of `name` from the mirror, after the store failed with `cause`; the
    /// store's error when there is no mirror, no unexpired copy, or a copy that does not open.
    pub(in crate::certs) async fn mirrored(
        &self,
        name: &Domain,
        cause: StoreError,
    ) -> Result<Option<Entry>, CertError> {
        let Some(mirror) = &self.mirror else {
            return Err(CertError::unavailable(name, cause));
        };
        let copy = match mirror.read(name).await {
            Ok(Some(cert)) if cert.not_after > self.clock.now() => cert,
            Ok(_) => return Err(CertError::unavailable(name, cause)),
            Err(e) => {
                tracing::warn!(domain = %name, error = %error_chain(&e), "the certificate mirror's copy is not usable");
                return Err(CertError::unavailable(name, cause));
            }
        };
        let entry = match self.entry(&copy) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(domain = %name, error = %error_chain(&e), "the certificate mirror's copy is not usable");
                return Err(CertError::unavailable(name, cause));
            }
        };
        mirror.metrics.served.inc();
        if !mirror.in_use.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error_chain(&cause), "the store fails: certificates not in memory are served from the local mirror");
        }
        Ok(Some(entry))
    }

    /// The store answered a certificate read: the mirror's outage, if any, is over.
    pub(in crate::certs) fn store_answered(&self) {
        if let Some(mirror) = &self.mirror
            && mirror.in_use.swap(false, Ordering::Relaxed)
        {
            tracing::info!(
                "the store answers again: certificates are read from it, not the mirror"
            );
        }
    }

    /// Copies what the store now holds for `name` (none: deletes the copy).
    pub(in crate::certs) async fn mirror_stored(&self, name: &Domain, stored: Option<&StoredCert>) {
        let Some(mirror) = &self.mirror else {
            return;
        };
        let result = match stored {
            Some(cert) => mirror.put(name, cert).await.map(drop),
            None => mirror.remove(name).await.map(drop),
        };
        if let Err(e) = result {
            tracing::warn!(domain = %name, error = %error_chain(&e), "keeping the certificate mirror current (the next start copies it again)");
        }
    }

    /// Deletes the copy of a name this node forgot, in the background (callers are not async).
    pub(in crate::certs) fn unmirror(&self, name: &Domain) {
        let Some(mirror) = self.mirror.clone() else {
            return;
        };
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = mirror.remove(&name).await {
                tracing::warn!(domain = %name, error = %error_chain(&e), "deleting a forgotten certificate from the mirror (the next start sweeps it)");
            }
        });
    }
}
