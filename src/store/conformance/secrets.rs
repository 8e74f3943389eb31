//! What every [`Store`] must do with short-lived and secret values: ACME challenge responses
//! (answered until they expire, per kind) and the link key ring (ids, retirement).

use super::t;
use crate::config::ChallengeKind;
use crate::store::{KeyChange, Store, StoreError};

/// A published response is answered until (not at) its expiry, only for its kind, replaced when
/// published again, and gone once withdrawn.
pub async fn challenges_are_kept_per_kind_until_they_expire(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let http = ChallengeKind::Http01;
    store.put_challenge(http, "tok", "auth", t(100)).await?;
    assert_eq!(
        store.challenge(http, "tok", t(50)).await?.as_deref(),
        Some("auth")
    );
    assert_eq!(store.challenge(http, "tok", t(100)).await?, None, "expired");
    let alpn = ChallengeKind::TlsAlpn01;
    assert_eq!(
        store.challenge(alpn, "tok", t(50)).await?,
        None,
        "other kind"
    );
    assert_eq!(store.challenge(http, "other", t(50)).await?, None);
    store.put_challenge(http, "tok", "auth2", t(200)).await?;
    assert_eq!(
        store.challenge(http, "tok", t(150)).await?.as_deref(),
        Some("auth2")
    );
    store.put_challenge(alpn, "tok", "digest", t(200)).await?;
    store.remove_challenge(http, "tok", t(0)).await?;
    assert_eq!(store.challenge(http, "tok", t(50)).await?, None);
    assert_eq!(
        store.challenge(alpn, "tok", t(50)).await?.as_deref(),
        Some("digest")
    );
    Ok(())
}

/// Withdrawing one response also drops every response that expired by then, and no other.
pub async fn withdrawing_a_challenge_also_drops_expired_ones(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let http = ChallengeKind::Http01;
    store.put_challenge(http, "old", "a", t(10)).await?;
    store.put_challenge(http, "live", "b", t(100)).await?;
    store.remove_challenge(http, "gone", t(50)).await?;
    // Asked as of before its expiry: a store that kept it would still answer.
    assert_eq!(store.challenge(http, "old", t(5)).await?, None);
    assert_eq!(
        store.challenge(http, "live", t(50)).await?.as_deref(),
        Some("b")
    );
    Ok(())
}

/// Link keys are numbered from 1, each new one after the highest ever handed out (`clickedge
/// keys remove 1` means the first key everywhere), read back with their secret and time, and
/// removal says whether the key was there.
pub async fn link_keys_get_increasing_ids_and_can_be_removed(
    store: &dyn Store,
) -> Result<(), StoreError> {
    assert!(store.link_keys().await?.is_empty());
    assert_eq!(store.add_link_key([1; 32], t(1)).await?, 1);
    assert_eq!(store.add_link_key([2; 32], t(2)).await?, 2);
    assert_eq!(store.remove_link_key(1).await?, KeyChange::Done);
    assert_eq!(store.remove_link_key(1).await?, KeyChange::NoSuchKey);
    assert_eq!(store.add_link_key([3; 32], t(3)).await?, 3);
    let mut keys: Vec<_> = store
        .link_keys()
        .await?
        .into_iter()
        .map(|k| (k.id, k.secret, k.created_at))
        .collect();
    keys.sort_by_key(|k| k.0);
    assert_eq!(keys, vec![(2, [2; 32], t(2)), (3, [3; 32], t(3))]);
    // The newest removed: its id is not handed out again (its links would read as forged).
    assert_eq!(store.remove_link_key(3).await?, KeyChange::Done);
    assert_eq!(store.add_link_key([4; 32], t(4)).await?, 4);
    Ok(())
}

/// Retiring a key keeps it (secret and all) and records when; retiring it again keeps the first
/// time, and a key that is not there is reported.
pub async fn a_retired_link_key_is_kept_with_its_first_retirement_time(
    store: &dyn Store,
) -> Result<(), StoreError> {
    assert_eq!(store.add_link_key([1; 32], t(1)).await?, 1);
    assert_eq!(store.add_link_key([2; 32], t(2)).await?, 2);
    assert_eq!(store.retire_link_key(1, t(5)).await?, KeyChange::Done);
    assert_eq!(store.retire_link_key(1, t(9)).await?, KeyChange::Done);
    assert_eq!(store.retire_link_key(7, t(9)).await?, KeyChange::NoSuchKey);
    let mut keys: Vec<_> = store
        .link_keys()
        .await?
        .into_iter()
        .map(|k| (k.id, k.secret, k.retired_at))
        .collect();
    keys.sort_by_key(|k| k.0);
    assert_eq!(keys, vec![(1, [1; 32], Some(t(5))), (2, [2; 32], None)]);
    Ok(())
}

/// The last key not retired is neither retired nor removed, whoever asks and however many ask at
/// once (two nodes retiring one key each, or one retiring while the other removes): one change
/// is refused, and a key is left to seal with. A retired key may go any time.
pub async fn the_last_key_not_retired_stays_whatever_changes_at_once(
    store: &dyn Store,
) -> Result<(), StoreError> {
    assert_eq!(store.add_link_key([1; 32], t(1)).await?, 1);
    assert_eq!(
        store.retire_link_key(1, t(2)).await?,
        KeyChange::LastNotRetired
    );
    assert_eq!(store.remove_link_key(1).await?, KeyChange::LastNotRetired);
    let not_retired = async || -> Result<Vec<u16>, StoreError> {
        Ok(store
            .link_keys()
            .await?
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.id)
            .collect())
    };
    let one_each = |outcomes: [KeyChange; 2]| {
        assert!(
            outcomes.contains(&KeyChange::Done) && outcomes.contains(&KeyChange::LastNotRetired),
            "{outcomes:?}"
        );
    };

    // Two retirements at once.
    assert_eq!(store.add_link_key([2; 32], t(3)).await?, 2);
    let (a, b) = tokio::join!(
        store.retire_link_key(1, t(4)),
        store.retire_link_key(2, t(4))
    );
    one_each([a?, b?]);
    let left = not_retired().await?;
    assert_eq!(left.len(), 1, "{left:?}");
    let retired = if left[0] == 1 { 2 } else { 1 };
    assert_eq!(store.remove_link_key(retired).await?, KeyChange::Done);

    // A removal and a retirement at once.
    assert_eq!(store.add_link_key([3; 32], t(5)).await?, 3);
    let (a, b) = tokio::join!(
        store.remove_link_key(left[0]),
        store.retire_link_key(3, t(6))
    );
    one_each([a?, b?]);
    assert_eq!(not_retired().await?.len(), 1);
    Ok(())
}
