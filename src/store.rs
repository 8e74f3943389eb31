//! Durable state behind the [`Store`] trait: registered domains, certificates and their keys, and
//! the link key ring. [`SqliteStore`] is the embedded default, [`PgStore`] the database a cluster
//! shares (its secrets sealed with the cluster's seal key); [`open`] picks the store the config
//! names, and [`conformance`] is what every implementation must pass.
//!
//! Nothing here sits on the request path: certificates are cached in memory by `certs`, the
//! domain set by `policy`, and the key ring by `links`.

#[cfg(test)]
pub(crate) mod blips;
mod changes;
#[doc(hidden)]
pub mod conformance;
mod failure;
mod lease;
mod nodes;
mod postgres;
mod records;
mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use changes::{Change, Changed, Changes};
pub use failure::{AcmeProblem, FailureKind, IssueFailure, RateLimitScope};
pub use lease::{Fence, Lease, OrderRate, OrderTurn};
pub use nodes::{BudgetRecord, ClusterView, LeaseRecord, NodeRecord};
pub use postgres::{PASSWORD_ENV, PgStore};
pub use records::{
    CertInfo, CertLifetime, CertPage, CertSummary, DomainPages, DomainRecord, IssueStatus,
    KeyChange, Origin, StatusChange, StoredCert, StoredLinkKey,
};
pub use sqlite::SqliteStore;

use crate::Domain;
use crate::config::{ChallengeKind, Config, StoreKind};
use crate::seal::{SEAL_KEY_ENV, SealError, SealKey};

/// Opens the store `[store]` names: the one place the edge chooses an implementation.
/// PostgreSQL needs the cluster's seal key (`cluster.seal_key_file` or `CLICKEDGE_SEAL_KEY`);
/// SQLite, one file under the data dir restricted to its owner, stores secrets unsealed and
/// does not read the key.
pub async fn open(config: &Config) -> Result<Arc<dyn Store>, StoreError> {
    match config.store.kind() {
        StoreKind::Sqlite => Ok(Arc::new(SqliteStore::open(&config.store_path())?)),
        StoreKind::Postgres => {
            // The config refuses `kind = "postgres"` without a URL; this only guards.
            let url = config.store.url.as_ref().ok_or(StoreError::NoUrl)?;
            let seal = SealKey::from_config(&config.cluster)
                .map_err(StoreError::Seal)?
                .ok_or(StoreError::NoSealKey)?;
            let password = std::env::var(PASSWORD_ENV).ok();
            Ok(Arc::new(
                PgStore::connect(url, password.as_deref(), seal).await?,
            ))
        }
    }
}

/// A storage failure. The message names the operation; the cause is the source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("store: {op}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The database error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The database did not answer an operation: it is down or unreachable, or no connection
    /// came free in time. Writes fail; what nodes hold in memory keeps serving.
    #[error("store: the database is unreachable ({op})")]
    Unavailable {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The SQLite database file could not be opened or set up (a file that is not one, no
    /// permission, a full disk).
    #[error("store: the SQLite database {}: {op}", path.display())]
    Sqlite {
        /// `store.path`.
        path: std::path::PathBuf,
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `store.path` is in a directory that does not exist (the data dir is created; a directory
    /// of the operator's choosing is not, lest a typo create one).
    #[error(
        "store: the SQLite database {}: its directory does not exist: create it, or set store.path \
         to a file in one that does",
        path.display()
    )]
    NoDirectory {
        /// `store.path`.
        path: std::path::PathBuf,
    },
    /// A value read back is not what was written (corruption, manual edits).
    #[error("store: corrupt value in {0}")]
    Corrupt(&'static str),
    /// The database could not be reached (or refused the credentials) at start.
    #[error("store: cannot reach the PostgreSQL database {url}")]
    Unreachable {
        /// `store.url`, its password redacted.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The driver refused `store.url`.
    #[error("store: store.url {url} is not usable")]
    Url {
        /// `store.url`, its password redacted.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `kind = "postgres"` without `store.url`.
    #[error("store: store.kind is \"postgres\" but store.url is not set")]
    NoUrl,
    /// PostgreSQL without a seal key: secrets would be stored in the clear.
    #[error(
        "store: a PostgreSQL store needs the cluster's seal key: set cluster.seal_key_file to a \
         key file (mode 0600) or {SEAL_KEY_ENV} to the key; make one with `clickedge cluster \
         keygen FILE` and give every node the same"
    )]
    NoSealKey,
    /// A secret could not be sealed or opened, or the seal key not read.
    #[error("store: sealed secrets")]
    Seal(#[source] SealError),
}

impl StoreError {
    /// True when the database could not be reached (rather than refusing the operation).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// The name of the counter of store operations: each is one database round trip or
/// transaction. Handshakes for unknown names never add to it.
pub const QUERIES_METRIC: &str = "clickedge_store_queries_total";

/// A new, unregistered counter of store operations; the app registers the store's.
fn query_counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new(
        QUERIES_METRIC,
        "Store operations (database round trips or transactions).",
    )
    // The name and help are constants the registry accepts: this cannot fail.
    .expect("a valid constant metric name")
}

/// Durable state. Implementations are cheap to share (`Arc<dyn Store>`). What changed since a
/// version is [`Changes`], the cluster's records [`ClusterView`].
#[async_trait::async_trait]
pub trait Store: Changes + ClusterView + Send + Sync + 'static {
    /// The counter of this store's operations ([`QUERIES_METRIC`]), for the app to register.
    fn queries(&self) -> prometheus::IntCounter;
    /// All registered domains, sorted by name.
    async fn domains(&self) -> Result<Vec<DomainRecord>, StoreError>;
    /// One page of registered domains: at most `limit`, in the store's order of names, those
    /// after `after` (from the first with none). [`DomainPages`] walks them all this way.
    async fn domains_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<Vec<DomainRecord>, StoreError>;
    /// One page of registered domains: at most `limit`, those whose name comes after `after`
    /// byte by byte (any text: a name, a prefix; `""` from the first), in that order, each with
    /// what a listing shows of its stored certificate ([`CertInfo`]; none without one), in one
    /// round trip that reads no chain and opens no key: a listing of every domain costs a query
    /// per page, not a sealed key per domain.
    async fn listing_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(DomainRecord, Option<CertInfo>)>, StoreError>;
    /// One domain.
    async fn domain(&self, name: &Domain) -> Result<Option<DomainRecord>, StoreError>;
    /// Registers a domain an operator added (origin [`Origin::Admin`]); `false` if it already
    /// was. A name `tls.ask` approved becomes the operator's: its origin turns to `admin`, and
    /// nothing else about it changes.
    async fn add_domain(&self, name: &Domain, created_at: SystemTime) -> Result<bool, StoreError>;
    /// Registers a name the `tls.ask` endpoint approved (origin [`Origin::Ask`]); `false`, and
    /// no change at all, if it was registered already, whatever its origin.
    async fn add_approved_domain(
        &self,
        name: &Domain,
        created_at: SystemTime,
    ) -> Result<bool, StoreError>;
    /// Sets (or, with none, clears) the fallback URL of a registered domain, already checked by
    /// the caller; `false`, and no change, if it is not registered. A change is a change of the
    /// domain's row (it propagates to other nodes).
    async fn set_fallback_url(&self, name: &Domain, url: Option<&str>) -> Result<bool, StoreError>;
    /// Unregisters a domain and deletes its certificate; `false` if it was not registered.
    async fn remove_domain(&self, name: &Domain) -> Result<bool, StoreError>;
    /// Records the outcome of the last issuance attempt (error and backoff).
    async fn set_status(&self, name: &Domain, status: &IssueStatus) -> Result<(), StoreError>;
    /// Changes the recorded outcome of the last issuance attempt in one step: `change` is given
    /// the status as recorded and returns the one to record, or `None` to leave it. No other
    /// write of the name's status lands between the read and the write (a row lock, a write
    /// transaction), so a change built on a count of failures or a reason read here is never
    /// lost to, nor loses, another writer's. The status written, or `None` if nothing was (the
    /// domain is not registered, or `change` left it).
    async fn update_status(
        &self,
        name: &Domain,
        change: StatusChange,
    ) -> Result<Option<IssueStatus>, StoreError>;
    /// The certificate of a domain.
    async fn certificate(&self, name: &Domain) -> Result<Option<StoredCert>, StoreError>;
    /// What a listing shows of a domain's stored certificate ([`CertInfo`]: issuer and
    /// validity), read without the chain or the key: showing a domain opens no sealed key, so a
    /// certificate whose key does not open is shown (and its domain removable) all the same.
    async fn certificate_info(&self, name: &Domain) -> Result<Option<CertInfo>, StoreError>;
    /// Stores (replaces) the certificate of a domain, unguarded (the built-in CA outside the
    /// issuance flight, operators). It keeps the fence of the certificate it replaces (0 for a
    /// first one), so a fenced writer with an older fence still cannot replace it.
    async fn put_certificate(&self, name: &Domain, cert: &StoredCert) -> Result<(), StoreError>;
    /// Stores the certificate of a domain obtained under the lease `fence`, guarded in the same
    /// statement: it never replaces a certificate issued later (a later `not_before`), or one
    /// written with a higher fence (one issued at the same time is a reissue, and is replaced),
    /// and writes nothing for a name no longer registered (removed while its order ran).
    /// Returns whether it wrote. Issuance orders certificates, not expiry: a renewal the CA
    /// issues with a shorter lifetime (an early renewal its renewal information asked for, a
    /// CA shortening lifetimes) replaces the one it renews.
    ///
    /// PostgreSQL: `INSERT INTO certificates (…, fence) SELECT …, $fence FROM domains WHERE name
    /// = $1 FOR SHARE ON CONFLICT (domain) DO UPDATE SET … WHERE certificates.not_before <=
    /// EXCLUDED.not_before AND certificates.fence <= EXCLUDED.fence` (one row affected: written).
    async fn put_certificate_fenced(
        &self,
        name: &Domain,
        cert: &StoredCert,
        fence: Fence,
    ) -> Result<bool, StoreError>;
    /// Count of stored certificates; of those valid at `now`, the soonest expiry and how many
    /// expire before `expiring_before`; and how many have expired by `now`.
    async fn cert_summary(
        &self,
        now: SystemTime,
        expiring_before: SystemTime,
    ) -> Result<CertSummary, StoreError>;
    /// Validity of every stored certificate (for renewal scheduling).
    async fn cert_lifetimes(&self) -> Result<Vec<CertLifetime>, StoreError>;
    /// One page of stored certificates with their keys: at most `limit`, in the store's order
    /// of names, those after `after` (from the first with none). A caller reads every row once
    /// by passing the last name of each page until a page comes back short (a node's local
    /// copy of every certificate is filled this way, in the background). A row whose key does
    /// not open comes with its error, so one bad row does not stop a reader of all the others.
    async fn certificates_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<CertPage, StoreError>;
    /// A small value by key (the ACME account, …).
    async fn kv(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores a small value by key.
    async fn put_kv(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Stores `value` under `key` unless a value is stored there already; the value stored now:
    /// `value`, or the one written first (by another node at the same moment: the ACME account
    /// that every node then uses).
    async fn add_kv(&self, key: &str, value: &str) -> Result<String, StoreError>;
    /// Publishes (replaces) an ACME challenge response until `expires_at`; `name` is the
    /// HTTP-01 token or the TLS-ALPN-01 domain. Responses of different kinds never mix.
    async fn put_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        value: &str,
        expires_at: SystemTime,
    ) -> Result<(), StoreError>;
    /// A published response that has not expired at `now`.
    async fn challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<Option<String>, StoreError>;
    /// Withdraws a challenge response, and any that expired by `now`.
    async fn remove_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError>;
    /// Takes the issuance lease of `name` for `holder` until `now + ttl`, in one atomic
    /// statement: granted when nobody holds it or the holder's lease expired (`expires_at <=
    /// now`), with a fresh [`Fence`] larger than every fence handed out before (for any name),
    /// and the order URL kept with the lease ([`Store::set_lease_order`]); none while another
    /// lease (or this holder's own, under another fence) is unexpired. Two concurrent calls
    /// never both get one.
    ///
    /// PostgreSQL: `INSERT INTO leases (name, holder, fence, expires_at) VALUES ($1, $2,
    /// nextval('lease_fence'), $now + $ttl) ON CONFLICT (name) DO UPDATE SET holder =
    /// EXCLUDED.holder, fence = EXCLUDED.fence, expires_at = EXCLUDED.expires_at WHERE
    /// leases.expires_at <= $now RETURNING fence, order_url` (a conflict that fails the `WHERE`
    /// may still consume a sequence value: fences only need to grow, not be dense).
    async fn acquire_lease(
        &self,
        name: &Domain,
        holder: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError>;
    /// Extends the lease of `name` held under `fence` to `now + ttl`, only while it is unexpired
    /// at `now` (one statement: `UPDATE leases SET expires_at = $now + $ttl WHERE name = $1 AND
    /// fence = $2 AND expires_at > $now`). `false`: the lease is lost (expired, or taken over):
    /// stop before finalizing an order or writing anything.
    async fn extend_lease(
        &self,
        name: &Domain,
        fence: Fence,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Keeps `order_url` (none: forgets it) with the lease of `name` held under `fence`, while it
    /// is unexpired at `now`; `false` if the lease is lost. The URL survives the lease's release
    /// and expiry, and the next [`Store::acquire_lease`] of the name returns it.
    async fn set_lease_order(
        &self,
        name: &Domain,
        fence: Fence,
        order_url: Option<&str>,
        now: SystemTime,
    ) -> Result<bool, StoreError>;
    /// Gives up the lease of `name` held under `fence`, making it free to take at once; never
    /// someone else's (a lease taken over under a later fence is left alone, `false`). The kept
    /// order URL stays.
    async fn release_lease(&self, name: &Domain, fence: Fence) -> Result<bool, StoreError>;
    /// Takes one order from the shared budget named `budget` (one row per ACME account), as a
    /// GCRA bucket of `rate`, atomically: [`OrderTurn::Taken`], or [`OrderTurn::Wait`] with the
    /// time the next token is due or the pause ([`Store::pause_orders`]) ends, whichever is
    /// later, and then nothing changes. A budget never used is full.
    ///
    /// PostgreSQL (times as numbers): `INSERT INTO order_budgets (name, tat, paused_until)
    /// VALUES ($1, $now + $interval, 0) ON CONFLICT (name) DO UPDATE SET tat =
    /// GREATEST(order_budgets.tat, $now) + $interval WHERE GREATEST(order_budgets.tat, $now) -
    /// $now <= $tolerance AND order_budgets.paused_until <= $now RETURNING tat`; no row: read
    /// `tat` and `paused_until` to say when to come back.
    async fn take_order(
        &self,
        budget: &str,
        rate: OrderRate,
        now: SystemTime,
    ) -> Result<OrderTurn, StoreError>;
    /// No order from the budget named `budget` before `until` (the CA's `Retry-After`); an
    /// earlier time than a pause already recorded changes nothing.
    async fn pause_orders(&self, budget: &str, until: SystemTime) -> Result<(), StoreError>;
    /// All link keys.
    async fn link_keys(&self) -> Result<Vec<StoredLinkKey>, StoreError>;
    /// Adds a link key with the next id and returns it.
    async fn add_link_key(
        &self,
        secret: [u8; 32],
        created_at: SystemTime,
    ) -> Result<u16, StoreError>;
    /// Removes a link key, unless it is the last one not retired: checked and done in one step,
    /// so two nodes changing keys at once cannot leave none to seal with.
    async fn remove_link_key(&self, id: u16) -> Result<KeyChange, StoreError>;
    /// Retires a link key at `at` (it stops sealing, keeps opening), unless it is the last one
    /// not retired (in one step, as [`Store::remove_link_key`]); a key already retired keeps its
    /// first time.
    async fn retire_link_key(&self, id: u16, at: SystemTime) -> Result<KeyChange, StoreError>;

    /// The latest onboarding check report (JSON) of every domain that has one.
    ///
    /// The default keeps reports in [`Store::kv`]; stores override it to drop a report with its
    /// domain.
    async fn domain_checks(&self) -> Result<Vec<(Domain, String)>, StoreError> {
        let mut out = Vec::new();
        for d in self.domains().await? {
            if let Some(json) = self.kv(&checks_key(&d.name)).await? {
                out.push((d.name, json));
            }
        }
        Ok(out)
    }

    /// The latest onboarding check report (JSON) of `name`, if it has one (propagation: another
    /// node's checks).
    async fn domain_checks_of(&self, name: &Domain) -> Result<Option<String>, StoreError> {
        self.kv(&checks_key(name)).await
    }

    /// Stores (replaces) the latest onboarding check report (JSON) of a registered domain;
    /// `false`, and nothing stored, if it is not registered (removed while its checks ran).
    async fn put_domain_checks(&self, name: &Domain, json: &str) -> Result<bool, StoreError> {
        if self.domain(name).await?.is_none() {
            return Ok(false);
        }
        self.put_kv(&checks_key(name), json).await?;
        Ok(true)
    }
}

/// The [`Store::kv`] key of a domain's check report in the default implementation.
fn checks_key(name: &Domain) -> String {
    format!("onboarding.checks {name}")
}
