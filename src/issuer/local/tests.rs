//! The built-in CA: files, lifetimes, and the name constraints that keep a trusted `ca.pem` from
//! vouching for names outside `tls.local_ca_names`, checked with a real verifier (rustls'
//! webpki), including for a leaf the CA's key signs outside them.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::{ServerName, UnixTime};

use super::*;
use crate::clock::ManualClock;
use crate::domain::Zone;
use crate::issuer::Unclaimed;
use crate::store::FailureKind;

const NOW_SECS: u64 = 1_800_000_000;

fn clock() -> Clock {
    ManualClock::new(from_unix_secs(NOW_SECS)).clock()
}

fn zones(names: &[&str]) -> Zones {
    Zones::new(names.iter().map(|n| Zone::parse(n).unwrap())).unwrap()
}

fn domain(name: &str) -> Domain {
    Domain::parse(name).unwrap()
}

/// Verifies `cert`'s leaf for `name` as a client that trusts only `root_pem` would.
fn verify(root_pem: &str, cert: &StoredCert, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    let leaf = CertificateDer::from_pem_slice(cert.chain_pem.as_bytes()).unwrap();
    let now = UnixTime::since_unix_epoch(Duration::from_secs(NOW_SECS));
    let name = ServerName::try_from(name.to_owned()).unwrap();
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], now)
        .map(drop)
}

/// Asks `ca` for `name`, which it must refuse as outside its zones.
async fn refused(ca: &LocalCa, name: &str) -> IssueError {
    let err = ca
        .issue(&domain(name), None, &Unclaimed)
        .await
        .expect_err(name);
    assert!(
        matches!(err, IssueError::OutsideLocalNames { .. }),
        "{err:?}"
    );
    err
}

/// A root and key as versions before name constraints made them, written into `dir`.
fn write_unconstrained_root(dir: &Path) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "clickedge local CA 00000000");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = from_unix_secs(NOW_SECS);
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_LIFETIME).into();
    let root_pem = params.self_signed(&key).unwrap().pem();
    write_file(
        &dir.join(LocalCa::KEY_FILE),
        key.serialize_pem().as_bytes(),
        0o600,
    )
    .unwrap();
    write_file(&dir.join(LocalCa::ROOT_FILE), root_pem.as_bytes(), 0o644).unwrap();
    root_pem
}

#[tokio::test]
async fn creates_once_and_reloads_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(dir.path(), Zones::reserved(), clock()).unwrap();
    let mode = std::fs::metadata(dir.path().join(LocalCa::KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = LocalCa::load_or_create(dir.path(), Zones::reserved(), clock()).unwrap();
    assert_eq!(ca.root_pem(), again.root_pem());
    let cert = again
        .issue(&domain("links.example.com"), None, &Unclaimed)
        .await
        .unwrap();
    assert!(cert.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(cert.not_after > cert.not_before);
    // Valid from an hour before the clock's now, for 90 days.
    assert_eq!(cert.not_before, from_unix_secs(NOW_SECS) - BACKDATE);
    assert_eq!(cert.not_after, from_unix_secs(NOW_SECS) + LEAF_LIFETIME);
}

#[test]
fn a_new_root_carries_critical_name_constraints_for_the_configured_zones() {
    let dir = tempfile::tempdir().unwrap();
    let names = zones(&["corp.internal", "test"]);
    let ca = LocalCa::load_or_create(dir.path(), names, clock()).unwrap();
    let der = CertificateDer::from_pem_slice(ca.root_pem().as_bytes()).unwrap();
    let (_, root) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ext = root.name_constraints().unwrap().expect("name constraints");
    assert!(ext.critical);
    assert!(ext.value.excluded_subtrees.is_none());
    assert_eq!(
        root::scope(&der).unwrap(),
        RootScope::Under(vec!["corp.internal".into(), "test".into()])
    );
}

#[tokio::test]
async fn a_client_trusting_the_root_rejects_a_leaf_its_key_signs_outside_the_zones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(dir.path(), Zones::reserved(), clock()).unwrap();
    for name in [
        "links.example.com",
        "example.org",
        "links.test",
        "a.b.localhost",
    ] {
        let cert = ca.issue(&domain(name), None, &Unclaimed).await.unwrap();
        verify(ca.root_pem(), &cert, name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    // What a stolen `ca-key.pem` could sign: the CA's own key, no refusal in the way.
    for name in ["www.bank.com", "example.com.evil.net", "badexample.com"] {
        let forged = ca.sign(&domain(name)).unwrap();
        let err = verify(ca.root_pem(), &forged, name).expect_err(name);
        assert!(
            format!("{err:?}").contains("NameConstraintViolation"),
            "{name}: {err:?}"
        );
    }
}

#[tokio::test]
async fn names_outside_the_zones_are_refused_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(dir.path(), Zones::reserved(), clock()).unwrap();
    let err = refused(&ca, "links.customer.com").await;
    // The edge's own setting, not a CA's problem.
    assert_eq!(err.kind(), FailureKind::Local);
    let words = err.failure().detail;
    assert_eq!(
        words,
        "the built-in CA vouches only for names under tls.local_ca_names (example, example.com, \
         example.net, example.org, invalid, localhost, test), not links.customer.com: add its zone \
         there (which makes a new root: stop the edge, delete ca.pem and ca-key.pem from the data \
         dir and start it again; clients must then trust the new ca.pem), or use tls.issuer = \
         \"acme\""
    );
}

#[tokio::test]
async fn a_root_without_name_constraints_keeps_loading_and_issues_only_inside_the_zones() {
    let dir = tempfile::tempdir().unwrap();
    let root_pem = write_unconstrained_root(dir.path());
    let ca = LocalCa::load_or_create(dir.path(), Zones::reserved(), clock()).unwrap();
    assert_eq!(ca.root_pem(), root_pem);
    let der = CertificateDer::from_pem_slice(root_pem.as_bytes()).unwrap();
    assert_eq!(root::scope(&der).unwrap(), RootScope::Any);
    let cert = ca
        .issue(&domain("links.example.com"), None, &Unclaimed)
        .await
        .unwrap();
    verify(&root_pem, &cert, "links.example.com").unwrap();
    refused(&ca, "links.customer.com").await;
}

#[test]
fn a_root_constrained_to_other_zones_fails_to_load_naming_both_sets() {
    let dir = tempfile::tempdir().unwrap();
    LocalCa::load_or_create(dir.path(), Zones::reserved(), clock()).unwrap();
    // The same zones in another order and spelling are the same set.
    let respelled = zones(&[
        "TEST",
        "localhost.",
        "invalid",
        "example.org",
        "example.net",
        "example.com",
        "example",
    ]);
    LocalCa::load_or_create(dir.path(), respelled, clock()).unwrap();
    let err = LocalCa::load_or_create(dir.path(), zones(&["corp.internal"]), clock())
        .err()
        .expect("other zones");
    assert!(matches!(err, LocalCaError::NamesDiffer { .. }), "{err:?}");
    let words = err.to_string();
    for part in [
        "vouches for names under example, example.com, example.net, example.org, invalid, localhost, test",
        "tls.local_ca_names lists corp.internal",
        "delete ca.pem and ca-key.pem",
    ] {
        assert!(words.contains(part), "{part:?} in {words}");
    }
}

#[tokio::test]
async fn a_leaf_of_a_replaced_root_is_due_for_renewal_at_once() {
    let old = tempfile::tempdir().unwrap();
    let old = LocalCa::load_or_create(old.path(), Zones::reserved(), clock()).unwrap();
    let new = tempfile::tempdir().unwrap();
    let new = LocalCa::load_or_create(new.path(), Zones::reserved(), clock()).unwrap();
    let name = domain("links.example.com");
    let own = new.issue(&name, None, &Unclaimed).await.unwrap();
    assert_eq!(new.renewal_window(&name, &own).await.unwrap(), None);
    let stale = old.issue(&name, None, &Unclaimed).await.unwrap();
    let window = new
        .renewal_window(&name, &stale)
        .await
        .unwrap()
        .expect("due");
    assert!(window.end <= from_unix_secs(NOW_SECS), "{window:?}");
    // Another issuer's certificate serves until the lifetime rule says otherwise.
    let acme = StoredCert {
        issuer: "acme".into(),
        ..stale
    };
    assert_eq!(new.renewal_window(&name, &acme).await.unwrap(), None);
}

/// A key file that is not the root's key (one of the two replaced, or deleted and made again)
/// stops the start naming both files: every certificate signed with it would fail to verify.
#[test]
fn a_key_that_is_not_the_roots_fails_to_load_naming_both_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    LocalCa::load_or_create(a.path(), Zones::reserved(), clock()).unwrap();
    LocalCa::load_or_create(b.path(), Zones::reserved(), clock()).unwrap();
    std::fs::copy(
        b.path().join(LocalCa::KEY_FILE),
        a.path().join(LocalCa::KEY_FILE),
    )
    .unwrap();
    let err = LocalCa::load_or_create(a.path(), Zones::reserved(), clock())
        .err()
        .expect("a key of another root");
    assert!(matches!(err, LocalCaError::KeyMismatch { .. }), "{err:?}");
    let words = err.to_string();
    assert!(
        words.contains("ca-key.pem") && words.contains("ca.pem"),
        "{words}"
    );
}
