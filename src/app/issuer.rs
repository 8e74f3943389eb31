//! The configured certificate issuer (the built-in CA or ACME), and the issuance series alerts
//! watch, present from the start.

use std::sync::Arc;

use anyhow::Context as _;

use super::probe;
use crate::acme::AcmeIssuer;
use crate::acme::challenges::Challenges;
use crate::clock::Clock;
use crate::config::{Config, IssuerKind, StoreKind};
use crate::issuer::{Issuer, LocalCa};
use crate::metrics::Metrics;
use crate::store::Store;

/// Where a cluster keeps its built-in CA's root and key ([`shared_local_ca`]).
const SHARED_ROOT: &str = "local-ca";

/// The issuer `tls.issuer` names; with ACME, the directory is probed in the background.
pub(super) async fn build(
    config: &Config,
    store: &Arc<dyn Store>,
    challenges: &Arc<Challenges>,
    metrics: &Metrics,
    clock: &Clock,
) -> anyhow::Result<Arc<dyn Issuer>> {
    let issuer: Arc<dyn Issuer> = match config.tls.issuer {
        IssuerKind::Local => {
            shared_local_ca(config, store.as_ref(), clock)
                .await
                .context("sharing the local CA through the store")?;
            Arc::new(
                LocalCa::load_or_create(
                    &config.data_dir,
                    config.tls.local_ca_names.clone(),
                    clock.clone(),
                )
                .context("loading the local CA")?,
            )
        }
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

/// On a PostgreSQL store every node serves under one built-in CA root, kept in the store
/// (sealed, as every secret there): the first node to start stores its data dir's root (made
/// if it has none), and each node writes the stored one over its own `ca.pem` and
/// `ca-key.pem`. Else each node's certificates would verify only against its own `ca.pem`, and
/// each would renew the others' as signed by a replaced root, for ever. A SQLite store is one
/// node's: its data dir's root is the one.
async fn shared_local_ca(config: &Config, store: &dyn Store, clock: &Clock) -> anyhow::Result<()> {
    if config.store.kind() == StoreKind::Sqlite {
        return Ok(());
    }
    let dir = &config.data_dir;
    let stored = match store.kv(SHARED_ROOT).await? {
        Some(stored) => stored,
        None => {
            // Made here if the data dir has none, then offered; another node's may come first.
            LocalCa::load_or_create(dir, config.tls.local_ca_names.clone(), clock.clone())?;
            let (root, key) = LocalCa::files(dir)?;
            let own = serde_json::json!({ "root": root, "key": key }).to_string();
            store.add_kv(SHARED_ROOT, &own).await?
        }
    };
    let pair: serde_json::Value =
        serde_json::from_str(&stored).context("the stored local CA does not parse")?;
    let (Some(root), Some(key)) = (pair["root"].as_str(), pair["key"].as_str()) else {
        anyhow::bail!("the stored local CA has no root or key");
    };
    let had_own = dir.join(LocalCa::KEY_FILE).exists();
    if LocalCa::replace_files(dir, root, key)? && had_own {
        tracing::warn!(
            root = %dir.join(LocalCa::ROOT_FILE).display(),
            "this node's local CA root replaced with the cluster's (stored by the first node to start): clients trust that one"
        );
    }
    Ok(())
}
