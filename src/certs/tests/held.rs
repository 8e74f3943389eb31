//! Orders held back by a failing onboarding check: nothing ordered, the reason recorded (once
//! a minute), handshakes answered from memory; a CA failure's backoff outlasts a hold.

use super::*;

/// Holds back every name while a hold is set.
struct Gate(Mutex<Option<Hold>>);

impl IssueGate for Gate {
    fn hold(&self, _name: &Domain) -> Option<Hold> {
        lock(&self.0).clone()
    }
}

/// A registered name whose certificate layer is held back by a failing `caa` check.
struct HeldBack {
    issuer: Arc<Counting>,
    store: Arc<dyn Store>,
    certs: Arc<Certs>,
    name: Domain,
    gate: Arc<Gate>,
    clock: ManualClock,
}

async fn held_back(dir: &std::path::Path) -> HeldBack {
    let (issuer, store, _, name) = registered(dir).await;
    let hold = Hold {
        check: "caa".into(),
        message: "the `caa` check fails".into(),
    };
    let gate = Arc::new(Gate(Mutex::new(Some(hold))));
    let clock = ManualClock::starting_now();
    let certs = certs_over(&store, issuer.clone(), [name.clone()], clock.clock());
    let certs = Arc::new(certs.with_gate(gate.clone()));
    HeldBack {
        issuer,
        store,
        certs,
        name,
        gate,
        clock,
    }
}

#[tokio::test]
async fn a_held_back_name_orders_nothing_and_records_why() {
    let dir = tempfile::tempdir().unwrap();
    let HeldBack {
        issuer,
        store,
        certs,
        name,
        gate,
        ..
    } = held_back(dir.path()).await;
    let err = certs.resolve(&name).await.unwrap_err();
    assert!(err.to_string().contains("`caa` check fails"), "{err}");
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 0);
    let rec = record(&store, &name).await;
    assert_eq!(
        rec.last_error,
        Some(IssueFailure {
            kind: FailureKind::HeldBack {
                check: "caa".into()
            },
            detail: "the `caa` check fails".into(),
        })
    );
    assert_eq!((rec.failures, rec.retry_at), (0, None), "no backoff");
    // Once the gate opens, the next handshake orders.
    *lock(&gate.0) = None;
    certs.resolve(&name).await.unwrap();
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    assert_eq!(record(&store, &name).await.last_error, None);
}

#[tokio::test]
async fn a_held_back_name_is_recorded_and_logged_once_a_minute_not_per_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let HeldBack {
        issuer,
        store,
        certs,
        name,
        clock: manual,
        ..
    } = held_back(dir.path()).await;
    certs.resolve(&name).await.unwrap_err();
    assert!(record(&store, &name).await.last_error.is_some());
    // Wipe the record behind the edge's back: a handshake within the interval writes nothing.
    store
        .set_status(&name, &IssueStatus::default())
        .await
        .unwrap();
    manual.advance(backoff::HELD_NOTICE_INTERVAL - Duration::from_secs(1));
    let queries = store.queries().get();
    for _ in 0..5 {
        let err = certs.resolve(&name).await.unwrap_err();
        assert!(matches!(err, CertError::HeldBack { .. }), "{err}");
    }
    assert_eq!(
        store.queries().get(),
        queries,
        "from memory, no store read each"
    );
    assert_eq!(
        record(&store, &name).await.last_error,
        None,
        "rewritten per handshake"
    );
    // Once the interval has passed, the reason is recorded (and logged) again.
    manual.advance(Duration::from_secs(1));
    certs.resolve(&name).await.unwrap_err();
    assert!(record(&store, &name).await.last_error.is_some());
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 0);
}

/// A check that fails while a CA failure backs the name off, then passes, leaves that backoff
/// in place: the next handshake fails from it instead of ordering again. On one node too, where
/// propagation applies the node's own row (whole seconds) over its copy (not).
#[tokio::test]
async fn a_check_failing_then_passing_keeps_the_backoff_a_ca_failure_set() {
    let dir = tempfile::tempdir().unwrap();
    // Part of a second past a whole one, as a real clock shows.
    let wall = ManualClock::new(from_unix_secs(1_800_000_000) + Duration::from_millis(500));
    let (issuer, store, _) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    let gate = Arc::new(Gate(Mutex::new(None)));
    let certs = certs_over(&store, issuer.clone(), [name.clone()], wall.clock());
    let certs = Arc::new(certs.with_gate(gate.clone()));
    issuer.fail.store(true, Ordering::SeqCst);
    let err = certs.resolve(&name).await.unwrap_err();
    assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    let failed = record(&store, &name).await;
    // Propagation reads the row back.
    certs.apply_status(&failed);
    // A blocking check fails (a resolver timing out), then passes again.
    *lock(&gate.0) = Some(Hold {
        check: "points-to-edge".into(),
        message: "the `points-to-edge` check fails".into(),
    });
    certs.resolve(&name).await.unwrap_err();
    *lock(&gate.0) = None;
    certs.release_hold(&name).await.unwrap();
    let err = certs.resolve(&name).await.unwrap_err();
    assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1, "no second order");
    let rec = record(&store, &name).await;
    assert_eq!(
        (&rec.last_error, rec.failures, rec.retry_at),
        (&failed.last_error, 1, failed.retry_at),
        "the CA's failure stands"
    );
}

/// A hold is not recorded over a CA failure whose retry time is ahead: its words say why the
/// name waits, and releasing the hold would release the backoff with it.
#[tokio::test]
async fn a_hold_leaves_a_ca_failure_that_still_backs_off_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let HeldBack {
        store,
        certs,
        name,
        gate,
        clock,
        ..
    } = held_back(dir.path()).await;
    let now = clock.clock().now();
    let ca = refusal(&name).failure();
    certs.backoff.failed(&name, ca, now, None, None).await;
    let failed = record(&store, &name).await;
    let hold: IssueFailure = lock(&gate.0).clone().unwrap().into();
    assert!(!certs.backoff.held_back(&name, hold.clone(), now).await);
    assert_eq!(record(&store, &name).await, failed);
    // Once its retry time has passed, the hold is what the name waits for.
    let after = failed.retry_at.unwrap();
    assert!(certs.backoff.held_back(&name, hold.clone(), after).await);
    assert_eq!(record(&store, &name).await.last_error, Some(hold.clone()));
    // The edge's own wait (its order budget, its store) is no CA's answer: the failing check is
    // what the customer must see.
    let own = IssueFailure {
        kind: FailureKind::Local,
        detail: "the order budget is spent".into(),
    };
    let hour = Duration::from_secs(3600);
    certs
        .backoff
        .failed(&name, own, after, None, Some(after + hour))
        .await;
    let later = after + backoff::HELD_NOTICE_INTERVAL;
    assert!(record(&store, &name).await.retry_at.unwrap() > later);
    assert!(certs.backoff.held_back(&name, hold.clone(), later).await);
    assert_eq!(record(&store, &name).await.last_error, Some(hold));
}

/// Propagation applies a node's own row too: its backoff (kept in whole seconds) is the one this
/// node recorded, and the handshakes of a name found with nothing stored keep failing from
/// memory, without a store read each.
#[tokio::test]
async fn a_nodes_own_backoff_read_back_keeps_its_handshakes_failing_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let wall = ManualClock::new(from_unix_secs(1_800_000_000) + Duration::from_millis(500));
    let (issuer, store, certs) = setup_at(dir.path(), &wall);
    let name = Domain::parse("a.example.com").unwrap();
    store.add_domain(&name, wall.clock().now()).await.unwrap();
    issuer.fail.store(true, Ordering::SeqCst);
    certs.resolve(&name).await.unwrap_err();
    certs.apply_status(&record(&store, &name).await);
    let queries = store.queries().get();
    for _ in 0..3 {
        let err = certs.resolve(&name).await.unwrap_err();
        assert!(matches!(err, CertError::BackingOff { .. }), "{err}");
    }
    assert_eq!(store.queries().get(), queries, "from memory");
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
}
