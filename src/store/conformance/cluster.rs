//! What every [`Store`] must do for cluster-wide certificate work: the per-name lease and its
//! fencing token, the fenced certificate write, and the shared order budget. Races are run for
//! real (concurrent calls on one store); times are the caller's, so the outcomes are exact.

use std::time::Duration;

use super::{cert, d, t};
use crate::store::{Fence, OrderRate, OrderTurn, Store, StoreError, StoredCert};

const TTL: Duration = Duration::from_secs(60);

/// A free lease goes to its first taker with a fence and no order; nobody else (its holder
/// included) gets it until it expires, and then the next taker gets a larger fence.
pub async fn a_lease_goes_to_one_holder_until_it_expires(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let a = d("a.example.com");
    let first = store
        .acquire_lease(&a, "edge-a", t(1000), TTL)
        .await?
        .expect("a free lease is granted");
    assert_eq!(first.order_url, None);
    assert_eq!(store.acquire_lease(&a, "edge-b", t(1001), TTL).await?, None);
    assert_eq!(store.acquire_lease(&a, "edge-a", t(1059), TTL).await?, None);
    let second = store
        .acquire_lease(&a, "edge-b", t(1060), TTL)
        .await?
        .expect("an expired lease can be taken over");
    assert!(second.fence > first.fence, "{second:?} after {first:?}");
    Ok(())
}

/// Of concurrent takers of one free lease, exactly one gets it.
pub async fn concurrent_acquires_grant_one_lease(store: &dyn Store) -> Result<(), StoreError> {
    let a = d("a.example.com");
    let results = eight_at_once!(store.acquire_lease(&a, "edge", t(1000), TTL));
    let mut granted = 0;
    for r in results {
        granted += usize::from(r?.is_some());
    }
    assert_eq!(granted, 1, "one of eight concurrent acquires wins");
    Ok(())
}

/// Every acquisition gets a larger fence than any before it, whatever the name, and a name
/// released and taken again gets a larger one too.
pub async fn fences_grow_across_names(store: &dyn Store) -> Result<(), StoreError> {
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    let fa = store
        .acquire_lease(&a, "edge", t(1000), TTL)
        .await?
        .expect("a free");
    let fb = store
        .acquire_lease(&b, "edge", t(1000), TTL)
        .await?
        .expect("b free");
    assert!(fb.fence > fa.fence);
    assert!(store.release_lease(&a, fa.fence).await?);
    let again = store
        .acquire_lease(&a, "edge", t(1001), TTL)
        .await?
        .expect("released");
    assert!(again.fence > fb.fence);
    Ok(())
}

/// A lease is extended only under its own fence and only while unexpired; an extension holds
/// off takers past the first expiry.
pub async fn a_lease_extends_only_under_its_fence_while_unexpired(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let a = d("a.example.com");
    let lease = store
        .acquire_lease(&a, "edge-a", t(1000), TTL)
        .await?
        .expect("free");
    let other = Fence(lease.fence.0 + 1000);
    assert!(
        !store.extend_lease(&a, other, t(1030), TTL).await?,
        "another fence"
    );
    assert!(store.extend_lease(&a, lease.fence, t(1030), TTL).await?);
    assert_eq!(
        store.acquire_lease(&a, "edge-b", t(1060), TTL).await?,
        None,
        "extended to 1090"
    );
    assert!(
        !store.extend_lease(&a, lease.fence, t(1090), TTL).await?,
        "expired at 1090"
    );
    assert!(
        store
            .acquire_lease(&a, "edge-b", t(1090), TTL)
            .await?
            .is_some()
    );
    Ok(())
}

/// The order URL kept with a lease survives its release and its expiry and is handed to the
/// next holder, until a holder forgets it.
pub async fn the_order_url_is_kept_across_release_and_takeover(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let a = d("a.example.com");
    let url = "https://ca.example/order/1";
    let first = store
        .acquire_lease(&a, "edge-a", t(1000), TTL)
        .await?
        .expect("free");
    assert!(
        store
            .set_lease_order(&a, first.fence, Some(url), t(1001))
            .await?
    );
    assert!(store.release_lease(&a, first.fence).await?);
    let second = store
        .acquire_lease(&a, "edge-b", t(1002), TTL)
        .await?
        .expect("released");
    assert_eq!(
        second.order_url.as_deref(),
        Some(url),
        "kept across a release"
    );
    let third = store
        .acquire_lease(&a, "edge-c", t(1062), TTL)
        .await?
        .expect("expired");
    assert_eq!(
        third.order_url.as_deref(),
        Some(url),
        "kept across an expiry"
    );
    assert!(
        store
            .set_lease_order(&a, third.fence, None, t(1063))
            .await?
    );
    assert!(store.release_lease(&a, third.fence).await?);
    let fourth = store
        .acquire_lease(&a, "edge-a", t(1064), TTL)
        .await?
        .expect("released");
    assert_eq!(fourth.order_url, None, "forgotten");
    Ok(())
}

/// The leases listed (`cluster status`, its orders in flight) keep an order only while its name
/// is registered: a removed name's order URL, kept for a holder that resumes it, is in flight
/// nowhere.
pub async fn an_order_kept_for_a_removed_name_is_not_listed(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let a = d("a.example.com");
    store.add_domain(&a, t(1)).await?;
    let lease = store
        .acquire_lease(&a, "edge-a", t(1000), TTL)
        .await?
        .expect("free");
    assert!(
        store
            .set_lease_order(&a, lease.fence, Some("https://ca.example/order/1"), t(1001))
            .await?
    );
    assert!(store.release_lease(&a, lease.fence).await?);
    let listed = store.leases(t(1002)).await?;
    assert_eq!(listed.len(), 1, "an unfinished order of a registered name");
    assert!(store.remove_domain(&a).await?);
    assert_eq!(store.leases(t(1002)).await?, Vec::new());
    Ok(())
}

/// A holder whose lease was taken over can neither release it, nor keep an order with it, nor
/// extend it: its fence is stale.
pub async fn a_stale_fence_cannot_release_extend_or_keep_an_order(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let a = d("a.example.com");
    let stale = store
        .acquire_lease(&a, "edge-a", t(1000), TTL)
        .await?
        .expect("free");
    let fresh = store
        .acquire_lease(&a, "edge-b", t(1061), TTL)
        .await?
        .expect("expired");
    assert!(!store.release_lease(&a, stale.fence).await?);
    assert!(
        !store
            .set_lease_order(&a, stale.fence, Some("https://x/1"), t(1062))
            .await?
    );
    assert!(!store.extend_lease(&a, stale.fence, t(1062), TTL).await?);
    assert_eq!(
        store.acquire_lease(&a, "edge-c", t(1062), TTL).await?,
        None,
        "the stale release left the new holder's lease alone"
    );
    assert!(
        store
            .set_lease_order(&a, fresh.fence, Some("https://x/2"), t(1062))
            .await?
    );
    Ok(())
}

/// A fenced write stores a first certificate, then replaces it only with one issued no earlier
/// (whatever it expires: a renewal may be shorter-lived than what it renews), under a fence at
/// least as high; an unguarded write keeps the stored fence. A name removed while its order ran
/// gets nothing stored (no orphan key, no expiry counted forever).
pub async fn fenced_writes_never_replace_a_later_issue_or_a_higher_fence(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let a = &d("a.example.com");
    let put = |c: StoredCert, fence: u64| async move {
        store.put_certificate_fenced(a, &c, Fence(fence)).await
    };
    assert!(!put(cert("f1", 10, 30), 1).await?, "not registered");
    assert_eq!(store.certificate(a).await?, None);
    store.add_domain(a, t(1)).await?;
    assert!(put(cert("f2", 10, 30), 2).await?);
    assert!(!put(cert("f1", 10, 40), 1).await?, "older fence");
    assert!(
        !put(cert("f3", 5, 40), 3).await?,
        "issued earlier, however late it expires"
    );
    assert_eq!(store.certificate(a).await?, Some(cert("f2", 10, 30)));
    assert!(
        put(cert("f3", 10, 30), 3).await?,
        "issued at the same time is a reissue, not an older certificate"
    );
    assert!(
        put(cert("f3", 15, 20), 3).await?,
        "issued later and expiring earlier: a shorter-lived renewal"
    );
    assert_eq!(store.certificate(a).await?, Some(cert("f3", 15, 20)));
    store.put_certificate(a, &cert("admin", 20, 35)).await?;
    assert_eq!(
        store.certificate(a).await?,
        Some(cert("admin", 20, 35)),
        "unguarded"
    );
    assert!(!put(cert("f2", 25, 50), 2).await?, "fence kept");
    assert!(put(cert("f3", 30, 50), 3).await?);
    assert_eq!(store.certificate(a).await?, Some(cert("f3", 30, 50)));
    Ok(())
}

/// The order budget is a GCRA bucket: full at first (`burst` orders at once), then one order per
/// interval, and a refusal names when the next one is due. Budgets by other names are apart.
pub async fn the_order_budget_is_a_gcra_bucket(store: &dyn Store) -> Result<(), StoreError> {
    let rate = OrderRate {
        interval: Duration::from_secs(10),
        burst: 3,
    };
    for _ in 0..3 {
        assert_eq!(
            store.take_order("acct", rate, t(1000)).await?,
            OrderTurn::Taken
        );
    }
    assert_eq!(
        store.take_order("acct", rate, t(1000)).await?,
        OrderTurn::Wait(t(1010))
    );
    assert_eq!(
        store.take_order("acct", rate, t(1009)).await?,
        OrderTurn::Wait(t(1010))
    );
    assert_eq!(
        store.take_order("acct", rate, t(1010)).await?,
        OrderTurn::Taken
    );
    assert_eq!(
        store.take_order("acct", rate, t(1010)).await?,
        OrderTurn::Wait(t(1020))
    );
    assert_eq!(
        store.take_order("other", rate, t(1010)).await?,
        OrderTurn::Taken
    );
    // A quiet spell refills the bucket, never beyond its burst.
    for _ in 0..3 {
        assert_eq!(
            store.take_order("acct", rate, t(5000)).await?,
            OrderTurn::Taken
        );
    }
    assert_eq!(
        store.take_order("acct", rate, t(5000)).await?,
        OrderTurn::Wait(t(5010))
    );
    Ok(())
}

/// Concurrent takers never get more orders than the budget holds.
pub async fn concurrent_takes_never_exceed_the_budget(store: &dyn Store) -> Result<(), StoreError> {
    let rate = OrderRate {
        interval: Duration::from_secs(36),
        burst: 3,
    };
    let results = eight_at_once!(store.take_order("acct", rate, t(1000)));
    let mut taken = 0;
    for r in results {
        taken += usize::from(r? == OrderTurn::Taken);
    }
    assert_eq!(taken, 3, "a burst of three among eight concurrent takers");
    Ok(())
}

/// A pause (the CA's `Retry-After`) stops every order until it ends, full bucket or not; an
/// earlier pause does not shorten it.
pub async fn a_pause_stops_orders_until_it_ends(store: &dyn Store) -> Result<(), StoreError> {
    let rate = OrderRate {
        interval: Duration::from_secs(10),
        burst: 5,
    };
    store.pause_orders("acct", t(1100)).await?;
    assert_eq!(
        store.take_order("acct", rate, t(1000)).await?,
        OrderTurn::Wait(t(1100))
    );
    store.pause_orders("acct", t(1050)).await?;
    assert_eq!(
        store.take_order("acct", rate, t(1060)).await?,
        OrderTurn::Wait(t(1100))
    );
    assert_eq!(
        store.take_order("acct", rate, t(1100)).await?,
        OrderTurn::Taken
    );
    assert_eq!(
        store.take_order("other", rate, t(1000)).await?,
        OrderTurn::Taken,
        "apart"
    );
    Ok(())
}
