//! A renewal in the air: what handshakes get while it runs (the stored certificate, or, once
//! that has expired, the renewal waited for unless it is queued for the order budget), and what
//! a renewal that comes due meanwhile does.

use super::renewal::{DueForRenewal, due_for_renewal};
use super::*;

/// A renewal of `name` in the air, stalled at `issuer` (called, never answering; queued for the
/// order budget if `issuer` queues renewals).
async fn stalled_renewal(
    issuer: &Counting,
    certs: &Arc<Certs>,
    name: &Domain,
) -> tokio::sync::watch::Receiver<flight::Outcome> {
    issuer.stall_renewals.store(true, Ordering::SeqCst);
    let renewal = certs.fly(name, Flight::Renew);
    // Until the issuer is at its stall (and, told to, has said it waits for the budget).
    let queued = issuer.queue_renewals.load(Ordering::SeqCst);
    while issuer.calls.load(Ordering::SeqCst) < 2 || queued && !certs.budget_queued.contains(name) {
        tokio::task::yield_now().await;
    }
    renewal
}

/// A renewal can take hours (a CA that does not answer, the account's rate budget): a handshake
/// that misses the cache meanwhile gets the stored certificate instead of waiting on it.
#[tokio::test]
async fn a_handshake_during_a_long_renewal_gets_the_stored_certificate() {
    let DueForRenewal {
        issuer,
        store,
        certs,
        name,
        _dir,
        ..
    } = due_for_renewal().await;
    let first = certs.resolve(&name).await.unwrap();
    let renewal = stalled_renewal(&issuer, &certs, &name).await;
    certs.cache.invalidate_all();
    let served = certs.resolve(&name).await.unwrap();
    assert_eq!(served.cert, first.cert);
    assert!(renewal.borrow().is_none(), "the renewal goes on");
    // Its status says what handshakes get: a valid certificate, not one being issued.
    let record = store.domain(&name).await.unwrap().unwrap();
    assert_eq!(certs.status(&record).await.unwrap().status, "valid");
}

/// A renewal that comes due while the name's renewal is still in the air (it scheduled its
/// retry and woke the schedule before landing) joins it, and keeps the name scheduled: the
/// entry that started it was that retry.
#[tokio::test]
async fn a_renewal_joining_a_renewal_in_the_air_keeps_the_name_scheduled() {
    let DueForRenewal {
        wall,
        issuer,
        certs,
        name,
        _dir,
        ..
    } = due_for_renewal().await;
    let _running = stalled_renewal(&issuer, &certs, &name).await;
    certs.schedule_at(&name, wall.clock().now());
    certs.start_due_renewals();
    assert!(
        lock(&certs.schedule).by_name.contains_key(&name),
        "scheduled again"
    );
}

/// A certificate that expired while its renewal is in the air serves nothing. A renewal
/// queued for the account's order budget (for up to `acme.order_window`) is not waited for: a
/// handshake fails at once, saying so. One ordering is waited for (it may land within
/// `tls.on_demand_timeout`), here until the timeout, the CA never answering.
#[tokio::test(start_paused = true)]
async fn a_handshake_waits_for_the_renewal_of_an_expired_certificate_unless_it_is_queued() {
    for queued in [true, false] {
        let DueForRenewal {
            wall,
            issuer,
            certs,
            name,
            _dir,
            ..
        } = due_for_renewal().await;
        issuer.queue_renewals.store(queued, Ordering::SeqCst);
        let renewal = stalled_renewal(&issuer, &certs, &name).await;
        wall.advance(Duration::from_secs(400 * 24 * 3600));
        certs.cache.invalidate_all();
        let err = certs.resolve(&name).await.unwrap_err();
        match queued {
            true => assert!(
                matches!(&err, CertError::Unavailable { source, .. }
                    if matches!(**source, LoadError::WaitsForBudget)),
                "{err:?}"
            ),
            false => assert!(matches!(err, CertError::Timeout(_)), "{err:?}"),
        }
        assert!(renewal.borrow().is_none(), "the renewal goes on");
    }
}
