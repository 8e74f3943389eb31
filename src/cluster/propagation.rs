//! Change propagation: each node applies the changes since the last version it applied to its
//! memory: the policy's domain set (with each domain's fallback URL) and each domain's backoff copy, the certificate cache (a
//! cached certificate is replaced, one not cached is left to the next handshake), the link key
//! ring.
//!
//! The truth is the scan ([`crate::store::Changes::changes_since`]): at start (the version read
//! before everything was loaded), after every hint that something changed (PostgreSQL's
//! `NOTIFY`, sent in the writer's transaction), after the listening connection drops, and every
//! `cluster.scan_interval` whatever the hints said. A lost notification delays a change by at
//! most one interval; a database that is down delays every change until it is back, and memory
//! keeps serving meanwhile.
//!
//! Deletes are tombstones, pruned once a day old (by whichever node's heartbeat finds it due).
//! A node that applied nothing since before the newest pruned tombstone (away, or cut off from
//! the database, that long) cannot read the deletes it missed: it compares its domain set and
//! key ring with the store instead, then scans as usual.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};

use crate::Domain;
use crate::certs::Certs;
use crate::clock::Clock;
use crate::errors::chain as error_chain;
use crate::keys::LinkKeys;
use crate::onboarding::Onboarding;
use crate::policy::Policy;
use crate::store::{Change, Changed, DomainPages, Store, StoreError};

/// Changes read per query.
const PAGE: u32 = 1000;

/// How long a tombstone is kept: a node away for less reads every delete it missed.
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(24 * 3600);
/// A node whose last heartbeat is this old is forgotten (`cluster status` stops listing it): a
/// deploy that names its pods anew leaves one row per pod otherwise, read at every heartbeat.
pub const NODE_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Wait before listening again after the listening connection failed or dropped.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// How this node takes part.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `cluster.node_id`.
    pub node_id: String,
    /// `cluster.scan_interval`: the longest a change waits when every hint is lost.
    pub scan_interval: Duration,
    /// How often the node records its heartbeat.
    pub heartbeat_interval: Duration,
}

/// Applies what other nodes change to this node's memory.
pub struct Propagation {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    certs: Arc<Certs>,
    keys: Arc<LinkKeys>,
    /// The domains' check reports, which gate orders; none: not kept (tests).
    onboarding: Option<Arc<Onboarding>>,
    clock: Clock,
    settings: Settings,
    started_at: SystemTime,
    applied: AtomicU64,
    /// A comparison of the domains with the store's (deletes missed past the tombstones' keep)
    /// met a row it could not read: each scan compares again until one completes.
    compare_domains: AtomicBool,
    hint: Arc<Notify>,
    /// 1 while another live node heartbeats under this node's id.
    id_shared: Option<prometheus::IntGauge>,
}

impl Propagation {
    /// Propagation into these parts, loaded from `store` as of `applied` (the latest version
    /// read *before* they were loaded: a change made while loading is applied again, which
    /// changes nothing).
    pub fn new(
        store: Arc<dyn Store>,
        policy: Arc<Policy>,
        certs: Arc<Certs>,
        keys: Arc<LinkKeys>,
        clock: Clock,
        settings: Settings,
        applied: u64,
    ) -> Propagation {
        Propagation {
            started_at: clock.now(),
            store,
            policy,
            certs,
            keys,
            onboarding: None,
            clock,
            settings,
            applied: AtomicU64::new(applied),
            compare_domains: AtomicBool::new(false),
            hint: Arc::new(Notify::new()),
            id_shared: None,
        }
    }

    /// Sets `gauge` (`clickedge_cluster_node_id_shared`) to 1 while another live node heartbeats
    /// under this node's id, 0 otherwise.
    pub fn with_id_shared_gauge(mut self, gauge: prometheus::IntGauge) -> Propagation {
        self.id_shared = Some(gauge);
        self
    }

    /// Also takes each changed domain's check report into `onboarding`, so that a check on
    /// another node holds back (or lets go) this node's orders too.
    pub fn with_onboarding(mut self, onboarding: Arc<Onboarding>) -> Propagation {
        self.onboarding = Some(onboarding);
        self
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// The last version applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Reads and applies every change since the last one applied; returns how many there were.
    /// On an error, what was applied stays applied and the next scan goes on from there.
    pub async fn scan(&self) -> Result<usize, StoreError> {
        let mut from = self.applied();
        // A store whose version went back (a failover that lost its last writes, a restore)
        // numbers its next changes below what this node applied: read it all again, or they
        // would never be.
        let latest = self.store.latest_version().await?;
        if latest < from {
            tracing::error!(
                applied = from,
                store_version = latest,
                "the store's version went back (a database failover that lost writes, or a restore): reading every row again"
            );
            self.forget_removed().await?;
            self.applied.store(0, Ordering::Relaxed);
            from = 0;
        }
        let pruned = self.store.pruned_through().await?;
        if from < pruned || self.compare_domains.load(Ordering::Relaxed) {
            self.forget_removed().await?;
        }
        let mut total = 0;
        loop {
            let changes = self.store.changes_since(self.applied(), PAGE).await?;
            let n = changes.len();
            total += n;
            self.apply(changes).await?;
            if n < PAGE as usize {
                // Another node may have pruned tombstones this scan had not read yet (pruning
                // runs whenever a heartbeat finds it due): then compare as well.
                let pruned_now = self.store.pruned_through().await?;
                if pruned_now > pruned && from < pruned_now {
                    self.forget_removed().await?;
                }
                // Everything up to the prune mark is read now: written rows by the scan,
                // deletes by the comparison.
                self.applied
                    .fetch_max(pruned_now.max(pruned), Ordering::Relaxed);
                return Ok(total);
            }
        }
    }

    /// The deletes this node missed had their tombstones pruned: what it serves and the store
    /// no longer holds is forgotten (domains, with their certificates; the certificates of names
    /// removed and added again; link keys). Rows written meanwhile are the scan's.
    ///
    /// A row that cannot be read (damaged, sealed for another row) must not stop every later
    /// change, as in [`Propagation::apply`]: a domain row leaves the domains compared again at
    /// each scan until it reads, a key row leaves the ring in use.
    async fn forget_removed(&self) -> Result<(), StoreError> {
        let mut stored = HashSet::new();
        let mut pages = DomainPages::new(&*self.store);
        let mut gone = 0;
        loop {
            match pages.next().await {
                Ok(Some(page)) => stored.extend(page.into_iter().map(|d| d.name)),
                Ok(None) => {
                    for name in self.policy.names() {
                        if !stored.contains(&name) && self.forget_if_gone(&name).await? {
                            gone += 1;
                        }
                    }
                    self.compare_domains.store(false, Ordering::Relaxed);
                    break;
                }
                Err(e) if unreadable_row(&e) => {
                    tracing::error!(error = %error_chain(&e), "a domain row cannot be read: the domains removed while this node was away stay served here until it reads (fix or remove the row); every other change applies");
                    self.compare_domains.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        // A name removed and added again while away is registered still, but its certificate
        // was deleted with it.
        let cached = self.certs.reload_cached().await;
        self.reload_keys().await?;
        tracing::warn!(
            applied = self.applied(),
            removed = gone,
            certificates_read_again = cached,
            "deletes missed for longer than tombstones are kept: compared with the store"
        );
        Ok(())
    }

    /// Forgets `name` unless the store holds it now: it was missing from the pages read, but an
    /// add on this node may have come after they were.
    async fn forget_if_gone(&self, name: &Domain) -> Result<bool, StoreError> {
        let changing = self.policy.changing().await;
        match self.store.domain(name).await {
            Ok(None) => {}
            // Written meanwhile, or a row the scan reports: served still.
            Ok(Some(_)) => return Ok(false),
            Err(e) if unreadable_row(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        self.policy.unregister(name.as_str()).await;
        self.certs.forget(name);
        drop(changing);
        // As a removal applied from its tombstone: no report of the registration gone is kept
        // to hold back the name's orders should it come back.
        if let Some(onboarding) = &self.onboarding {
            onboarding.forget(name).await;
        }
        Ok(true)
    }

    /// Applies one page, each row once (at its last version in the page): domains first, then
    /// certificates, oldest first (a certificate is applied to a name already registered or
    /// already forgotten, whatever order the rows were written in); the link key ring is
    /// reloaded once at the end if any key changed.
    async fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let Some(last) = changes.last().map(|c| c.version) else {
            return Ok(());
        };
        let mut latest: HashMap<&Changed, u64> = HashMap::new();
        for c in &changes {
            latest.insert(&c.what, c.version);
        }
        let mut keys_changed = false;
        let (domains, others): (Vec<&Change>, Vec<&Change>) = changes
            .iter()
            .filter(|c| latest.get(&c.what) == Some(&c.version))
            .partition(|c| matches!(c.what, Changed::Domain(_)));
        for c in domains.into_iter().chain(others) {
            match self.apply_one(&c.what, &mut keys_changed).await {
                Ok(()) => {}
                // One row that cannot be read (damaged, sealed for another row) must not hold
                // back every change after it on every node: it is skipped, loudly.
                Err(e) if unreadable_row(&e) => {
                    tracing::error!(change = ?c.what, version = c.version, error = %error_chain(&e), "a changed row cannot be applied; skipped (fix or remove the row)");
                }
                // Anything else (the database away or restarting): this page again next scan.
                Err(e) => return Err(e),
            }
        }
        if keys_changed {
            self.reload_keys().await?;
        }
        self.applied.fetch_max(last, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the link key ring again; a key row that cannot be read leaves the ring in use (with
    /// an error log) rather than holding back every later change.
    async fn reload_keys(&self) -> Result<(), StoreError> {
        match self.keys.reload().await {
            Ok(_) => Ok(()),
            Err(e) if unreadable_row(&e) => {
                tracing::error!(error = %error_chain(&e), "the link keys cannot be read again; the ring in use stays (fix or remove the key row)");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Applies one changed row to this node's memory.
    async fn apply_one(&self, what: &Changed, keys_changed: &mut bool) -> Result<(), StoreError> {
        match what {
            Changed::Domain(name) => {
                let changing = self.policy.changing().await;
                match self.store.domain(name).await? {
                    Some(record) => {
                        let added = !self.policy.is_registered(name.as_str());
                        if added {
                            tracing::info!(domain = %name, "domain added on another node");
                        }
                        self.policy.register_record(&record);
                        self.certs.apply_status(&record);
                        drop(changing);
                        if let Some(onboarding) = &self.onboarding {
                            onboarding.reload(name).await?;
                        }
                        // Its certificate's change may have come first, in an earlier page (the
                        // domain's row written again since), and found the name unknown: read
                        // now, for the renewal schedule and the mirror.
                        if added {
                            self.certs.reload_name(name).await?;
                        }
                    }
                    None => {
                        if self.policy.is_registered(name.as_str()) {
                            tracing::info!(domain = %name, "domain removed on another node");
                        }
                        self.policy.unregister(name.as_str()).await;
                        self.certs.forget(name);
                        drop(changing);
                        if let Some(onboarding) = &self.onboarding {
                            onboarding.forget(name).await;
                        }
                    }
                }
            }
            Changed::Certificate(name) => self.certs.reload_name(name).await?,
            Changed::LinkKey(_) => *keys_changed = true,
            Changed::Unreadable { table, key } => {
                tracing::error!(
                    table = %table,
                    key = %crate::onboarding::escape::escape(key),
                    "a changed row's key cannot be read; skipped (fix or remove the row)"
                );
            }
        }
        Ok(())
    }

    /// Scans at every hint and every `scan_interval`, listens for hints, and records the
    /// heartbeat, until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            () = self.scan_loop() => {}
            () = self.listen_loop() => {}
            () = self.heartbeat_loop() => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    async fn scan_loop(&self) {
        let mut failing = false;
        loop {
            match self.scan().await {
                Ok(n) => {
                    if failing {
                        tracing::info!(
                            changes = n,
                            version = self.applied(),
                            "store reachable again; changes applied"
                        );
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %error_chain(&e), "reading changes from the store; serving from memory and trying again");
                    }
                    failing = true;
                }
            }
            let wait = if failing {
                LISTEN_RETRY
            } else {
                self.settings.scan_interval
            };
            tokio::select! {
                () = self.hint.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn listen_loop(&self) {
        loop {
            match self.store.listen(self.hint.clone()).await {
                Ok(()) => {
                    tracing::warn!("the connection listening for changes closed; listening again")
                }
                Err(e) => tracing::debug!(error = %error_chain(&e), "listening for changes"),
            }
            // Changes made while nobody listened were not hinted at: scan.
            self.hint.notify_one();
            tokio::time::sleep(LISTEN_RETRY).await;
        }
    }

    async fn heartbeat_loop(&self) {
        let mut beaten = false;
        loop {
            if beaten {
                self.check_id_is_ours().await;
            }
            let beat = self.store.heartbeat(
                &self.settings.node_id,
                self.started_at,
                self.applied(),
                self.clock.now(),
            );
            match beat.await {
                Ok(()) => beaten = true,
                Err(e) => tracing::debug!(error = %error_chain(&e), "recording the heartbeat"),
            }
            let silent_since = self.clock.now().checked_sub(NODE_KEEP);
            if let Some(before) = silent_since {
                match self.store.forget_nodes(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(forgotten = n, "nodes silent for 7 days forgotten"),
                    Err(e) => tracing::debug!(error = %error_chain(&e), "forgetting silent nodes"),
                }
            }
            match self
                .store
                .prune_tombstones(self.clock.now(), TOMBSTONE_KEEP)
                .await
            {
                Ok(Some(n)) => tracing::debug!(pruned = n, "tombstones pruned"),
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %error_chain(&e), "pruning tombstones"),
            }
            tokio::time::sleep(self.settings.heartbeat_interval).await;
        }
    }
}

impl Propagation {
    /// After this node's own heartbeat, its row can only hold another start time if another
    /// process wrote it since: a live node with the same `cluster.node_id`. Their click ids then
    /// collide, and the stream drops one node's clicks as re-publishes of the other's, so it is
    /// said loudly at each heartbeat (a process of this node that died writes nothing).
    async fn check_id_is_ours(&self) {
        let nodes = match self.store.nodes().await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "reading the nodes' heartbeats");
                return;
            }
        };
        let ms = |t: SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        };
        let other = nodes.iter().find(|n| {
            n.node_id == self.settings.node_id && ms(n.started_at) != ms(self.started_at)
        });
        if let Some(gauge) = &self.id_shared {
            gauge.set(i64::from(other.is_some()));
        }
        if let Some(other) = other {
            tracing::error!(
                node_id = %self.settings.node_id,
                other_started_at = %crate::clock::rfc3339(other.started_at),
                "another node runs with this node's cluster.node_id: their click ids collide and the stream drops one's clicks as the other's; give each node its own cluster.node_id"
            );
        }
    }
}

/// Whether `e` is about the row read, not the database: a row that cannot be opened or parsed,
/// which reading again will not change.
fn unreadable_row(e: &StoreError) -> bool {
    matches!(e, StoreError::Seal(_) | StoreError::Corrupt(_))
}

#[cfg(test)]
mod tests;
