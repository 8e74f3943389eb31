//! Builds the edge from a [`Config`] and runs it: store, key ring, policy, issuer, certificates,
//! click sink, the three listeners, and an orderly shutdown.
//!
//! The only module that sees every other one; it holds no business logic. In `app/`: `lock`
//! (one serving process per data dir), `bind` (listeners, and what to do when one cannot be bound), `clicks` (the click log, its writer and
//! its shipper), `issuer` (the configured issuer), `probe` (is the ACME
//! directory reachable at start), `mirror` (whether this node keeps a certificate mirror).

mod bind;
mod clicks;
mod issuer;
mod lock;
mod mirror;
mod probe;
mod threads;
mod tokens;

use std::net::SocketAddr;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::acme::challenges::Challenges;
use crate::admin::{self, AdminState};
use crate::certs::{Certs, ClaimSettings, Settings as CertSettings};
use crate::clicks::ClickWriter;
use crate::clicks::verdict::Rules;
use crate::clicks::verdict::networks::SharedCatalogue;
use crate::clock::Clock;
use crate::cluster::{Propagation, Settings as PropagationSettings, StatusReader};
use crate::config::{Config, StoreKind};
use crate::domains::Domains;
use crate::http::Edge;
use crate::status::StatusPages;

/// How often `clicks.networks_file` is checked for changes.
const NETWORKS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// How often a past day's visitor salt is looked for and dropped: within the hour after its day.
const VISITOR_SALT_CHECK: Duration = Duration::from_secs(3600);

use crate::http::serve::{self, ProxyProtocol, Serving};
use crate::keys::LinkKeys;
use crate::metrics::Metrics;
use crate::onboarding::{Onboarding, Settings as OnboardingSettings};
use crate::policy::{Ask, AskSettings, Policy};
use crate::store::{self, DomainPages, OrderRate};
use crate::tls::{self, Acceptor};

use bind::{bind, bind_all, bind_copies};
use clicks::ClickLog;
pub use lock::{DataDirLock, LOCK_FILE, LockError};

/// File under the data dir holding the generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// How often a node records its heartbeat in the store (`cluster status` counts a node alive
/// while its last heartbeat is at most three of these old).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Where a started edge listens.
#[derive(Debug, Clone)]
pub struct Addrs {
    /// HTTPS (clicks), one per address of `listen.https`.
    pub https: Vec<SocketAddr>,
    /// Plain HTTP, one per address of `listen.http`.
    pub http: Vec<SocketAddr>,
    /// Admin API.
    pub admin: SocketAddr,
    /// The metrics-only listener (`listen.metrics`), if configured.
    pub metrics: Option<SocketAddr>,
}

/// A running edge.
pub struct App {
    addrs: Addrs,
    stop: watch::Sender<bool>,
    connections: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
    clicks: ClickWriter,
    grace: Duration,
    /// `shutdown_delay`: not ready but serving, before the listeners close.
    delay: Duration,
    readiness: Arc<admin::Readiness>,
    reloadable: Reloadable,
    _lock: DataDirLock,
}

/// What SIGHUP re-reads from the store.
struct Reloadable {
    keys: Arc<LinkKeys>,
    certs: Arc<Certs>,
}

/// What a reload found in the store.
#[derive(Debug, Clone, Copy)]
pub struct Reloaded {
    /// Certificates stored; the in-memory cache reloads each from the store at its next handshake.
    pub certificates: usize,
    /// Link keys now opening tokens.
    pub link_keys: usize,
}

impl App {
    /// Builds everything from `config`, binds the listeners and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<App> {
        let data_dir = &config.data_dir;
        create_private_dir(data_dir)?;
        let lock = DataDirLock::acquire(data_dir)?;
        let tokens = tokens::admin_tokens(config)?;

        let clock = Clock::system();
        let registry = Registry::new_custom(None, None).context("creating metrics registry")?;
        let metrics = Metrics::new(&registry).context("registering metrics")?;
        let readiness = admin::Readiness::new(&registry).context("registering metrics")?;
        let store = store::open(config)
            .await
            .with_context(|| match config.store.kind() {
                StoreKind::Sqlite => format!("opening the store {}", config.store_path().display()),
                // PostgreSQL errors name the URL themselves, its password redacted.
                StoreKind::Postgres => "opening the store".to_owned(),
            })?;
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
        let ask = match &config.tls.ask {
            Some(url) => Some(
                Ask::new(
                    url.clone(),
                    AskSettings {
                        cache_ttl: config.tls.ask_cache_ttl,
                        rate: config.tls.ask_rate,
                        burst: config.tls.ask_burst,
                    },
                    store.clone(),
                    &metrics,
                    clock.clone(),
                )
                .context("setting up tls.ask")?,
            ),
            None => None,
        };
        let policy = Arc::new(Policy::new([], ask));
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

        let issuer = issuer::build(config, &store, &challenges, &metrics, &clock)?;
        let onboarding = Arc::new(Onboarding::new(
            OnboardingSettings::from_config(config),
            store.clone(),
            clock.clone(),
        ));
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
            .with_mirror(mirror::open(config, &registry, &policy)?),
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

        let ClickLog {
            shipper,
            shipping,
            writer: click_writer,
            queue: clicks,
        } = clicks::start(config, &metrics, &registry, &clock).await?;

        let server_config = tls::server_config(provider.clone(), config.tls.session_resumption)
            .context("building the TLS configuration")?;
        let acceptor = Arc::new(Acceptor::new(
            server_config,
            tls::challenge_config(provider).context("building the TLS-ALPN-01 configuration")?,
            challenges.clone(),
            certs.clone(),
            metrics.clone(),
            config.tls.handshake_timeout,
        ));
        let catalogue = Arc::new(
            SharedCatalogue::load(config.clicks.networks_file.as_deref())
                .context("loading clicks.networks_file")?,
        );
        let verdict = Rules::configured(
            catalogue.clone(),
            &config.clicks,
            &metrics,
            // Revisions are written as lines of the click log, after the clicks they name.
            Box::new(clicks.clone()),
        );
        let domains = Arc::new(Domains::new(
            store.clone(),
            policy.clone(),
            certs.clone(),
            onboarding.clone(),
            clock.clone(),
        ));
        // Visitors' daily salts, in memory only (`clicks::privacy`).
        let visitors = config
            .clicks
            .visitor
            .then(|| Arc::new(crate::clicks::privacy::Visitors::default()));
        let mut edge = Edge::new(
            keys.ring(),
            clicks,
            certs.clone(),
            policy.clone(),
            challenges,
            config.limits.max_uri_bytes.get(),
            &metrics,
        )
        .with_check_nonces(onboarding.nonces())
        .with_privacy(crate::clicks::privacy::Privacy::new(
            config.clicks.ip,
            visitors.clone(),
        ));
        if let Some(url) = &config.onboarding.public_url {
            edge = edge.with_status_pages(Arc::new(StatusPages::new(
                url.host.clone(),
                keys.clone(),
                domains.clone(),
                clock.clone(),
            )));
        }
        let edge = Arc::new(edge.with_verdict(verdict));

        // One socket per address and HTTPS thread (`listen.https_threads`), else one.
        let https_threads = config.listen.https_threads;
        let https = bind_copies(
            config.listen.https.all(),
            "listen.https",
            https_threads.max(1),
        )?;
        let http_listeners = bind_all(config.listen.http.all(), "listen.http")?;
        let admin_listener = bind(config.listen.admin, "listen.admin")?;
        let metrics_listener = match config.listen.metrics {
            Some(addr) => Some(bind(addr, "listen.metrics")?),
            None => None,
        };
        let local = |listeners: &[TcpListener]| {
            listeners
                .iter()
                .map(TcpListener::local_addr)
                .collect::<std::io::Result<Vec<_>>>()
        };
        let addrs = Addrs {
            https: https
                .iter()
                .map(|copies| copies[0].local_addr())
                .collect::<std::io::Result<_>>()?,
            http: local(&http_listeners)?,
            admin: admin_listener.local_addr()?,
            metrics: metrics_listener
                .as_ref()
                .map(TcpListener::local_addr)
                .transpose()?,
        };

        let (stop, stop_rx) = watch::channel(false);
        let connections = TaskTracker::new();
        let mut serving = Serving::new(
            edge,
            &config.limits,
            &metrics,
            connections.clone(),
            stop_rx.clone(),
        );
        if config.listen.proxy_protocol {
            serving = serving.with_proxy_protocol(ProxyProtocol::new(
                config.listen.trusted_proxies.clone(),
                config.tls.handshake_timeout,
            ));
        }
        // Each address its own accept loop; those of a listener share its caps (`serving`).
        let mut tasks =
            threads::serve_https(https, https_threads, &acceptor, &serving, &connections).await?;
        for listener in http_listeners {
            tasks.push(tokio::spawn(serve::serve_http(listener, serving.clone())));
        }
        tasks.push(tokio::spawn(certs.clone().run_maintenance(stop_rx.clone())));
        tasks.push(tokio::spawn(certs.clone().fill_mirror(stop_rx.clone())));
        let propagation = Arc::new(Propagation::new(
            store.clone(),
            policy.clone(),
            certs.clone(),
            keys.clone(),
            clock.clone(),
            PropagationSettings {
                node_id: config.cluster.node_id().to_string(),
                scan_interval: config.cluster.scan_interval,
                heartbeat_interval: HEARTBEAT_INTERVAL,
            },
            version,
        ));
        tasks.push(tokio::spawn(propagation.clone().run(stop_rx.clone())));
        let cluster = Arc::new(StatusReader::new(
            store.clone(),
            propagation,
            OrderRate::per_window(config.acme.max_orders.get(), config.acme.order_window),
            HEARTBEAT_INTERVAL,
            clock.clone(),
        ));
        if let Some(shipper) = shipper {
            tasks.push(tokio::spawn(shipper.run(stop_rx.clone())));
        }
        if let Some(visitors) = visitors {
            tasks.push(tokio::spawn(visitors.expire(
                clock.clone(),
                VISITOR_SALT_CHECK,
                stop_rx.clone(),
            )));
        }
        if let Some(path) = config.clicks.networks_file.clone() {
            tasks.push(tokio::spawn(catalogue.watch(
                path,
                NETWORKS_RELOAD_INTERVAL,
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(
            onboarding
                .clone()
                .run_periodic(certs.clone(), stop_rx.clone()),
        ));
        let reloadable = Reloadable {
            keys: keys.clone(),
            certs: certs.clone(),
        };
        if let Some(listener) = metrics_listener {
            tasks.push(tokio::spawn(serve::serve_admin(
                listener,
                admin::metrics_router(registry.clone()),
                &config.limits,
                connections.clone(),
                stop_rx.clone(),
            )));
        }
        let admin_router = admin::router(Arc::new(AdminState {
            domains,
            keys,
            registry,
            tokens,
            max_body_bytes: config.limits.admin_max_body_bytes.get(),
            clock,
            hosts: admin::Hosts::new(&config.admin.hosts, addrs.admin),
            // The admin listener serves plain HTTP: the cookie is Secure when admin.secure_cookie
            // says browsers reach it over HTTPS (through a proxy).
            sessions: admin::Sessions::new(config.admin.secure_cookie),
            readiness: readiness.clone(),
            shipping,
            cluster,
            public_url: config.onboarding.public_url.clone(),
        }));
        tasks.push(tokio::spawn(serve::serve_admin(
            admin_listener,
            admin_router,
            &config.limits,
            connections.clone(),
            stop_rx,
        )));

        // The store is loaded and every listener bound and served: traffic is welcome.
        readiness.set(true);
        Ok(App {
            addrs,
            stop,
            connections,
            tasks,
            clicks: click_writer,
            grace: config.shutdown_grace,
            delay: config.shutdown_delay,
            readiness,
            reloadable,
            _lock: lock,
        })
    }

    /// Re-reads the link keys and the certificates from the store (SIGHUP), for changes made
    /// outside this process; requests go on being served meanwhile, and no click is touched.
    pub async fn reload(&self) -> anyhow::Result<Reloaded> {
        let link_keys = self
            .reloadable
            .keys
            .reload()
            .await
            .context("reloading link keys")?;
        let certificates = self
            .reloadable
            .certs
            .reload()
            .await
            .context("reloading certificates")?;
        Ok(Reloaded {
            certificates,
            link_keys,
        })
    }

    /// Where the edge listens (useful with port 0).
    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }

    /// Stops accepting, lets open connections finish within the grace period, writes every
    /// queued click, and returns.
    pub async fn shutdown(self) {
        // Not ready first, still serving for `shutdown_delay`: load balancers probing /readyz
        // stop sending before the listeners close.
        self.readiness.set(false);
        if !self.delay.is_zero() {
            tracing::info!(delay = ?self.delay, "draining: /readyz answers 503; still serving");
            tokio::time::sleep(self.delay).await;
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.connections.close();
        if tokio::time::timeout(self.grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "connections still open after the grace period; closing them");
        }
        let clicks = self.clicks;
        if tokio::task::spawn_blocking(move || clicks.close())
            .await
            .is_err()
        {
            tracing::error!("flushing clicks failed");
        }
        tracing::info!("stopped; every queued click was written");
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting data dir {}", dir.display()))?;
    }
    Ok(())
}
