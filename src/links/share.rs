//! Share tokens: the token in a customer's status page address (`<public_url>/s/<token>`),
//! sealed with the link key ring like links, in a format of its own.
//!
//! Layout (before base64url without padding): `4 ‖ key id (2, big endian) ‖ nonce (24) ‖
//! XChaCha20-Poly1305(varint(expires_at) ‖ varint(len) domain ‖ varint(registered_at)) ‖ tag
//! (16)`; the associated data
//! is the 3-byte header followed by `share`. The version byte keeps the kinds apart: links and
//! open pixels refuse format 4 as malformed, and [`open`] refuses every other format, so a share
//! token never opens as a link or pixel, and neither opens a status page.
//!
//! `registered_at` is when the domain was registered (its record's `created_at`): the page opens
//! only while that registration lasts, so removing a domain revokes its addresses for good, and
//! the name registered again (by another customer, or by `tls.ask` at a stranger's handshake)
//! does not open them. Tokens sealed before it was added end after the domain and still open,
//! until they expire (at most 366 days after they were made).
//!
//! A share token opens only with a key that is not retired: retiring a link key (or removing
//! it) revokes every status page address sealed with it, while the key's links keep opening.
//! After `POST /v1/keys` (rotate) new addresses use the new key; retire the old one to revoke
//! the ones handed out before.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::token::{
    OVERHEAD, open_payload, put_bytes, put_varint, seal_payload, take_str, take_varint,
};
use super::{KeyId, KeyRing, LinkKey, TokenError};
use crate::Domain;

/// The format of a share token.
const VERSION_SHARE: u8 = 4;
/// What the associated data says after the header.
const LABEL: &[u8] = b"share";
/// Longest share token: a 253-byte name and two 10-byte times.
const MAX_LEN: usize = (OVERHEAD + 10 + 2 + 253 + 10).div_ceil(3) * 4;

/// What a share token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The one domain the page shows.
    pub domain: Domain,
    /// When the address stops opening, Unix seconds.
    pub expires_at: u64,
    /// When the domain was registered, Unix seconds: the address opens only for that
    /// registration. `None` in a token sealed before registrations were told apart.
    pub registered_at: Option<u64>,
}

/// Seals `share` with `key` (the ring's sealing key).
pub fn seal(key: &LinkKey, share: &Share) -> String {
    let name = share.domain.as_str().as_bytes();
    seal_payload(
        key,
        VERSION_SHARE,
        LABEL,
        OVERHEAD + 22 + name.len(),
        |buf| {
            put_varint(buf, share.expires_at);
            put_bytes(buf, name);
            if let Some(at) = share.registered_at {
                put_varint(buf, at);
            }
        },
    )
}

/// Opens a share token with a key of `ring` that is not retired. Expiry is the caller's to
/// judge (it holds the clock). Never panics, whatever the input.
pub fn open(ring: &KeyRing, token: &str) -> Result<Share, TokenError> {
    if token.len() > MAX_LEN || token.len() < (OVERHEAD * 4).div_ceil(3) {
        return Err(TokenError::Malformed);
    }
    let mut raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    if raw.len() < OVERHEAD || raw[0] != VERSION_SHARE {
        return Err(TokenError::Malformed);
    }
    let key = ring
        .key(KeyId(u16::from_be_bytes([raw[1], raw[2]])))
        .filter(|k| !k.is_retired())
        .ok_or(TokenError::UnknownKey)?;
    let mut p = open_payload(key, &mut raw, LABEL)?;
    let expires_at = take_varint(&mut p).ok_or(TokenError::BadPayload)?;
    let name = take_str(&mut p).ok_or(TokenError::BadPayload)?;
    let domain = Domain::parse(&name).map_err(|_| TokenError::BadPayload)?;
    let registered_at = if p.is_empty() {
        None
    } else {
        Some(take_varint(&mut p).ok_or(TokenError::BadPayload)?)
    };
    if !p.is_empty() {
        return Err(TokenError::BadPayload);
    }
    Ok(Share {
        domain,
        expires_at,
        registered_at,
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::links::{Link, seal as seal_link};

    fn key(id: u16, byte: u8) -> LinkKey {
        LinkKey::new(KeyId(id), [byte; 32], SystemTime::UNIX_EPOCH)
    }

    fn share() -> Share {
        Share {
            domain: Domain::parse("links.customer.com").unwrap(),
            expires_at: 1_800_000_000,
            registered_at: Some(1_700_000_000),
        }
    }

    #[test]
    fn a_share_token_opens_to_its_domain_and_expiry() {
        let ring = KeyRing::new(vec![key(1, 7)]).unwrap();
        let token = seal(ring.active(), &share());
        assert_eq!(open(&ring, &token), Ok(share()));
        // Altered anywhere: refused.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            open(&ring, &URL_SAFE_NO_PAD.encode(&bytes)),
            Err(TokenError::Forged)
        );
        assert!(open(&ring, "short").is_err());
        // A token sealed before registrations were told apart still opens, without one.
        let old = Share {
            registered_at: None,
            ..share()
        };
        assert_eq!(open(&ring, &seal(ring.active(), &old)), Ok(old));
    }

    #[test]
    fn share_tokens_and_links_never_open_as_each_other() {
        let ring = KeyRing::new(vec![key(1, 7)]).unwrap();
        let token = seal(ring.active(), &share());
        assert!(crate::links::open(&ring, "links.customer.com", &token).is_err());
        let link = Link::new("https://example.com/", Vec::new(), 1).unwrap();
        let link_token = seal_link(&ring, "links.customer.com", &link);
        assert_eq!(open(&ring, &link_token), Err(TokenError::Malformed));
    }

    #[test]
    fn retiring_or_removing_the_key_revokes_the_token() {
        let ring = KeyRing::new(vec![key(1, 7), key(2, 9)]).unwrap();
        let k1 = ring.key(KeyId(1)).unwrap().clone();
        let token = seal(&k1, &share());
        assert!(open(&ring, &token).is_ok());
        let retired =
            KeyRing::new(vec![k1.clone().retired(SystemTime::UNIX_EPOCH), key(2, 9)]).unwrap();
        assert_eq!(open(&retired, &token), Err(TokenError::UnknownKey));
        let removed = KeyRing::new(vec![key(2, 9)]).unwrap();
        assert_eq!(open(&removed, &token), Err(TokenError::UnknownKey));
    }
}
