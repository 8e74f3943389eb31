//! The sealed token codec: `base64url(version ‖ key id ‖ nonce ‖ XChaCha20-Poly1305(payload))`.
//!
//! Layout (before base64url without padding):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version: `1`, `2` for a link with message context, `3` an open pixel's token (`4`, a status page's share token, is `links/share`'s) |
//! | 2 | key id, big endian |
//! | 24 | random nonce |
//! | n | ciphertext of the payload |
//! | 16 | Poly1305 tag |
//!
//! The associated data is the 3-byte header followed by the domain the link was minted for, so a
//! token only opens on its own domain and its key id cannot be swapped. The payload is
//! `varint(minted_at) ‖ varint(len) url ‖ varint(pairs) (varint(len) key varint(len) value)*`,
//! and in version 2 the message context after it: `varint(len) message ‖ flags` (bit 0 index,
//! 1 count, 2 sent_at, 3 role) `‖ varint(index)? ‖ varint(count)? ‖ varint(sent_at)? ‖ role?`
//! (one byte). Version 3 is an open pixel's token: version 2's payload with an empty URL. A link without context is sealed as version 1, so tokens minted before message
//! context existed and those minted without it are the same format and keep opening.
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

use super::context::MAX_MESSAGE_LEN;
use super::{
    KeyRing, Link, LinkKey, MAX_META_KEY_LEN, MAX_META_PAIRS, MAX_META_VALUE_LEN, MAX_URL_LEN,
    MessageContext, Role,
};

/// The format of a link without message context.
const VERSION: u8 = 1;
/// The format of a link with message context.
const VERSION_CONTEXT: u8 = 2;
/// The format of an open pixel's token: a link's payload with message context (and an empty
/// URL). The version is authenticated, so a pixel token never opens as a link nor a link as a
/// pixel.
const VERSION_PIXEL: u8 = 3;
const HEADER_LEN: usize = 3;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
pub(super) const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Largest payload [`seal`] can produce from a [`Link`] that passed [`Link::new`].
const MAX_PAYLOAD_LEN: usize = 10
    + 2
    + MAX_URL_LEN
    + 1
    + MAX_META_PAIRS * (1 + MAX_META_KEY_LEN + 2 + MAX_META_VALUE_LEN)
    + MAX_CONTEXT_LEN;

/// Largest message context [`seal`] writes: the id, the flags, three varints and the role.
const MAX_CONTEXT_LEN: usize = 2 + MAX_MESSAGE_LEN + 1 + 5 + 5 + 10 + 1;

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
    seal_with(ring.active(), domain, link)
}

/// Seals `link` for `domain` with `key` (one of a ring's, as [`KeyRing::sealing`] picks it).
pub fn seal_with(key: &LinkKey, domain: &str, link: &Link) -> String {
    let version = if link.context.is_some() {
        VERSION_CONTEXT
    } else {
        VERSION
    };
    seal_as(version, key, domain, link)
}

/// Seals an open pixel's token for `domain` with `key`: the message `context` and `meta`, no
/// destination. It opens only with [`open_pixel`].
pub fn seal_pixel_with(
    key: &LinkKey,
    domain: &str,
    context: MessageContext,
    meta: Vec<(String, String)>,
    minted_at: u64,
) -> String {
    let link = Link {
        url: String::new(),
        meta,
        minted_at,
        context: Some(context),
    };
    seal_as(VERSION_PIXEL, key, domain, &link)
}

fn seal_as(version: u8, key: &LinkKey, domain: &str, link: &Link) -> String {
    let capacity = OVERHEAD + link.url.len() + 16 + link.meta.len() * 24;
    seal_payload(key, version, domain.as_bytes(), capacity, |buf| {
        put_varint(buf, link.minted_at);
        put_bytes(buf, link.url.as_bytes());
        put_varint(buf, link.meta.len() as u64);
        for (k, v) in &link.meta {
            put_bytes(buf, k.as_bytes());
            put_bytes(buf, v.as_bytes());
        }
        if let Some(context) = &link.context {
            put_context(buf, context);
        }
    })
}

/// A token of format `version` sealed with `key`: the header, a random nonce, then what
/// `write` appends, encrypted, and the tag; the associated data is the header followed by
/// `aad_tail`. Base64url without padding.
pub(super) fn seal_payload(
    key: &LinkKey,
    version: u8,
    aad_tail: &[u8],
    capacity: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> String {
    let mut buf = Vec::with_capacity(capacity);
    buf.push(version);
    buf.extend_from_slice(&key.id().0.to_be_bytes());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    buf.extend_from_slice(&nonce);
    let header_end = buf.len();
    write(&mut buf);
    let aad = associated_data(&buf[..HEADER_LEN], aad_tail);
    let (cipher, nonce) = xchacha(key.secret(), &nonce);
    let tag = cipher
        .seal_in_place_separate_tag(nonce, Aad::from(&aad[..]), &mut buf[header_end..])
        // Invariant: ChaCha20-Poly1305 only fails for payloads past 256 GiB.
        .expect("payload is far below the cipher's length limit");
    buf.extend_from_slice(tag.as_ref());
    URL_SAFE_NO_PAD.encode(buf)
}

/// The payload of the decoded token `raw` (at least [`OVERHEAD`] bytes), decrypted in place
/// with `key`, the associated data being its header followed by `aad_tail`; the tag is checked
/// before anything is returned.
pub(super) fn open_payload<'a>(
    key: &LinkKey,
    raw: &'a mut [u8],
    aad_tail: &[u8],
) -> Result<&'a [u8], TokenError> {
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&raw[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
    let aad = associated_data(&raw[..HEADER_LEN], aad_tail);
    let (cipher, nonce) = xchacha(key.secret(), &nonce);
    let payload = cipher
        .open_in_place(
            nonce,
            Aad::from(&aad[..]),
            &mut raw[HEADER_LEN + NONCE_LEN..],
        )
        .map_err(|_| TokenError::Forged)?;
    Ok(payload)
}

/// Opens a token that arrived on `domain`. Never panics, whatever the input.
pub fn open(ring: &KeyRing, domain: &str, token: &str) -> Result<Link, TokenError> {
    open_as(ring, domain, token, false)
}

/// Opens an open pixel's token that arrived on `domain` (a link's token does not open here):
/// its [`Link`] has an empty URL and always a message context. Never panics, whatever the input.
pub fn open_pixel(ring: &KeyRing, domain: &str, token: &str) -> Result<Link, TokenError> {
    open_as(ring, domain, token, true)
}

fn open_as(ring: &KeyRing, domain: &str, token: &str, pixel: bool) -> Result<Link, TokenError> {
    if token.len() > MAX_TOKEN_LEN || token.len() < (OVERHEAD * 4).div_ceil(3) {
        return Err(TokenError::Malformed);
    }
    let mut raw = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| TokenError::Malformed)?;
    let version = raw.first().copied();
    let known = if pixel {
        version == Some(VERSION_PIXEL)
    } else {
        matches!(version, Some(VERSION | VERSION_CONTEXT))
    };
    if raw.len() < OVERHEAD || !known {
        return Err(TokenError::Malformed);
    }
    let key_id = super::KeyId(u16::from_be_bytes([raw[1], raw[2]]));
    let key = ring.key(key_id).ok_or(TokenError::UnknownKey)?;
    let payload = open_payload(key, &mut raw, domain.as_bytes())?;
    decode_payload(payload, version != Some(VERSION)).ok_or(TokenError::BadPayload)
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

fn associated_data(header: &[u8], tail: &[u8]) -> Vec<u8> {
    [header, tail].concat()
}

fn decode_payload(mut p: &[u8], with_context: bool) -> Option<Link> {
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
    let context = if with_context {
        Some(take_context(&mut p)?)
    } else {
        None
    };
    p.is_empty().then_some(Link {
        url,
        meta,
        minted_at,
        context,
    })
}

const HAS_INDEX: u8 = 1;
const HAS_COUNT: u8 = 2;
const HAS_SENT_AT: u8 = 4;
const HAS_ROLE: u8 = 8;

fn put_context(buf: &mut Vec<u8>, c: &MessageContext) {
    put_bytes(buf, c.message.as_bytes());
    let flag = |present: bool, bit: u8| if present { bit } else { 0 };
    buf.push(
        flag(c.index.is_some(), HAS_INDEX)
            | flag(c.count.is_some(), HAS_COUNT)
            | flag(c.sent_at.is_some(), HAS_SENT_AT)
            | flag(c.role.is_some(), HAS_ROLE),
    );
    for v in [c.index.map(u64::from), c.count.map(u64::from), c.sent_at]
        .into_iter()
        .flatten()
    {
        put_varint(buf, v);
    }
    if let Some(role) = c.role {
        buf.push(role.code());
    }
}

fn take_context(p: &mut &[u8]) -> Option<MessageContext> {
    let message = take_str(p)?;
    let (&flags, rest) = p.split_first()?;
    *p = rest;
    if flags & !(HAS_INDEX | HAS_COUNT | HAS_SENT_AT | HAS_ROLE) != 0 {
        return None;
    }
    let mut take = |bit: u8| -> Option<Option<u64>> {
        if flags & bit == 0 {
            Some(None)
        } else {
            take_varint(p).map(Some)
        }
    };
    let index = take(HAS_INDEX)?.map(u32::try_from).transpose().ok()?;
    let count = take(HAS_COUNT)?.map(u32::try_from).transpose().ok()?;
    let sent_at = take(HAS_SENT_AT)?;
    let role = if flags & HAS_ROLE == 0 {
        None
    } else {
        let (&code, rest) = p.split_first()?;
        *p = rest;
        Some(Role::from_code(code)?)
    };
    Some(MessageContext {
        message,
        index,
        count,
        sent_at,
        role,
    })
}

pub(super) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub(super) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

pub(super) fn take_varint(p: &mut &[u8]) -> Option<u64> {
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

pub(super) fn take_str(p: &mut &[u8]) -> Option<String> {
    let len = usize::try_from(take_varint(p)?).ok()?;
    if len > p.len() {
        return None;
    }
    let (s, rest) = p.split_at(len);
    *p = rest;
    String::from_utf8(s.to_vec()).ok()
}

#[cfg(test)]
mod tests;
