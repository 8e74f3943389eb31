//! Policy over a real `ask` endpoint on loopback and a real (in-memory) store.

use std::sync::Arc;
use std::time::Instant;

use super::testing::AskServer;
use super::*;
use crate::clock::{ManualClock, from_unix_secs};
use crate::metrics::Metrics;
use crate::store::{Origin, SqliteStore, Store};

fn d(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

/// A policy with no registered names over `server`, its store, metrics and clock (at 1 000 s).
fn over(server: &AskServer, rate_burst: Option<(u32, u32)>) -> (Policy, Arc<dyn Store>, Metrics) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let metrics = Metrics::unregistered();
    let clock = ManualClock::new(from_unix_secs(1_000)).clock();
    let ask = server.ask(store.clone(), &metrics, clock, rate_burst);
    (Policy::new([], Some(ask)), store, metrics)
}

#[tokio::test]
async fn registers_and_unregisters() {
    let p = Policy::new([d("a.example.com")], None);
    assert!(p.is_registered("a.example.com"));
    assert!(!p.is_registered("b.example.com"));
    p.register(d("b.example.com"));
    p.unregister("a.example.com").await;
    assert!(!p.is_registered("a.example.com"));
    assert!(p.is_registered("b.example.com"));
    assert_eq!(p.len(), 1);
}

#[tokio::test]
async fn the_registered_name_is_shared_not_copied() {
    let a = d("a.example.com");
    let p = Policy::new([a.clone()], None);
    let shared = p.registered_name(d("a.example.com").as_str()).unwrap();
    assert_eq!(shared, a);
    assert!(
        std::ptr::eq(shared.as_str(), a.as_str()),
        "a second allocation of the name"
    );
    assert_eq!(p.registered_name("b.example.com"), None);
    p.unregister("a.example.com").await;
    assert_eq!(p.registered_name("a.example.com"), None);
}

#[tokio::test]
async fn a_fallback_is_served_while_its_domain_is_registered() {
    let store = SqliteStore::in_memory().unwrap();
    let a = d("a.example.com");
    store.add_domain(&a, from_unix_secs(1)).await.unwrap();
    let p = Policy::default();
    async fn record(store: &SqliteStore) -> DomainRecord {
        let a = d("a.example.com");
        store.domain(&a).await.unwrap().unwrap()
    }
    p.register_record(&record(&store).await);
    assert!(p.is_registered("a.example.com"));
    assert_eq!(p.fallback("a.example.com"), None);

    let url = "https://www.example.com/expired";
    store.set_fallback_url(&a, Some(url)).await.unwrap();
    p.register_record(&record(&store).await);
    assert_eq!(p.fallback("a.example.com").unwrap(), url);
    assert_eq!(p.fallback("b.example.com"), None, "only the domain's own");

    store.set_fallback_url(&a, None).await.unwrap();
    p.register_record(&record(&store).await);
    assert_eq!(p.fallback("a.example.com"), None, "cleared");

    store.set_fallback_url(&a, Some(url)).await.unwrap();
    p.register_record(&record(&store).await);
    p.unregister("a.example.com").await;
    assert_eq!(p.fallback("a.example.com"), None, "gone with its domain");
    p.register(a.clone());
    assert_eq!(
        p.fallback("a.example.com"),
        None,
        "registered again: no fallback"
    );
    // Written to the store past the API's check: never a Location.
    for bad in [
        "javascript:alert(1)",
        "data:text/html,x",
        "ftp://example.com/",
    ] {
        store.set_fallback_url(&a, Some(bad)).await.unwrap();
        p.register_record(&record(&store).await);
        assert_eq!(p.fallback("a.example.com"), None, "{bad}");
    }
}

#[tokio::test]
async fn an_approved_name_is_registered_in_the_store_with_origin_ask() {
    let server = AskServer::start().await;
    let (p, store, metrics) = over(&server, None);
    let ok = d("ok.example.com");
    assert!(p.allows(&ok).await);
    assert!(
        p.is_registered(ok.as_str()),
        "served from memory from now on"
    );
    let rec = store.domain(&ok).await.unwrap().expect("recorded");
    assert_eq!(
        (rec.origin, rec.created_at),
        (Origin::Ask, from_unix_secs(1_000))
    );
    assert!(p.allows(&ok).await);
    assert_eq!(
        server.hits(),
        1,
        "a registered name is not asked about again"
    );
    assert_eq!(metrics.ask_requests.allowed.get(), 1);
}

#[tokio::test]
async fn only_a_direct_200_approves() {
    let server = AskServer::start().await;
    let (p, store, metrics) = over(&server, None);
    for name in [
        "redirect.example.com",
        "empty.example.com",
        "no.example.com",
    ] {
        assert!(!p.allows(&d(name)).await, "{name}");
    }
    assert_eq!(server.followed(), 0, "the redirect is not followed");
    assert!(store.domains().await.unwrap().is_empty());
    assert_eq!(metrics.ask_requests.denied.get(), 3);
}

#[tokio::test]
async fn denials_and_failures_are_remembered() {
    let server = AskServer::start().await;
    let (p, _store, metrics) = over(&server, None);
    for _ in 0..5 {
        assert!(!p.allows(&d("no.example.com")).await);
        assert!(!p.allows(&d("fail.example.com")).await);
    }
    assert_eq!(server.hits(), 2, "one request per name");
    assert_eq!(metrics.ask_requests.denied.get(), 1);
    assert_eq!(metrics.ask_requests.error.get(), 1);
    assert_eq!(metrics.ask_cache_hits.get(), 8);
}

/// A 429 is the endpoint not deciding: a failure, remembered for seconds, not a denial
/// remembered for `ask_cache_ttl`.
#[tokio::test]
async fn an_endpoint_too_busy_to_answer_has_failed_not_denied() {
    let server = AskServer::start().await;
    let (p, _store, metrics) = over(&server, None);
    assert!(!p.allows(&d("busy.example.com")).await);
    assert_eq!(metrics.ask_requests.error.get(), 1);
    assert_eq!(metrics.ask_requests.denied.get(), 0);
}

/// An approval the store could not record is refused, and not recorded again at each of the
/// name's handshakes while the store is down (each write waits on the membership lock and on the
/// store): it is asked about and recorded afresh after a failure's few seconds.
#[tokio::test]
async fn an_approval_the_store_could_not_record_is_not_retried_at_every_handshake() {
    let server = AskServer::start().await;
    let blips = crate::store::blips::Blips::over(Arc::new(SqliteStore::in_memory().unwrap()));
    blips
        .add_approved
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let metrics = Metrics::unregistered();
    let clock = ManualClock::new(from_unix_secs(1_000)).clock();
    let p = Policy::new([], Some(server.ask(blips.clone(), &metrics, clock, None)));
    let ok = d("ok.example.com");
    assert!(!p.allows(&ok).await, "not recorded: refused");
    // The store answers again, but the failure is remembered: no write, no request.
    assert!(!p.allows(&ok).await);
    assert_eq!(server.hits(), 1);
    assert!(blips.domains().await.unwrap().is_empty());
}

/// A replaced answer lives as its new kind does: an approval turned failure (not recorded) is
/// asked about again within seconds, not at the end of the approval's `ask_cache_ttl`.
#[test]
fn an_answer_replaced_by_a_failure_expires_as_a_failure() {
    use moka::Expiry as _;
    let expiry = ask::AnswerExpiry {
        ttl: std::time::Duration::from_secs(3600),
    };
    let name = d("ok.example.com");
    let now = Instant::now();
    let left = Some(std::time::Duration::from_secs(3599));
    assert_eq!(
        expiry.expire_after_update(&name, &ask::Answer::Failed, now, left),
        Some(ask::FAILURE_TTL)
    );
    assert_eq!(
        expiry.expire_after_create(&name, &ask::Answer::Allowed, now),
        Some(std::time::Duration::from_secs(3600))
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_refuses() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let metrics = Metrics::unregistered();
    let settings = AskSettings {
        cache_ttl: std::time::Duration::from_secs(60),
        rate: 1.try_into().unwrap(),
        burst: 1.try_into().unwrap(),
    };
    let url = "http://127.0.0.1:9/ask".parse().unwrap();
    let ask = Ask::new(
        url,
        settings,
        store,
        &metrics,
        ManualClock::starting_now().clock(),
    );
    let p = Policy::new([], Some(ask.unwrap()));
    assert!(!p.allows(&d("ok.example.com")).await);
    assert_eq!(metrics.ask_requests.error.get(), 1);
}

#[tokio::test]
async fn names_beyond_the_rate_are_refused_without_a_request() {
    let server = AskServer::start().await;
    let (rate, burst) = (1, 3);
    let (p, _store, metrics) = over(&server, Some((rate, burst)));
    let started = Instant::now();
    for i in 0..50 {
        assert!(!p.allows(&d(&format!("random-{i}.example.com"))).await);
    }
    // The bucket refills at `rate` per second: whatever this machine's speed, the requests made
    // are at most the burst plus what the time taken refilled.
    let refilled = started.elapsed().as_secs() as usize * rate as usize + 1;
    let made = server.hits();
    assert!(made >= burst as usize, "the burst is asked: {made}");
    assert!(made <= burst as usize + refilled, "{made} requests");
    assert_eq!(metrics.ask_requests.limited.get() as usize, 50 - made);
    // A refused name is not remembered: asked again once there is room.
    assert_eq!(metrics.ask_cache_hits.get(), 0);
}

#[tokio::test]
async fn removing_an_approved_name_forgets_its_answer() {
    let server = AskServer::start().await;
    let (p, store, _metrics) = over(&server, None);
    let ok = d("ok.example.com");
    assert!(p.allows(&ok).await);
    store.remove_domain(&ok).await.unwrap();
    p.unregister(ok.as_str()).await;
    assert!(!p.is_registered(ok.as_str()));
    assert!(p.allows(&ok).await);
    assert_eq!(server.hits(), 2, "asked afresh after the removal");
}
