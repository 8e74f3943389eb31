use std::time::Duration;

use super::*;
use crate::clock::{ManualClock, from_unix_secs};
use crate::config::Config;
use crate::domain::Zones;
use crate::issuer::LocalCa;
use crate::onboarding::Settings;
use crate::store::{AcmeProblem, FailureKind, IssueFailure, IssueStatus, SqliteStore};

/// The lifecycle over an empty in-memory store, the built-in CA and unconfigured checks,
/// with a clock standing at 1 000 s.
struct Fixture {
    domains: Domains,
    store: Arc<dyn Store>,
    clock: ManualClock,
    _ca_dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_over(Arc::new(SqliteStore::in_memory().unwrap()))
}

fn fixture_over(store: Arc<dyn Store>) -> Fixture {
    let ca_dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(from_unix_secs(1_000));
    let policy = Arc::new(Policy::default());
    let certs = Arc::new(Certs::for_tests(
        store.clone(),
        Arc::new(LocalCa::load_or_create(ca_dir.path(), Zones::reserved(), clock.clock()).unwrap()),
        policy.clone(),
        clock.clock(),
    ));
    let mut settings = Settings::from_config(&Config::default());
    // Nothing listens there: lookups fail at once, without the network.
    settings.dns_servers = vec!["127.0.0.1:9".parse().unwrap()];
    let onboarding = Arc::new(Onboarding::new(settings, store.clone(), clock.clock()));
    Fixture {
        domains: Domains::new(store.clone(), policy, certs, onboarding, clock.clock()),
        store,
        clock,
        _ca_dir: ca_dir,
    }
}

fn d(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

/// The CA refused for CAA `failures` times in a row; no order before `retry_at`.
fn caa_refused(failures: u32, retry_at: SystemTime) -> IssueStatus {
    IssueStatus {
        last_error: Some(IssueFailure {
            kind: FailureKind::Problem(AcmeProblem::Caa),
            detail: "urn:ietf:params:acme:error:caa".into(),
        }),
        failures,
        retry_at: Some(retry_at),
    }
}

#[tokio::test]
async fn adding_and_removing_keep_the_store_and_the_policy_in_step() {
    let f = fixture();
    let domains = &f.domains;
    let a = d("a.example.com");
    let added = domains.add(a.clone(), None).await.unwrap();
    assert!(added.created);
    assert_eq!(added.domain.record.created_at, from_unix_secs(1_000));
    assert_eq!(added.domain.certificate.status, "none");
    assert!(added.domain.checks.is_empty() && added.domain.checked_at.is_none());
    assert!(domains.policy.is_registered(a.as_str()));
    assert!(!domains.add(a.clone(), None).await.unwrap().created);
    assert_eq!(domains.list("").await.unwrap().len(), 1);

    domains.remove(&a).await.unwrap();
    assert!(!domains.policy.is_registered(a.as_str()));
    assert!(matches!(
        domains.remove(&a).await,
        Err(DomainError::NothingToRemove(_))
    ));
    assert!(matches!(
        domains.show(&a).await,
        Err(DomainError::NotRegistered(_))
    ));
    assert!(matches!(
        domains.check(&a).await,
        Err(DomainError::NotRegistered(_))
    ));
}

#[tokio::test]
async fn a_removal_while_an_add_reads_its_row_back_leaves_the_policy_as_the_store_says() {
    let blips = crate::store::blips::Blips::over(Arc::new(SqliteStore::in_memory().unwrap()));
    let f = fixture_over(blips.clone());
    let a = d("a.example.com");
    blips.stall_domain.arm();
    let add = f.domains.add(a.clone(), None);
    let remove_meanwhile = async {
        // The add has written the row and read it back, and has not registered it yet.
        blips.stall_domain.held().await;
        let remove = f.domains.remove(&a);
        tokio::pin!(remove);
        // The removal runs to its end here unless something holds it back until the add
        // has registered what it read.
        let ran = tokio::time::timeout(Duration::from_millis(200), &mut remove).await;
        blips.stall_domain.release();
        match ran {
            Ok(removed) => removed,
            Err(_) => remove.await,
        }
    };
    let (added, removed) = tokio::join!(add, remove_meanwhile);
    added.unwrap();
    removed.unwrap();
    assert!(f.store.domain(&a).await.unwrap().is_none());
    assert!(
        !f.domains.policy.is_registered(a.as_str()),
        "served with no row in the store"
    );
}

#[tokio::test]
async fn a_fallback_reaches_the_policy_after_the_store_and_a_bad_one_changes_nothing() {
    let f = fixture();
    let domains = &f.domains;
    let a = d("a.example.com");
    let url = "https://www.example.com/expired";
    let added = domains.add(a.clone(), Some(url)).await.unwrap();
    assert_eq!(added.domain.record.fallback_url.as_deref(), Some(url));
    assert_eq!(domains.policy.fallback(a.as_str()).unwrap(), url);

    for bad in ["ftp://x.example/", "https:///x", "mailto:a@example.com"] {
        let e = domains.set_fallback(&a, Some(bad)).await.unwrap_err();
        assert!(matches!(e, DomainError::BadFallback(_)), "{bad}: {e}");
        let b = d("b.example.com");
        assert!(domains.add(b.clone(), Some(bad)).await.is_err());
        assert!(!domains.policy.is_registered(b.as_str()), "{bad} added b");
    }
    assert_eq!(domains.policy.fallback(a.as_str()).unwrap(), url);
    // A link of the edge: its own (also while being added), or another domain's.
    for edge_link in [
        "https://a.example.com/c/x",
        "https://A.example.com./o/x",
        "http://a.example.com/c/",
    ] {
        let e = domains.set_fallback(&a, Some(edge_link)).await.unwrap_err();
        assert!(
            matches!(e, DomainError::FallbackIsEdgeLink(_)),
            "{edge_link}: {e}"
        );
        let c = d("c.example.com");
        let e = domains.add(c.clone(), Some(edge_link)).await.unwrap_err();
        assert!(
            matches!(e, DomainError::FallbackIsEdgeLink(_)),
            "{edge_link}: {e}"
        );
    }
    let e = domains
        .add(d("c.example.com"), Some("https://c.example.com/c/x"))
        .await
        .unwrap_err();
    assert!(matches!(e, DomainError::FallbackIsEdgeLink(_)), "{e}");
    // Another site's /c/ path is a page like any other.
    domains
        .set_fallback(&a, Some("https://www.example.com/c/x"))
        .await
        .unwrap();
    domains.set_fallback(&a, Some(url)).await.unwrap();
    assert_eq!(domains.policy.fallback(a.as_str()).unwrap(), url);
    // Adding again without a fallback keeps it.
    domains.add(a.clone(), None).await.unwrap();
    assert_eq!(domains.policy.fallback(a.as_str()).unwrap(), url);

    let cleared = domains.set_fallback(&a, None).await.unwrap();
    assert_eq!(cleared.record.fallback_url, None);
    assert_eq!(domains.policy.fallback(a.as_str()), None);
    assert!(matches!(
        domains.set_fallback(&d("c.example.com"), Some(url)).await,
        Err(DomainError::NotRegistered(_))
    ));
}

#[tokio::test]
async fn adding_a_domain_again_clears_its_backoff() {
    let f = fixture();
    let (domains, store) = (&f.domains, &f.store);
    let a = d("a.example.com");
    domains.add(a.clone(), None).await.unwrap();
    let failed = caa_refused(3, from_unix_secs(5_000));
    store.set_status(&a, &failed).await.unwrap();
    let shown = domains.show(&a).await.unwrap();
    assert_eq!(shown.certificate.failures, 3);

    // The next handshake may order at once; the failures in a row are kept until one succeeds
    // (a failure after the reset waits as the fourth would).
    let again = domains.add(a.clone(), None).await.unwrap().domain;
    assert_eq!(again.record.failures, 3);
    assert_eq!(again.record.last_error, None);
    assert_eq!(again.record.retry_at, None);
}

/// Checks that pass, having passed before, saw nothing fixed: they clear a backoff the CA
/// caused at most once an hour, however often a status page left open checks.
#[tokio::test]
async fn checks_that_saw_nothing_fixed_clear_a_backoff_at_most_once_an_hour() {
    let f = fixture();
    let (domains, store, clock) = (&f.domains, &f.store, &f.clock);
    let a = d("a.example.com");
    domains.add(a.clone(), None).await.unwrap();
    let failed = || caa_refused(1, clock.clock().now() + Duration::from_secs(600));
    let checked = domains.check(&a).await.unwrap();
    assert!(
        checked
            .checks
            .iter()
            .all(|c| !c.blocking || c.status != crate::onboarding::CheckStatus::Fail),
        "{:?}",
        checked.checks
    );
    let retry_at = |s: DomainState| s.record.retry_at;
    store.set_status(&a, &failed()).await.unwrap();
    assert_eq!(
        retry_at(domains.check(&a).await.unwrap()),
        None,
        "the first clears it"
    );
    for _ in 0..3 {
        clock.advance(Duration::from_secs(10));
        store.set_status(&a, &failed()).await.unwrap();
        let kept = retry_at(domains.check(&a).await.unwrap());
        assert_eq!(kept, failed().retry_at, "then not for an hour");
    }
    clock.advance(Duration::from_secs(3600));
    store.set_status(&a, &failed()).await.unwrap();
    assert_eq!(retry_at(domains.check(&a).await.unwrap()), None);
}

/// Checks that failed and pass now saw something fixed: they clear a CA failure's backoff
/// whoever runs them, the periodic run too (here `Onboarding::check`, as it calls it).
#[tokio::test]
async fn checks_that_pass_after_failing_clear_the_backoff_whoever_runs_them() {
    use crate::onboarding::{Check, CheckId, Report};
    let f = fixture();
    let a = d("a.example.com");
    f.domains.add(a.clone(), None).await.unwrap();
    let failing = Report {
        checked_at: f.clock.clock().now(),
        checks: vec![Check::fail(
            CheckId::PointsToEdge,
            "a.example.com has no CNAME",
            "add it".into(),
            true,
        )],
    };
    // The CA refused, then checks that failed pass: the backoff is cleared. Flapping checks
    // (fail, pass, fail, pass) clear it again only once FIX_RESET_EVERY has passed: not an
    // order every few seconds.
    let run = |at_secs: u64| {
        let (domains, store, clock) = (&f.domains, &f.store, &f.clock);
        let a = a.clone();
        let mut failing = failing.clone();
        async move {
            clock.advance(Duration::from_secs(at_secs));
            failing.checked_at = clock.clock().now();
            store
                .put_domain_checks(&a, &serde_json::to_string(&failing).unwrap())
                .await
                .unwrap();
            domains.onboarding.reload(&a).await.unwrap();
            let failed = caa_refused(2, clock.clock().now() + Duration::from_secs(600));
            store.set_status(&a, &failed).await.unwrap();
            let record = store.domain(&a).await.unwrap().unwrap();
            let report = domains
                .onboarding
                .check(&record, &domains.certs)
                .await
                .unwrap();
            (report, store.domain(&a).await.unwrap().unwrap().retry_at)
        }
    };
    let flap = |at_secs: u64| async move { run(at_secs).await.1 };
    let (report, retry_at) = run(0).await;
    assert!(report.blocking().is_none(), "{report:?}");
    assert_eq!(retry_at, None);

    assert!(flap(20).await.is_some(), "20 s after the last: kept");
    let last = crate::onboarding::FIX_RESET_EVERY.as_secs();
    assert!(flap(last - 40).await.is_some(), "still within the period");
    assert_eq!(flap(20).await, None, "a period after the last: cleared");
}

#[tokio::test]
async fn a_check_on_request_is_stamped_by_the_clock() {
    let f = fixture();
    let (domains, clock) = (&f.domains, &f.clock);
    let a = d("a.example.com");
    domains.add(a.clone(), None).await.unwrap();
    clock.advance(Duration::from_secs(30));
    let checked = domains.check(&a).await.unwrap();
    assert_eq!(checked.checked_at, Some(from_unix_secs(1_030)));
    assert!(!checked.checks.is_empty());
}

/// A stored certificate of `issuer` valid from 0 to `not_after` seconds (its chain and key are
/// never read by a listing).
fn stored_cert(issuer: &str, not_after: u64) -> crate::store::StoredCert {
    crate::store::StoredCert {
        issuer: issuer.into(),
        chain_pem: "chain".into(),
        key_pem: "key".into(),
        not_before: from_unix_secs(0),
        not_after: from_unix_secs(not_after),
    }
}

#[tokio::test]
async fn a_listing_reads_a_page_per_query_and_shows_each_domain_as_showing_it_does() {
    let f = fixture();
    let domains = &f.domains;
    // In byte order "a-c" comes before "ab" ('-' < 'b'), where a locale's collation that
    // skips punctuation puts it after.
    let names = ["a-c.example.com", "ab.example.com", "b.example.com"].map(d);
    for name in &names {
        domains.add(name.clone(), None).await.unwrap();
    }
    let (valid, expired) = (&names[0], &names[2]);
    f.store
        .put_certificate(valid, &stored_cert("acme", 5_000))
        .await
        .unwrap();
    f.store
        .put_certificate(expired, &stored_cert("local", 500))
        .await
        .unwrap();

    let before = f.store.queries().get();
    let listed = domains.list("").await.unwrap();
    assert_eq!(
        f.store.queries().get() - before,
        1,
        "one query for the page"
    );
    let listed_names: Vec<&Domain> = listed.iter().map(|s| &s.record.name).collect();
    assert_eq!(listed_names, names.iter().collect::<Vec<_>>());
    for state in &listed {
        let shown = domains.show(&state.record.name).await.unwrap();
        assert_eq!(
            serde_json::to_value(&state.certificate).unwrap(),
            serde_json::to_value(&shown.certificate).unwrap(),
            "{}",
            state.record.name
        );
    }
    assert_eq!(listed[0].certificate.status, "valid");
    assert_eq!(listed[0].certificate.issuer.as_deref(), Some("acme"));
    assert_eq!(listed[1].certificate.status, "none");
    assert_eq!(listed[2].certificate.status, "none");
    assert_eq!(listed[2].certificate.issuer.as_deref(), Some("local"));

    let first = domains.page("", 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = domains
        .page(first[1].record.name.as_str(), 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].record.name, names[2]);
    let after_first = domains.list(names[0].as_str()).await.unwrap();
    assert_eq!(after_first.len(), 2);
    // `after` need not be registered.
    let after_gap = domains.list("aa.example.com").await.unwrap();
    assert_eq!(after_gap[0].record.name, names[1]);
}
