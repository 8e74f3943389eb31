//! The periodic re-check over a real (in-memory) store, certificates from the built-in CA.

use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::domain::Zones;
use crate::issuer::LocalCa;
use crate::policy::Policy;
use crate::store::{IssueStatus, SqliteStore};

/// Certificates from the built-in CA (whose files live in the returned directory) over `store`.
fn certs_on(
    store: &Arc<dyn Store>,
    policy: &Arc<Policy>,
    clock: &ManualClock,
) -> (Arc<Certs>, tempfile::TempDir) {
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(ca_dir.path(), Zones::reserved(), clock.clock()).unwrap();
    let certs = Certs::for_tests(store.clone(), Arc::new(ca), policy.clone(), clock.clock());
    (Arc::new(certs), ca_dir)
}

/// Checks that gate (a CNAME target set) asking a DNS server that is not there: lookups fail at
/// once, without the network.
fn offline() -> Settings {
    let mut settings = Settings::example();
    settings.dns_servers = vec![SocketAddr::from(([127, 0, 0, 1], 9))];
    settings
}

/// An edge's store with `valid` names holding a certificate and `bare` names without (returned),
/// and the CA's directory to keep while it is used.
async fn store_with(valid: usize, bare: usize) -> (Arc<dyn Store>, Vec<Domain>, tempfile::TempDir) {
    let clock = ManualClock::starting_now();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let policy = Arc::new(Policy::default());
    let (certs, ca_dir) = certs_on(&store, &policy, &clock);
    let mut bare_names = Vec::new();
    for i in 0..valid + bare {
        let name = Domain::parse(&format!("n{i}.example.com")).unwrap();
        store.add_domain(&name, clock.clock().now()).await.unwrap();
        policy.register(name.clone());
        if i < valid {
            certs.resolve(&name).await.unwrap();
        } else {
            bare_names.push(name);
        }
    }
    (store, bare_names, ca_dir)
}

/// Runs one periodic pass on a node just started on `store` (nothing cached); the store
/// queries it made, and the names it checked.
async fn one_pass(store: &Arc<dyn Store>) -> (u64, Vec<Domain>) {
    let clock = ManualClock::starting_now();
    let (certs, _ca_dir) = certs_on(store, &Arc::new(Policy::default()), &clock);
    let onboarding = Arc::new(Onboarding::new(offline(), store.clone(), clock.clock()));
    let before = store.queries().get();
    onboarding.recheck_due(&certs).await.unwrap();
    let mut checked: Vec<Domain> = onboarding.latest.iter().map(|e| e.key().clone()).collect();
    checked.sort();
    (store.queries().get() - before, checked)
}

/// Names with a valid certificate are not re-checked, and finding them out costs the same
/// however many there are: one read of every lifetime, not a certificate read each.
#[tokio::test]
async fn a_pass_reads_certificate_lifetimes_once_not_each_certificate() {
    let (few, few_bare, _a) = store_with(2, 1).await;
    let (many, many_bare, _b) = store_with(12, 1).await;
    let (few_queries, few_checked) = one_pass(&few).await;
    let (many_queries, many_checked) = one_pass(&many).await;
    assert_eq!(few_checked, few_bare);
    assert_eq!(many_checked, many_bare);
    assert_eq!(few_queries, many_queries);
}

/// A name whose renewal failed on what the checks see (a CAA record changed since issuance) is
/// checked again though its certificate is valid: its report shows what the renewal met. Other
/// failures (a rate limit) leave it alone.
#[tokio::test]
async fn a_valid_name_whose_renewal_failed_on_what_checks_see_is_checked_again() {
    let (store, _, _dir) = store_with(3, 0).await;
    let name = |i: usize| Domain::parse(&format!("n{i}.example.com")).unwrap();
    use crate::store::{AcmeProblem, FailureKind, IssueFailure};
    for (i, problem) in [(0, AcmeProblem::Caa), (1, AcmeProblem::RateLimited)] {
        let failed = IssueStatus {
            last_error: Some(IssueFailure {
                kind: FailureKind::Problem(problem),
                detail: "refused".into(),
            }),
            failures: 1,
            retry_at: None,
        };
        store.set_status(&name(i), &failed).await.unwrap();
    }
    let (_, checked) = one_pass(&store).await;
    assert_eq!(checked, [name(0)]);
}

/// Runs overlap: one that started later and ended first saw newer DNS (perhaps the customer's
/// fix), so a run that started before it and ends after it leaves that report standing.
#[tokio::test]
async fn a_run_that_started_earlier_does_not_replace_a_newer_report() {
    let (store, bare, _dir) = store_with(0, 1).await;
    let name = &bare[0];
    let clock = ManualClock::starting_now();
    let (certs, _ca_dir) = certs_on(&store, &Arc::new(Policy::default()), &clock);
    let onboarding = Onboarding::new(offline(), store.clone(), clock.clock());
    // What a run started a second from now stored while this one was under way.
    let newer = Arc::new(Report {
        checked_at: clock.clock().now() + Duration::from_secs(1),
        checks: Vec::new(),
    });
    onboarding.latest.insert(name.clone(), newer.clone());
    let record = store.domain(name).await.unwrap().unwrap();
    let got = onboarding.check(&record, &certs).await.unwrap();
    assert!(Arc::ptr_eq(&got, &newer));
    assert!(Arc::ptr_eq(&onboarding.latest(name).unwrap(), &newer));
    assert_eq!(
        store.domain_checks_of(name).await.unwrap(),
        None,
        "nothing stored"
    );
    // A run that starts after it replaces it.
    clock.advance(Duration::from_secs(2));
    let got = onboarding.check(&record, &certs).await.unwrap();
    assert!(got.checked_at > newer.checked_at);
    assert!(store.domain_checks_of(name).await.unwrap().is_some());
}

/// A run that ends after its domain was removed keeps no report: were it kept, a report of the
/// removed registration could hold back the orders of the name registered again.
#[tokio::test]
async fn a_run_that_ends_after_its_domain_was_removed_keeps_nothing() {
    let (store, bare, _dir) = store_with(0, 1).await;
    let name = &bare[0];
    let clock = ManualClock::starting_now();
    let (certs, _ca_dir) = certs_on(&store, &Arc::new(Policy::default()), &clock);
    let onboarding = Onboarding::new(offline(), store.clone(), clock.clock());
    let record = store.domain(name).await.unwrap().unwrap();
    // Removed while the run was under way (its record read before).
    assert!(store.remove_domain(name).await.unwrap());
    onboarding.forget(name).await;
    onboarding.check(&record, &certs).await.unwrap();
    assert!(onboarding.latest(name).is_none());
}

/// A name is remembered only while it still holds the next time back, so names removed on
/// another node (never through a removal here) do not pile up.
#[test]
fn once_per_keeps_only_the_names_within_their_period() {
    let every = Duration::from_secs(3600);
    let limit = OncePer::new(every);
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_000);
    let (a, b) = (
        Domain::parse("a.example.com").unwrap(),
        Domain::parse("b.example.com").unwrap(),
    );
    assert!(limit.may(&a, t0));
    assert!(!limit.may(&a, t0 + every - Duration::from_secs(1)));
    assert!(limit.may(&b, t0 + every));
    assert_eq!(limit.names(), [b]);
    assert!(limit.may(&a, t0 + every), "a period after: again");
}

/// Held back, it says how long is left; the status pages' rechecks answer `429` with it.
#[test]
fn once_per_says_the_time_left() {
    let every = Duration::from_secs(10);
    let limit = OncePer::new(every);
    let t0 = std::time::UNIX_EPOCH + Duration::from_secs(1_000);
    let a = Domain::parse("a.example.com").unwrap();
    assert_eq!(limit.try_at(&a, t0), Ok(()));
    assert_eq!(
        limit.try_at(&a, t0 + Duration::from_secs(3)),
        Err(Duration::from_secs(7))
    );
    assert_eq!(limit.try_at(&a, t0 + every), Ok(()));
}

/// Two runs of one name at once: the name is being checked until the last ends, so a periodic
/// pass does not start a third while the second still runs.
#[test]
fn overlapping_runs_of_a_name_keep_it_marked_until_the_last_ends() {
    let runs = Mutex::new(HashMap::new());
    let name = Domain::parse("links.example.com").unwrap();
    let first = Running::start(&runs, &name);
    let second = Running::start(&runs, &name);
    drop(first);
    assert!(runs.lock().unwrap().contains_key(&name));
    drop(second);
    assert!(runs.lock().unwrap().is_empty());
}

/// An unreachable name holds back orders when orders validate over HTTP: with ACME and
/// `http-01` first in `acme.challenges` (the default; an order answers the first configured
/// challenge the CA offers), not with `tls-alpn-01` first, nor with the built-in CA.
#[test]
fn reachability_holds_back_orders_when_orders_validate_over_http() {
    let blocks = |issuer: IssuerKind, challenges: &[ChallengeKind]| {
        let mut config = Config::default();
        config.tls.issuer = issuer;
        config.acme.challenges = challenges.to_vec();
        Settings::from_config(&config).http_blocks
    };
    let (http, alpn) = (ChallengeKind::Http01, ChallengeKind::TlsAlpn01);
    assert!(blocks(IssuerKind::Acme, &Config::default().acme.challenges));
    assert!(blocks(IssuerKind::Acme, &[http, alpn]));
    assert!(blocks(IssuerKind::Acme, &[http]));
    assert!(!blocks(IssuerKind::Acme, &[alpn, http]));
    assert!(!blocks(IssuerKind::Acme, &[alpn]));
    assert!(!blocks(IssuerKind::Local, &[http]));
}

/// Checks that hold nothing back let go of a hold a handshake here recorded while they ran
/// (after the record they were given was read).
#[tokio::test]
async fn checks_that_pass_release_a_hold_recorded_while_they_ran() {
    struct Holding;
    impl IssueGate for Holding {
        fn hold(&self, _: &Domain) -> Option<Hold> {
            Some(Hold {
                check: "caa".into(),
                message: "the caa check fails".into(),
            })
        }
    }
    let clock = ManualClock::starting_now();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    let policy = Arc::new(Policy::default());
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(ca_dir.path(), Zones::reserved(), clock.clock()).unwrap();
    let certs = Arc::new(
        Certs::for_tests(store.clone(), Arc::new(ca), policy.clone(), clock.clock())
            .with_gate(Arc::new(Holding)),
    );
    let name = Domain::parse("links.example.com").unwrap();
    store.add_domain(&name, clock.clock().now()).await.unwrap();
    policy.register(name.clone());
    let read_before = store.domain(&name).await.unwrap().unwrap();
    // A handshake while the checks run: held back, recorded.
    assert!(certs.resolve(&name).await.is_err());
    let held = store.domain(&name).await.unwrap().unwrap();
    assert!(IssueStatus::of(&held).held_back(), "{held:?}");
    // Not configured (no CNAME target, no addresses): no check holds anything back.
    let mut settings = offline();
    settings.cname_target = None;
    settings.addresses.clear();
    let onboarding = Onboarding::new(settings, store.clone(), clock.clock());
    onboarding.check(&read_before, &certs).await.unwrap();
    let after = store.domain(&name).await.unwrap().unwrap();
    assert!(!IssueStatus::of(&after).held_back(), "{after:?}");
    assert!(!certs.held_here(&name), "released: nothing to remember");

    // Held here again, then released by another node's checks: its change clears the memory
    // too, or every passing run here would lock the row for a hold long gone.
    clock.advance(Duration::from_secs(3600));
    assert!(certs.resolve(&name).await.is_err());
    assert!(certs.held_here(&name));
    store
        .set_status(&name, &IssueStatus::default())
        .await
        .unwrap();
    certs.apply_status(&store.domain(&name).await.unwrap().unwrap());
    assert!(!certs.held_here(&name));
}
