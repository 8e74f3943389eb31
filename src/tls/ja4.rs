//! The JA4 fingerprint of a TLS ClientHello (FoxIO's JA4, the TLS client part of JA4+): what
//! software opened the connection, whatever its `User-Agent` says.
//!
//! `t13d1516h2_8daaf6152771_e5627efa2ab1` reads: TCP (`t`), the highest TLS version offered
//! (`13`), a domain name in SNI (`d`; `i` without SNI), 15 cipher suites and 16 extensions, the
//! first and last character of the first ALPN protocol (`h2`; of its hex when either is not a
//! letter or digit); then the first 12 hex digits of the SHA-256 of the sorted cipher suites, and
//! of the sorted extensions (less SNI and ALPN) followed by the signature algorithms in their
//! order. GREASE values (RFC 8701) are left out everywhere.
//!
//! [`fingerprint`] reads the bytes a client sent up to its ClientHello (TLS records, as the
//! acceptor's recorder kept them), reassembling a hello split across records. The parser is
//! bounds-checked throughout: any input gives a fingerprint or `None`, never a panic (a property
//! test feeds it arbitrary bytes). Written here rather than taken from a TLS parsing crate:
//! JA4 needs six length-prefixed lists, and the crates that parse whole handshakes allocate per
//! extension and bring a parser-combinator and code-generation tree for it.

use std::borrow::Cow;
use std::fmt;

use aws_lc_rs::digest;

/// A JA4 fingerprint: 36 ASCII characters, kept inline (no allocation per connection).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ja4([u8; LEN]);

const LEN: usize = 36;

impl Ja4 {
    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII is ever written into the array (`fingerprint`, `parse`).
        std::str::from_utf8(&self.0).expect("JA4 is ASCII")
    }

    /// A fingerprint as written in a click line or a trace, or `None` if `s` does not have the
    /// JA4 shape (`[tqd][0-9a-z]{2}[di][0-9]{4}[0-9A-Za-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}`: the
    /// ALPN pair is letters or digits, as [`fingerprint`] writes it).
    pub fn parse(s: &str) -> Option<Ja4> {
        let b: [u8; LEN] = s.as_bytes().try_into().ok()?;
        let hex = |r: &[u8]| r.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let ok = matches!(b[0], b't' | b'q' | b'd')
            && b[1..3]
                .iter()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            && matches!(b[3], b'd' | b'i')
            && b[4..8].iter().all(u8::is_ascii_digit)
            && b[8..10].iter().all(u8::is_ascii_alphanumeric)
            && b[10] == b'_'
            && hex(&b[11..23])
            && b[23] == b'_'
            && hex(&b[24..36]);
        ok.then_some(Ja4(b))
    }

    /// The first part (`t13d1516h2`): protocol, version, SNI, counts, ALPN.
    pub fn head(&self) -> &str {
        &self.as_str()[..10]
    }

    /// The highest TLS version offered, as the fingerprint spells it (`"13"`, `"12"`, ...).
    pub fn version(&self) -> &str {
        &self.as_str()[1..3]
    }

    /// The first and last character of the first ALPN protocol offered (`"h2"`, `"h1"`, or
    /// `"00"` for none).
    pub fn alpn(&self) -> &str {
        &self.as_str()[8..10]
    }
}

impl fmt::Display for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ja4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ja4({})", self.as_str())
    }
}

/// Handshake record content type (RFC 8446 §5.1).
const HANDSHAKE: u8 = 22;
/// ClientHello handshake message type.
const CLIENT_HELLO: u8 = 1;
const EXT_SNI: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// The JA4 of the ClientHello at the start of `records` (TLS records as read from the wire), or
/// `None` if they do not start with a whole, well-formed ClientHello.
pub fn fingerprint(records: &[u8]) -> Option<Ja4> {
    let hello = client_hello(records)?;
    let hello = parse(&hello)?;
    Some(hello.ja4())
}

/// The ClientHello handshake message (header included) from the handshake records at the start
/// of `records`: borrowed when one record holds it (nearly always), reassembled otherwise.
fn client_hello(records: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut r = Reader(records);
    let mut joined: Option<Vec<u8>> = None;
    loop {
        if r.u8()? != HANDSHAKE {
            return None;
        }
        r.u16()?; // record version: JA4 ignores it
        let fragment = r.vec16()?;
        let have = match &mut joined {
            None => fragment,
            Some(j) => {
                j.extend_from_slice(fragment);
                j.as_slice()
            }
        };
        if have.first().is_some_and(|t| *t != CLIENT_HELLO) {
            return None;
        }
        if let Some(need) = message_len(have)
            && have.len() >= need
        {
            return Some(match joined {
                None => Cow::Borrowed(&fragment[..need]),
                Some(mut j) => {
                    j.truncate(need);
                    Cow::Owned(j)
                }
            });
        }
        if joined.is_none() {
            joined = Some(fragment.to_vec());
        }
    }
}

/// The length of the handshake message at the start of `b`, header included, once its header
/// is there.
fn message_len(b: &[u8]) -> Option<usize> {
    let h = b.get(..4)?;
    Some(4 + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3])))
}

/// What JA4 reads from a ClientHello, GREASE already left out.
struct Hello {
    version: u16,
    sni: bool,
    ciphers: Vec<u16>,
    extensions: Vec<u16>,
    /// The first ALPN protocol, if any.
    alpn: Option<Vec<u8>>,
    signature_algorithms: Vec<u16>,
}

/// A ClientHello message (header included) read for JA4, or `None` if it is malformed.
fn parse(message: &[u8]) -> Option<Hello> {
    let mut r = Reader(message);
    r.u8()?; // message type, checked by `client_hello`
    r.take(3)?; // length, likewise
    let version = r.u16()?;
    r.take(32)?; // random
    r.vec8()?; // legacy session id
    let mut ciphers = Vec::new();
    let mut list = Reader(r.vec16()?);
    while !list.0.is_empty() {
        let c = list.u16()?;
        if !grease(c) {
            ciphers.push(c);
        }
    }
    r.vec8()?; // compression methods
    let mut hello = Hello {
        version,
        sni: false,
        ciphers,
        extensions: Vec::new(),
        alpn: None,
        signature_algorithms: Vec::new(),
    };
    // A hello without extensions ends here (TLS 1.2 and earlier allow it).
    let mut exts = Reader(if r.0.is_empty() { &[] } else { r.vec16()? });
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut body = Reader(exts.vec16()?);
        if grease(kind) {
            continue;
        }
        hello.extensions.push(kind);
        match kind {
            EXT_SNI => hello.sni = true,
            EXT_ALPN => {
                let mut protocols = Reader(body.vec16()?);
                hello.alpn = protocols.vec8().map(<[u8]>::to_vec);
            }
            EXT_SIGNATURE_ALGORITHMS => {
                let mut algs = Reader(body.vec16()?);
                while !algs.0.is_empty() {
                    let a = algs.u16()?;
                    if !grease(a) {
                        hello.signature_algorithms.push(a);
                    }
                }
            }
            EXT_SUPPORTED_VERSIONS => {
                // The highest version offered here, not the legacy field.
                let mut versions = Reader(body.vec8()?);
                let mut highest = None;
                while !versions.0.is_empty() {
                    let v = versions.u16()?;
                    if !grease(v) {
                        highest = highest.max(Some(v));
                    }
                }
                hello.version = highest.unwrap_or(version);
            }
            _ => {}
        }
    }
    Some(hello)
}

impl Hello {
    fn ja4(&self) -> Ja4 {
        let mut out = [b'0'; LEN];
        out[0] = b't';
        out[1..3].copy_from_slice(version_code(self.version));
        out[3] = if self.sni { b'd' } else { b'i' };
        two_digits(&mut out[4..6], self.ciphers.len());
        two_digits(&mut out[6..8], self.extensions.len());
        out[8..10].copy_from_slice(&alpn_code(self.alpn.as_deref()));
        out[10] = b'_';
        let mut ciphers = self.ciphers.clone();
        ciphers.sort_unstable();
        if !ciphers.is_empty() {
            let mut h = digest::Context::new(&digest::SHA256);
            hex_list(&mut h, &ciphers);
            truncated(&mut out[11..23], h);
        }
        out[23] = b'_';
        let mut extensions: Vec<u16> = self
            .extensions
            .iter()
            .copied()
            .filter(|e| *e != EXT_SNI && *e != EXT_ALPN)
            .collect();
        extensions.sort_unstable();
        if !extensions.is_empty() {
            let mut h = digest::Context::new(&digest::SHA256);
            hex_list(&mut h, &extensions);
            if !self.signature_algorithms.is_empty() {
                h.update(b"_");
                hex_list(&mut h, &self.signature_algorithms);
            }
            truncated(&mut out[24..36], h);
        }
        Ja4(out)
    }
}

/// GREASE values (RFC 8701): `0x?a?a` with both bytes equal.
fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn version_code(v: u16) -> &'static [u8; 2] {
    match v {
        0x0304 => b"13",
        0x0303 => b"12",
        0x0302 => b"11",
        0x0301 => b"10",
        0x0300 => b"s3",
        0x0002 => b"s2",
        0xfeff => b"d1",
        0xfefd => b"d2",
        0xfefc => b"d3",
        _ => b"00",
    }
}

/// The count, two digits, 99 at most.
fn two_digits(out: &mut [u8], n: usize) {
    let n = n.min(99) as u8;
    out[0] = b'0' + n / 10;
    out[1] = b'0' + n % 10;
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The first and last character of the first ALPN protocol, as FoxIO's JA4 specification has
/// them: the bytes themselves when both are ASCII letters or digits; otherwise the first and last
/// character of the protocol's hex (`0xAB 0xCD` is `ad`, `_x` is `58`), so the pair is always
/// letters or digits whatever a client sends; `00` for none. A one-byte protocol is its own first
/// and last byte.
fn alpn_code(alpn: Option<&[u8]>) -> [u8; 2] {
    let Some((&first, rest)) = alpn.and_then(<[u8]>::split_first) else {
        return *b"00";
    };
    let last = rest.last().copied().unwrap_or(first);
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        [first, last]
    } else {
        // The hex of the whole protocol starts with the first byte's high digit and ends with
        // the last byte's low one.
        [HEX[usize::from(first >> 4)], HEX[usize::from(last & 0xf)]]
    }
}

/// Values `hex_list` writes out before each hash update.
const CHUNK: usize = 64;
/// A comma and four hex digits.
const WIDTH: usize = 5;

/// Feeds `values` as 4-digit lowercase hex, comma-separated: written out `CHUNK` values at a
/// time, one update per chunk rather than per value (a browser's hello has 15-20 ciphers and as
/// many extensions).
fn hex_list(h: &mut digest::Context, values: &[u16]) {
    let mut text = [0u8; CHUNK * WIDTH];
    for (i, chunk) in values.chunks(CHUNK).enumerate() {
        for (out, v) in text.chunks_exact_mut(WIDTH).zip(chunk) {
            let b = v.to_be_bytes();
            out.copy_from_slice(&[
                b',',
                HEX[usize::from(b[0] >> 4)],
                HEX[usize::from(b[0] & 0xf)],
                HEX[usize::from(b[1] >> 4)],
                HEX[usize::from(b[1] & 0xf)],
            ]);
        }
        // No comma before the list's first value; later chunks keep theirs.
        let start = usize::from(i == 0);
        h.update(&text[start..chunk.len() * WIDTH]);
    }
}

/// The first 12 hex digits of the digest.
fn truncated(out: &mut [u8], h: digest::Context) {
    let d = h.finish();
    for (pair, byte) in out.chunks_exact_mut(2).zip(d.as_ref()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

/// A bounds-checked cursor over wire bytes: every read is `None` past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
mod tests;
