//! Tests of the link key service: rotation, the seal delay, retirement and removal, and minting links and pixels.

use super::*;
use crate::clock::{ManualClock, from_unix_secs};
use crate::http::router::{Route, route};
use crate::store::SqliteStore;

async fn keys(clock: &ManualClock) -> LinkKeys {
    keys_with_limit(clock, 8192).await
}

async fn keys_with_limit(clock: &ManualClock, max_uri_bytes: usize) -> LinkKeys {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let policy = Arc::new(Policy::new([Domain::parse("a.example.com").unwrap()], None));
    LinkKeys::load(store, policy, max_uri_bytes, clock.clock())
        .await
        .unwrap()
}

/// The token of a minted link.
fn token(link: &str) -> &str {
    link.rsplit_once('/').unwrap().1
}

#[tokio::test]
async fn a_fresh_store_gets_a_first_key_and_rotation_moves_the_seal() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    let keys = keys(&clock).await;
    let first = keys.list();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].id, first[0].active), (KeyId(1), true));
    assert_eq!(first[0].created_at, from_unix_secs(1_000));
    clock.advance(Duration::from_secs(60));
    let added = keys.rotate().await.unwrap();
    assert_eq!(added.id, KeyId(2));
    assert_eq!(added.created_at, from_unix_secs(1_060));
    let listed = keys.list();
    assert_eq!(listed[0], added);
    assert_eq!((listed[1].id, listed[1].active), (KeyId(1), false));
    assert_eq!(keys.ring().current().active().id(), KeyId(2));
}

#[tokio::test]
async fn with_a_seal_delay_a_new_key_opens_at_once_and_seals_once_it_is_old_enough() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    let keys = keys(&clock).await.with_seal_delay(Duration::from_secs(65));
    let a = Domain::parse("a.example.com").unwrap();
    clock.advance(Duration::from_secs(100));
    let added = keys.rotate().await.unwrap();
    assert_eq!((added.id, added.active), (KeyId(2), false));
    assert_eq!(added.seals_from, Some(from_unix_secs(1_165)));
    assert_eq!(keys.list()[0], added, "listed as rotate answered");
    assert_eq!(keys.list()[1].seals_from, None, "key 1 seals");
    // Minted now: sealed with key 1, which every node has.
    let link = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
    let opened_with = |ring: &KeyRing| links::open(ring, a.as_str(), token(&link)).is_ok();
    let only_first = KeyRing::new(vec![keys.ring().current().keys()[1].clone()]).unwrap();
    assert!(opened_with(&only_first), "a node without key 2 opens it");
    // Key 1 cannot go while it seals, but a new key is there already: the refusal says when
    // key 1 can go, not to add one.
    let refused = keys.remove(1).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "key 1 seals new links until key 2 is 1m 5s old (1970-01-01T00:19:25Z), by when every \
         node has key 2; remove key 1 after that"
    );
    // Retiring key 1 now would make key 2 seal before every node has it.
    let refused = keys.retire(1).await.unwrap_err();
    assert!(
        matches!(refused, KeyError::NextNotReady { id: 1, next: 2, .. }),
        "{refused}"
    );
    assert_eq!(
        refused.to_string(),
        "key 1 seals new links until key 2 is 1m 5s old (1970-01-01T00:19:25Z), by when every \
         node has key 2; retire key 1 after that"
    );
    let after_refusal = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
    assert!(
        links::open(&only_first, a.as_str(), token(&after_refusal)).is_ok(),
        "still sealed with key 1"
    );
    clock.advance(Duration::from_secs(65));
    keys.retire(1).await.unwrap();
    let link = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
    assert!(links::open(&only_first, a.as_str(), token(&link)).is_err());
    assert!(links::open(&keys.ring().current(), a.as_str(), token(&link)).is_ok());
    assert_eq!(
        keys.list()[0],
        KeyInfo {
            id: KeyId(2),
            created_at: from_unix_secs(1_100),
            active: true,
            retired_at: None,
            seals_from: None,
        }
    );
    // Just retired: a node that has not seen it yet may still seal with key 1.
    let refused = keys.remove(1).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "key 1 was retired at 1970-01-01T00:19:25Z: a node that has not seen that yet may still \
         seal new links with it; remove key 1 after 1970-01-01T00:20:30Z \
         (2 × cluster.scan_interval + 5 s: 1m 5s)"
    );
    clock.advance(Duration::from_secs(65));
    keys.remove(1).await.unwrap();
}

#[tokio::test]
async fn the_sealing_key_stays_and_removed_keys_stop_opening_their_links() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    let keys = keys(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    let link = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
    assert!(matches!(keys.remove(1).await, Err(KeyError::Sealing(1))));
    keys.rotate().await.unwrap();
    assert!(links::open(&keys.ring().current(), a.as_str(), token(&link)).is_ok());
    keys.remove(1).await.unwrap();
    assert!(links::open(&keys.ring().current(), a.as_str(), token(&link)).is_err());
    assert!(matches!(keys.remove(1).await, Err(KeyError::NoSuchKey(1))));
}

#[tokio::test]
async fn a_retired_key_stops_sealing_and_keeps_opening_but_the_last_sealing_one_stays() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    let keys = keys(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    assert!(matches!(
        keys.retire(1).await,
        Err(KeyError::LastSealing(1))
    ));
    assert!(matches!(keys.retire(9).await, Err(KeyError::NoSuchKey(9))));
    keys.rotate().await.unwrap();
    let by_2 = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
    clock.advance(Duration::from_secs(60));
    let retired = keys.retire(2).await.unwrap();
    assert_eq!(retired.retired_at, Some(from_unix_secs(1_060)));
    assert!(!retired.active);
    let ring = keys.ring().current();
    assert_eq!(
        ring.active().id(),
        KeyId(1),
        "the newest key not retired seals"
    );
    assert!(links::open(&ring, a.as_str(), token(&by_2)).is_ok());
    assert!(matches!(
        keys.retire(1).await,
        Err(KeyError::LastSealing(1))
    ));
    // Retiring again keeps the first time.
    clock.advance(Duration::from_secs(60));
    let again = keys.retire(2).await.unwrap();
    assert_eq!(again.retired_at, Some(from_unix_secs(1_060)));
}

/// Two changes at once never leave no key to seal: of two keys retired together, or one retired
/// while the other is removed, one change is refused. Both used to pass their checks against
/// the same ring, leaving every key retired (a retired key then sealed, and every status page
/// address failed). The node's own lock and the store's check (`KeyChange`, which alone would
/// pass this test now) each keep it so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_changes_at_once_never_leave_no_key_to_seal() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    for remove_first in [false, true] {
        let keys = Arc::new(keys(&clock).await);
        keys.rotate().await.unwrap();
        let (a, b) = (keys.clone(), keys.clone());
        let first = tokio::spawn(async move {
            if remove_first {
                a.remove(1).await
            } else {
                a.retire(1).await.map(drop)
            }
        });
        let second = tokio::spawn(async move { b.retire(2).await.map(drop) });
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert!(
            first.is_err() || second.is_err(),
            "both passed: {first:?} {second:?}"
        );
        let ring = keys.ring().current();
        assert!(
            ring.keys().iter().any(|k| !k.is_retired()),
            "{:?}",
            keys.list()
        );
    }
}

#[tokio::test]
async fn links_are_minted_now_and_only_for_registered_domains() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    let keys = keys(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    let minted = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
    let path = minted.strip_prefix("https://a.example.com").unwrap();
    assert_eq!(
        route(path),
        Route::Click(token(&minted)),
        "the edge routes it"
    );
    let link = links::open(&keys.ring().current(), a.as_str(), token(&minted)).unwrap();
    assert_eq!(link.minted_at, 1_000);
    let b = Domain::parse("b.example.com").unwrap();
    assert!(matches!(
        keys.mint(&b, "https://example.com/", Vec::new()),
        Err(MintError::NotRegistered(_))
    ));
    assert!(matches!(
        keys.mint(&a, "javascript:alert(1)", Vec::new()),
        Err(MintError::Link(_))
    ));
}

#[tokio::test]
async fn a_pixel_is_minted_at_o_and_opens_only_as_a_pixel() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    let keys = keys(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    let context = MessageContext {
        message: "m-1".into(),
        sent_at: Some(900),
        ..MessageContext::default()
    };
    let meta = vec![("r".to_owned(), "7".to_owned())];
    let pixel = keys.mint_pixel(&a, context.clone(), meta.clone()).unwrap();
    let token = pixel.strip_prefix("https://a.example.com/o/").unwrap();
    let ring = keys.ring().current();
    let opened = links::open_pixel(&ring, a.as_str(), token).unwrap();
    assert_eq!(
        (opened.context, opened.meta, opened.minted_at),
        (Some(context.clone()), meta.clone(), 1_000)
    );
    assert!(links::open(&ring, a.as_str(), token).is_err());
    let b = Domain::parse("b.example.com").unwrap();
    assert!(matches!(
        keys.mint_pixel(&b, context, meta),
        Err(MintError::NotRegistered(_))
    ));
    assert!(matches!(
        keys.mint_pixel(&a, MessageContext::default(), Vec::new()),
        Err(MintError::Link(LinkError::Context(_)))
    ));
}

#[tokio::test]
async fn no_link_is_minted_longer_than_the_edge_opens() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    let a = Domain::parse("a.example.com").unwrap();
    let url = format!("https://example.com/{}", "x".repeat(300));
    let meta = vec![("campaign".to_owned(), "spring".to_owned())];
    let fits = keys(&clock).await.mint(&a, &url, meta.clone()).unwrap();
    // Tokens of one link all have one length: the path is exactly this long.
    let path = fits.len() - "https://a.example.com".len();

    let at_limit = keys_with_limit(&clock, path).await;
    assert!(at_limit.mint(&a, &url, meta.clone()).is_ok());
    let below = keys_with_limit(&clock, path - 1).await;
    let err = below.mint(&a, &url, meta).unwrap_err();
    assert!(
        matches!(err, MintError::TooLong { length, limit } if length == path && limit == path - 1),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        &format!("{path} bytes"),
        &format!("limits.max_uri_bytes ({})", path - 1),
        "shorten the URL or the metadata",
    ] {
        assert!(message.contains(part), "{message}");
    }
}

#[tokio::test]
async fn a_link_or_pixel_of_the_edge_is_never_minted_as_a_destination() {
    let clock = ManualClock::new(from_unix_secs(1_000));
    let keys = keys(&clock).await;
    let a = Domain::parse("a.example.com").unwrap();
    let link = keys.mint(&a, "https://example.com/", Vec::new()).unwrap();
    let context = MessageContext {
        message: "m-1".into(),
        ..MessageContext::default()
    };
    let pixel = keys.mint_pixel(&a, context, Vec::new()).unwrap();
    for own in [
        link.as_str(),
        pixel.as_str(),
        "HTTP://A.Example.com./c/anything",
    ] {
        let err = keys.mint(&a, own, Vec::new()).unwrap_err();
        assert!(matches!(&err, MintError::EdgeLink(_)), "{own}: {err:?}");
        let words = err.to_string();
        assert!(words.contains("already a link of this edge"), "{words}");
        assert!(
            words.contains("mint a link to the destination it leads to"),
            "{words}"
        );
    }
    let err = keys.mint(&a, &link, Vec::new()).unwrap_err().to_string();
    assert!(err.contains(&format!("{link:?}")), "names the value: {err}");
    // What the router serves is what minting refuses.
    let path = link.strip_prefix("https://a.example.com").unwrap();
    assert_eq!(route(path), Route::Click(token(&link)));
    assert_eq!(
        links::edge_route(&link),
        Some(links::EdgeUrl {
            host: "a.example.com".to_owned(),
            route: links::EdgeRoute::Link,
            token: token(&link).to_owned(),
        })
    );
    // Another host's /c/, and the status pages' /s/, are destinations like any other.
    assert!(
        keys.mint(&a, "https://b.example.com/c/x", Vec::new())
            .is_ok()
    );
    assert!(
        keys.mint(&a, "https://a.example.com/s/tok", Vec::new())
            .is_ok()
    );
}
