//! Byte counts as people write them: a plain integer (`67108864`) or a number with a unit
//! (`"64MiB"`, `"10 GiB"`, `"512KB"`): `KiB`, `MiB`, `GiB`, `TiB` are powers of 1024, `KB`,
//! `MB`, `GB`, `TB` powers of 1000, `B` bytes; units in any case.
//!
//! Only parsing; what a size may be (at least twice another, …) is `validate`'s.

use std::fmt;
use std::num::{NonZeroU64, NonZeroUsize};

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Units and their factors, longest suffix first so `MiB` is not read as `B`.
const UNITS: [(&str, u64); 9] = [
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("b", 1),
];

/// Parses `"64MiB"`, `"10 GB"`, `"4096"`; `None` for anything else or past `u64`.
pub fn parse(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (number, factor) = UNITS
        .iter()
        .find_map(|(unit, factor)| Some((text.strip_suffix(unit)?, *factor)))
        .unwrap_or((&text, 1));
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// A byte count, integer or with a unit; `zero` says whether `0` is allowed (and what it means).
struct Bytes {
    zero: Option<&'static str>,
}

impl<'de> Visitor<'de> for Bytes {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.zero {
            Some(meaning) => write!(
                f,
                "a number of bytes ({meaning}), e.g. 10737418240 or \"10GiB\""
            ),
            None => f.write_str("a positive number of bytes, e.g. 67108864 or \"64MiB\""),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        let v = u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))?;
        self.visit_u64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v == 0 && self.zero.is_none() {
            return Err(E::invalid_value(de::Unexpected::Unsigned(0), &self));
        }
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        let n = parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))?;
        self.visit_u64(n)
    }
}

/// A positive byte count (`max_file_bytes`).
pub fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroU64, D::Error> {
    let n = d.deserialize_any(Bytes { zero: None })?;
    // The visitor refuses 0.
    NonZeroU64::new(n).ok_or_else(|| de::Error::custom("a positive number of bytes"))
}

/// A positive byte count held in memory (`max_buffered_bytes`, `max_header_bytes`, …).
pub fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroUsize, D::Error> {
    let n = positive_u64(d)?;
    usize::try_from(n.get())
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| de::Error::custom("a number of bytes this machine can address"))
}

/// A byte count where `0` means no cap (`max_total_bytes`).
pub fn or_zero_for_no_cap<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Bytes {
        zero: Some("0: no cap"),
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sizes_are_read_with_binary_and_decimal_units_and_plain_integers() {
        assert_eq!(parse("67108864"), Some(67_108_864));
        assert_eq!(parse("64MiB"), Some(64 << 20));
        assert_eq!(parse("10 GiB"), Some(10 << 30));
        assert_eq!(parse("512kb"), Some(512_000));
        assert_eq!(parse("1TB"), Some(1_000_000_000_000));
        assert_eq!(parse("8 B"), Some(8));
        for bad in [
            "",
            "MiB",
            "1.5GiB",
            "-1",
            "64 MiBs",
            "0x10",
            "99999999999999TiB",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
