//! Builds the edge from a [`Config`] and runs it: store, key ring, policy, issuer, certificates,
//! click sink, the listeners, and an orderly shutdown.
//!
//! The only module that sees every other one; it holds no business logic. In `app/`, in the
//! order `App::start` uses them: `lock` (one serving process per data dir), `tokens` (the admin
//! tokens), `state` (what is loaded from the store), with `issuer` (the configured issuer),
//! `probe` (is the ACME directory reachable at start) and `mirror` (whether this node keeps a
//! certificate mirror); `clicks` (the click log, its writer and its shipper), `edge` (the
//! request path and its TLS acceptor), `bind` (the listeners, and what to do when one cannot be
//! bound), `threads` (where the HTTPS listeners are served) and `background` (the tasks besides
//! requests).

mod background;
mod bind;
mod clicks;
mod edge;
mod issuer;
mod lock;
mod mirror;
mod probe;
mod state;
mod supervise;
mod threads;
mod tokens;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::certs::Certs;
use crate::clicks::ClickWriter;
use crate::clock::Clock;
use crate::config::{Config, StoreKind};
use crate::http::serve::{self, ProxyProtocol, Serving};
use crate::keys::LinkKeys;
use crate::metrics::Metrics;

use bind::Listeners;
use clicks::ClickLog;
use edge::RequestPath;
pub use lock::{DataDirLock, LOCK_FILE, LockError};
use state::State;
use supervise::Supervisor;

/// File under the data dir holding the generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// How often a node records its heartbeat in the store (`cluster status` counts a node alive
/// while its last heartbeat is at most three of these old).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The longest wait at a stop for the click log's last write (every queued click written and
/// synced): far more than it takes on a disk that answers.
const FINAL_FLUSH: Duration = Duration::from_secs(5);
/// How much longer than its final drain the click shipper may take to stop (its last read of
/// the log and its checkpoint's write) before the edge stops without it.
const SHIPPER_STOP_SLACK: Duration = Duration::from_secs(5);

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
    /// `clickedge_clicks_dropped_total`: what it gains while stopping is lost for good.
    clicks_dropped: prometheus::IntCounter,
    /// `clickedge_clicks_queued`: what a last write that never finishes leaves behind.
    clicks_queued: prometheus::IntGauge,
    /// With `clicks.stream`, the shipper: stopped after `clicks`.
    shipper: Option<ShipperTask>,
    grace: Duration,
    /// `shutdown_delay`: not ready but serving, before the listeners close.
    delay: Duration,
    readiness: Arc<admin::Readiness>,
    reloadable: Reloadable,
    /// The long-lived tasks' supervisor: which one panicked, if one did.
    supervisor: Supervisor,
    _lock: DataDirLock,
}

/// The running click shipper and its own stop signal.
struct ShipperTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What SIGHUP re-reads from the store.
struct Reloadable {
    keys: Arc<LinkKeys>,
    certs: Arc<Certs>,
}

/// What a reload found in the store, each part on its own: one failing (the store away for a
/// moment) does not keep the other from being read.
#[derive(Debug)]
pub struct Reloaded {
    /// Certificates stored; the in-memory cache reloads each from the store at its next handshake.
    pub certificates: anyhow::Result<usize>,
    /// Link keys now opening tokens.
    pub link_keys: anyhow::Result<usize>,
}

impl App {
    /// Builds everything from `config`, binds the listeners and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<App> {
        let data_dir = &config.data_dir;
        create_private_dir(data_dir)?;
        let lock = match config.store.kind() {
            StoreKind::Sqlite => DataDirLock::acquire(data_dir)?.and_store(&config.store_path())?,
            StoreKind::Postgres => DataDirLock::acquire(data_dir)?,
        };
        let tokens = tokens::admin_tokens(config)?;

        let clock = Clock::system();
        let registry = Registry::new_custom(None, None).context("creating metrics registry")?;
        let metrics = Metrics::new(&registry).context("registering metrics")?;
        let readiness = admin::Readiness::new(&registry).context("registering metrics")?;
        let state = State::load(config, &clock, &registry, &metrics).await?;
        let ClickLog {
            shipper,
            shipping,
            writer: click_writer,
            queue: clicks,
        } = clicks::start(config, &metrics, &registry, &clock).await?;
        let path = RequestPath::build(config, &state, clicks, &metrics, &clock)?;
        let listeners = Listeners::bind(config)?;
        let addrs = listeners.addrs()?;

        let (stop, stop_rx) = watch::channel(false);
        let connections = TaskTracker::new();
        let supervisor = Supervisor::new();
        let mut serving = Serving::new(
            path.edge.clone(),
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
        let mut tasks = threads::serve_https(
            listeners.https,
            config.listen.https_threads,
            &path.acceptor,
            &serving,
            &connections,
            &supervisor,
        )
        .await?;
        for listener in listeners.http {
            tasks.push(supervisor.spawn(
                "HTTP accept loop",
                serve::serve_http(listener, serving.clone()),
            ));
        }
        let (cluster, background) = background::spawn(
            config,
            &state,
            &path,
            &metrics,
            &clock,
            &stop_rx,
            &supervisor,
        );
        tasks.extend(background);
        // Stopped on its own, after the click writer: see `shutdown`.
        let shipper = shipper.map(|shipper| {
            let (stop, stop_rx) = watch::channel(false);
            ShipperTask {
                stop,
                task: supervisor.spawn("click shipper", shipper.run(stop_rx)),
            }
        });
        if let Some(listener) = listeners.metrics {
            tasks.push(supervisor.spawn(
                "metrics listener",
                serve::serve_admin(
                    listener,
                    admin::metrics_router(registry.clone()),
                    &config.limits,
                    connections.clone(),
                    stop_rx.clone(),
                ),
            ));
        }
        let reloadable = Reloadable {
            keys: state.keys.clone(),
            certs: state.certs.clone(),
        };
        let admin_router = admin::router(Arc::new(AdminState {
            domains: path.domains,
            keys: state.keys,
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
            read_checks: crate::onboarding::OncePer::new(admin::READ_CHECK_EVERY),
        }));
        tasks.push(supervisor.spawn(
            "admin listener",
            serve::serve_admin(
                listeners.admin,
                admin_router,
                &config.limits,
                connections.clone(),
                stop_rx,
            ),
        ));

        // The store is loaded and every listener bound and served: traffic is welcome.
        readiness.set(true);
        Ok(App {
            addrs,
            stop,
            connections,
            tasks,
            clicks: click_writer,
            clicks_dropped: metrics.clicks_dropped.clone(),
            clicks_queued: metrics.clicks_queued.clone(),
            shipper,
            grace: config.shutdown_grace,
            delay: config.shutdown_delay,
            readiness,
            reloadable,
            supervisor,
            _lock: lock,
        })
    }

    /// Re-reads the link keys and the certificates from the store (SIGHUP), for changes made
    /// outside this process; requests go on being served meanwhile, and no click is touched.
    pub async fn reload(&self) -> Reloaded {
        let link_keys = self
            .reloadable
            .keys
            .reload()
            .await
            .context("reloading link keys");
        let certificates = self
            .reloadable
            .certs
            .reload()
            .await
            .context("reloading certificates");
        Reloaded {
            certificates,
            link_keys,
        }
    }

    /// Once a long-lived task has ended in a panic, its name: the edge must stop (exit 1).
    pub async fn failed(&self) -> &'static str {
        self.supervisor.failed().await
    }

    /// Where the edge listens (useful with port 0).
    pub fn addrs(&self) -> &Addrs {
        &self.addrs
    }

    /// Stops accepting, lets open connections finish within the grace period, writes every
    /// queued click, lets the shipper (with `clicks.stream`) ship them within its final drain,
    /// and returns.
    ///
    /// An error if clicks were lost while stopping, once the listeners were told to close
    /// (dropped when the queue filled as connections drained, or at the last write of a failing
    /// click sink): nothing is left running to count them, so the exit status says it.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // Not ready first, still serving for `shutdown_delay`: load balancers probing /readyz
        // stop sending before the listeners close.
        self.readiness.set(false);
        if !self.delay.is_zero() {
            tracing::info!(delay = ?self.delay, "draining: /readyz answers 503; still serving");
            tokio::time::sleep(self.delay).await;
        }
        // Counted from here: what is dropped while the edge still served (`shutdown_delay`) the
        // metrics showed, as any other time.
        let dropped_before = self.clicks_dropped.get();
        let _ = self.stop.send(true);
        // One grace for the background work and the connections, which drain meanwhile (each
        // was asked to close by `stop`): a task in the middle of its work (an onboarding pass
        // over many domains, a renewal) is left at the deadline rather than holding back the
        // clicks' flush until the service manager kills the process. The listeners are among
        // the tasks, so no connection is accepted once the wait for connections begins.
        let deadline = tokio::time::Instant::now() + self.grace;
        let tasks = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout_at(deadline, tasks).await.is_err() {
            tracing::warn!(grace = ?self.grace, "background work still running after the grace period; left unfinished");
        }
        self.connections.close();
        if tokio::time::timeout_at(deadline, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "connections still open after the grace period: left to the exit, the clicks they answer from now on are counted as dropped");
        }
        let clicks = self.clicks;
        let flush = tokio::task::spawn_blocking(move || clicks.close());
        let (stalled, durable) = match tokio::time::timeout(FINAL_FLUSH, flush).await {
            Ok(Ok(durable)) => (false, durable),
            Ok(Err(_)) => {
                tracing::error!("flushing clicks failed");
                (false, true)
            }
            Err(_) => {
                tracing::error!(
                    wait_secs = FINAL_FLUSH.as_secs(),
                    queued = self.clicks_queued.get(),
                    "the click log's last write did not finish in time (a disk that stopped answering?): stopping without it"
                );
                (true, true)
            }
        };
        // The shipper stops only now, after the writer's last write: its final drain ships the
        // clicks written while connections drained and at the flush, and waits for the
        // acknowledgements in flight, within `FINAL_DRAIN` (so a NATS that is away delays the
        // exit only that long). Stopped with the other tasks, it would leave all of them to
        // the next start.
        if let Some(shipper) = self.shipper {
            let _ = shipper.stop.send(true);
            // A panic is the supervisor's to say (below). Bounded: only its waits for NATS are
            // within the drain, and a disk that stopped answering would hold its reads and its
            // checkpoint's write, and the exit, for ever.
            let bound = crate::clicks::ship::FINAL_DRAIN + SHIPPER_STOP_SLACK;
            let mut task = shipper.task;
            if tokio::time::timeout(bound, &mut task).await.is_err() {
                task.abort();
                tracing::error!(
                    wait_secs = bound.as_secs(),
                    "the click shipper did not stop in time (a disk that stopped answering?): stopping without it; the clicks past its last saved checkpoint are shipped again at the next start"
                );
            }
        }
        // The writer logged why it dropped what it dropped.
        let lost = self.clicks_dropped.get() - dropped_before;
        if lost > 0 {
            anyhow::bail!(
                "stopped, but {lost} clicks could not be written while stopping (see the errors \
                 above): they are lost"
            );
        }
        if stalled {
            anyhow::bail!(
                "stopped, but the click log's last write did not finish within {}s: the clicks \
                 it held may be lost",
                FINAL_FLUSH.as_secs()
            );
        }
        if !durable {
            anyhow::bail!(
                "stopped, but the click log's last file could not be synced to disk (see the \
                 error above): the clicks it holds may be lost if the machine stops now"
            );
        }
        if let Some(task) = self.supervisor.failed_now() {
            anyhow::bail!("stopped because the {task} task panicked (see the error above)");
        }
        tracing::info!("stopped");
        Ok(())
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
