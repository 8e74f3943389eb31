//! The configured certificate issuer (the built-in CA or ACME), and the issuance series alerts
//! watch, present from the start.

use std::sync::Arc;

use anyhow::Context as _;

use super::probe;
use crate::acme::AcmeIssuer;
use crate::acme::challenges::Challenges;
use crate::clock::Clock;
use crate::config::{Config, IssuerKind};
use crate::issuer::{Issuer, LocalCa};
use crate::metrics::Metrics;
use crate::store::Store;

/// The issuer `tls.issuer` names; with ACME, the directory is probed in the background.
pub(super) fn build(
    config: &Config,
    store: &Arc<dyn Store>,
    challenges: &Arc<Challenges>,
    metrics: &Metrics,
    clock: &Clock,
) -> anyhow::Result<Arc<dyn Issuer>> {
    let issuer: Arc<dyn Issuer> = match config.tls.issuer {
        IssuerKind::Local => Arc::new(
            LocalCa::load_or_create(
                &config.data_dir,
                config.tls.local_ca_names.clone(),
                clock.clone(),
            )
            .context("loading the local CA")?,
        ),
        IssuerKind::Acme => {
            let issuer = AcmeIssuer::new(
                config.acme.clone(),
                store.clone(),
                challenges.clone(),
                metrics.clone(),
                clock.clone(),
            )
            .context("setting up the ACME issuer")?;
            tokio::spawn(probe::acme_directory(config.acme.clone()));
            Arc::new(issuer)
        }
    };
    // The series alerts watch exist from the start, at 0: an absent series never makes
    // `increase()` fire, and the first failure would go unnoticed.
    for vec in [&metrics.certs_issued, &metrics.certs_failed] {
        vec.with_label_values(&[issuer.kind()]);
    }
    for outcome in ["ok", "failed"] {
        metrics.renewals.with_label_values(&[outcome]);
    }
    Ok(issuer)
}
