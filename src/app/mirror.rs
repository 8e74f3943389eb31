//! Whether this node keeps a certificate mirror, and where: with a PostgreSQL store, under the
//! data dir, sealed with the cluster's seal key; with SQLite, none (the store is local already).

use std::sync::Arc;

use anyhow::Context as _;
use prometheus::Registry;

use crate::certs::{CertMirror, MIRROR_FILE, MirrorMetrics};
use crate::config::{Config, StoreKind};
use crate::policy::Policy;
use crate::seal::SealKey;

/// The cluster's seal key for what the node seals besides the store's rows (the mirror, the
/// reachability nonces); none with SQLite. The store was opened with the same key already:
/// reading it again cannot find it missing unless the file changed in between, which this
/// reports.
pub(super) fn seal_key(config: &Config) -> anyhow::Result<Option<Arc<SealKey>>> {
    if config.store.kind() != StoreKind::Postgres {
        return Ok(None);
    }
    let seal = SealKey::from_config(&config.cluster)
        .context("reading the seal key")?
        .context("the seal key is no longer set (cluster.seal_key_file or CLICKEDGE_SEAL_KEY)")?;
    Ok(Some(Arc::new(seal)))
}

/// The mirror this node keeps, sealed with `seal` (the cluster's key), opened; none without one
/// (SQLite).
pub(super) fn open(
    config: &Config,
    registry: &Registry,
    policy: &Arc<Policy>,
    seal: Option<&Arc<SealKey>>,
) -> anyhow::Result<Option<Arc<CertMirror>>> {
    let Some(seal) = seal.cloned() else {
        return Ok(None);
    };
    let metrics = MirrorMetrics::new(registry).context("registering metrics")?;
    let path = config.data_dir.join(MIRROR_FILE);
    // The mirror is a copy: one that cannot be opened (damaged, or not a database) is set aside
    // and made again from the store by the fill, rather than stopping the node.
    let mirror = match CertMirror::open(&path, seal.clone(), metrics.clone()) {
        Ok(mirror) => mirror,
        Err(e) => {
            let aside = path.with_extension("db.damaged");
            tracing::warn!(
                path = %path.display(),
                aside = %aside.display(),
                error = %crate::errors::chain(&e),
                "the certificate mirror cannot be opened: set aside, a new one is filled from the store"
            );
            std::fs::rename(&path, &aside)
                .with_context(|| format!("setting {} aside", path.display()))?;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            CertMirror::open(&path, seal, metrics)
                .with_context(|| format!("opening the certificate mirror {}", path.display()))?
        }
    };
    Ok(Some(Arc::new(mirror.registered_by(policy.clone()))))
}
