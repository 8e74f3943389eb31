//! Two nodes in one process: two certificate layers over ONE store, as two edges sharing a
//! database would run. What must hold: one order per name across the nodes, a lease holder that
//! stalls past its TTL writes nothing afterwards, a takeover resumes the kept order, a name in
//! backoff fails fast on both, and a certificate is renewed once, not once per node.

use std::sync::Mutex as StdMutex;

use tokio::sync::Notify;

use super::*;

const TTL: Duration = Duration::from_secs(60);

/// A CA as the nodes see it: counts new orders (an order it is asked to resume is not one),
/// keeps each new order with the claim as ACME does, optionally stalls until `stall` is
/// notified, and fails while `fail` is set.
struct FakeCa {
    ca: LocalCa,
    orders: AtomicUsize,
    resumed: StdMutex<Vec<String>>,
    fail: std::sync::atomic::AtomicBool,
    stall: Option<Arc<Notify>>,
    /// Issued certificates, in order (to tell whose certificate the store kept).
    issued: StdMutex<Vec<StoredCert>>,
}

impl FakeCa {
    fn new(dir: &std::path::Path, clock: &ManualClock, stall: Option<Arc<Notify>>) -> Arc<FakeCa> {
        Arc::new(FakeCa {
            ca: LocalCa::load_or_create(dir, Zones::reserved(), clock.clock()).unwrap(),
            orders: AtomicUsize::new(0),
            resumed: StdMutex::new(Vec::new()),
            fail: false.into(),
            stall,
            issued: StdMutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl Issuer for FakeCa {
    fn kind(&self) -> &'static str {
        "local"
    }
    async fn issue(
        &self,
        d: &Domain,
        r: Option<&StoredCert>,
        claim: &dyn OrderClaim,
    ) -> Result<StoredCert, IssueError> {
        match claim.resume() {
            Some(url) => self.resumed.lock().unwrap().push(url.to_owned()),
            None => {
                let n = self.orders.fetch_add(1, Ordering::SeqCst) + 1;
                claim.keep(&format!("https://ca.test/order/{n}")).await?;
            }
        }
        // Long enough that the other node's flight runs while this order is in the air.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(stall) = &self.stall {
            stall.notified().await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(refusal(d));
        }
        let cert = self.ca.issue(d, r, claim).await?;
        self.issued.lock().unwrap().push(cert.clone());
        Ok(cert)
    }
}

/// Node `id` over `store`, serving `a.example.com`.
fn node(store: &Arc<dyn Store>, ca: Arc<FakeCa>, id: &str, clock: &ManualClock) -> Arc<Certs> {
    let name = Domain::parse("a.example.com").unwrap();
    Arc::new(
        certs_over(store, ca, [name], clock.clock()).with_claims(ClaimSettings {
            holder: id.into(),
            ttl: TTL,
        }),
    )
}

/// One store with `a.example.com` registered, and the name.
async fn shared_store() -> (Arc<dyn Store>, Domain) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let name = Domain::parse("a.example.com").unwrap();
    store
        .add_domain(&name, SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    (store, name)
}

/// Two nodes, `edge-a` and `edge-b`, over one store with `a.example.com` registered, ordering
/// from one CA, on one clock.
struct TwoNodes {
    clock: ManualClock,
    store: Arc<dyn Store>,
    name: Domain,
    ca: Arc<FakeCa>,
    a: Arc<Certs>,
    b: Arc<Certs>,
    _dir: tempfile::TempDir,
}

async fn two_nodes() -> TwoNodes {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (store, name) = shared_store().await;
    let ca = FakeCa::new(dir.path(), &clock, None);
    let (a, b) = (
        node(&store, ca.clone(), "edge-a", &clock),
        node(&store, ca.clone(), "edge-b", &clock),
    );
    TwoNodes {
        clock,
        store,
        name,
        ca,
        a,
        b,
        _dir: dir,
    }
}

fn leaf(key: &CertifiedKey) -> Vec<u8> {
    key.cert[0].to_vec()
}

fn stored_leaf(cert: &StoredCert) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_first_handshakes_over_two_nodes_make_one_order_and_all_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (store, name) = shared_store().await;
    let ca = FakeCa::new(dir.path(), &clock, None);
    let nodes = [
        node(&store, ca.clone(), "edge-a", &clock),
        node(&store, ca.clone(), "edge-b", &clock),
    ];
    let mut handshakes = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (certs, name) = (nodes[i % 2].clone(), name.clone());
        handshakes.spawn(async move { certs.resolve(&name).await });
    }
    let mut leaves = Vec::new();
    while let Some(r) = handshakes.join_next().await {
        leaves.push(leaf(
            &r.unwrap().expect("every handshake gets the certificate"),
        ));
    }
    assert_eq!(
        ca.orders.load(Ordering::SeqCst),
        1,
        "one order for both nodes"
    );
    let stored = store.certificate(&name).await.unwrap().unwrap();
    assert_eq!(leaves.len(), 50);
    assert!(
        leaves.iter().all(|l| *l == stored_leaf(&stored)),
        "all serve the stored one"
    );
}

/// Node edge-a's order for the name, stalled until `stall` is notified; the task resolving it
/// (its leaf, or the error) is returned once edge-a's CA has the order.
async fn stalled_order(
    store: &Arc<dyn Store>,
    name: &Domain,
    ca: &Arc<FakeCa>,
    clock: &ManualClock,
) -> tokio::task::JoinHandle<Result<Vec<u8>, CertError>> {
    let stalled = node(store, ca.clone(), "edge-a", clock);
    let name = name.clone();
    let first = tokio::spawn(async move { stalled.resolve(&name).await.map(|k| leaf(&k)) });
    while ca.orders.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_holder_stalled_past_its_ttl_writes_nothing_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (store, name) = shared_store().await;
    let stall = Arc::new(Notify::new());
    let stalled_ca = FakeCa::new(dir.path(), &clock, Some(stall.clone()));
    let other_ca = FakeCa::new(dir.path(), &clock, None);
    let other = node(&store, other_ca.clone(), "edge-b", &clock);
    let first = stalled_order(&store, &name, &stalled_ca, &clock).await;
    // The holder stands still past its lease; the other node takes over and finishes.
    clock.advance(TTL + Duration::from_secs(1));
    let served = leaf(
        &other
            .resolve(&name)
            .await
            .expect("the other node takes over"),
    );
    let written = store.certificate(&name).await.unwrap().unwrap();
    assert_eq!(served, stored_leaf(&written));
    // It resumed the order the stalled holder kept with the lease, rather than placing one.
    assert_eq!(other_ca.orders.load(Ordering::SeqCst), 0);
    assert_eq!(
        *other_ca.resumed.lock().unwrap(),
        vec!["https://ca.test/order/1".to_owned()]
    );
    // The stalled holder wakes up with a certificate of its own, and writes nothing.
    stall.notify_one();
    let answer = first.await.unwrap();
    assert_eq!(
        stalled_ca.issued.lock().unwrap().len(),
        1,
        "it did finish its order"
    );
    let after = store.certificate(&name).await.unwrap().unwrap();
    assert_eq!(
        after, written,
        "the store still holds the other node's certificate"
    );
    if let Ok(leaf) = answer {
        assert_eq!(
            leaf, served,
            "its handshakes got the certificate the store holds"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_holder_stalled_past_its_ttl_records_no_failure_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (store, name) = shared_store().await;
    let stall = Arc::new(Notify::new());
    let stalled_ca = FakeCa::new(dir.path(), &clock, Some(stall.clone()));
    let other = node(
        &store,
        FakeCa::new(dir.path(), &clock, None),
        "edge-b",
        &clock,
    );
    let first = stalled_order(&store, &name, &stalled_ca, &clock).await;
    clock.advance(TTL + Duration::from_secs(1));
    other
        .resolve(&name)
        .await
        .expect("the other node takes over");
    let before = store.domain(&name).await.unwrap().unwrap();
    // The stalled holder wakes up to an order that failed (as the order the other node
    // finished looks to it): it records no failure, so the name does not back off.
    stalled_ca.fail.store(true, Ordering::SeqCst);
    stall.notify_one();
    let _ = first.await.unwrap();
    let after = store.domain(&name).await.unwrap().unwrap();
    assert_eq!(after.failures, 0, "{after:?}");
    assert_eq!(after.last_error, None, "{after:?}");
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_name_in_backoff_fails_fast_on_both_nodes() {
    let TwoNodes { ca, a, b, name, .. } = two_nodes().await;
    ca.fail.store(true, Ordering::SeqCst);
    let err = a.resolve(&name).await.expect_err("the CA refuses");
    assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    for _ in 0..2 {
        let err = b.resolve(&name).await.expect_err("backing off");
        assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    }
    assert_eq!(
        ca.orders.load(Ordering::SeqCst),
        1,
        "no order from the other node"
    );
    assert!(ca.resumed.lock().unwrap().is_empty(), "nor a resumed one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_due_certificate_is_renewed_once_not_once_per_node() {
    let TwoNodes {
        clock,
        store,
        name,
        ca,
        a,
        b,
        _dir,
    } = two_nodes().await;
    a.resolve(&name).await.unwrap();
    let first = store.certificate(&name).await.unwrap().unwrap();
    // Past the latest point the lifetime rule picks: due on both nodes.
    clock.advance(Duration::from_secs(70 * 24 * 3600));
    let (ra, rb) = tokio::join!(a.renew(&name), b.renew(&name));
    ra.unwrap();
    rb.unwrap();
    // A node that checks again afterwards finds the renewed one.
    b.renew(&name).await.unwrap();
    assert_eq!(
        ca.orders.load(Ordering::SeqCst),
        2,
        "the first order and one renewal"
    );
    let renewed = store.certificate(&name).await.unwrap().unwrap();
    assert!(renewed.not_after > first.not_after);
}

/// A certificate another node issued is renewed by this one once that node is gone: its
/// change puts it on this node's schedule, as a start does (only the issuing node had it
/// scheduled; scaled away, nobody renewed it until a restart).
#[tokio::test]
async fn a_certificate_another_node_issued_is_on_this_ones_renewal_schedule() {
    let TwoNodes {
        clock,
        store,
        name,
        ca,
        a,
        b,
        ..
    } = two_nodes().await;
    b.resolve(&name).await.unwrap();
    drop(b);
    a.reload_name(&name).await.unwrap();
    assert!(
        !a.cache.contains_key(&name),
        "nothing loaded before a click"
    );
    let first = store.certificate(&name).await.unwrap().unwrap();
    clock.advance(Duration::from_secs(70 * 24 * 3600));
    renewal::run_due_renewals(&a, &name).await;
    assert_eq!(ca.orders.load(Ordering::SeqCst), 2, "renewed on a");
    let renewed = store.certificate(&name).await.unwrap().unwrap();
    assert!(renewed.not_after > first.not_after);
}

/// A renewal that failed on one node and succeeded on another no longer counts as failing on
/// the first once the certificate's change reaches it, cached there or not (one not cached
/// stayed counted until its own renewal months later).
#[tokio::test]
async fn a_renewal_made_by_another_node_ends_this_ones_failing_count() {
    let TwoNodes {
        clock,
        store,
        name,
        ca,
        a,
        b,
        ..
    } = two_nodes().await;
    a.resolve(&name).await.unwrap();
    let first = store.certificate(&name).await.unwrap().unwrap();
    clock.advance(Duration::from_secs(70 * 24 * 3600));
    ca.fail.store(true, Ordering::SeqCst);
    a.renew(&name).await.unwrap();
    assert_eq!(a.metrics.renewals_failing.get(), 1);
    ca.fail.store(false, Ordering::SeqCst);
    b.reset_backoff(&name).await.unwrap();
    b.renew(&name).await.unwrap();
    let renewed = store.certificate(&name).await.unwrap().unwrap();
    assert!(renewed.not_after > first.not_after, "renewed on b");
    let orders = ca.orders.load(Ordering::SeqCst);
    // The change reaches `a`, which no longer caches the name (evicted, or never clicked).
    a.cache.invalidate(&name);
    a.reload_name(&name).await.unwrap();
    renewal::run_due_renewals(&a, &name).await;
    assert_eq!(a.metrics.renewals_failing.get(), 0);
    assert_eq!(
        ca.orders.load(Ordering::SeqCst),
        orders,
        "nothing ordered on a"
    );
}

/// One node over a store with blips ([`blips::Blips`]), `a.example.com` registered.
struct BlippingNode {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    /// The store under the blips.
    store: Arc<dyn Store>,
    name: Domain,
    blips: Arc<blips::Blips>,
    ca: Arc<FakeCa>,
    node: Arc<Certs>,
}

async fn blipping_node() -> BlippingNode {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (store, name) = shared_store().await;
    let blips = blips::Blips::over(store.clone());
    let blipping: Arc<dyn Store> = blips.clone();
    let ca = FakeCa::new(dir.path(), &clock, None);
    let node = node(&blipping, ca.clone(), "edge-a", &clock);
    BlippingNode {
        _dir: dir,
        clock,
        store,
        name,
        blips,
        ca,
        node,
    }
}

/// A store that blips once the CA has issued (`blips` say where and how often): the
/// certificate is stored under its fence all the same, not thrown away and bought again.
async fn issued_through_blips(
    blips: impl Fn(&blips::Blips) -> &std::sync::atomic::AtomicU32,
    times: u32,
) {
    let n = blipping_node().await;
    blips(&n.blips).store(times, Ordering::SeqCst);
    let served = n
        .node
        .resolve(&n.name)
        .await
        .expect("the certificate is stored");
    assert_eq!(blips(&n.blips).load(Ordering::SeqCst), 0, "the blips came");
    assert_eq!(n.ca.issued.lock().unwrap().len(), 1, "issued once");
    assert!(n.ca.resumed.lock().unwrap().is_empty(), "nor resumed");
    let stored = n.store.certificate(&n.name).await.unwrap().unwrap();
    assert_eq!(leaf(&served), stored_leaf(&stored));
}

/// A store that fails to confirm the lease once the CA has issued (a pool's wait timing out)
/// says nothing of the lease: the certificate is stored under its fence.
#[tokio::test]
async fn a_store_blip_after_the_ca_issued_keeps_the_certificate() {
    issued_through_blips(|b| &b.extend_lease, 1).await;
}

/// The store does not answer the write of an issued certificate (a restart, a lock held past
/// `lock_timeout`): the write is tried again under the fence.
#[tokio::test]
async fn an_issued_certificate_the_store_did_not_take_at_once_is_written_again() {
    issued_through_blips(|b| &b.put_fenced, 2).await;
}

/// A node about to take a name's lease while its holder fails the order: the holder records the
/// failure, then frees the lease, and the node that takes it reads the failure under it rather
/// than ordering again at once (a second failed validation at the CA).
#[tokio::test]
async fn a_lease_freed_after_a_failure_is_taken_without_ordering_again() {
    let n = blipping_node().await;
    n.blips.stall_acquire.arm();
    let flight = tokio::spawn({
        let (node, name) = (n.node.clone(), n.name.clone());
        async move { node.resolve(&name).await.map(|_| ()) }
    });
    // The node found no failure and is on its way to the lease; meanwhile the holder's order
    // failed.
    n.blips.stall_acquire.held().await;
    let failure = IssueError::Refused {
        domain: n.name.clone(),
        problem_type: Some("urn:ietf:params:acme:error:connection".into()),
        detail: "connection refused".into(),
    }
    .failure();
    let status = IssueStatus {
        last_error: Some(failure),
        failures: 1,
        retry_at: Some(n.clock.clock().now() + Duration::from_secs(60)),
    };
    n.store.set_status(&n.name, &status).await.unwrap();
    n.blips.stall_acquire.release();
    let answer = flight.await.unwrap();
    assert!(answer.is_err(), "served {answer:?}");
    assert!(n.ca.issued.lock().unwrap().is_empty(), "ordered again");
}

/// Change propagation hands every node the certificates written, its own included: a node
/// keeps what it has cached when the stored certificate is the same (no second build of the
/// key), and takes the other node's renewal.
#[tokio::test]
async fn a_propagated_certificate_replaces_the_cached_one_only_when_it_differs() {
    let TwoNodes {
        clock,
        name,
        a,
        b,
        _dir,
        ..
    } = two_nodes().await;
    a.resolve(&name).await.unwrap();
    b.resolve(&name).await.unwrap();
    let cached = |certs: &Certs| certs.cache.get(&name).unwrap().key;
    let (a_first, b_first) = (cached(&a), cached(&b));
    a.reload_name(&name).await.unwrap();
    b.reload_name(&name).await.unwrap();
    assert!(Arc::ptr_eq(&cached(&a), &a_first), "rebuilt its own");
    assert!(Arc::ptr_eq(&cached(&b), &b_first), "rebuilt the same");

    clock.advance(Duration::from_secs(70 * 24 * 3600));
    let mut renewal = a.fly(&name, Flight::Renew);
    let renewed = renewal.wait_for(Option::is_some).await.unwrap().clone();
    assert!(matches!(renewed, Some(Ok(_))));
    let a_renewed = cached(&a);
    assert!(!Arc::ptr_eq(&a_renewed, &a_first));
    a.reload_name(&name).await.unwrap();
    assert!(
        Arc::ptr_eq(&cached(&a), &a_renewed),
        "rebuilt its own renewal"
    );
    b.reload_name(&name).await.unwrap();
    assert!(!Arc::ptr_eq(&cached(&b), &b_first), "kept the old one");
    assert_eq!(cached(&b).cert, a_renewed.cert);
}

/// A store read that fails right after the name's lease was taken (a look for a certificate the
/// previous holder may have stored meanwhile) frees the lease at once: held to its TTL, it
/// would keep every node's order for the name waiting.
#[tokio::test]
async fn a_store_read_that_fails_after_the_claim_frees_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (store, name) = shared_store().await;
    let blips = blips::Blips::over(store.clone());
    // The flight's first read finds nothing; the one after the claim fails.
    blips.certificate_after.store(1, Ordering::SeqCst);
    blips.certificate.store(1, Ordering::SeqCst);
    let blipping: Arc<dyn Store> = blips.clone();
    let ca = FakeCa::new(dir.path(), &clock, None);
    let a = node(&blipping, ca.clone(), "edge-a", &clock);
    let err = a.resolve(&name).await.expect_err("the store failed");
    assert!(matches!(err, CertError::Unavailable { .. }), "{err}");
    assert_eq!(
        blips.certificate.load(Ordering::SeqCst),
        0,
        "the read failed"
    );
    let taken = store
        .acquire_lease(&name, "edge-b", clock.clock().now(), TTL)
        .await
        .unwrap();
    assert!(taken.is_some(), "the lease was left held");
    assert_eq!(ca.orders.load(Ordering::SeqCst), 0);
}
