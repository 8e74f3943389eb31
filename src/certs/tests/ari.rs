//! Renewal information (RFC 9773): when it is asked for, the point of its window a certificate
//! renews at, and a window held to the certificate's lifetime.

use super::renewal::issued_at;
use super::*;
use crate::logged::logged_async;
use tracing::Level;

/// RFC 9773 §4.3: a window may move (before a revocation), so a certificate just issued, or one
/// whose renewal information could not be had, is asked about within hours, not first when a
/// third of its 90 days is left.
#[tokio::test]
async fn renewal_information_is_asked_for_within_hours_of_issuance_and_of_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (issuer, certs, name, next) = issued_at(dir.path(), &clock).await;
    let hours = |at: SystemTime| at.duration_since(clock.clock().now()).unwrap().as_secs() / 3600;
    assert!(hours(next) < 6, "first check in {}h", hours(next));

    *lock(&issuer.renewal_info) = Some(Err(()));
    clock.advance(Duration::from_secs(3600));
    let (renewed, log) = logged_async(Level::WARN, certs.renew(&name)).await;
    renewed.unwrap();
    assert!(log.contains("renewal information unavailable"), "{log}");
    let next = lock(&certs.schedule).by_name.get(&name).copied().unwrap();
    assert!(
        hours(next) < 6,
        "after a failure, next check in {}h",
        hours(next)
    );
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1, "nothing renewed");
    // Failing at every check (a certificate the CA does not know): said once, not every time.
    clock.advance(Duration::from_secs(6 * 3600));
    let (renewed, log) = logged_async(Level::WARN, certs.renew(&name)).await;
    renewed.unwrap();
    assert!(log.is_empty(), "{log}");
    *lock(&issuer.renewal_info) = None;
    let (renewed, log) = logged_async(Level::INFO, certs.renew(&name)).await;
    renewed.unwrap();
    assert!(log.contains("renewal information available again"), "{log}");
}

/// Every check of one window names the certificate's own point of it: a point drawn afresh from
/// what is left of the window at each check slid to its very end.
#[tokio::test]
async fn every_check_of_a_renewal_window_names_the_same_point() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (issuer, certs, name, _) = issued_at(dir.path(), &clock).await;
    let now = clock.clock().now();
    let day = Duration::from_secs(86_400);
    *lock(&issuer.renewal_info) = Some(Ok(RenewalWindow {
        start: now + day,
        end: now + 3 * day,
        check_after: 30 * day,
    }));
    certs.renew(&name).await.unwrap();
    let point = lock(&certs.schedule).by_name.get(&name).copied().unwrap();
    assert!(point >= now + day && point <= now + 3 * day, "{point:?}");
    // Checks at the window's start, half-way to the point, and a second before it.
    let half = (point.duration_since(now + day).unwrap()) / 2;
    for to in [now + day, now + day + half, point - Duration::from_secs(1)] {
        let Ok(by) = to.duration_since(clock.clock().now()) else {
            continue;
        };
        clock.advance(by);
        certs.renew(&name).await.unwrap();
        let next = lock(&certs.schedule).by_name.get(&name).copied().unwrap();
        assert_eq!(next, point);
    }
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        1,
        "not renewed before its point"
    );
    clock.advance(Duration::from_secs(1));
    certs.renew(&name).await.unwrap();
    assert_eq!(
        issuer.calls.load(Ordering::SeqCst),
        2,
        "renewed at its point"
    );
}

/// A window that ends after the certificate does (a broken CA or a proxy answering for it)
/// still renews it before its last tenth.
#[tokio::test]
async fn a_renewal_window_past_expiry_is_held_to_the_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let (issuer, certs, name, _) = issued_at(dir.path(), &clock).await;
    let cert = certs.store.certificate(&name).await.unwrap().unwrap();
    let life = cert.not_after.duration_since(cert.not_before).unwrap();
    let day = Duration::from_secs(86_400);
    *lock(&issuer.renewal_info) = Some(Ok(RenewalWindow {
        start: cert.not_after + day,
        end: cert.not_after + 2 * day,
        check_after: 400 * day,
    }));
    certs.renew(&name).await.unwrap();
    let point = lock(&certs.schedule).by_name.get(&name).copied().unwrap();
    assert!(point <= cert.not_after - life / 10, "{point:?}");
}
