//! Backing off after failed orders: a CA's refusal, the clock passing the retry time, the
//! account's order budget, a CA's rate limit, and a name `tls.ask` approved.

use super::*;

#[tokio::test]
async fn a_failure_backs_off_instead_of_ordering_again() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, certs, name) = registered(dir.path()).await;
    issuer.fail.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        let err = certs.resolve(&name).await.unwrap_err();
        assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
        assert!(err.to_string().contains("rejectedIdentifier"), "{err}");
    }
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    let rec = record(&store, &name).await;
    assert_eq!(rec.failures, 1);
    assert!(rec.retry_at.unwrap() >= certs.clock.now() + Duration::from_secs(59));
    assert_eq!(
        rec.last_error.as_ref().unwrap().kind,
        FailureKind::Problem(AcmeProblem::RejectedIdentifier),
        "the kind is recorded as data"
    );
    let status = certs.status(&rec).await.unwrap();
    assert_eq!(status.status, "failed");
    assert!(status.last_error.unwrap().detail.contains("policy forbids"));

    // Backoff survives a restart of the certificate layer.
    let (_, _, fresh) = {
        let issuer2 = issuer.clone();
        let c = certs_over(&store, issuer2.clone(), [name.clone()], certs.clock.clone());
        c.restore(&store.domains().await.unwrap(), &[]);
        (issuer2, store.clone(), Arc::new(c))
    };
    assert!(fresh.resolve(&name).await.is_err());
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);

    // Clearing the backoff lets the next handshake order again.
    issuer.fail.store(false, Ordering::SeqCst);
    certs.reset_backoff(&name).await.unwrap();
    certs.resolve(&name).await.unwrap();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        record(&store, &name).await,
        DomainRecord {
            name: name.clone(),
            origin: Origin::Admin,
            created_at: SystemTime::UNIX_EPOCH,
            last_error: None,
            failures: 0,
            retry_at: None,
            fallback_url: None,
        }
    );
}

/// A reset lets the next handshake order at once, but a failure after it waits as the next in
/// the row would: resets (a customer's fix seen by the checks, an add again) cannot hand out
/// quick retries into Let's Encrypt's 5 failed validations per name an hour.
#[tokio::test]
async fn a_failure_after_a_reset_waits_as_the_next_in_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::starting_now();
    let (issuer, store, certs) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    issuer.fail.store(true, Ordering::SeqCst);
    for failures in 1..=2 {
        certs.reset_backoff(&name).await.unwrap();
        certs.resolve(&name).await.unwrap_err();
        assert_eq!(issuer.calls.load(Ordering::SeqCst), failures);
    }
    let rec = record(&store, &name).await;
    assert_eq!((rec.failures, rec.last_error.is_some()), (2, true));
    certs.reset_backoff(&name).await.unwrap();
    let rec = record(&store, &name).await;
    assert_eq!(
        (rec.failures, rec.retry_at, &rec.last_error),
        (2, None, &None)
    );
    assert_eq!(certs.status(&rec).await.unwrap().status, "none");
    certs.resolve(&name).await.unwrap_err();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 3, "ordered at once");
    let rec = record(&store, &name).await;
    assert_eq!(rec.failures, 3);
    assert!(rec.retry_at.unwrap() >= wall.clock().now() + schedule::FAILING_FLOOR);
}

#[tokio::test]
async fn a_backoff_ends_when_the_clock_passes_its_retry_time() {
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::starting_now();
    let (issuer, store, certs) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    issuer.fail.store(true, Ordering::SeqCst);
    assert!(certs.resolve(&name).await.is_err());
    // The backoff after a first failure is one minute (then 10 min, 100 min, daily).
    wall.advance(Duration::from_secs(59));
    let err = certs.resolve(&name).await.unwrap_err();
    assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    wall.advance(Duration::from_secs(1));
    assert!(certs.resolve(&name).await.is_err());
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 2, "ordered again");
    let rec = record(&store, &name).await;
    assert_eq!(rec.failures, 2);
    let second = rec.retry_at.unwrap().duration_since(wall.clock().now());
    assert!(
        second.unwrap() > Duration::from_secs(599),
        "ten minutes after the second"
    );
}

/// A first order that finds the account's order budget spent waits for the budget, without a
/// failure of the name counted: the backoff does not grow for it (1 min, 10 min, 100 min, then
/// daily would leave the name dark long after the budget came back).
#[tokio::test]
async fn a_spent_order_budget_holds_a_name_back_until_it_refills_without_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    // Whole seconds, as the store keeps times.
    let wall = ManualClock::new(from_unix_secs(1_800_000_000));
    let (issuer, store, certs) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    for _ in 0..3 {
        let next = wall.clock().now() + Duration::from_secs(40);
        *lock(&issuer.budget_spent_until) = Some(next);
        let err = certs.resolve(&name).await.unwrap_err();
        assert!(
            matches!(err, CertError::BackingOff { retry_at, .. } if retry_at == next),
            "{err}"
        );
        let rec = record(&store, &name).await;
        assert_eq!((rec.failures, rec.retry_at), (0, Some(next)));
        assert!(rec.last_error.unwrap().detail.contains("order budget"));
        wall.advance(Duration::from_secs(40));
    }
    *lock(&issuer.budget_spent_until) = None;
    certs.resolve(&name).await.unwrap();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 4);
}

/// A renewal that finds the account's order budget spent is rescheduled for the budget's turn,
/// and is no failed renewal: neither counted nor among the renewals failing (alerts fire on
/// those), and the name's failures do not grow.
#[tokio::test]
async fn a_renewal_waiting_for_the_order_budget_is_not_a_failed_renewal() {
    let renewal::DueForRenewal {
        wall,
        issuer,
        store,
        certs,
        name,
        _dir,
    } = renewal::due_for_renewal().await;
    let next = wall.clock().now() + Duration::from_secs(600);
    *lock(&issuer.budget_spent_until) = Some(next);
    certs
        .renew(&name)
        .await
        .expect("the current certificate serves");
    assert_eq!(
        certs.metrics.renewals.with_label_values(&["failed"]).get(),
        0
    );
    assert_eq!(certs.metrics.renewals_failing.get(), 0);
    assert_eq!(record(&store, &name).await.failures, 0);
    assert_eq!(lock(&certs.schedule).by_name.get(&name), Some(&next));
}

/// A rate limit of the name's own (here the duplicate certificate limit, two hours away) pauses
/// that name until the time the CA named, not the first minute of its backoff, and counts as
/// its failure; one of the whole account pauses it until then without a failure of its own.
#[tokio::test]
async fn a_ca_rate_limit_pauses_the_name_until_the_cas_time_and_says_whose_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::new(from_unix_secs(1_800_000_000));
    let (issuer, store, certs) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    let until = wall.clock().now() + Duration::from_secs(7200);
    *lock(&issuer.rate_limited) = Some((RateLimit::ExactSet, until));
    let err = certs.resolve(&name).await.unwrap_err();
    assert!(
        matches!(err, CertError::BackingOff { retry_at, .. } if retry_at == until),
        "{err}"
    );
    let rec = record(&store, &name).await;
    assert_eq!((rec.failures, rec.retry_at), (1, Some(until)));
    let last = rec.last_error.unwrap();
    assert_eq!(last.kind, FailureKind::RateLimited(RateLimitScope::Name));
    assert!(
        last.detail
            .contains("pauses orders for a.example.com until"),
        "{}",
        last.detail
    );
    // Past the first minute of a backoff, and a second short of the CA's time: no order.
    wall.advance(Duration::from_secs(7199));
    assert!(certs.resolve(&name).await.is_err());
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);

    wall.advance(Duration::from_secs(1));
    let until = wall.clock().now() + Duration::from_secs(300);
    *lock(&issuer.rate_limited) = Some((RateLimit::NewOrders, until));
    let err = certs.resolve(&name).await.unwrap_err();
    assert!(
        matches!(err, CertError::BackingOff { retry_at, .. } if retry_at == until),
        "{err}"
    );
    let rec = record(&store, &name).await;
    assert_eq!(
        (rec.failures, rec.retry_at),
        (1, Some(until)),
        "not one more"
    );
    let last = rec.last_error.unwrap();
    assert_eq!(last.kind, FailureKind::RateLimited(RateLimitScope::Account));
    assert!(
        last.detail.contains("pauses all issuance"),
        "{}",
        last.detail
    );
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_name_ask_approved_whose_orders_fail_backs_off_like_a_registered_one() {
    let server = crate::policy::testing::AskServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::starting_now();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let issuer = Arc::new(Counting {
        fail: true.into(),
        ..Counting::over(
            LocalCa::load_or_create(dir.path(), Zones::reserved(), wall.clock()).unwrap(),
        )
    });
    let metrics = Metrics::unregistered();
    let ask = server.ask(store.clone(), &metrics, wall.clock(), None);
    let certs = Arc::new(Certs::for_tests(
        store.clone(),
        issuer.clone(),
        Arc::new(Policy::new([], Some(ask))),
        wall.clock(),
    ));
    let name = Domain::parse("ok-approved.example.com").unwrap();
    // Three handshakes within the first minute: one order; the backoff answers the others.
    for _ in 0..3 {
        assert!(certs.resolve(&name).await.is_err());
        wall.advance(Duration::from_secs(19));
    }
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    wall.advance(Duration::from_secs(3));
    assert!(certs.resolve(&name).await.is_err());
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 2, "ordered again");
    let rec = record(&store, &name).await;
    assert_eq!((rec.origin, rec.failures), (Origin::Ask, 2));
    let wait = rec.retry_at.unwrap().duration_since(wall.clock().now());
    assert!(
        wait.unwrap() > Duration::from_secs(599),
        "ten minutes after the second failure, not one"
    );
    wall.advance(Duration::from_secs(60));
    assert!(certs.resolve(&name).await.is_err());
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 2, "still backing off");
    assert_eq!(server.hits(), 1, "asked once, at the first handshake");
}

/// A first certificate the CA issued that cannot be used (or stored) backs the name off as a
/// failure of the edge's own: the next handshake does not order (and get) another.
#[tokio::test]
async fn an_issued_certificate_that_cannot_be_used_backs_the_name_off() {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, certs, name) = registered(dir.path()).await;
    issuer.unusable.store(true, Ordering::SeqCst);
    let failed = certs.resolve(&name).await.map(|_| ());
    assert!(
        matches!(&failed, Err(CertError::Unavailable { .. })),
        "{failed:?}"
    );
    let recorded = record(&store, &name).await;
    assert_eq!(
        recorded.last_error.map(|e| e.kind),
        Some(FailureKind::Local)
    );
    assert_eq!(recorded.failures, 1);
    let again = certs.resolve(&name).await.map(|_| ());
    assert!(
        matches!(&again, Err(CertError::BackingOff { .. })),
        "{again:?}"
    );
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1, "no second order");
}
