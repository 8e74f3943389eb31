//! Orders held back by a failing onboarding check: nothing ordered, the reason recorded (once
//! a minute), handshakes answered from memory.

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
