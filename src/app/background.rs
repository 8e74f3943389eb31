//! The edge's work besides requests, each a task that ends when `stop` turns true: certificate
//! maintenance and the mirror, propagation of other nodes' changes, expiring visitors' salts,
//! re-reading `clicks.networks_file` and the periodic domain checks. Not the click shipper: it
//! stops later, after the click writer (`App::shutdown`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::HEARTBEAT_INTERVAL;
use super::edge::RequestPath;
use super::state::State;
use super::supervise::Supervisor;
use crate::clock::Clock;
use crate::cluster::{Propagation, Settings as PropagationSettings, StatusReader};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::OrderRate;

/// How often `clicks.networks_file` is checked for changes.
const NETWORKS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// How often the verdict's message table drops expired entries and counts itself.
const MESSAGE_TABLE_UPKEEP: Duration = Duration::from_secs(30);

/// How often a past day's visitor salt is looked for and dropped: within the hour after its day.
const VISITOR_SALT_CHECK: Duration = Duration::from_secs(3600);

/// Spawns the background tasks, supervised; returns what the admin API reads of the cluster, and
/// the tasks.
pub(super) fn spawn(
    config: &Config,
    state: &State,
    path: &RequestPath,
    metrics: &Metrics,
    clock: &Clock,
    stop: &watch::Receiver<bool>,
    supervisor: &Supervisor,
) -> (Arc<StatusReader>, Vec<JoinHandle<()>>) {
    let mut tasks = Vec::new();
    let certs = &state.certs;
    tasks.push(supervisor.spawn(
        "certificate maintenance",
        certs.clone().run_maintenance(stop.clone()),
    ));
    tasks.push(supervisor.spawn(
        "certificate mirror",
        certs.clone().fill_mirror(stop.clone()),
    ));
    let propagation = Arc::new(
        Propagation::new(
            state.store.clone(),
            state.policy.clone(),
            certs.clone(),
            state.keys.clone(),
            clock.clone(),
            PropagationSettings {
                node_id: config.cluster.node_id().to_string(),
                scan_interval: config.cluster.scan_interval,
                heartbeat_interval: HEARTBEAT_INTERVAL,
            },
            state.version,
        )
        .with_onboarding(state.onboarding.clone())
        .with_id_shared_gauge(metrics.cluster_node_id_shared.clone()),
    );
    tasks.push(supervisor.spawn("change propagation", propagation.clone().run(stop.clone())));
    if let Some(visitors) = &path.visitors {
        tasks.push(
            supervisor.spawn(
                "visitor salt expiry",
                visitors
                    .clone()
                    .expire(clock.clone(), VISITOR_SALT_CHECK, stop.clone()),
            ),
        );
    }
    let (edge, mut stopped) = (path.edge.clone(), stop.clone());
    tasks.push(supervisor.spawn("message table upkeep", async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(MESSAGE_TABLE_UPKEEP) => edge.verdict().upkeep(),
                _ = stopped.wait_for(|s| *s) => return,
            }
        }
    }));
    if let Some(file) = config.clicks.networks_file.clone() {
        tasks.push(
            supervisor.spawn(
                "networks file watch",
                path.catalogue
                    .clone()
                    .watch(file, NETWORKS_RELOAD_INTERVAL, stop.clone()),
            ),
        );
    }
    tasks.push(
        supervisor.spawn(
            "onboarding rechecks",
            state
                .onboarding
                .clone()
                .run_periodic(certs.clone(), stop.clone()),
        ),
    );
    let status = Arc::new(StatusReader::new(
        state.store.clone(),
        propagation,
        OrderRate::per_window(config.acme.max_orders.get(), config.acme.order_window),
        HEARTBEAT_INTERVAL,
        clock.clone(),
    ));
    (status, tasks)
}
