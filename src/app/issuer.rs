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
/// if it has none), and a node whose data dir has none writes the stored one there. Else each
/// node's certificates would verify only against its own `ca.pem`, and each would renew the
/// others' as signed by a replaced root, for ever. A node with a root of its own that is not the
/// cluster's refuses to start, its files untouched (clients may trust that one): which root to
/// keep is the operator's to say. A SQLite store is one node's: its data dir's root is the one.
async fn shared_local_ca(config: &Config, store: &dyn Store, clock: &Clock) -> anyhow::Result<()> {
    if config.store.kind() == StoreKind::Sqlite {
        return Ok(());
    }
    let dir = &config.data_dir;
    // Before a root is made here: one made now and beaten to the store by another node's is
    // nobody's yet, and gives way.
    let had_own = dir.join(LocalCa::KEY_FILE).exists();
    let stored = match store.kv(SHARED_ROOT).await? {
        Some(stored) => stored,
        None => {
            let own =
                LocalCa::load_or_create(dir, config.tls.local_ca_names.clone(), clock.clone())?;
            if own.vouches_for_any_name() {
                anyhow::bail!(
                    "this node's local CA root {} has no name constraints (made by an older \
                     version): it is not shared with the cluster, since clients trusting it \
                     would take its certificates for any name; make a new one by deleting \
                     ca.pem and ca-key.pem from the data dir (clients must then trust the new \
                     ca.pem)",
                    dir.join(LocalCa::ROOT_FILE).display()
                );
            }
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
    if had_own
        && LocalCa::files(dir)
            .ok()
            .is_none_or(|(r, k)| r != root || k != key)
    {
        anyhow::bail!(
            "this node's local CA root {} is not the cluster's (the one the first node to start \
             with tls.issuer = \"local\" stored): to serve under the cluster's, delete this \
             node's ca.pem and ca-key.pem (clients must trust the cluster's root, any other \
             node's ca.pem); to make this node's the cluster's, stop every node, delete the \
             stored one (DELETE FROM kv WHERE key = 'local-ca') and start this node first",
            dir.join(LocalCa::ROOT_FILE).display()
        );
    }
    LocalCa::replace_files(dir, root, key)?;
    Ok(())
}
