//! A store whose certificate reads answer late, or never: a client waits on such a read only
//! for a bounded time (the mirror answers past it), and a name removed while its flight waits
//! for the read gets nothing cached or scheduled when the answer arrives.

use super::*;
use crate::seal::SealKey;

/// A node as after a restart (nothing in memory) over the store another node issued
/// `a.example.com`'s certificate to, its certificate reads going through `blips`.
struct Restarted {
    store: Arc<dyn Store>,
    blips: Arc<blips::Blips>,
    node: Arc<Certs>,
    name: Domain,
    mirror_served: prometheus::IntCounter,
    _dir: tempfile::TempDir,
}

/// [`Restarted`], with a certificate mirror holding the stored certificate if `mirror`.
async fn restarted(mirror: bool) -> Restarted {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, first, name) = registered(dir.path()).await;
    first.resolve(&name).await.unwrap();
    let blips = blips::Blips::over(store.clone());
    let stalling: Arc<dyn Store> = blips.clone();
    let metrics = MirrorMetrics::unregistered();
    let copy = if mirror {
        let copy = CertMirror::open(
            &dir.path().join(MIRROR_FILE),
            Arc::new(SealKey::generate()),
            metrics.clone(),
        )
        .unwrap();
        let stored = store.certificate(&name).await.unwrap().unwrap();
        assert!(copy.put(&name, &stored).await.unwrap());
        Some(Arc::new(copy))
    } else {
        None
    };
    let node = certs_over(&stalling, issuer, [name.clone()], first.clock.clone()).with_mirror(copy);
    Restarted {
        store,
        blips,
        node: Arc::new(node),
        name,
        mirror_served: metrics.served,
        _dir: dir,
    }
}

/// A database that stopped answering (black-holed: only the connection's minute-long user
/// timeout would end the read) does not hold a handshake for a name not in memory past the
/// read's bound: the mirror answers within the on-demand timeout (5 s here).
#[tokio::test(start_paused = true)]
async fn a_handshake_is_served_from_the_mirror_when_the_store_read_never_answers() {
    let Restarted {
        blips,
        node,
        name,
        mirror_served,
        ..
    } = restarted(true).await;
    blips.stall_certificate.arm();
    node.resolve(&name)
        .await
        .expect("the mirror's copy, within the on-demand timeout");
    assert_eq!(mirror_served.get(), 1);
}

/// A plain-HTTP request asking whether its name has a certificate (to upgrade to HTTPS) is
/// answered as when the store fails: no, the request stays on plain HTTP.
#[tokio::test(start_paused = true)]
async fn a_plain_http_request_is_not_held_by_a_store_read_that_never_answers() {
    let Restarted {
        blips, node, name, ..
    } = restarted(false).await;
    blips.stall_certificate.arm();
    let answer = tokio::time::timeout(Duration::from_secs(30), node.has_valid(&name))
        .await
        .expect("answered within the read's bound");
    assert!(!answer, "as when the store fails");
}

/// Removed (as the domain lifecycle does: store, policy, then memory) while this node's `kind`
/// flight waits for the stored certificate: when the answer arrives, the flight caches and
/// schedules nothing, and its waiters are refused.
async fn removed_while_its_flight_reads_the_store(kind: Flight) {
    let Restarted {
        store,
        blips,
        node,
        name,
        ..
    } = restarted(false).await;
    blips.stall_certificate.arm();
    let mut flight = node.fly(&name, kind);
    blips.stall_certificate.held().await;
    assert!(store.remove_domain(&name).await.unwrap());
    node.policy.unregister(name.as_str()).await;
    node.forget(&name);
    blips.stall_certificate.release();
    let outcome = flight.wait_for(Option::is_some).await.unwrap().clone();
    assert!(!node.cache.contains_key(&name), "cached");
    assert!(
        !lock(&node.schedule).by_name.contains_key(&name),
        "scheduled"
    );
    assert!(
        matches!(outcome, Some(Err(CertError::NotServed(_)))),
        "{:?}",
        outcome.map(|o| o.map(drop))
    );
}

/// A handshake's flight.
#[tokio::test(start_paused = true)]
async fn a_name_removed_while_its_flight_reads_the_store_is_neither_cached_nor_scheduled() {
    removed_while_its_flight_reads_the_store(Flight::Obtain).await;
}

/// A renewal check that reads the (young) certificate, then would schedule its next check by
/// the lifetime rule.
#[tokio::test(start_paused = true)]
async fn a_name_removed_while_its_renewal_check_reads_the_store_is_not_scheduled() {
    removed_while_its_flight_reads_the_store(Flight::Renew).await;
}

/// A renewal check that read the certificate (young: not due) lands it; meanwhile another node's
/// renewal, issued later, was cached here through change propagation. The later one stays: the
/// check used to put the one it read back, served until the next check, hours later.
#[tokio::test(start_paused = true)]
async fn a_renewal_check_never_puts_an_earlier_certificate_back_in_the_cache() {
    let Restarted {
        store,
        blips,
        node,
        name,
        ..
    } = restarted(false).await;
    node.resolve(&name).await.unwrap();
    let read = store.certificate(&name).await.unwrap().unwrap();
    blips.stall_certificate.arm();
    let mut flight = node.fly(&name, Flight::Renew);
    blips.stall_certificate.held().await;
    // Another node's renewal (the same key pair stands in for it), as propagation caches it.
    let renewed = StoredCert {
        not_before: read.not_before + Duration::from_secs(3600),
        ..read.clone()
    };
    node.cache
        .insert(name.clone(), node.entry(&renewed).unwrap());
    blips.stall_certificate.release();
    let outcome = flight.wait_for(Option::is_some).await.unwrap().clone();
    assert!(matches!(outcome, Some(Ok(_))));
    assert_eq!(
        node.cache.get(&name).unwrap().not_before,
        renewed.not_before,
        "the earlier certificate was put back"
    );
}
