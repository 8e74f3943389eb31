//! The sealed token codec: `base64url(version ‖ key id ‖ nonce ‖ XChaCha20-Poly1305(payload))`.
//!
//! Layout (before base64url without padding):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version, `1` |
//! | 2 | key id, big endian |
//! | 24 | random nonce |
//! | n | ciphertext of the payload |
//! | 16 | Poly1305 tag |
//!
//! The associated data is the 3-byte header followed by the domain the link was minted for, so a
//! token only opens on its own domain and its key id cannot be swapped. The payload is
//! `varint(minted_at) ‖ varint(len) url ‖ varint(pairs) (varint(len) key varint(len) value)*`.
//!
//! Why XChaCha20-Poly1305: nonces are random and 192 bits long, so a key can seal billions of links
//! (even 2^48 of them) with a nonce-collision probability below 2^-95; AES-GCM's 96-bit random
//! nonces would cap a key near 2^32 messages. Minting needs no counter and so no coordination
//! between nodes.
//!
//! XChaCha20-Poly1305 is HChaCha20 (a subkey from the key and the first 16 nonce bytes) followed by
//! the IETF ChaCha20-Poly1305 of RFC 8439 with the last 8 nonce bytes (draft-irtf-cfrg-xchacha
//! §2.3). The second step runs in aws-lc's assembly; the format is the standard one, checked
//! against the RustCrypto implementation in the tests. An 80-byte URL with two short metadata pairs (`c=spring`, `r=4711`) makes a
//! 195-character token (146 bytes: 43 of overhead, 103 of payload) (see `token_length_for_typical_link`).

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20::cipher::consts::U10;
use rand::RngCore as _;

use super::{KeyRing, Link, MAX_META_KEY_LEN, MAX_META_PAIRS, MAX_META_VALUE_LEN, MAX_URL_LEN};

const VERSION: u8 = 1;
const HEADER_LEN: usize = 3;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Largest payload [`seal`] can produce from a [`Link`] that passed [`Link::new`].
const MAX_PAYLOAD_LEN: usize =
    10 + 2 + MAX_URL_LEN + 1 + MAX_META_PAIRS * (1 + MAX_META_KEY_LEN + 2 + MAX_META_VALUE_LEN);

/// Longest token string we could ever have minted. Anything longer is refused before any base64
/// decoding or cryptography.
pub const MAX_TOKEN_LEN: usize = (MAX_PAYLOAD_LEN + OVERHEAD).div_ceil(3) * 4;

/// Why a token does not open. Fieldless on purpose: forged input from the network costs no
/// allocation to reject, and the reason is only ever counted, never shown to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64url, too short, too long or an unknown format version.
    #[error("token is malformed")]
    Malformed,
    /// Sealed with a key id that is not in the ring.
    #[error("token key is unknown")]
    UnknownKey,
    /// Authentication failed: altered, truncated, or minted for another domain.
    #[error("token does not authenticate")]
    Forged,
    /// Authenticated, but the payload does not decode (never produced by [`seal`]).
    #[error("token payload is invalid")]
    BadPayload,
}

/// Seals `link` for `domain` with the ring's active key.
pub fn seal(ring: &KeyRing, domain: &str, link: &Link) -> String {
    let key = ring.active();
    let mut buf = Vec::with_capacity(OVERHEAD + link.url.len() + 16 + link.meta.len() * 24);
    buf.push(VERSION);
    buf.extend_from_slice(&key.id().0.to_be_bytes());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    buf.extend_from_slice(&nonce);
    let header_end = buf.len();
    put_varint(&mut buf, link.minted_at);
    put_bytes(&mut buf, link.url.as_bytes());
    put_varint(&mut buf, link.meta.len() as u64);
    for (k, v) in &link.meta {
        put_bytes(&mut buf, k.as_bytes());
        put_bytes(&mut buf, v.as_bytes());
    }
    let aad = associated_data(&buf[..HEADER_LEN], domain);
    let (cipher, nonce) = xchacha(key.secret(), &nonce);
    let tag = cipher
        .seal_in_place_separate_tag(nonce, Aad::from(&aad[..]), &mut buf[header_end..])
        // Invariant: ChaCha20-Poly1305 only fails for payloads past 256 GiB.
        .expect("payload is far below the cipher's length limit");
    buf.extend_from_slice(tag.as_ref());
    URL_SAFE_NO_PAD.encode(buf)
}

/// Opens a token that arrived on `domain`. Never panics, whatever the input.
pub fn open(ring: &KeyRing, domain: &str, token: &str) -> Result<Link, TokenError> {
    if token.len() > MAX_TOKEN_LEN || token.len() < (OVERHEAD * 4).div_ceil(3) {
        return Err(TokenError::Malformed);
    }
    let mut raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    if raw.len() < OVERHEAD || raw[0] != VERSION {
        return Err(TokenError::Malformed);
    }
    let key_id = super::KeyId(u16::from_be_bytes([raw[1], raw[2]]));
    let key = ring.key(key_id).ok_or(TokenError::UnknownKey)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&raw[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
    let aad = associated_data(&raw[..HEADER_LEN], domain);
    let (cipher, nonce) = xchacha(key.secret(), &nonce);
    // Ciphertext and tag, decrypted in place; the tag is checked before anything is returned.
    let payload = cipher
        .open_in_place(
            nonce,
            Aad::from(&aad[..]),
            &mut raw[HEADER_LEN + NONCE_LEN..],
        )
        .map_err(|_| TokenError::Forged)?;
    decode_payload(payload).ok_or(TokenError::BadPayload)
}

/// The XChaCha20-Poly1305 construction: the HChaCha20 subkey, and the 96-bit nonce for
/// ChaCha20-Poly1305 (four zero bytes, then the last 8 bytes of the 192-bit nonce).
fn xchacha(secret: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let subkey = chacha20::hchacha::<U10>(secret.into(), nonce[..16].into());
    let mut iv = [0u8; 12];
    iv[4..].copy_from_slice(&nonce[16..]);
    // Invariant: a 32-byte key is always valid for ChaCha20-Poly1305.
    let key = UnboundKey::new(&CHACHA20_POLY1305, &subkey).expect("32-byte key");
    (LessSafeKey::new(key), Nonce::assume_unique_for_key(iv))
}

fn associated_data(header: &[u8], domain: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + domain.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(domain.as_bytes());
    aad
}

fn decode_payload(mut p: &[u8]) -> Option<Link> {
    let minted_at = take_varint(&mut p)?;
    let url = take_str(&mut p)?;
    let pairs = usize::try_from(take_varint(&mut p)?).ok()?;
    if pairs > MAX_META_PAIRS {
        return None;
    }
    let mut meta = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let k = take_str(&mut p)?;
        let v = take_str(&mut p)?;
        meta.push((k, v));
    }
    p.is_empty().then_some(Link {
        url,
        meta,
        minted_at,
    })
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

fn take_varint(p: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &b) in p.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            *p = &p[i + 1..];
            return Some(v);
        }
    }
    None
}

fn take_str(p: &mut &[u8]) -> Option<String> {
    let len = usize::try_from(take_varint(p)?).ok()?;
    if len > p.len() {
        return None;
    }
    let (s, rest) = p.split_at(len);
    *p = rest;
    String::from_utf8(s.to_vec()).ok()
}

#[cfg(test)]
mod tests {
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
        assert_eq!(decode_payload(&plain), Some(link()));
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
        let l = Link::new(&url, meta, u64::MAX).unwrap();
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
}
