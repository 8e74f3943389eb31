//! Renewal: when a check renews, what a failing or slow renewal leaves serving, and the
//! schedule's order.

use super::*;
use crate::logged::logged_async;
use tracing::Level;

#[tokio::test]
async fn a_check_without_renewal_information_renews_only_when_the_lifetime_rule_says() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, certs, name) = registered(dir.path()).await;
    certs.resolve(&name).await.unwrap();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    // The early check every stored certificate gets after a start: the issuer offers no
    // renewal window and the certificate is young, so nothing is ordered, and the next
    // check is set by the lifetime rule.
    certs.renew(&name).await.unwrap();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    let cert = store.certificate(&name).await.unwrap().unwrap();
    let due = lock(&certs.schedule).by_name.get(&name).copied().unwrap();
    let lifetime = cert.not_after.duration_since(cert.not_before).unwrap();
    assert!(
        due > certs.clock.now() && due >= cert.not_before + lifetime / 2,
        "next check {due:?} for a certificate valid {:?}..{:?}",
        cert.not_before,
        cert.not_after
    );
}

/// `a.example.com` registered and its certificate issued, on `clock`; when it is checked next.
pub(super) async fn issued_at(
    dir: &std::path::Path,
    clock: &ManualClock,
) -> (Arc<Counting>, Arc<Certs>, Domain, SystemTime) {
    let (issuer, store, certs) = setup_at(dir, clock);
    let name = Domain::parse("a.example.com").unwrap();
    store
        .add_domain(&name, SystemTime::UNIX_EPOCH)
        .await
        .unwrap();
    certs.resolve(&name).await.unwrap();
    let next = lock(&certs.schedule).by_name.get(&name).copied().unwrap();
    (issuer, certs, name, next)
}

#[tokio::test]
async fn a_certificate_a_replaced_local_root_signed_is_renewed_at_its_first_check() {
    let dir = tempfile::tempdir().unwrap();
    let (_issuer, store, certs, name) = registered(dir.path()).await;
    certs.resolve(&name).await.unwrap();
    let old = store.certificate(&name).await.unwrap().unwrap();
    // `ca.pem` and `ca-key.pem` deleted: the restarted edge makes a new root, same store.
    let clock = ManualClock::starting_now();
    let new_dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(
        LocalCa::load_or_create(new_dir.path(), Zones::reserved(), clock.clock()).unwrap(),
    );
    let certs = certs_over(&store, ca.clone(), [name.clone()], clock.clock());
    certs.renew(&name).await.unwrap();
    let renewed = store.certificate(&name).await.unwrap().unwrap();
    assert_ne!(renewed.chain_pem, old.chain_pem);
    // The new root's own: no longer due.
    assert_eq!(ca.renewal_window(&name, &renewed).await.unwrap(), None);
}

#[tokio::test]
async fn a_renewal_check_does_not_cache_a_name_nobody_clicked() {
    let dir = tempfile::tempdir().unwrap();
    let (_issuer, _store, certs, name) = registered(dir.path()).await;
    certs.resolve(&name).await.unwrap();
    // As after a restart: stored, not in memory.
    certs.cache.invalidate(&name);
    let mut done = certs.fly(&name, Flight::Renew);
    done.wait_for(Option::is_some).await.unwrap();
    assert!(!certs.cache.contains_key(&name));
    // A handshake's flight does cache it.
    let mut done = certs.fly(&name, Flight::Obtain);
    done.wait_for(Option::is_some).await.unwrap();
    assert!(certs.cache.contains_key(&name));
}

/// Past the point a 90-day certificate issued at the start is renewed, with life left.
const RENEWAL_DUE: Duration = Duration::from_secs(65 * 24 * 3600);

/// `a.example.com` registered, issued its certificate, and the clock moved to when that is due
/// for renewal.
pub(super) struct DueForRenewal {
    pub(super) wall: ManualClock,
    pub(super) issuer: Arc<Counting>,
    pub(super) store: Arc<dyn Store>,
    pub(super) certs: Arc<Certs>,
    pub(super) name: Domain,
    pub(super) _dir: tempfile::TempDir,
}

pub(super) async fn due_for_renewal() -> DueForRenewal {
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::starting_now();
    let (issuer, store, certs) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    certs.resolve(&name).await.unwrap();
    wall.advance(RENEWAL_DUE);
    DueForRenewal {
        wall,
        issuer,
        store,
        certs,
        name,
        _dir: dir,
    }
}

/// A failed renewal backs the name off; a handshake that then misses the cache and meets a
/// store that fails once fails itself, and the next one loads the certificate still stored. It
/// was marked as having nothing stored, failing from memory until the next retry (up to a day).
#[tokio::test]
async fn a_store_blip_while_backing_off_does_not_shut_the_stored_certificate_out() {
    let DueForRenewal {
        wall,
        issuer,
        store,
        certs,
        name,
        _dir,
    } = due_for_renewal().await;
    issuer.fail.store(true, Ordering::SeqCst);
    certs.renew(&name).await.unwrap();
    assert!(record(&store, &name).await.retry_at.is_some(), "backs off");
    let blips = blips::Blips::over(store.clone());
    let blipping: Arc<dyn Store> = blips.clone();
    let restarted = Arc::new(certs_over(
        &blipping,
        issuer.clone(),
        [name.clone()],
        wall.clock(),
    ));
    restarted.restore(
        &store.domains().await.unwrap(),
        &store.cert_lifetimes().await.unwrap(),
    );
    blips.certificate.store(1, Ordering::SeqCst);
    let err = restarted.resolve(&name).await.unwrap_err();
    assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    assert_eq!(blips.certificate.load(Ordering::SeqCst), 0, "the blip came");
    restarted.resolve(&name).await.unwrap();
}

/// A failed renewal counts its name as failing until a renewal succeeds: the gauge an alert
/// reads, since failures retried a day apart leave a counter's hourly increase at zero.
#[tokio::test]
async fn a_failing_renewal_is_counted_until_one_succeeds() {
    let DueForRenewal {
        wall,
        issuer,
        certs,
        name,
        _dir,
        ..
    } = due_for_renewal().await;
    issuer.fail.store(true, Ordering::SeqCst);
    certs.renew(&name).await.unwrap();
    assert_eq!(certs.metrics.renewals_failing.get(), 1);
    issuer.fail.store(false, Ordering::SeqCst);
    certs.reset_backoff(&name).await.unwrap();
    certs.renew(&name).await.unwrap();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 3, "renewed");
    assert_eq!(certs.metrics.renewals_failing.get(), 0);
    wall.advance(RENEWAL_DUE);
    issuer.fail.store(true, Ordering::SeqCst);
    certs.renew(&name).await.unwrap();
    assert_eq!(certs.metrics.renewals_failing.get(), 1);
    certs.forget(&name);
    assert_eq!(certs.metrics.renewals_failing.get(), 0, "removed");
}

/// A check that failed on the store, before it could say whether anything is due, counts the
/// name failing; the check made again finds nothing due and counts it no longer (it stayed
/// counted until the renewal months later, the alert firing all along).
#[tokio::test]
async fn a_check_that_finds_nothing_due_no_longer_counts_the_name_failing() {
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::starting_now();
    let (issuer, store, certs) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    certs.resolve(&name).await.unwrap();
    drop(certs);
    let blips = blips::Blips::over(store.clone());
    let blipping: Arc<dyn Store> = blips.clone();
    let certs = certs_over(&blipping, issuer.clone(), [name.clone()], wall.clock());
    blips.certificate.store(1, Ordering::SeqCst);
    certs.renewal_check(&name).await.unwrap_err();
    assert_eq!(certs.metrics.renewals_failing.get(), 1);
    certs.renewal_check(&name).await.unwrap();
    assert_eq!(certs.metrics.renewals_failing.get(), 0);
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1, "nothing renewed");
}

/// A renewal that fails backs the name off for new orders, not for the certificate it keeps
/// serving: a handshake that misses the cache (a restart, a reload, another node) loads the
/// stored one. Once a name backing off is found to have none stored, its handshakes fail from
/// memory again, without a store query each.
#[tokio::test]
async fn a_failed_renewal_backs_off_orders_while_the_stored_certificate_serves() {
    let DueForRenewal {
        wall,
        issuer,
        store,
        certs,
        name,
        _dir,
    } = due_for_renewal().await;
    issuer.fail.store(true, Ordering::SeqCst);
    certs.renew(&name).await.unwrap();
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        2,
        "the renewal ordered"
    );
    assert!(
        record(&store, &name).await.retry_at.is_some(),
        "and backs off"
    );

    certs.reload().await.unwrap();
    certs.resolve(&name).await.unwrap();
    let restarted = Arc::new(certs_over(
        &store,
        issuer.clone(),
        [name.clone()],
        wall.clock(),
    ));
    restarted.restore(
        &store.domains().await.unwrap(),
        &store.cert_lifetimes().await.unwrap(),
    );
    restarted.resolve(&name).await.unwrap();
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        2,
        "no order while backing off"
    );

    // The certificate expires while its renewal still backs off (a failure another node
    // recorded, seen by a node starting now): nothing to serve, no order, and after one look
    // in the store the handshakes fail from memory.
    wall.advance(Duration::from_secs(30 * 24 * 3600));
    let failing = IssueStatus {
        last_error: record(&store, &name).await.last_error,
        failures: 4,
        retry_at: Some(wall.clock().now() + Duration::from_secs(3600)),
    };
    store.set_status(&name, &failing).await.unwrap();
    let expired = Arc::new(certs_over(
        &store,
        issuer.clone(),
        [name.clone()],
        wall.clock(),
    ));
    expired.restore(
        &store.domains().await.unwrap(),
        &store.cert_lifetimes().await.unwrap(),
    );
    let err = expired.resolve(&name).await.unwrap_err();
    assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    let queries = store.queries().get();
    for _ in 0..3 {
        let err = expired.resolve(&name).await.unwrap_err();
        assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    }
    assert_eq!(store.queries().get(), queries, "from memory");
    // The row changing without its status changing (a check's results) keeps that.
    expired.apply_status(&record(&store, &name).await);
    expired.resolve(&name).await.unwrap_err();
    assert_eq!(
        store.queries().get(),
        queries + 1,
        "the test's own read of the row only"
    );
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        2,
        "no order while backing off"
    );
}

/// A renewal whose certificate cannot be used (or stored) is a failure backed off like any
/// other, and the name is scheduled again at the retry time: the schedule had let go of it, and
/// a name nobody schedules expires unnoticed.
#[tokio::test]
async fn a_renewal_whose_certificate_cannot_be_used_backs_off() {
    let DueForRenewal {
        wall,
        issuer,
        store,
        certs,
        name,
        _dir,
    } = due_for_renewal().await;
    issuer.unusable.store(true, Ordering::SeqCst);
    lock(&certs.schedule).pop_due(wall.clock().now());
    assert!(!lock(&certs.schedule).by_name.contains_key(&name));
    let mut done = certs.fly(&name, Flight::Renew);
    done.wait_for(Option::is_some).await.unwrap();
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        2,
        "the renewal ordered"
    );
    // Backed off like a failed order (checked again every 5 minutes, each check ordered and
    // got another certificate), and scheduled for the retry time.
    let secs = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let retry_at = record(&store, &name).await.retry_at.map(secs);
    assert_eq!(retry_at, Some(secs(wall.clock().now()) + 60));
    let scheduled = lock(&certs.schedule).by_name.get(&name).copied().map(secs);
    assert_eq!(scheduled, retry_at);
    assert_eq!(
        certs.metrics.renewals.with_label_values(&["failed"]).get(),
        1
    );
}

/// A renewal that comes due while a handshake's flight for the name is in the air joins it,
/// and that flight checks no renewal (here its store read fails, so it schedules nothing
/// either): the name stays scheduled, and its renewal is checked later.
#[tokio::test]
async fn a_renewal_due_during_a_handshakes_flight_stays_scheduled() {
    let DueForRenewal {
        wall,
        issuer,
        store,
        name,
        _dir,
        ..
    } = due_for_renewal().await;
    // A node as after a restart: nothing cached, the stored certificate due.
    let blips = blips::Blips::over(store.clone());
    let blipping: Arc<dyn Store> = blips.clone();
    let certs = Arc::new(certs_over(
        &blipping,
        issuer.clone(),
        [name.clone()],
        wall.clock(),
    ));
    certs.schedule_at(&name, wall.clock().now());
    blips.certificate.store(1, Ordering::SeqCst);
    // The handshake's flight starts; the renewal comes due before it has run.
    let mut handshake = certs.fly(&name, Flight::Obtain);
    certs.start_due_renewals();
    let outcome = handshake.wait_for(Option::is_some).await.unwrap().clone();
    assert!(matches!(outcome, Some(Err(_))), "the store failed");
    assert!(
        lock(&certs.schedule).by_name.contains_key(&name),
        "still scheduled"
    );
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        1,
        "nothing renewed yet"
    );
    // When it comes due again, the renewal check runs and renews.
    wall.advance(Duration::from_secs(5 * 60));
    run_due_renewals(&certs, &name).await;
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 2, "renewed");
}

/// Starts the renewals due and waits until `name`'s has landed, without joining its flight (a
/// renewal that joins one keeps the name scheduled).
pub(super) async fn run_due_renewals(certs: &Arc<Certs>, name: &Domain) {
    certs.start_due_renewals();
    while certs.renewing(name) {
        tokio::task::yield_now().await;
    }
}

/// A renewal whose flight panics leaves the name scheduled (the schedule let go of it when the
/// renewal started): it is checked again later rather than never, to expire unrenewed.
#[tokio::test]
async fn a_renewal_that_panics_is_checked_again() {
    let DueForRenewal {
        wall,
        issuer,
        certs,
        name,
        _dir,
        ..
    } = due_for_renewal().await;
    certs.schedule_at(&name, wall.clock().now());
    issuer.panic_once.store(true, Ordering::SeqCst);
    run_due_renewals(&certs, &name).await;
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        2,
        "it ordered, and panicked"
    );
    let check_again = Duration::from_secs(5 * 60);
    assert_eq!(
        lock(&certs.schedule).by_name.get(&name).copied(),
        Some(wall.clock().now() + check_again)
    );
    wall.advance(check_again);
    run_due_renewals(&certs, &name).await;
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 3, "renewed");
}

/// A due renewal that finds the name's lease held says whose it is: this node's own (an
/// earlier attempt whose lease has not expired) is not "another node".
#[tokio::test]
async fn a_renewal_held_back_by_a_lease_says_whether_this_node_or_another_holds_it() {
    let DueForRenewal {
        wall,
        store,
        certs,
        name,
        _dir,
        ..
    } = due_for_renewal().await;
    let ttl = Duration::from_secs(60);
    // This node's id in the unit tests' claims: "node".
    let own = store
        .acquire_lease(&name, "node", wall.clock().now(), ttl)
        .await
        .unwrap()
        .unwrap();
    let (renewed, log) = logged_async(Level::INFO, certs.renew(&name)).await;
    renewed.unwrap();
    assert!(log.contains("held under this node's id"), "{log}");
    assert!(log.contains("lease_holder=node"), "{log}");
    assert!(!log.contains("another node"), "{log}");

    assert!(store.release_lease(&name, own.fence).await.unwrap());
    store
        .acquire_lease(&name, "edge-b", wall.clock().now(), ttl)
        .await
        .unwrap()
        .unwrap();
    let (renewed, log) = logged_async(Level::INFO, certs.renew(&name)).await;
    renewed.unwrap();
    assert!(log.contains("another node is renewing"), "{log}");
    assert!(log.contains("lease_holder=edge-b"), "{log}");
}

#[test]
fn schedule_pops_in_time_order() {
    let mut s = Schedule::default();
    let a = Domain::parse("a.example.com").unwrap();
    let b = Domain::parse("b.example.com").unwrap();
    let t = from_unix_secs;
    s.set(&a, t(10));
    s.set(&b, t(5));
    s.set(&a, t(20));
    assert_eq!(s.next(), Some(t(5)));
    assert_eq!(s.pop_due(t(10)), vec![b.clone()]);
    assert_eq!(s.pop_due(t(19)), Vec::<Domain>::new());
    assert_eq!(s.pop_due(t(20)), vec![a.clone()]);
    assert_eq!(s.next(), None);
    s.set(&a, t(1));
    s.remove(&a);
    assert_eq!(s.pop_due(t(100)), Vec::<Domain>::new());
}

/// A claim on a name removed since it was taken no longer holds: an order confirms it after a
/// renewal's wait for the order budget (hours, at worst) and before finalizing, so a removed
/// name gets no certificate from the CA.
#[tokio::test]
async fn a_claim_on_a_removed_name_no_longer_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (_issuer, _store, certs, name) = registered(dir.path()).await;
    let claim = certs
        .claim(&name)
        .await
        .unwrap()
        .expect("the lease is free");
    claim.confirm().await.expect("held");
    certs.policy.unregister(name.as_str()).await;
    assert!(matches!(
        claim.confirm().await,
        Err(IssueError::ClaimLost { .. })
    ));
}

/// A certificate that expired in the store (its renewal failing all along) stays on the renewal
/// schedule when another node's change makes this one read it again: it was taken off, and only
/// a handshake brought the name back.
#[tokio::test]
async fn an_expired_certificate_read_again_stays_scheduled() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (_issuer, certs, name, _) = issued_at(dir.path(), &clock).await;
    clock.advance(Duration::from_secs(91 * 86_400));
    certs.reload_name(&name).await.unwrap();
    assert!(lock(&certs.schedule).by_name.contains_key(&name));
}

/// After a start with many certificates their first checks are spread over hours, and the
/// maintenance loop wakes for each: the certificate gauges are read from the store once per
/// minute all the same, not at every wake.
#[tokio::test(start_paused = true)]
async fn the_maintenance_loop_reads_the_gauges_once_a_minute_however_often_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (_issuer, _store, certs) = setup_at(dir.path(), &clock);
    let name = Domain::parse("a.example.com").unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(certs.clone().run_maintenance(stop));
    // A check due every 250 ms for 30 s (the name has no certificate: each check finds nothing
    // to renew and leaves it unscheduled).
    for _ in 0..120 {
        certs.schedule_at(&name, clock.clock().now() + Duration::from_millis(250));
        certs.wake.notify_one();
        clock.advance(Duration::from_millis(250));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop_tx.send(true);
    running.await.unwrap();
    let scans = certs.gauges.asked.load(Ordering::SeqCst);
    assert_eq!(scans, 1, "gauge scans in 30 s: the one at the start");
}
