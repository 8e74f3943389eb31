//! Bounds on what a client writes into its click line: the `User-Agent` and `Referer` it sends are
//! kept up to [`MAX_UA_BYTES`] and [`MAX_REFERER_BYTES`], cut on a character boundary, and the
//! line says which were cut ([`Truncated`], the line's `"truncated"` field).
//!
//! Every other field of a line is either fixed in size or chosen by whoever minted the link (the
//! URL and metadata sealed in the token), so with these two bounds a link holder can no longer
//! make a click line large: a 16 KB header costs 512 or 1024 bytes of log, not 16 KB.
//!
//! The bounds are constants rather than settings: they are part of the click log's contract,
//! which readers size their parsers and columns by.
//! - `ua`, 512 bytes: browsers send 100 to 250 bytes (frozen by the User-Agent reduction); the
//!   longest real ones (in-app browsers listing their app and device, TV and console browsers)
//!   stay under 400. All of them are kept whole.
//! - `referer`, 1024 bytes: browsers send only the origin across sites by default
//!   (`strict-origin-when-cross-origin`), which is what a click from a mail client or another
//!   site carries; the full URL comes same-origin or under `unsafe-url`, and 1 KiB keeps its
//!   path and a query string of campaign parameters.
//!
//! Pure: no I/O, one allocation per kept header (as before the bounds), and never a copy of more
//! than the bound.

/// Longest `ua` kept in a click line, in bytes of UTF-8.
pub const MAX_UA_BYTES: usize = 512;

/// Longest `referer` kept in a click line, in bytes of UTF-8.
pub const MAX_REFERER_BYTES: usize = 1024;

/// Which fields of a click were cut to their bound. The line lists them in `"truncated"`, and has
/// no such field when none was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Truncated {
    /// `ua` was longer than [`MAX_UA_BYTES`].
    pub ua: bool,
    /// `referer` was longer than [`MAX_REFERER_BYTES`].
    pub referer: bool,
}

impl Truncated {
    /// Whether any field was cut.
    pub fn any(self) -> bool {
        self.ua | self.referer
    }

    /// The names of the cut fields, in line order, as the `"truncated"` field lists them.
    pub fn fields(self) -> impl Iterator<Item = &'static str> {
        [("ua", self.ua), ("referer", self.referer)]
            .into_iter()
            .filter_map(|(name, cut)| cut.then_some(name))
    }
}

/// A header value as click text of at most `max` bytes: bytes that are not UTF-8 are replaced
/// by U+FFFD (as `String::from_utf8_lossy` does), and a longer text is cut at the last character
/// boundary within `max`. Returns the text and whether it was cut.
///
/// For a value that is UTF-8 the text is always a prefix of the value, never ending in a
/// character cut in half.
pub fn bounded_text(value: &[u8], max: usize) -> (String, bool) {
    if value.len() <= max {
        let text = String::from_utf8_lossy(value);
        if text.len() <= max {
            return (text.into_owned(), false);
        }
        // Replacement characters (three bytes each) took it past the bound.
        return (floor(text.into_owned(), max), true);
    }
    // Only the first `max` bytes are decoded. If a character straddles the bound, the cut moves
    // back to its first byte (at most three continuation bytes), so the decoder does not turn a
    // valid character cut in half into U+FFFD.
    let mut end = max;
    for _ in 0..3 {
        if end > 0 && is_continuation(value[end]) {
            end -= 1;
        } else {
            break;
        }
    }
    (
        floor(String::from_utf8_lossy(&value[..end]).into_owned(), max),
        true,
    )
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn floor(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_kept_whole() {
        assert_eq!(bounded_text(b"curl/8", 512), ("curl/8".into(), false));
        assert_eq!(bounded_text(b"", 512), (String::new(), false));
        let exact = "a".repeat(512);
        assert_eq!(bounded_text(exact.as_bytes(), 512), (exact, false));
    }

    #[test]
    fn a_16_kib_header_is_cut_to_the_bound() {
        let long = "x".repeat(16 << 10);
        let (text, cut) = bounded_text(long.as_bytes(), MAX_UA_BYTES);
        assert!(cut);
        assert_eq!(text, "x".repeat(MAX_UA_BYTES));
    }

    #[test]
    fn a_character_across_the_bound_is_dropped_whole() {
        // "é" is two bytes, "€" three, "😀" four: each placed so it straddles byte 8.
        for (prefix, c) in [(7, "é"), (6, "€"), (7, "€"), (5, "😀"), (7, "😀")] {
            let value = format!("{}{c}tail", "a".repeat(prefix));
            let (text, cut) = bounded_text(value.as_bytes(), 8);
            assert!(cut, "{value}");
            assert_eq!(text, "a".repeat(prefix), "{value}");
        }
        // Ending exactly at the bound, the character is kept.
        let value = format!("{}€tail", "a".repeat(5));
        assert_eq!(bounded_text(value.as_bytes(), 8), ("aaaaa€".into(), true));
    }

    #[test]
    fn invalid_bytes_count_as_their_replacement() {
        // Each 0xFF becomes U+FFFD, three bytes: four of them no longer fit in eight.
        let (text, cut) = bounded_text(&[0xFF; 4], 8);
        assert!(cut);
        assert_eq!(text, "\u{FFFD}\u{FFFD}");
        let (text, cut) = bounded_text(&[0xFF; 40], 8);
        assert!(cut);
        assert_eq!(text, "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn flags_list_the_cut_fields_in_line_order() {
        assert!(!Truncated::default().any());
        let both = Truncated {
            ua: true,
            referer: true,
        };
        assert_eq!(both.fields().collect::<Vec<_>>(), ["ua", "referer"]);
        let referer = Truncated {
            referer: true,
            ..Truncated::default()
        };
        assert_eq!(referer.fields().collect::<Vec<_>>(), ["referer"]);
    }

    proptest::proptest! {
        #[test]
        fn text_is_within_the_bound_and_a_prefix_of_valid_utf8(
            value in "[a-zé€😀\u{2028}]{0,40}",
            max in 0usize..48,
        ) {
            let (text, cut) = bounded_text(value.as_bytes(), max);
            proptest::prop_assert!(text.len() <= max);
            proptest::prop_assert!(value.starts_with(&text));
            proptest::prop_assert_eq!(cut, text.len() < value.len());
        }

        #[test]
        fn any_bytes_give_text_within_the_bound(
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            max in 0usize..48,
        ) {
            let (text, cut) = bounded_text(&value, max);
            proptest::prop_assert!(text.len() <= max);
            let whole = String::from_utf8_lossy(&value);
            proptest::prop_assert!(cut || text == whole);
        }
    }
}
