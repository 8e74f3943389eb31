//! The click log line: [`ClickEvent::write_json`] writes one JSON line by hand, byte for byte
//! what serde_json writes for the contract's struct but for three more escapes (U+0085, U+2028,
//! U+2029; the tests check the two against each other), because serde_json's escaping and
//! formatting were most of the writer's work per click.
//!
//! The contract only grows at the end: the verdict's three fields are appended when there is a
//! verdict (and `"sec_fetch"` when the stage looked at the request's `Sec-Fetch-*` headers), then
//! `"truncated"` when a header was cut to its bound, then `"message"` when the link carries a
//! message context, then `"tls_fp"` when the connection's ClientHello was fingerprinted, then
//! `"implied_open": true` when a person's click implies an open this node did not see, then
//! `"visitor"` when visitors are counted, then `"click_id"` (see [`super::id`]) always, last, where a shipper finds it without parsing the
//! line. A revision of an earlier click's verdict is a line of its
//! own ([`revision`]). An open is the same line with `"kind": "open"`, `"url": null` and
//! `"open_class"` after `"minted_at"`. This module writes bytes into a buffer; it does no I/O
//! and knows nothing of batches or files.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use super::id::ClickId;
use super::verdict::Class;
use super::{ClickEvent, Truncated};
use crate::links::MessageContext;

const TS_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// RFC 3339 UTC with milliseconds, as in the click log.
pub fn format_ts(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(TS_FORMAT)
        .unwrap_or_default()
}

/// A click line's timestamp, as [`format_ts`] writes it but without its allocation and format
/// description for years of four digits (the generic formatter was a tenth of the writer's work
/// per click).
enum Stamp {
    Fixed([u8; 24]),
    Other(String),
}

impl Stamp {
    fn new(t: SystemTime) -> Stamp {
        let dt = time::OffsetDateTime::from(t);
        let (year, month, day) = dt.to_calendar_date();
        let Some(year) = u16::try_from(year).ok().filter(|y| *y <= 9999) else {
            return Stamp::Other(format_ts(t));
        };
        let (hour, minute, second, ms) = dt.to_hms_milli();
        let mut b = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: u16| {
            for d in b[at..at + width].iter_mut().rev() {
                *d = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u8::from(month).into());
        put(8, 2, day.into());
        put(11, 2, hour.into());
        put(14, 2, minute.into());
        put(17, 2, second.into());
        put(20, 3, ms);
        Stamp::Fixed(b)
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Stamp::Fixed(b) => b,
            Stamp::Other(s) => s.as_bytes(),
        }
    }

    #[cfg(test)]
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("ASCII timestamp")
    }

    /// The stamp as a JSON string: digits and punctuation, nothing to escape.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'"');
        out.extend_from_slice(self.as_bytes());
        out.push(b'"');
    }
}

impl ClickEvent {
    /// Appends the event, as the click `id`, as one JSON line (with the trailing newline) to `out`: the click log
    /// contract's fields, in the order and form serde_json gives the `Line` struct in the tests,
    /// which check the two byte for byte (with the Unicode line breaks escaped as well). Written
    /// out here because serde_json escapes strings byte by byte, the writer's largest cost per
    /// click; here a string needing no escape (nearly all) is checked in one branch-free pass and
    /// copied.
    ///
    /// The line never holds a raw newline but the last byte (control characters are escaped), so
    /// a batch of lines splits on `\n`; nor a raw U+0085, U+2028 or U+2029, so readers that split
    /// on Unicode line breaks see one record per line too.
    pub fn write_json(&self, id: ClickId<'_>, out: &mut Vec<u8>) {
        let ts = Stamp::new(self.ts);
        let minted_at = Stamp::new(self.minted_at);
        out.extend_from_slice(b"{\"ts\":");
        ts.write_json(out);
        // An open has no destination: its `"url"` is null.
        if self.open.is_some() {
            out.extend_from_slice(b",\"kind\":\"open\",\"domain\":");
            json_str(out, self.domain.as_str());
            out.extend_from_slice(b",\"url\":null");
        } else {
            out.extend_from_slice(b",\"kind\":\"click\",\"domain\":");
            json_str(out, self.domain.as_str());
            out.extend_from_slice(b",\"url\":");
            json_str(out, &self.url);
        }
        out.extend_from_slice(b",\"meta\":{");
        let pairs = self.meta.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        if self.meta.windows(2).all(|w| w[0].0 < w[1].0) {
            json_pairs(out, pairs);
        } else {
            // Sorted by key, the last of a repeated key winning, as a map collects them.
            json_pairs(out, pairs.collect::<BTreeMap<_, _>>().into_iter());
        }
        out.extend_from_slice(b"},\"ip\":\"");
        json_ip(out, self.ip);
        out.extend_from_slice(b"\",\"ua\":");
        json_opt(out, self.ua.as_deref());
        out.extend_from_slice(b",\"referer\":");
        json_opt(out, self.referer.as_deref());
        out.extend_from_slice(b",\"method\":");
        json_str(out, self.method);
        out.extend_from_slice(b",\"tls\":");
        json_opt(out, self.tls);
        out.extend_from_slice(b",\"http\":");
        json_str(out, self.http);
        out.extend_from_slice(b",\"minted_at\":");
        minted_at.write_json(out);
        if let Some(class) = self.open {
            out.extend_from_slice(b",\"open_class\":");
            json_str(out, class.as_str());
        }
        if let Some(v) = &self.verdict {
            json_verdict_members(out, v.class, &v.reasons, v.rules);
            if let Some(sec_fetch) = v.sec_fetch {
                out.extend_from_slice(b",\"sec_fetch\":");
                json_str(out, sec_fetch);
            }
        }
        if self.truncated.any() {
            json_truncated(out, self.truncated);
        }
        if let Some(message) = &self.message {
            json_message(out, message);
        }
        if let Some(fp) = &self.tls_fp {
            out.extend_from_slice(b",\"tls_fp\":");
            json_str(out, fp.as_str());
        }
        if self.implied_open {
            out.extend_from_slice(b",\"implied_open\":true");
        }
        if let Some(visitor) = &self.visitor {
            out.extend_from_slice(b",\"visitor\":");
            json_str(out, visitor.as_str());
        }
        id.write_member(out);
        out.extend_from_slice(b"}\n");
    }
}

/// A verdict's members, appended after the original fields of a click line, and in a revision
/// line: `"verdict"`, `"reasons"`, `"rules"`.
fn json_verdict_members(out: &mut Vec<u8>, class: Class, reasons: &[&str], rules: &str) {
    out.extend_from_slice(b",\"verdict\":");
    json_str(out, class.as_str());
    out.extend_from_slice(b",\"reasons\":[");
    for (i, reason) in reasons.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, reason);
    }
    out.extend_from_slice(b"],\"rules\":");
    json_str(out, rules);
}

/// `"truncated"`, the names of the fields cut to their bound, appended last when there is one.
fn json_truncated(out: &mut Vec<u8>, truncated: Truncated) {
    out.extend_from_slice(b",\"truncated\":[");
    for (i, field) in truncated.fields().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, field);
    }
    out.push(b']');
}

/// `"message"`, the message context the link carries, appended when it has one: `id`, then
/// `index`, `count`, `sent_at` (RFC 3339) and `role` when given.
fn json_message(out: &mut Vec<u8>, m: &MessageContext) {
    out.extend_from_slice(b",\"message\":{\"id\":");
    json_str(out, &m.message);
    if let Some(index) = m.index {
        // Invariant: formatting into a Vec cannot fail.
        write!(out, ",\"index\":{index}").expect("number formats");
    }
    if let Some(count) = m.count {
        write!(out, ",\"count\":{count}").expect("number formats");
    }
    if let Some(sent_at) = m.sent_at {
        out.extend_from_slice(b",\"sent_at\":");
        Stamp::new(crate::clock::from_unix_secs(sent_at)).write_json(out);
    }
    if let Some(role) = m.role {
        out.extend_from_slice(b",\"role\":");
        json_str(out, role.as_str());
    }
    out.push(b'}');
}

/// `s` as a JSON string, escaped as serde_json escapes it, and U+0085, U+2028 and U+2029 too.
///
/// NOTE: serde_json leaves those three raw, which is valid JSON, but line splitters that follow
/// Unicode (JavaScript's, Python's `str.splitlines`, many log shippers) end a record at them, so a
/// `User-Agent` holding one would split a click in two. Escaped as `\uXXXX` they are still the
/// same string to any JSON reader.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Nothing to escape in nearly every string: control characters, '"', '\\', and the lead
    // bytes of U+0085 (0xC2) and of U+2028/U+2029 (0xE2) send it to the slow path. A fold rather
    // than `any`: no early exit, so the check vectorises.
    let clean = s.bytes().fold(true, |clean, b| {
        clean & (b >= 0x20) & (b != b'"') & (b != b'\\') & (b != 0xC2) & (b != 0xE2)
    });
    out.push(b'"');
    if clean {
        out.extend_from_slice(s.as_bytes());
    } else {
        json_escaped(out, s);
    }
    out.push(b'"');
}

/// The body of a JSON string that needs escapes: serde_json's short forms (`\"`, `\\`, `\b`,
/// `\f`, `\n`, `\r`, `\t`), `\u00XX` (lower-case hex) for other control characters, and
/// `\uXXXX` for the Unicode line and paragraph separators.
fn json_escaped(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut from = 0;
    for (at, c) in s.char_indices() {
        let mut code = [b'\\', b'u', b'0', b'0', b'0', b'0'];
        let escape: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\u{08}' => b"\\b",
            '\u{0C}' => b"\\f",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            '\u{00}'..='\u{1F}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                let c = u32::from(c);
                for (i, digit) in code[2..].iter_mut().enumerate() {
                    // Invariant: a nibble indexes the 16 hex digits.
                    *digit = HEX[(c >> (12 - 4 * i) & 0xF) as usize];
                }
                &code
            }
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[from..at]);
        out.extend_from_slice(escape);
        from = at + c.len_utf8();
    }
    out.extend_from_slice(&s.as_bytes()[from..]);
}

/// The address as `Display` writes it. IPv4 digit by digit: `write!` went through the formatting
/// machinery for a thousand instructions, a quarter of the writer's work per click.
fn json_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        // Invariant: formatting into a Vec cannot fail.
        IpAddr::V6(v6) => write!(out, "{v6}").expect("IPv6 address formats"),
    }
}

/// The members of a JSON object, between its braces.
fn json_pairs<'a>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, k);
        out.push(b':');
        json_str(out, v);
    }
}

fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

mod revision;

#[cfg(test)]
mod tests;
