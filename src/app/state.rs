//! What the edge loads from its store before it serves: the domains (into the policy), the link
//! keys, the domain checks and the certificates, with the issuer behind them. Nothing here
//! listens; the only task started is the ACME directory's probe (`issuer`), and the background
//! work over this state starts in `background`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus::Registry;
use rustls::crypto::CryptoProvider;

use super::{issuer, mirror};
use crate::acme::challenges::Challenges;
use crate::certs::{Certs, ClaimSettings, Settings as CertSettings};
use crate::clock::Clock;
use crate::config::{Config, StoreKind};
use crate::keys::LinkKeys;
use crate::metrics::Metrics;
use crate::onboarding::{Onboarding, Settings as OnboardingSettings};
use crate::policy::{Ask, AskSettings, Policy};
use crate::store::{self, DomainPages, Store, StoreError};
use crate::tls;

/// The edge's state, loaded.
pub(super) struct State {
    pub store: Arc<dyn Store>,
    /// The store's version read before loading: propagation applies what changed after it.
    pub version: u64,
    pub policy: Arc<Policy>,
    pub keys: Arc<LinkKeys>,
    pub provider: Arc<CryptoProvider>,
    pub challenges: Arc<Challenges>,
    pub onboarding: Arc<Onboarding>,
    pub certs: Arc<Certs>,
}

impl State {
    /// Opens the store of `config` and loads everything the edge serves from.
    pub(super) async fn load(
        config: &Config,
        clock: &Clock,
        registry: &Registry,
        metrics: &Metrics,
    ) -> anyhow::Result<State> {
        // A store error opening it names the SQLite file or the PostgreSQL URL (its password
        // redacted) itself.
        let store = store::open(config).await?;
        registry
            .register(Box::new(store.queries()))
            .context("registering metrics")?;
        // The status pages' name is served like any registered domain (its certificate on demand).
        if let Some(url) = &config.onboarding.public_url {
            store
                .add_domain(&url.host, clock.now())
                .await
                .context("registering onboarding.public_url")?;
        }
        // Read before loading: a change made while loading is applied again, never missed.
        let version = store
            .latest_version()
            .await
            .context("reading the store's version")?;
        let policy = Arc::new(Policy::new([], ask(config, &store, metrics, clock)?));
        // A page at a time: a large cluster's table is never in memory whole. Only the names
        // backing off are kept, for the certificates' backoff below.
        let mut backing_off = Vec::new();
        let mut pages = DomainPages::new(&*store);
        while let Some(page) = pages.next().await.context("loading domains")? {
            for record in page {
                policy.register_record(&record);
                if record.retry_at.is_some() {
                    backing_off.push(record);
                }
            }
        }
        let keys = Arc::new(
            LinkKeys::load(
                store.clone(),
                policy.clone(),
                config.limits.max_uri_bytes.get(),
                clock.clone(),
            )
            .await
            .map_err(|e| sealed_elsewhere(config, e))
            .context("loading link keys")?
            .with_seal_delay(match config.store.kind() {
                StoreKind::Sqlite => Duration::ZERO,
                StoreKind::Postgres => config.cluster.key_seal_delay(),
            }),
        );
        let provider = Arc::new(tls::provider());
        let challenges = Arc::new(Challenges::new(
            store.clone(),
            policy.clone(),
            provider.clone(),
            clock.clone(),
        ));

        let issuer = issuer::build(config, &store, &challenges, metrics, clock).await?;
        let seal = mirror::seal_key(config)?;
        let mut onboarding = Onboarding::new(
            OnboardingSettings::from_config(config),
            store.clone(),
            clock.clone(),
        );
        // A cluster's check may fetch through any node: each answers the others' nonces.
        if let Some(key) = &seal {
            onboarding = onboarding.with_sealed_nonces(key.clone());
        }
        let onboarding = Arc::new(onboarding);
        onboarding
            .restore()
            .await
            .context("reading domain checks")?;
        let certs = Arc::new(
            Certs::new(
                CertSettings {
                    cache_capacity: config.tls.cert_cache_capacity.get(),
                    on_demand_timeout: config.tls.on_demand_timeout,
                },
                store.clone(),
                issuer,
                policy.clone(),
                provider.clone(),
                metrics.clone(),
                clock.clone(),
            )
            .with_gate(onboarding.clone())
            .with_claims(ClaimSettings {
                holder: config.cluster.node_id().to_string(),
                ttl: config.acme.lease_ttl,
            })
            .with_mirror(mirror::open(config, registry, &policy, seal.as_ref())?),
        );
        certs.restore(
            &backing_off,
            &store
                .cert_lifetimes()
                .await
                .context("reading certificate lifetimes")?,
        );
        certs
            .refresh_gauges()
            .await
            .context("reading certificate summary")?;
        Ok(State {
            store,
            version,
            policy,
            keys,
            provider,
            challenges,
            onboarding,
            certs,
        })
    }
}

/// `tls.ask`, the platform's endpoint asked about names the store does not know, if configured.
fn ask(
    config: &Config,
    store: &Arc<dyn Store>,
    metrics: &Metrics,
    clock: &Clock,
) -> anyhow::Result<Option<Ask>> {
    let Some(url) = &config.tls.ask else {
        return Ok(None);
    };
    let settings = AskSettings {
        cache_ttl: config.tls.ask_cache_ttl,
        rate: config.tls.ask_rate,
        burst: config.tls.ask_burst,
    };
    Ask::new(url.clone(), settings, store.clone(), metrics, clock.clone())
        .map(Some)
        .context("setting up tls.ask")
}

/// `e`, and when it is a link key that does not open, what that means at a start: this node's
/// seal key is not the one the store's secrets were sealed with.
fn sealed_elsewhere(config: &Config, e: StoreError) -> anyhow::Error {
    let sealed = matches!(&e, StoreError::Seal(crate::seal::SealError::Open(_)));
    if !sealed {
        return e.into();
    }
    let source = config.cluster.seal_key_file.as_ref().map_or_else(
        || format!("the key in {}", crate::seal::SEAL_KEY_ENV),
        |f| format!("cluster.seal_key_file {}", f.display()),
    );
    anyhow::Error::new(e).context(format!(
        "a link key in the store does not open with this node's seal key ({source}): most likely \
         it is not the key the cluster's secrets were sealed with, so give it the key file of the \
         cluster's other nodes (a key made anew opens nothing they stored); if they start with \
         this same key, the link key's row was altered or moved"
    ))
}
