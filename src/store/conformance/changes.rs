//! What every [`Store`] must do for change propagation: each write to a domain, certificate or
//! link key takes a fresh version, each delete leaves a tombstone, and the changes since a
//! version are listed oldest first; heartbeats record the nodes `cluster status` shows.

use super::{cert, d, t};
use crate::store::{Change, Changed, IssueStatus, Store, StoreError};

/// What changed since `version`, as (what, removed) pairs, checking the versions grow.
pub(super) async fn since(
    store: &dyn Store,
    version: u64,
) -> Result<Vec<(Changed, bool)>, StoreError> {
    let changes = store.changes_since(version, 1000).await?;
    let versions: Vec<u64> = changes.iter().map(|c| c.version).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]) && versions.iter().all(|v| *v > version),
        "versions not increasing past {version}: {versions:?}"
    );
    Ok(changes
        .into_iter()
        .map(|Change { what, removed, .. }| (what, removed))
        .collect())
}

/// Adds, updates and deletes of domains, certificates and link keys are listed after the
/// version seen before them, each under its latest write, deletes as tombstones.
pub async fn every_write_and_delete_is_a_change_since_the_last_version(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    assert_eq!(store.latest_version().await?, 0, "an empty store");
    store.add_domain(&a, t(1)).await?;
    store.add_domain(&b, t(1)).await?;
    let key = store.add_link_key([7; 32], t(1)).await?;
    // Another key to seal with, so that the first may go.
    store.add_link_key([8; 32], t(1)).await?;
    let seen = store.latest_version().await?;
    assert_eq!(since(store, 0).await?.len(), 4);
    assert_eq!(
        since(store, seen).await?,
        vec![],
        "nothing after the latest"
    );

    store.put_certificate(&a, &cert("local", 1, 100)).await?;
    store
        .set_status(
            &b,
            &IssueStatus {
                failures: 1,
                ..IssueStatus::default()
            },
        )
        .await?;
    store.remove_link_key(key).await?;
    assert_eq!(
        since(store, seen).await?,
        vec![
            (Changed::Certificate(a.clone()), false),
            (Changed::Domain(b.clone()), false),
            (Changed::LinkKey(key), true),
        ]
    );
    let seen = store.latest_version().await?;
    store.remove_domain(&a).await?;
    let removed = since(store, seen).await?;
    assert_eq!(
        removed,
        vec![
            (Changed::Certificate(a.clone()), true),
            (Changed::Domain(a.clone()), true),
        ]
    );
    // Added again: the row is newer than its tombstone.
    let seen = store.latest_version().await?;
    store.add_domain(&a, t(2)).await?;
    assert_eq!(since(store, seen).await?, vec![(Changed::Domain(a), false)]);
    Ok(())
}

/// Changes come in pages of at most `limit`, and the next page starts after the last version.
pub async fn changes_come_in_pages_oldest_first(store: &dyn Store) -> Result<(), StoreError> {
    for i in 0..5 {
        store
            .add_domain(&d(&format!("n{i}.example.com")), t(1))
            .await?;
    }
    let first = store.changes_since(0, 3).await?;
    assert_eq!(first.len(), 3);
    let last = first.last().map_or(0, |c| c.version);
    let rest = store.changes_since(last, 3).await?;
    let names: Vec<Changed> = first.iter().chain(&rest).map(|c| c.what.clone()).collect();
    let expected: Vec<Changed> = (0..5)
        .map(|i| Changed::Domain(d(&format!("n{i}.example.com"))))
        .collect();
    assert_eq!(names, expected);
    Ok(())
}

/// Tombstones are pruned once at least `keep` old, by one run per `keep` whoever asks, and
/// `pruned_through` names the highest version that may be gone; rows are never pruned.
pub async fn old_tombstones_are_pruned_once_per_bound(store: &dyn Store) -> Result<(), StoreError> {
    let keep = std::time::Duration::from_secs(3600);
    let (a, b, c) = (d("a.example.com"), d("b.example.com"), d("c.example.com"));
    for name in [&a, &b, &c] {
        store.add_domain(name, t(1)).await?;
    }
    store.remove_domain(&a).await?;
    let a_gone = store.latest_version().await?;
    assert_eq!(store.pruned_through().await?, 0, "nothing pruned yet");
    // The first run only marks what it saw; a run before `keep` has passed does nothing.
    assert_eq!(store.prune_tombstones(t(10_000), keep).await?, Some(0));
    assert_eq!(store.prune_tombstones(t(10_000), keep).await?, None);
    assert_eq!(store.prune_tombstones(t(10_000 + 3599), keep).await?, None);
    store.remove_domain(&b).await?;
    // An hour on: the tombstone marked then goes, the newer one stays.
    assert_eq!(
        store.prune_tombstones(t(10_000 + 3600), keep).await?,
        Some(1)
    );
    assert_eq!(store.pruned_through().await?, a_gone);
    assert_eq!(
        since(store, 0).await?,
        vec![
            (Changed::Domain(c.clone()), false),
            (Changed::Domain(b.clone()), true)
        ]
    );
    assert_eq!(
        store.prune_tombstones(t(10_000 + 7200), keep).await?,
        Some(1)
    );
    assert_eq!(since(store, 0).await?, vec![(Changed::Domain(c), false)]);
    assert!(store.pruned_through().await? > a_gone);
    // The last write was a delete whose tombstone is gone: a node starting now still starts
    // at or past the prune mark, with nothing to compare.
    assert!(store.latest_version().await? >= store.pruned_through().await?);
    Ok(())
}

/// A node's heartbeat replaces its last one; nodes are listed by id; those silent since before
/// a time are forgotten.
pub async fn heartbeats_record_each_node_once(store: &dyn Store) -> Result<(), StoreError> {
    store.heartbeat("edge-b", t(10), 3, t(11)).await?;
    store.heartbeat("edge-a", t(10), 4, t(12)).await?;
    store.heartbeat("edge-b", t(10), 7, t(15)).await?;
    let nodes = store.nodes().await?;
    let seen: Vec<(&str, u64, std::time::SystemTime)> = nodes
        .iter()
        .map(|n| (n.node_id.as_str(), n.applied, n.heartbeat_at))
        .collect();
    assert_eq!(seen, vec![("edge-a", 4, t(12)), ("edge-b", 7, t(15))]);
    assert_eq!(nodes[1].started_at, t(10));

    // Forgetting those silent since before a time keeps those heard from at it or later.
    assert_eq!(store.forget_nodes(t(12)).await?, 0);
    assert_eq!(store.forget_nodes(t(13)).await?, 1);
    let left: Vec<String> = store
        .nodes()
        .await?
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(left, vec!["edge-b"]);
    Ok(())
}
