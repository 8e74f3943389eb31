//! The seal key: its file and its refusals, and sealed values that open only with the same key
//! for the same row.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

#[test]
fn a_sealed_value_opens_with_its_key_and_binding_only() {
    let key = SealKey::generate();
    let sealed = key.seal("cert-key:a.example.com", b"secret").unwrap();
    assert!(!sealed.windows(6).any(|w| w == b"secret"), "{sealed:?}");
    assert_eq!(
        key.open("cert-key:a.example.com", &sealed).unwrap(),
        b"secret"
    );
    assert!(
        key.open("cert-key:b.example.com", &sealed).is_err(),
        "a row moved to another name does not open"
    );
    assert!(
        SealKey::generate()
            .open("cert-key:a.example.com", &sealed)
            .is_err()
    );
    let mut altered = sealed.clone();
    *altered.last_mut().unwrap() ^= 1;
    assert!(key.open("cert-key:a.example.com", &altered).is_err());
    assert!(key.open("cert-key:a.example.com", &[]).is_err());
    assert_ne!(
        key.seal("x", b"same").unwrap(),
        key.seal("x", b"same").unwrap(),
        "every value gets its own nonce"
    );
}

#[test]
fn keygen_writes_a_private_key_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seal.key");
    write_new_key(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64);
    let err = write_new_key(&path).unwrap_err().to_string();
    assert!(err.contains("not overwriting"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "kept");
    let key = SealKey::load(Some(&path), None).unwrap().unwrap();
    let same = SealKey::from_hex(&text, "env").unwrap();
    assert_eq!(same.open("b", &key.seal("b", b"v").unwrap()).unwrap(), b"v");
}

#[test]
fn a_key_file_others_can_read_is_refused_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seal.key");
    write_new_key(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SealKey::load(Some(&path), None).unwrap_err().to_string();
    assert!(
        err.contains(&format!("chmod 600 {}", path.display())),
        "{err}"
    );
    assert!(err.contains("0644"), "{err}");
}

#[test]
fn keys_come_from_the_file_or_the_environment_never_both() {
    let hex = "00".repeat(32);
    assert!(SealKey::load(None, None).unwrap().is_none());
    assert!(SealKey::load(None, Some(&hex)).unwrap().is_some());
    let err = SealKey::load(Some(Path::new("/k")), Some(&hex))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cluster.seal_key_file") && err.contains(SEAL_KEY_ENV),
        "{err}"
    );
    for bad in [
        "",
        "abc",
        &"0g".repeat(32),
        &"+0".repeat(32),
        &"00".repeat(33),
    ] {
        let err = SealKey::load(None, Some(bad)).unwrap_err().to_string();
        assert!(err.contains("clickedge cluster keygen"), "{bad:?}: {err}");
    }
}
