//! What every [`Store`] must do, written once against the trait: one async function per
//! behaviour, each given a fresh, empty store. An implementation's test module runs them all with
//! [`store_conformance_tests!`](crate::store_conformance_tests):
//!
//! ```ignore
//! clickedge::store_conformance_tests!(async { MyStore::connect(fresh_database()).await.unwrap() });
//! ```
//!
//! Only the behaviour the rest of the edge relies on is asserted, not how a store gets there.
//! Public so that a store living outside this crate's unit tests can run the same suite; not
//! part of the edge's API.

/// Eight calls of `$call` at once on one store; their results in an array.
macro_rules! eight_at_once {
    ($call:expr) => {{
        let (a, b, c, d, e, f, g, h) =
            tokio::join!($call, $call, $call, $call, $call, $call, $call, $call);
        [a, b, c, d, e, f, g, h]
    }};
}

mod changes;
mod cluster;
mod secrets;

use std::time::SystemTime;

pub use changes::*;
pub use cluster::*;
pub use secrets::*;

use super::{
    AcmeProblem, CertInfo, CertSummary, Changed, DomainPages, FailureKind, IssueFailure,
    IssueStatus, Origin, Store, StoreError, StoredCert,
};
use crate::Domain;
use crate::clock::from_unix_secs;

/// Defines one `#[tokio::test]` per conformance behaviour; `$fresh` is an expression (usually an
/// `async` block) evaluated anew in every test, giving an empty store.
#[doc(hidden)]
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:expr) => {
        $crate::store_conformance_tests!(@each $fresh;
            domains_are_registered_once_and_listed_by_name,
            approved_names_are_registered_once_with_origin_ask,
            an_operator_add_takes_over_an_approved_name,
            removing_a_domain_deletes_its_certificate_and_checks,
            a_fallback_url_is_kept_with_its_domain_and_propagates,
            certificates_round_trip_with_their_keys,
            certificates_are_read_in_pages_each_once,
            domains_are_read_in_pages_each_once,
            a_listing_pages_in_byte_order_with_each_certificate,
            certificate_summary_counts_and_finds_the_soonest_expiry,
            issuance_status_round_trips_and_resets,
            a_status_update_changes_what_is_recorded,
            concurrent_status_updates_are_never_lost,
            domain_checks_round_trip_and_go_with_the_domain,
            challenges_are_kept_per_kind_until_they_expire,
            withdrawing_a_challenge_also_drops_expired_ones,
            link_keys_get_increasing_ids_and_can_be_removed,
            a_retired_link_key_is_kept_with_its_first_retirement_time,
            the_last_key_not_retired_stays_whatever_changes_at_once,
            small_values_round_trip,
            a_small_value_added_keeps_the_first,
            a_lease_goes_to_one_holder_until_it_expires,
            concurrent_acquires_grant_one_lease,
            fences_grow_across_names,
            a_lease_extends_only_under_its_fence_while_unexpired,
            the_order_url_is_kept_across_release_and_takeover,
            an_order_kept_for_a_removed_name_is_not_listed,
            a_stale_fence_cannot_release_extend_or_keep_an_order,
            fenced_writes_never_replace_a_later_issue_or_a_higher_fence,
            the_order_budget_is_a_gcra_bucket,
            concurrent_takes_never_exceed_the_budget,
            a_pause_stops_orders_until_it_ends,
            every_write_and_delete_is_a_change_since_the_last_version,
            changes_come_in_pages_oldest_first,
            old_tombstones_are_pruned_once_per_bound,
            heartbeats_record_each_node_once,
        );
    };
    (@each $fresh:expr; $($behaviour:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $behaviour() {
                let store = $fresh.await;
                if let Err(e) = $crate::store::conformance::$behaviour(&store).await {
                    panic!("{}", $crate::errors::chain(&e));
                }
            }
        )+
    };
}

/// A name the tests use; the literals are valid names.
fn d(name: &str) -> Domain {
    Domain::parse(name).unwrap_or_else(|e| panic!("test domain {name}: {e}"))
}

/// A timestamp `secs` after the epoch, as the store's record types take it.
fn t(secs: u64) -> SystemTime {
    from_unix_secs(secs)
}

fn cert(issuer: &str, not_before: u64, not_after: u64) -> StoredCert {
    StoredCert {
        issuer: issuer.into(),
        chain_pem: format!("chain of {issuer}"),
        key_pem: format!("key of {issuer}"),
        not_before: t(not_before),
        not_after: t(not_after),
    }
}

/// Adding a domain twice registers it once; listings are sorted by name; one domain reads back
/// with the time it was first added and no issuance error.
pub async fn domains_are_registered_once_and_listed_by_name(
    store: &dyn Store,
) -> Result<(), StoreError> {
    assert!(store.domains().await?.is_empty());
    assert!(store.add_domain(&d("b.example.com"), t(1)).await?);
    assert!(store.add_domain(&d("a.example.com"), t(2)).await?);
    assert!(!store.add_domain(&d("a.example.com"), t(3)).await?);
    let names: Vec<_> = store.domains().await?.into_iter().map(|r| r.name).collect();
    assert_eq!(names, vec![d("a.example.com"), d("b.example.com")]);
    let a = store
        .domain(&d("a.example.com"))
        .await?
        .expect("a is registered");
    assert_eq!(a.created_at, t(2), "adding again keeps the first time");
    assert_eq!((a.last_error, a.failures), (None, 0));
    assert_eq!(a.origin, Origin::Admin);
    assert_eq!(store.domain(&d("c.example.com")).await?, None);
    Ok(())
}

/// A name `tls.ask` approved is registered with origin `ask`, once: approving it again, or
/// approving a name an operator added, changes nothing.
pub async fn approved_names_are_registered_once_with_origin_ask(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    assert!(store.add_approved_domain(&a, t(1)).await?);
    assert!(!store.add_approved_domain(&a, t(2)).await?);
    let rec = store.domain(&a).await?.expect("a is registered");
    assert_eq!((rec.origin, rec.created_at), (Origin::Ask, t(1)));
    store.add_domain(&b, t(3)).await?;
    assert!(!store.add_approved_domain(&b, t(4)).await?);
    let rec = store.domain(&b).await?.expect("b is registered");
    assert_eq!((rec.origin, rec.created_at), (Origin::Admin, t(3)));
    let names: Vec<_> = store.domains().await?.into_iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        vec![a, b],
        "approved names are listed with the others"
    );
    Ok(())
}

/// An operator adding a name `tls.ask` approved takes it over (origin `admin`), keeping its
/// time, status and certificate; adding it says it was not new.
pub async fn an_operator_add_takes_over_an_approved_name(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let a = d("a.example.com");
    store.add_approved_domain(&a, t(1)).await?;
    let failed = IssueStatus {
        last_error: Some(IssueFailure {
            kind: FailureKind::Refused,
            detail: "refused".into(),
        }),
        failures: 2,
        retry_at: Some(t(50)),
    };
    store.set_status(&a, &failed).await?;
    store.put_certificate(&a, &cert("acme", 10, 20)).await?;
    assert!(!store.add_domain(&a, t(5)).await?);
    let rec = store.domain(&a).await?.expect("a is registered");
    assert_eq!((rec.origin, rec.created_at), (Origin::Admin, t(1)));
    assert_eq!(IssueStatus::of(&rec), failed);
    assert_eq!(store.certificate(&a).await?, Some(cert("acme", 10, 20)));
    assert_eq!(
        store.certificate_info(&a).await?,
        Some(CertInfo::from(&cert("acme", 10, 20)))
    );
    Ok(())
}

/// Removing a domain deletes its certificate and checks with it, says whether it was there, and
/// a domain added again starts clean.
pub async fn removing_a_domain_deletes_its_certificate_and_checks(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let a = d("a.example.com");
    store.add_domain(&a, t(1)).await?;
    store.put_certificate(&a, &cert("local", 10, 20)).await?;
    store.put_domain_checks(&a, "{\"checks\":[]}").await?;
    assert!(store.remove_domain(&a).await?);
    assert!(!store.remove_domain(&a).await?);
    assert_eq!(store.domain(&a).await?, None);
    assert_eq!(store.certificate(&a).await?, None);
    assert_eq!(store.certificate_info(&a).await?, None);
    assert!(store.cert_lifetimes().await?.is_empty());
    store.add_domain(&a, t(2)).await?;
    assert_eq!(store.certificate(&a).await?, None);
    assert!(store.domain_checks().await?.is_empty());
    Ok(())
}

/// A domain's fallback URL is none at first, reads back as set, is cleared with none, survives
/// adding the domain again, goes with the domain, and is only set on a registered domain; every
/// change of it is a change of the domain since the last version (other nodes apply it).
pub async fn a_fallback_url_is_kept_with_its_domain_and_propagates(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    let url = "https://www.example.com/expired";
    store.add_domain(&a, t(1)).await?;
    store.add_domain(&b, t(1)).await?;
    let fallback = |r: Option<super::DomainRecord>| r.and_then(|r| r.fallback_url);
    assert_eq!(fallback(store.domain(&a).await?), None);

    let seen = store.latest_version().await?;
    assert!(store.set_fallback_url(&a, Some(url)).await?);
    assert_eq!(fallback(store.domain(&a).await?).as_deref(), Some(url));
    assert_eq!(fallback(store.domain(&b).await?), None, "b is left alone");
    assert_eq!(
        since(store, seen).await?,
        vec![(Changed::Domain(a.clone()), false)]
    );

    assert!(!store.add_domain(&a, t(2)).await?);
    let rec = store.domain(&a).await?.expect("a is registered");
    assert_eq!(
        rec.fallback_url.as_deref(),
        Some(url),
        "adding again keeps it"
    );
    assert_eq!((rec.origin, rec.created_at), (Origin::Admin, t(1)));

    let seen = store.latest_version().await?;
    assert!(store.set_fallback_url(&a, None).await?);
    assert_eq!(fallback(store.domain(&a).await?), None);
    assert_eq!(
        since(store, seen).await?,
        vec![(Changed::Domain(a.clone()), false)]
    );

    let c = d("c.example.com");
    assert!(!store.set_fallback_url(&c, Some(url)).await?);
    assert_eq!(store.domain(&c).await?, None, "setting registers nothing");

    store.set_fallback_url(&a, Some(url)).await?;
    store.remove_domain(&a).await?;
    store.add_domain(&a, t(3)).await?;
    assert_eq!(
        fallback(store.domain(&a).await?),
        None,
        "a new domain starts clean"
    );
    Ok(())
}

/// A certificate reads back exactly as stored, chain and private key included; storing again
/// replaces it; lifetimes list every certificate by name.
pub async fn certificates_round_trip_with_their_keys(store: &dyn Store) -> Result<(), StoreError> {
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    store.add_domain(&a, t(1)).await?;
    store.add_domain(&b, t(1)).await?;
    assert_eq!(store.certificate(&a).await?, None);
    let first = cert("local", 10, 20);
    store.put_certificate(&a, &first).await?;
    assert_eq!(store.certificate(&a).await?, Some(first));
    let renewed = cert("acme", 15, 30);
    store.put_certificate(&a, &renewed).await?;
    store.put_certificate(&b, &cert("local", 5, 25)).await?;
    assert_eq!(store.certificate(&a).await?, Some(renewed));
    let lifetimes: Vec<_> = store
        .cert_lifetimes()
        .await?
        .into_iter()
        .map(|l| (l.domain, l.not_before, l.not_after))
        .collect();
    assert_eq!(lifetimes, vec![(a, t(15), t(30)), (b, t(5), t(25))]);
    Ok(())
}

/// Names whose order differs by collation (`-` and `.` against letters), for the paged reads.
const COLLATION_SENSITIVE: [&str; 5] = [
    "a-b.example.com",
    "ab.example.com",
    "a.example.com",
    "b.example.com",
    "z.example.org",
];

/// Paging through the certificates (each page after the last name of the one before) reads
/// every stored one once, with its key, in pages no longer than asked; an empty store is one
/// empty page.
pub async fn certificates_are_read_in_pages_each_once(store: &dyn Store) -> Result<(), StoreError> {
    assert!(store.certificates_after(None, 10).await?.is_empty());
    let names = COLLATION_SENSITIVE;
    for (i, name) in names.iter().enumerate() {
        store.add_domain(&d(name), t(1)).await?;
        let issuer = format!("issuer {i}");
        store
            .put_certificate(&d(name), &cert(&issuer, 10, 20 + i as u64))
            .await?;
    }
    let mut read = Vec::new();
    let mut after = None;
    loop {
        let page = store.certificates_after(after.as_ref(), 2).await?;
        assert!(page.len() <= 2, "a page of {} asked 2", page.len());
        after = page.last().map(|(name, _)| name.clone());
        let short = page.len() < 2;
        for (name, cert) in page {
            read.push((name, cert?));
        }
        if short {
            break;
        }
    }
    read.sort_by(|x, y| x.0.cmp(&y.0));
    let mut expected: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (d(name), cert(&format!("issuer {i}"), 10, 20 + i as u64)))
        .collect();
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(read, expected);
    Ok(())
}

/// Walking the domains a page at a time ([`DomainPages`]) reads every registered one once, with
/// its record, in pages no longer than asked; an empty store has no page.
pub async fn domains_are_read_in_pages_each_once(store: &dyn Store) -> Result<(), StoreError> {
    assert_eq!(DomainPages::with_limit(store, 2).next().await?, None);
    let names = COLLATION_SENSITIVE;
    for (i, name) in names.iter().enumerate() {
        store.add_domain(&d(name), t(i as u64)).await?;
    }
    let mut read = Vec::new();
    let mut pages = DomainPages::with_limit(store, 2);
    while let Some(page) = pages.next().await? {
        assert!(
            (1..=2).contains(&page.len()),
            "a page of {} asked 2",
            page.len()
        );
        read.extend(page.into_iter().map(|r| (r.name, r.created_at)));
    }
    read.sort();
    let mut expected: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (d(name), t(i as u64)))
        .collect();
    expected.sort();
    assert_eq!(read, expected);
    Ok(())
}

/// A listing's pages ([`Store::listing_after`]) follow each other in byte order of names,
/// whatever the database's collation, each domain with its certificate's issuer and validity
/// (none without one); past the last name, an empty page.
pub async fn a_listing_pages_in_byte_order_with_each_certificate(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let mut names = COLLATION_SENSITIVE.map(d);
    for (i, name) in names.iter().enumerate() {
        store.add_domain(name, t(i as u64)).await?;
    }
    let with_cert = d("ab.example.com");
    store
        .put_certificate(&with_cert, &cert("acme", 10, 20))
        .await?;
    names.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut read = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.listing_after(&after, 2).await?;
        assert!(page.len() <= 2, "a page of {} asked 2", page.len());
        let Some((last, _)) = page.last() else { break };
        after = last.name.to_string();
        read.extend(page);
    }
    // Any text is a place to start: after "ab" come the names from "ab.example.com" on.
    let from_b = store.listing_after("ab", 10).await?;
    assert_eq!(from_b.len(), 3, "{from_b:?}");
    assert_eq!(from_b[0].0.name.as_str(), "ab.example.com");
    let read_names: Vec<_> = read.iter().map(|(r, _)| r.name.clone()).collect();
    assert_eq!(read_names, names);
    for (record, info) in &read {
        let expected = (record.name == with_cert).then(|| CertInfo {
            issuer: "acme".into(),
            not_before: t(10),
            not_after: t(20),
        });
        assert_eq!(info, &expected, "{}", record.name);
    }
    Ok(())
}

/// The summary counts certificates; of those still valid, finds the soonest expiry and counts
/// those expiring strictly before the time asked about; and counts those expired apart (a
/// certificate that expired unreplaced is not "expiring" for ever).
pub async fn certificate_summary_counts_and_finds_the_soonest_expiry(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let empty = store.cert_summary(t(0), t(100)).await?;
    assert_eq!(
        (
            empty.count,
            empty.soonest_expiry,
            empty.expiring,
            empty.expired
        ),
        (0, None, 0, 0)
    );
    for (name, not_after) in [("a.example.com", 20), ("b.example.com", 40)] {
        store.add_domain(&d(name), t(1)).await?;
        store
            .put_certificate(&d(name), &cert("local", 10, not_after))
            .await?;
    }
    let summary = |s: CertSummary| (s.count, s.soonest_expiry, s.expiring, s.expired);
    let at = |now, before| store.cert_summary(t(now), t(before));
    assert_eq!(summary(at(10, 21).await?), (2, Some(t(20)), 1, 0));
    assert_eq!(summary(at(10, 20).await?), (2, Some(t(20)), 0, 0));
    assert_eq!(summary(at(10, 41).await?), (2, Some(t(20)), 2, 0));
    // a expired at 20: no longer expiring, nor the soonest.
    assert_eq!(summary(at(21, 41).await?), (2, Some(t(40)), 1, 1));
    assert_eq!(summary(at(41, 50).await?), (2, None, 0, 2));
    Ok(())
}

/// The outcome of the last issuance attempt reads back with the domain, and a default status
/// clears it.
pub async fn issuance_status_round_trips_and_resets(store: &dyn Store) -> Result<(), StoreError> {
    let b = d("b.example.com");
    store.add_domain(&b, t(1)).await?;
    let boom = IssueFailure {
        kind: FailureKind::Problem(AcmeProblem::RateLimited),
        detail: "boom".into(),
    };
    let failed = IssueStatus {
        last_error: Some(boom.clone()),
        failures: 2,
        retry_at: Some(t(99)),
    };
    store.set_status(&b, &failed).await?;
    let rec = store.domain(&b).await?.expect("b is registered");
    assert_eq!(
        rec.last_error,
        Some(boom),
        "the kind reads back with the words"
    );
    assert_eq!((rec.failures, rec.retry_at), (2, Some(t(99))));
    store.set_status(&b, &IssueStatus::default()).await?;
    let rec = store.domain(&b).await?.expect("b is registered");
    let cleared = IssueStatus::default();
    assert_eq!(
        (rec.last_error, rec.failures, rec.retry_at),
        (cleared.last_error, cleared.failures, cleared.retry_at)
    );
    Ok(())
}

/// An update is given the status as recorded and records what it returns; one that returns
/// none, or of a name not registered, records nothing.
pub async fn a_status_update_changes_what_is_recorded(store: &dyn Store) -> Result<(), StoreError> {
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    store.add_domain(&a, t(1)).await?;
    let held = IssueStatus {
        last_error: Some(IssueFailure {
            kind: FailureKind::HeldBack {
                check: "caa".into(),
            },
            detail: "held".into(),
        }),
        failures: 3,
        retry_at: Some(t(70)),
    };
    store.set_status(&a, &held).await?;
    let seen = held.clone();
    let released = store
        .update_status(
            &a,
            Box::new(move |current| {
                assert_eq!(*current, seen, "the update is given the recorded status");
                Some(IssueStatus {
                    last_error: None,
                    ..current.clone()
                })
            }),
        )
        .await?;
    let expected = IssueStatus {
        last_error: None,
        ..held
    };
    assert_eq!(released.as_ref(), Some(&expected));
    let rec = store.domain(&a).await?.expect("a is registered");
    assert_eq!(IssueStatus::of(&rec), expected);
    assert_eq!(store.update_status(&a, Box::new(|_| None)).await?, None);
    let rec = store.domain(&a).await?.expect("a is registered");
    assert_eq!(IssueStatus::of(&rec), expected, "left as it was");
    let any = Box::new(|_: &IssueStatus| Some(IssueStatus::default()));
    assert_eq!(store.update_status(&b, any).await?, None);
    assert_eq!(store.domain(&b).await?, None, "an update registers nothing");
    Ok(())
}

/// Updates of one name at once each see the status the one before recorded: eight counting a
/// failure each count eight.
pub async fn concurrent_status_updates_are_never_lost(store: &dyn Store) -> Result<(), StoreError> {
    let a = d("a.example.com");
    store.add_domain(&a, t(1)).await?;
    let one_more = || -> super::StatusChange {
        Box::new(|current| {
            Some(IssueStatus {
                failures: current.failures + 1,
                ..current.clone()
            })
        })
    };
    for r in eight_at_once!(store.update_status(&a, one_more())) {
        r?.expect("a is registered");
    }
    let rec = store.domain(&a).await?.expect("a is registered");
    assert_eq!(rec.failures, 8, "no update lost another's");
    Ok(())
}

/// The latest check report of a domain reads back, replaced by the next one.
pub async fn domain_checks_round_trip_and_go_with_the_domain(
    store: &dyn Store,
) -> Result<(), StoreError> {
    let (a, b) = (d("a.example.com"), d("b.example.com"));
    store.add_domain(&a, t(1)).await?;
    store.add_domain(&b, t(1)).await?;
    assert!(store.domain_checks().await?.is_empty());
    assert_eq!(store.domain_checks_of(&a).await?, None);
    assert!(store.put_domain_checks(&a, "{\"checks\":[]}").await?);
    assert!(store.put_domain_checks(&a, "{\"checks\":[1]}").await?);
    assert_eq!(
        store.domain_checks().await?,
        vec![(a.clone(), "{\"checks\":[1]}".to_owned())]
    );
    assert_eq!(
        store.domain_checks_of(&a).await?.as_deref(),
        Some("{\"checks\":[1]}")
    );
    assert_eq!(store.domain_checks_of(&b).await?, None);
    store.remove_domain(&a).await?;
    assert!(store.domain_checks().await?.is_empty());
    assert_eq!(store.domain_checks_of(&a).await?, None);
    assert!(
        !store.put_domain_checks(&a, "{\"checks\":[2]}").await?,
        "removed while its checks ran: nothing stored"
    );
    assert_eq!(store.domain_checks_of(&a).await?, None);
    Ok(())
}

/// A small value added (the ACME account two nodes create at once) keeps the first written:
/// each writer gets that one back.
pub async fn a_small_value_added_keeps_the_first(store: &dyn Store) -> Result<(), StoreError> {
    assert_eq!(
        store.add_kv("acme.account", "{\"id\":1}").await?,
        "{\"id\":1}"
    );
    assert_eq!(
        store.add_kv("acme.account", "{\"id\":2}").await?,
        "{\"id\":1}"
    );
    assert_eq!(
        store.kv("acme.account").await?.as_deref(),
        Some("{\"id\":1}")
    );
    let (a, b) = tokio::join!(store.add_kv("at.once", "a"), store.add_kv("at.once", "b"));
    assert_eq!(a?, b?);
    Ok(())
}

/// Small values (the ACME account) read back, replaced by the last write.
pub async fn small_values_round_trip(store: &dyn Store) -> Result<(), StoreError> {
    assert_eq!(store.kv("acme.account").await?, None);
    store.put_kv("acme.account", "{\"id\":1}").await?;
    store.put_kv("acme.account", "{\"id\":2}").await?;
    store.put_kv("other", "x").await?;
    assert_eq!(
        store.kv("acme.account").await?.as_deref(),
        Some("{\"id\":2}")
    );
    Ok(())
}
