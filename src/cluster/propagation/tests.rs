//! Propagation between two nodes over one store: what one writes reaches the other's memory at
//! its next scan, and not before.

use std::time::Duration;

use super::*;
use crate::Domain;
use crate::certs::CertError;
use crate::clock::ManualClock;
use crate::domain::Zones;
use crate::issuer::{Issuer, LocalCa, Unclaimed};
use crate::store::{FailureKind, IssueFailure, IssueStatus, SqliteStore};

/// This node's parts over a store another node writes to, and its propagation.
struct Fixture {
    store: Arc<dyn Store>,
    /// The same store, for statements no edge would make.
    sqlite: SqliteStore,
    policy: Arc<Policy>,
    certs: Arc<Certs>,
    keys: Arc<LinkKeys>,
    propagation: Propagation,
    /// The other node's CA, to store certificates this node did not issue.
    other_ca: LocalCa,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn fixture(clock: &ManualClock) -> Fixture {
    let sqlite = SqliteStore::in_memory().unwrap();
    let store: Arc<dyn Store> = Arc::new(sqlite.clone());
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let version = store.latest_version().await.unwrap();
    let policy = Arc::new(Policy::new([], None));
    let issuer: Arc<dyn Issuer> =
        Arc::new(LocalCa::load_or_create(dirs.0.path(), Zones::reserved(), clock.clock()).unwrap());
    let certs = Arc::new(Certs::for_tests(
        store.clone(),
        issuer,
        policy.clone(),
        clock.clock(),
    ));
    let keys = Arc::new(
        LinkKeys::load(store.clone(), policy.clone(), 8192, clock.clock())
            .await
            .unwrap(),
    );
    let propagation = Propagation::new(
        store.clone(),
        policy.clone(),
        certs.clone(),
        keys.clone(),
        clock.clock(),
        Settings {
            node_id: "edge-b".into(),
            scan_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
        },
        version,
    );
    Fixture {
        other_ca: LocalCa::load_or_create(dirs.1.path(), Zones::reserved(), clock.clock()).unwrap(),
        store,
        sqlite,
        policy,
        certs,
        keys,
        propagation,
        _dirs: dirs,
    }
}

/// Prunes every tombstone there is at `now`: marked by one run, deleted by the next a bound
/// later. How many the second run deleted.
async fn prune_every_tombstone(store: &Arc<dyn Store>, now: SystemTime) -> Option<u64> {
    store.prune_tombstones(now, TOMBSTONE_KEEP).await.unwrap();
    store
        .prune_tombstones(now + TOMBSTONE_KEEP, TOMBSTONE_KEEP)
        .await
        .unwrap()
}

fn leaf(key: &rustls::sign::CertifiedKey) -> Vec<u8> {
    key.cert[0].to_vec()
}

fn ids(keys: &LinkKeys) -> Vec<u16> {
    keys.list().iter().map(|k| k.id.0).collect()
}

/// The store's version went back (a failover that lost the last writes, a restore): the changes
/// numbered below what this node applied are read all the same, and a name the store lost is
/// forgotten.
#[tokio::test]
async fn changes_after_the_stores_version_went_back_still_reach_the_node() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let name = |n: &str| Domain::parse(n).unwrap();
    for n in ["a.example.com", "b.example.com", "c.example.com"] {
        f.store
            .add_domain(&name(n), clock.clock().now())
            .await
            .unwrap();
    }
    f.propagation.scan().await.unwrap();
    assert!(f.policy.is_registered("c.example.com"));
    // Restored to a point with only a.example.com (and the key), its version with it.
    f.sqlite
        .execute_raw(
            "DELETE FROM domains WHERE name <> 'a.example.com';
             DELETE FROM tombstones;
             UPDATE row_version SET last = 2 WHERE id = 1;",
        )
        .await
        .unwrap();
    f.store
        .add_domain(&name("d.example.com"), clock.clock().now())
        .await
        .unwrap();
    assert!(f.store.latest_version().await.unwrap() < f.propagation.applied());
    f.propagation.scan().await.unwrap();
    assert!(
        f.policy.is_registered("d.example.com"),
        "written after the restore"
    );
    assert!(f.policy.is_registered("a.example.com"));
    assert!(
        !f.policy.is_registered("c.example.com"),
        "lost with the restore"
    );
}

#[tokio::test]
async fn domains_and_their_backoff_reach_the_other_node_at_its_next_scan() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    // The first key this node generated is a change too.
    assert_eq!(f.propagation.scan().await.unwrap(), 1);
    let a = Domain::parse("a.example.com").unwrap();

    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    assert!(!f.policy.is_registered(a.as_str()), "not before the scan");
    assert_eq!(f.propagation.scan().await.unwrap(), 1);
    assert!(f.policy.is_registered(a.as_str()));
    assert_eq!(f.propagation.scan().await.unwrap(), 0, "nothing new");

    // The other node backed it off: this one fails fast, without an order.
    let status = IssueStatus {
        last_error: Some(IssueFailure {
            kind: FailureKind::Order,
            detail: "refused".into(),
        }),
        failures: 1,
        retry_at: Some(clock.clock().now() + Duration::from_secs(600)),
    };
    f.store.set_status(&a, &status).await.unwrap();
    f.propagation.scan().await.unwrap();
    assert!(matches!(
        f.certs.resolve(&a).await,
        Err(CertError::BackingOff { .. })
    ));
    // ... and cleared it: this one orders again.
    f.store
        .set_status(&a, &IssueStatus::default())
        .await
        .unwrap();
    f.propagation.scan().await.unwrap();
    assert!(f.certs.resolve(&a).await.is_ok());

    f.store.remove_domain(&a).await.unwrap();
    f.propagation.scan().await.unwrap();
    assert!(!f.policy.is_registered(a.as_str()));
    assert!(matches!(
        f.certs.resolve(&a).await,
        Err(CertError::NotServed(_))
    ));
}

#[tokio::test]
async fn a_certificate_another_node_stored_replaces_the_cached_one() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    f.propagation.scan().await.unwrap();
    let mine = f.certs.resolve(&a).await.unwrap();

    let theirs = f.other_ca.issue(&a, None, &Unclaimed).await.unwrap();
    f.store.put_certificate(&a, &theirs).await.unwrap();
    assert_eq!(
        leaf(&f.certs.resolve(&a).await.unwrap()),
        leaf(&mine),
        "not before the scan"
    );
    f.propagation.scan().await.unwrap();
    let now = f.certs.resolve(&a).await.unwrap();
    assert_ne!(
        leaf(&now),
        leaf(&mine),
        "the cached certificate was replaced"
    );
}

/// A certificate whose change comes a page before its domain's (the domain's row written again
/// since: changes are read at each row's newest version) is taken once the domain is: it was
/// read while the name was unknown, and never again, so this node did not schedule its
/// renewal nor mirror it.
#[tokio::test]
async fn a_certificate_read_before_its_domain_is_taken_once_the_domain_is() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    let theirs = f.other_ca.issue(&a, None, &Unclaimed).await.unwrap();
    f.store.put_certificate(&a, &theirs).await.unwrap();
    for i in 0..PAGE {
        let filler = Domain::parse(&format!("filler-{i}.example.com")).unwrap();
        f.store
            .add_domain(&filler, clock.clock().now())
            .await
            .unwrap();
    }
    f.store
        .set_status(&a, &IssueStatus::default())
        .await
        .unwrap();
    f.propagation.scan().await.unwrap();
    let record = f.store.domain(&a).await.unwrap().unwrap();
    let status = f.certs.status(&record).await.unwrap();
    assert_eq!(status.status, "valid");
    assert!(status.next_renewal.is_some(), "scheduled: {status:?}");
}

#[tokio::test]
async fn keys_added_or_removed_elsewhere_reach_the_ring() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    f.propagation.scan().await.unwrap();
    assert_eq!(ids(&f.keys), vec![1]);
    let id = f
        .store
        .add_link_key([9; 32], clock.clock().now())
        .await
        .unwrap();
    f.propagation.scan().await.unwrap();
    assert_eq!(ids(&f.keys), vec![id, 1]);
    f.store.remove_link_key(1).await.unwrap();
    f.propagation.scan().await.unwrap();
    assert_eq!(ids(&f.keys), vec![id]);
}

#[tokio::test]
async fn a_node_away_longer_than_tombstones_are_kept_still_forgets_what_was_removed() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let (a, b) = (
        Domain::parse("a.example.com").unwrap(),
        Domain::parse("b.example.com").unwrap(),
    );
    for name in [&a, &b] {
        f.store.add_domain(name, clock.clock().now()).await.unwrap();
    }
    let id = f
        .store
        .add_link_key([9; 32], clock.clock().now())
        .await
        .unwrap();
    f.propagation.scan().await.unwrap();
    assert_eq!(ids(&f.keys), vec![id, 1]);

    // While this node scans nothing, a and the new key are removed, b's status changes, and
    // both tombstones are pruned (marked by one run, deleted by the next a bound later).
    f.store.remove_domain(&a).await.unwrap();
    f.store.remove_link_key(id).await.unwrap();
    let now = clock.clock().now();
    assert_eq!(prune_every_tombstone(&f.store, now).await, Some(2));
    let backoff = IssueStatus {
        failures: 1,
        retry_at: Some(now + Duration::from_secs(600)),
        last_error: Some(IssueFailure {
            kind: FailureKind::Order,
            detail: "refused".into(),
        }),
    };
    f.store.set_status(&b, &backoff).await.unwrap();
    assert!(f.propagation.applied() < f.store.pruned_through().await.unwrap());

    f.propagation.scan().await.unwrap();
    assert!(!f.policy.is_registered(a.as_str()), "a removed while away");
    assert_eq!(ids(&f.keys), vec![1], "the key removed while away");
    assert!(f.policy.is_registered(b.as_str()));
    assert!(
        matches!(f.certs.resolve(&b).await, Err(CertError::BackingOff { .. })),
        "b's status, written while away, applied too"
    );
    assert!(f.propagation.applied() >= f.store.pruned_through().await.unwrap());
}

/// A node away past the tombstones' keep compares its domains with the store's; a domain row it
/// cannot read (damaged) holds back no other change: the comparison waits, scan after scan,
/// for the row to be fixed, and then the removals reach the node too.
#[tokio::test]
async fn a_damaged_domain_row_holds_back_no_change_of_a_node_away_past_the_tombstones() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let (a, b) = (
        Domain::parse("a.example.com").unwrap(),
        Domain::parse("b.example.com").unwrap(),
    );
    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    f.propagation.scan().await.unwrap();
    f.store.remove_domain(&a).await.unwrap();
    prune_every_tombstone(&f.store, clock.clock().now()).await;
    f.sqlite
        .execute_raw("INSERT INTO domains (name, created_at) VALUES ('not a name!', 1)")
        .await
        .unwrap();
    f.store.add_domain(&b, clock.clock().now()).await.unwrap();

    let (scanned, logs) =
        crate::logged::logged_async(tracing::Level::ERROR, f.propagation.scan()).await;
    scanned.unwrap();
    assert!(f.policy.is_registered(b.as_str()), "b, added while away");
    assert!(
        f.policy.is_registered(a.as_str()),
        "a's removal waits for the comparison"
    );
    assert!(logs.contains("a domain row cannot be read"), "{logs}");
    f.propagation.scan().await.unwrap();
    assert!(f.policy.is_registered(a.as_str()), "still waiting");

    f.sqlite
        .execute_raw("DELETE FROM domains WHERE name = 'not a name!'")
        .await
        .unwrap();
    f.propagation.scan().await.unwrap();
    assert!(!f.policy.is_registered(a.as_str()), "a removed while away");
    assert!(f.policy.is_registered(b.as_str()));
}

/// A name removed and added again while this node scanned nothing, past the tombstones' keep:
/// the certificate it cached before is dropped with the one the store deleted, and the next
/// handshake gets a new one. It used to be served on: the name was registered still, and no
/// certificate change was left to read.
#[tokio::test]
async fn a_name_removed_and_added_again_while_away_keeps_no_certificate_the_store_dropped() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    f.propagation.scan().await.unwrap();
    let before = leaf(&f.certs.resolve(&a).await.unwrap());
    f.propagation.scan().await.unwrap();

    f.store.remove_domain(&a).await.unwrap();
    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    prune_every_tombstone(&f.store, clock.clock().now()).await;
    assert!(f.propagation.applied() < f.store.pruned_through().await.unwrap());
    assert!(f.store.certificate(&a).await.unwrap().is_none());

    f.propagation.scan().await.unwrap();
    assert!(f.policy.is_registered(a.as_str()));
    let after = leaf(&f.certs.resolve(&a).await.unwrap());
    assert_ne!(
        after, before,
        "the certificate deleted with the name is not served on"
    );
}

/// A node with onboarding checks (`edge-b`) over the fixture's store, and the report of `check`
/// as the store keeps it.
async fn checked_node(f: &Fixture, clock: &ManualClock) -> (Arc<Onboarding>, Propagation) {
    use crate::onboarding::Settings as CheckSettings;

    let mut settings = CheckSettings::from_config(&crate::config::Config::default());
    settings.cname_target = Some(Domain::parse("edge.example.net").unwrap());
    let onboarding = Arc::new(Onboarding::new(settings, f.store.clone(), clock.clock()));
    let propagation = Propagation::new(
        f.store.clone(),
        f.policy.clone(),
        f.certs.clone(),
        f.keys.clone(),
        clock.clock(),
        Settings {
            node_id: "edge-b".into(),
            scan_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
        },
        f.store.latest_version().await.unwrap(),
    )
    .with_onboarding(onboarding.clone());
    (onboarding, propagation)
}

fn report(clock: &ManualClock, check: crate::onboarding::Check) -> String {
    serde_json::to_string(&crate::onboarding::Report {
        checked_at: clock.clock().now(),
        checks: vec![check],
    })
    .unwrap()
}

fn no_cname() -> crate::onboarding::Check {
    crate::onboarding::Check::fail(
        crate::onboarding::CheckId::PointsToEdge,
        "a.example.com has no CNAME",
        "add the CNAME".into(),
        true,
    )
}

/// Checks run on another node reach this one through the store (a domain's report is a change):
/// a failing check holds back this node's orders too, a passing one lets them go, and a removed
/// domain's report is dropped.
#[tokio::test]
async fn another_nodes_checks_hold_back_and_let_go_this_nodes_orders() {
    use crate::certs::IssueGate as _;
    use crate::onboarding::{Check, CheckId};

    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let (onboarding, propagation) = checked_node(&f, &clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    propagation.scan().await.unwrap();
    assert!(onboarding.latest(&a).is_none());

    f.store
        .put_domain_checks(&a, &report(&clock, no_cname()))
        .await
        .unwrap();
    propagation.scan().await.unwrap();
    assert!(onboarding.hold(&a).is_some(), "held back here too");

    let passing = Check::pass(CheckId::PointsToEdge, "a.example.com points at the edge");
    f.store
        .put_domain_checks(&a, &report(&clock, passing))
        .await
        .unwrap();
    propagation.scan().await.unwrap();
    assert!(onboarding.latest(&a).is_some());
    assert!(onboarding.hold(&a).is_none(), "let go here too");

    f.store.remove_domain(&a).await.unwrap();
    propagation.scan().await.unwrap();
    assert!(onboarding.latest(&a).is_none());
}

/// A removal found by the comparison of a node away past the tombstones drops the domain's
/// report as one applied from its tombstone does: kept, it held back the name's orders should it
/// come back (approved by `tls.ask` on this node, say).
#[tokio::test]
async fn a_removal_found_by_the_comparison_drops_the_domains_report() {
    use crate::certs::IssueGate as _;

    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let (onboarding, propagation) = checked_node(&f, &clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    f.store
        .put_domain_checks(&a, &report(&clock, no_cname()))
        .await
        .unwrap();
    propagation.scan().await.unwrap();
    assert!(onboarding.hold(&a).is_some());

    f.store.remove_domain(&a).await.unwrap();
    prune_every_tombstone(&f.store, clock.clock().now()).await;
    assert!(propagation.applied() < f.store.pruned_through().await.unwrap());
    propagation.scan().await.unwrap();
    assert!(!f.policy.is_registered(a.as_str()));
    assert!(onboarding.latest(&a).is_none());
    assert!(onboarding.hold(&a).is_none());
}

/// A changed row whose key does not read (a damaged row) is skipped with an error, and the
/// changes listed after it are applied: it used to fail the whole page, on every scan of every
/// node, holding back every later change.
#[tokio::test]
async fn an_unreadable_changed_row_is_skipped_and_the_changes_after_it_applied() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    f.store.add_domain(&a, clock.clock().now()).await.unwrap();
    let v = f.store.latest_version().await.unwrap();
    let damaged = Change {
        version: v - 1,
        what: Changed::Unreadable {
            table: "domains".into(),
            key: "not a name!".into(),
        },
        removed: true,
    };
    let listed = Change {
        version: v,
        what: Changed::Domain(a.clone()),
        removed: false,
    };
    let (applied, logs) = crate::logged::logged_async(
        tracing::Level::ERROR,
        f.propagation.apply(vec![damaged, listed]),
    )
    .await;
    applied.unwrap();
    assert!(
        f.policy.is_registered(a.as_str()),
        "the change after it applied"
    );
    assert_eq!(f.propagation.applied(), v);
    assert!(
        logs.contains("a changed row's key cannot be read; skipped"),
        "{logs}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_silent_for_a_week_is_forgotten_at_a_heartbeat() {
    let clock = ManualClock::starting_now();
    let f = fixture(&clock).await;
    let now = clock.clock().now();
    let week_and_a_bit = NODE_KEEP + Duration::from_secs(60);
    f.store
        .heartbeat("scaled-away", now - week_and_a_bit, 1, now - week_and_a_bit)
        .await
        .unwrap();
    f.store
        .heartbeat(
            "restarting",
            now - NODE_KEEP,
            1,
            now - NODE_KEEP + Duration::from_secs(60),
        )
        .await
        .unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let running = tokio::spawn(Arc::new(f.propagation).run(stop));
    // The first heartbeat is at once; a paused clock lets the loops run to their sleeps.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    running.await.unwrap();
    let nodes: Vec<String> = f
        .store
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(nodes, ["edge-b", "restarting"]);
}
