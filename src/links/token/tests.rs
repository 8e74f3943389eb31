//! Tests of the token codec: round trips, the standard format, versions, tampering.

use super::*;
use crate::links::LinkKey;
use proptest::prelude::*;

fn ring() -> KeyRing {
    KeyRing::new(vec![LinkKey::new(
        super::super::KeyId(1),
        [7; 32],
        std::time::SystemTime::UNIX_EPOCH,
    )])
    .unwrap()
}

fn link() -> Link {
    Link::new(
        "https://shop.example.com/spring-sale/shoes?utm_source=email&utm_campaign=spring1",
        vec![("c".into(), "spring".into()), ("r".into(), "4711".into())],
        1_764_000_000,
    )
    .unwrap()
}

#[test]
fn round_trip() {
    let ring = ring();
    let token = seal(&ring, "links.example.com", &link());
    assert_eq!(open(&ring, "links.example.com", &token), Ok(link()));
}

#[test]
fn token_length_for_typical_link() {
    let l = link();
    assert_eq!(l.url.len(), 80);
    let token = seal(&ring(), "links.example.com", &l);
    assert_eq!(token.len(), 195);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
}

#[test]
fn format_is_standard_xchacha20_poly1305() {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let ring = ring();
    let token = seal(&ring, "links.example.com", &link());
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    let reference = chacha20poly1305::XChaCha20Poly1305::new(&[7u8; 32].into());
    let plain = reference
        .decrypt(
            chacha20poly1305::XNonce::from_slice(&raw[HEADER_LEN..HEADER_LEN + NONCE_LEN]),
            Payload {
                msg: &raw[HEADER_LEN + NONCE_LEN..],
                aad: &[&raw[..HEADER_LEN], b"links.example.com"].concat(),
            },
        )
        .expect("the reference implementation opens our token");
    assert_eq!(decode_payload(&plain, false), Some(link()));
}

fn context() -> MessageContext {
    MessageContext {
        message: "msg-2025-11-24-0001".into(),
        index: Some(2),
        count: Some(5),
        sent_at: Some(1_764_000_100),
        role: Some(Role::Footer),
    }
}

#[test]
fn message_context_round_trips_as_version_2() {
    let ring = ring();
    let with = link().with_context(context()).unwrap();
    let token = seal(&ring, "links.example.com", &with);
    assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap()[0], VERSION_CONTEXT);
    assert_eq!(open(&ring, "links.example.com", &token), Ok(with));
    let sparse = link()
        .with_context(MessageContext {
            message: "m".into(),
            ..MessageContext::default()
        })
        .unwrap();
    let token = seal(&ring, "links.example.com", &sparse);
    assert_eq!(open(&ring, "links.example.com", &token), Ok(sparse));
}

#[test]
fn version_1_tokens_keep_opening() {
    // Sealed by the format before message context existed (the same key and link).
    let ring = ring();
    let token = seal(&ring, "links.example.com", &link());
    assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap()[0], VERSION);
    assert_eq!(open(&ring, "links.example.com", &token), Ok(link()));
}

#[test]
fn the_version_is_authenticated() {
    // Relabelling a version 1 token as version 2 (or back) fails the tag: the version is in
    // the associated data.
    let ring = ring();
    for l in [link(), link().with_context(context()).unwrap()] {
        let mut raw = URL_SAFE_NO_PAD
            .decode(seal(&ring, "a.example.com", &l))
            .unwrap();
        raw[0] ^= VERSION ^ VERSION_CONTEXT;
        let bad = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(open(&ring, "a.example.com", &bad), Err(TokenError::Forged));
    }
}

#[test]
fn pixel_tokens_open_only_as_pixels_and_links_only_as_links() {
    let ring = ring();
    let key = ring.active();
    let meta = vec![("r".to_owned(), "4711".to_owned())];
    let pixel = seal_pixel_with(key, "a.example.com", context(), meta.clone(), 1_764_000_000);
    assert_eq!(URL_SAFE_NO_PAD.decode(&pixel).unwrap()[0], VERSION_PIXEL);
    let opened = open_pixel(&ring, "a.example.com", &pixel).unwrap();
    assert_eq!(
        (opened.url.as_str(), opened.meta, opened.context),
        ("", meta, Some(context()))
    );
    assert_eq!(
        open(&ring, "a.example.com", &pixel),
        Err(TokenError::Malformed)
    );
    assert_eq!(
        open_pixel(&ring, "b.example.com", &pixel),
        Err(TokenError::Forged)
    );
    let link = seal(
        &ring,
        "a.example.com",
        &link().with_context(context()).unwrap(),
    );
    assert_eq!(
        open_pixel(&ring, "a.example.com", &link),
        Err(TokenError::Malformed)
    );
    // Relabelling a link as a pixel fails the tag.
    let mut raw = URL_SAFE_NO_PAD.decode(&link).unwrap();
    raw[0] = VERSION_PIXEL;
    let relabelled = URL_SAFE_NO_PAD.encode(&raw);
    assert_eq!(
        open_pixel(&ring, "a.example.com", &relabelled),
        Err(TokenError::Forged)
    );
}

#[test]
fn token_reveals_nothing() {
    let token = seal(&ring(), "links.example.com", &link());
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    let hay = String::from_utf8_lossy(&raw);
    assert!(!hay.contains("shop.example.com"));
    assert!(!hay.contains("spring"));
}

#[test]
fn other_domain_does_not_open() {
    let ring = ring();
    let token = seal(&ring, "links.example.com", &link());
    assert_eq!(
        open(&ring, "links.example.org", &token),
        Err(TokenError::Forged)
    );
}

#[test]
fn unknown_key_does_not_open() {
    let token = seal(&ring(), "a.example.com", &link());
    let other = KeyRing::new(vec![LinkKey::new(
        super::super::KeyId(2),
        [7; 32],
        std::time::SystemTime::UNIX_EPOCH,
    )])
    .unwrap();
    assert_eq!(
        open(&other, "a.example.com", &token),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn every_changed_byte_fails() {
    let ring = ring();
    let token = seal(&ring, "a.example.com", &link());
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        let bad = URL_SAFE_NO_PAD.encode(&bad);
        assert!(open(&ring, "a.example.com", &bad).is_err(), "byte {i}");
    }
    for cut in 1..token.len() {
        assert!(
            open(&ring, "a.example.com", &token[..cut]).is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn overlong_token_is_refused_before_decoding() {
    let long = "A".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        open(&ring(), "a.example.com", &long),
        Err(TokenError::Malformed)
    );
}

#[test]
fn largest_mintable_link_fits_the_limit() {
    let meta = (0..MAX_META_PAIRS)
        .map(|i| (format!("{i:0>64}"), "v".repeat(MAX_META_VALUE_LEN)))
        .collect();
    let url = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN - 20));
    let mut l = Link::new(&url, meta, u64::MAX).unwrap();
    // Past what minting accepts, so the widest varints are measured.
    l.context = Some(MessageContext {
        message: "m".repeat(MAX_MESSAGE_LEN),
        index: Some(u32::MAX),
        count: Some(u32::MAX),
        sent_at: Some(u64::MAX),
        role: Some(Role::Decoy),
    });
    let token = seal(&ring(), "a.example.com", &l);
    assert!(token.len() <= MAX_TOKEN_LEN);
    assert_eq!(open(&ring(), "a.example.com", &token), Ok(l));
}

proptest! {
    #[test]
    fn seal_open_round_trip(
        path in "[a-zA-Z0-9/_.-]{0,200}",
        meta in proptest::collection::btree_map("[a-z]{1,10}", ".{0,40}", 0..8),
        minted_at in any::<u64>(),
        domain in "[a-z]{1,10}\\.example\\.com",
    ) {
        // Keys once each: a key given twice is refused when minting.
        let meta = meta.into_iter().collect();
        let ring = ring();
        let l = Link::new(&format!("https://example.com/{path}"), meta, minted_at).unwrap();
        let token = seal(&ring, &domain, &l);
        prop_assert_eq!(open(&ring, &domain, &token), Ok(l));
    }

    #[test]
    fn open_never_panics(token in ".{0,400}") {
        let _ = open(&ring(), "a.example.com", &token);
    }

    #[test]
    fn open_never_panics_on_base64(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = bytes;
        if let Some(b) = bytes.first_mut() { *b = VERSION; }
        if bytes.len() > 2 { bytes[1] = 0; bytes[2] = 1; }
        let token = URL_SAFE_NO_PAD.encode(&bytes);
        prop_assert!(open(&ring(), "a.example.com", &token).is_err());
    }
}
