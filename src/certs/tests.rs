//! Tests of the certificate layer over a real SQLite store and the built-in CA.

use super::*;
use crate::acme::RateLimit;
use crate::clock::{ManualClock, from_unix_secs};
use crate::domain::Zones;
use crate::issuer::{IssueError, LocalCa, OrderClaim, RenewalWindow};
use crate::store::blips;
use crate::store::{
    AcmeProblem, FailureKind, IssueStatus, Origin, RateLimitScope, SqliteStore, StoredCert,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

mod ari;
mod backing_off;
mod cluster;
mod held;
mod in_the_air;
mod renewal;
mod stalled;

/// Counts issuances; fails while `fail` is set; a renewal never ends while `stall_renewals` is.
struct Counting {
    ca: LocalCa,
    calls: AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
    stall_renewals: std::sync::atomic::AtomicBool,
    /// A stalled renewal says it waits for the order budget ([`OrderClaim::queued`]).
    queue_renewals: std::sync::atomic::AtomicBool,
    /// Hands back a certificate whose chain does not parse.
    unusable: std::sync::atomic::AtomicBool,
    /// Finds the account's order budget spent until then.
    budget_spent_until: Mutex<Option<SystemTime>>,
    /// Meets this rate limit of the CA, which allows orders again then.
    rate_limited: Mutex<Option<(RateLimit, SystemTime)>>,
    /// The next order panics (a bug in the issuer or what it calls).
    panic_once: std::sync::atomic::AtomicBool,
    /// Runs once while the next order is in the air (the domain removed meanwhile).
    during_next_order: Mutex<Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>>,
    /// What the CA says of renewal windows: none offered (`None`), this window, or a failure.
    renewal_info: Mutex<Option<Result<RenewalWindow, ()>>>,
}

impl Counting {
    /// Issuing with `ca`, each setting off.
    fn over(ca: LocalCa) -> Counting {
        Counting {
            ca,
            calls: AtomicUsize::new(0),
            fail: false.into(),
            stall_renewals: false.into(),
            queue_renewals: false.into(),
            unusable: false.into(),
            budget_spent_until: Mutex::new(None),
            rate_limited: Mutex::new(None),
            panic_once: false.into(),
            during_next_order: Mutex::new(None),
            renewal_info: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Issuer for Counting {
    fn kind(&self) -> &'static str {
        "local"
    }
    async fn issue(
        &self,
        d: &Domain,
        r: Option<&StoredCert>,
        claim: &dyn OrderClaim,
    ) -> Result<StoredCert, IssueError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if self.panic_once.swap(false, Ordering::SeqCst) {
            panic!("the issuer's bug");
        }
        if r.is_some() && self.stall_renewals.load(Ordering::SeqCst) {
            // A CA that never answers, or a rate budget hours away.
            claim.queued(self.queue_renewals.load(Ordering::SeqCst));
            std::future::pending::<()>().await;
        }
        let during = lock(&self.during_next_order).take();
        if let Some(during) = during {
            during.await;
        }
        if let Some(next) = *lock(&self.budget_spent_until) {
            return Err(IssueError::OrderBudget {
                domain: d.clone(),
                next,
            });
        }
        if let Some((limit, until)) = *lock(&self.rate_limited) {
            return Err(IssueError::RateLimited {
                domain: d.clone(),
                limit,
                until: Some(until),
                problem_type: Some("urn:ietf:params:acme:error:rateLimited".into()),
                detail: "too many".into(),
            });
        }
        if self.unusable.load(Ordering::SeqCst) {
            let mut cert = self.ca.issue(d, r, claim).await?;
            cert.chain_pem = "not a certificate".into();
            return Ok(cert);
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(refusal(d));
        }
        self.ca.issue(d, r, claim).await
    }
    async fn renewal_window(
        &self,
        d: &Domain,
        _cert: &StoredCert,
    ) -> Result<Option<RenewalWindow>, IssueError> {
        match *lock(&self.renewal_info) {
            None => Ok(None),
            Some(Ok(window)) => Ok(Some(window)),
            Some(Err(())) => Err(refusal(d)),
        }
    }
}

/// The refusal the fake CAs answer while failing: a CA's problem, so the name backs off.
fn refusal(d: &Domain) -> IssueError {
    IssueError::Refused {
        domain: d.clone(),
        problem_type: Some("urn:ietf:params:acme:error:rejectedIdentifier".into()),
        detail: "policy forbids issuing for name".into(),
    }
}

/// The layer serving `a.example.com` on a clock that stands still unless `clock` moves it.
fn setup_at(
    dir: &std::path::Path,
    clock: &ManualClock,
) -> (Arc<Counting>, Arc<dyn Store>, Arc<Certs>) {
    let issuer = Arc::new(Counting::over(
        LocalCa::load_or_create(dir, Zones::reserved(), clock.clock()).unwrap(),
    ));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let certs = certs_over(
        &store,
        issuer.clone(),
        [Domain::parse("a.example.com").unwrap()],
        clock.clock(),
    );
    (issuer, store, Arc::new(certs))
}

fn setup(dir: &std::path::Path) -> (Arc<Counting>, Arc<dyn Store>, Arc<Certs>) {
    setup_at(dir, &ManualClock::starting_now())
}

/// A certificate layer over `store` and `issuer` serving `names`, as a (re)start makes it.
pub(in crate::certs) fn certs_over(
    store: &Arc<dyn Store>,
    issuer: Arc<dyn Issuer>,
    names: impl IntoIterator<Item = Domain>,
    clock: Clock,
) -> Certs {
    Certs::for_tests(
        store.clone(),
        issuer,
        Arc::new(Policy::new(names, None)),
        clock,
    )
}

/// [`setup`] with `a.example.com` registered in the store (the policy already serves it).
async fn registered(dir: &std::path::Path) -> (Arc<Counting>, Arc<dyn Store>, Arc<Certs>, Domain) {
    let (issuer, store, certs) = setup(dir);
    let name = Domain::parse("a.example.com").unwrap();
    store
        .add_domain(&name, SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    (issuer, store, certs, name)
}

async fn record(store: &Arc<dyn Store>, name: &Domain) -> DomainRecord {
    store.domain(name).await.unwrap().unwrap()
}

/// The schedule keys `name` by the policy's copy of it (one allocation per name), on both sides.
fn assert_scheduled_under_the_policys_name(certs: &Certs, name: &Domain) {
    let policys = certs.policy.registered_name(name.as_str()).unwrap();
    assert!(
        !std::ptr::eq(policys.as_str(), name.as_str()),
        "the test's name must be a separate copy"
    );
    let schedule = lock(&certs.schedule);
    let (by_name, at) = schedule.by_name.get_key_value(name).unwrap();
    assert!(
        std::ptr::eq(by_name.as_str(), policys.as_str()),
        "a copy in the map by name"
    );
    let by_time = schedule.by_time.get(&(*at, name.clone())).unwrap();
    assert!(
        std::ptr::eq(by_time.1.as_str(), policys.as_str()),
        "a copy in the set by time"
    );
}

#[tokio::test]
async fn the_renewal_schedule_keys_by_the_policys_copy_of_each_name() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store, certs, name) = registered(dir.path()).await;
    // Issued on a handshake whose name was parsed apart from the policy's.
    certs.resolve(&name).await.unwrap();
    assert_scheduled_under_the_policys_name(&certs, &name);
    // Scheduled at start from the stored lifetimes, which are parsed apart too.
    let fresh = certs_over(
        &store,
        certs.issuer.clone(),
        [Domain::parse("a.example.com").unwrap()],
        certs.clock.clone(),
    );
    fresh.restore(
        &store.domains().await.unwrap(),
        &store.cert_lifetimes().await.unwrap(),
    );
    assert_scheduled_under_the_policys_name(&fresh, &name);
}

#[tokio::test]
async fn concurrent_misses_share_one_issuance() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, certs, name) = registered(dir.path()).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let certs = certs.clone();
            let name = name.clone();
            tokio::spawn(async move { certs.resolve(&name).await.map(|_| ()) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    assert!(store.certificate(&name).await.unwrap().is_some());
    let status = certs.status(&record(&store, &name).await).await.unwrap();
    assert_eq!(status.status, "valid");
    assert!(status.next_renewal.is_some());
}

/// A flight whose task panics still lands: its waiters get an error (they used to wait on the
/// dead one's channel for good). The name then backs off as after a failed order, so a panic on
/// every attempt is not an order on every handshake; once the backoff ends, the next handshake
/// orders again.
#[tokio::test]
async fn a_flight_that_panics_fails_its_waiters_and_backs_the_name_off() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (issuer, store, certs) = setup_at(dir.path(), &clock);
    let name = Domain::parse("a.example.com").unwrap();
    store
        .add_domain(&name, SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    issuer.panic_once.store(true, Ordering::SeqCst);
    let failed = certs.resolve(&name).await.map(|_| ());
    assert!(
        matches!(&failed, Err(CertError::Unavailable { source, .. }) if matches!(**source, LoadError::Abandoned)),
        "{failed:?}"
    );
    assert!(lock(&certs.inflight).is_empty());

    let again = certs.resolve(&name).await.map(|_| ());
    assert!(
        matches!(&again, Err(CertError::BackingOff { .. })),
        "{again:?}"
    );
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    // Recorded in the store by a task of its own.
    let mut recorded = record(&store, &name).await;
    for _ in 0..1000 {
        if recorded.last_error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        recorded = record(&store, &name).await;
    }
    assert_eq!(
        recorded.last_error.map(|e| e.kind),
        Some(FailureKind::Local)
    );
    assert_eq!(recorded.failures, 1);

    clock.advance(schedule::backoff(1) + Duration::from_secs(1));
    certs.resolve(&name).await.unwrap();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_issuances_each_return_with_gauges_counting_their_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<Domain> = (0..24)
        .map(|i| Domain::parse(&format!("n{i}.example.com")).unwrap())
        .collect();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    for name in &names {
        store
            .add_domain(name, SystemTime::UNIX_EPOCH)
            .await
            .unwrap();
    }
    let clock = ManualClock::starting_now().clock();
    let ca =
        Arc::new(LocalCa::load_or_create(dir.path(), Zones::reserved(), clock.clone()).unwrap());
    let certs = Arc::new(certs_over(&store, ca, names.clone(), clock));
    let mut tasks = tokio::task::JoinSet::new();
    for name in names.clone() {
        let certs = certs.clone();
        tasks.spawn(async move { certs.resolve(&name).await.map(drop) });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    // Each issuance returned only after a scan that saw its certificate.
    assert_eq!(certs.metrics.certs_held.get(), 24);
    assert_eq!(certs.gauges.asked.load(Ordering::SeqCst), 24);
    assert_eq!(certs.gauges.covered.load(Ordering::SeqCst), 24);
}

/// `(hit, miss)` of `clickedge_certificate_lookups_total`.
fn lookups(certs: &Certs) -> (u64, u64) {
    (
        certs.metrics.cert_lookup_hits.get(),
        certs.metrics.cert_lookup_misses.get(),
    )
}

#[tokio::test]
async fn lookups_count_a_miss_per_flight_and_a_hit_per_cached_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, certs, name) = registered(dir.path()).await;
    certs.resolve(&name).await.unwrap();
    assert_eq!(lookups(&certs), (0, 1), "issued: a miss");
    certs.resolve(&name).await.unwrap();
    certs.resolve(&name).await.unwrap();
    assert_eq!(lookups(&certs), (2, 1), "then served from memory");

    // A restart (cold cache) loads the stored certificate: a miss, no issuance.
    let cold = Arc::new(certs_over(
        &store,
        issuer.clone(),
        [name.clone()],
        certs.clock.clone(),
    ));
    cold.resolve(&name).await.unwrap();
    cold.resolve(&name).await.unwrap();
    assert_eq!(lookups(&cold), (1, 1));
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);

    // A refused name looks nothing up.
    let other = Domain::parse("b.example.com").unwrap();
    assert!(cold.resolve(&other).await.is_err());
    assert_eq!(lookups(&cold), (1, 1));
}

#[tokio::test]
async fn unregistered_names_are_refused_without_issuing() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, _store, certs) = setup(dir.path());
    let other = Domain::parse("b.example.com").unwrap();
    assert!(matches!(
        certs.resolve(&other).await,
        Err(CertError::NotServed(_))
    ));
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 0);
}

/// A name removed while its first order is in the air gets nothing stored, and its flight
/// ends there instead of ordering again until the handshake's timeout.
#[tokio::test]
async fn a_name_removed_while_its_order_runs_gets_nothing_stored_and_no_second_order() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, certs, name) = registered(dir.path()).await;
    let removal = {
        let (store, policy, name) = (store.clone(), certs.policy.clone(), name.clone());
        async move {
            store.remove_domain(&name).await.unwrap();
            policy.unregister(name.as_str()).await;
        }
    };
    *lock(&issuer.during_next_order) = Some(Box::pin(removal));
    let err = certs.resolve(&name).await.unwrap_err();
    assert!(matches!(err, CertError::NotServed(_)), "{err}");
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.certificate(&name).await.unwrap(), None);
}

/// Plain HTTP asks per request whether a name has a valid certificate: a name without one costs
/// one store read per 10 s, not one per request, and one found in the store is cached.
#[tokio::test]
async fn has_valid_reads_the_store_once_per_name_and_interval() {
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::new(from_unix_secs(1_800_000_000));
    let (_issuer, store, certs) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    let queries = store.queries().get();
    for _ in 0..5 {
        assert!(!certs.has_valid(&name).await);
    }
    assert_eq!(
        store.queries().get(),
        queries + 1,
        "one read for five requests"
    );
    wall.advance(Duration::from_secs(10));
    assert!(!certs.has_valid(&name).await);
    assert_eq!(store.queries().get(), queries + 2, "read again after 10 s");

    // Issued (here, as by another node): found at the next read, then held in memory.
    let other = certs_over(&store, certs.issuer.clone(), [name.clone()], wall.clock());
    Arc::new(other).resolve(&name).await.unwrap();
    wall.advance(Duration::from_secs(10));
    assert!(certs.has_valid(&name).await);
    let queries = store.queries().get();
    assert!(certs.has_valid(&name).await);
    assert_eq!(store.queries().get(), queries, "cached");
}

/// A stored key that is not the leaf's (a row written wrong, a backup restored half) is refused
/// as unusable rather than served to fail every handshake at the client, and replaced.
#[tokio::test]
async fn a_stored_key_that_is_not_the_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, certs, name) = registered(dir.path()).await;
    certs.resolve(&name).await.unwrap();
    let stored = store.certificate(&name).await.unwrap().unwrap();
    assert!(certs.entry(&stored).is_ok());
    let mixed = StoredCert {
        key_pem: rcgen::KeyPair::generate().unwrap().serialize_pem(),
        ..stored
    };
    let err = certs.entry(&mixed).map(drop).unwrap_err();
    assert!(matches!(err, KeyError::Unusable(_)), "{err:?}");
    // Stored so, it is nothing usable: no redirect to HTTPS for it, and a handshake orders a
    // new certificate (every handshake failed until it expired).
    store.put_certificate(&name, &mixed).await.unwrap();
    let fresh = Arc::new(certs_over(
        &store,
        issuer.clone(),
        [name.clone()],
        certs.clock.clone(),
    ));
    assert!(!fresh.has_valid(&name).await);
    let calls = issuer.calls.load(Ordering::SeqCst);
    fresh.resolve(&name).await.unwrap();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), calls + 1);
    let now = store.certificate(&name).await.unwrap().unwrap();
    assert!(fresh.entry(&now).is_ok());
}

/// A plain-HTTP request that finds a certificate another node issued caches it, and schedules
/// its renewal: the name's handshakes then hit the cache and never load it (which schedules), so
/// only the node that issued it would have renewed it.
#[tokio::test]
async fn a_certificate_found_by_a_plain_http_request_is_scheduled_for_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, first, name) = registered(dir.path()).await;
    first.resolve(&name).await.unwrap();
    let other = certs_over(&store, issuer, [name.clone()], first.clock.clone());
    assert!(other.has_valid(&name).await);
    assert!(other.cache.contains_key(&name));
    assert!(lock(&other.schedule).by_name.contains_key(&name));
}
