//! Text that a customer's DNS chose (CAA tags and values, a resolver's error text) made safe to
//! show: every character that could drive a terminal, split a log line or reorder what a reader
//! sees is written as a visible `\u{…}` escape instead.
//!
//! Escaped: C0 controls (tab and newline included), DEL, C1 controls (NEL U+0085 among them),
//! the line and paragraph separators U+2028/U+2029, and the bidirectional formatting characters
//! (U+061C, U+200E/U+200F, U+202A–U+202E, U+2066–U+2069), which can make a record read as
//! something it is not. Everything else, non-ASCII letters included, is kept as is. This module
//! does not quote or escape for any other syntax (HTML, JSON, zone files); those have their own
//! escaping where they are written.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True if `c` must not reach a terminal or a log line raw.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every [unsafe](is_unsafe) character written as `\u{hex}`; borrowed (no allocation)
/// when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(is_unsafe) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if is_unsafe(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for an owned string, reusing it when nothing needs escaping.
pub fn escape_owned(s: String) -> String {
    match escape(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(escaped) => escaped,
    }
}

/// [`escape`] for text of several lines (a fix): the line breaks stay, everything else unsafe
/// in each line is escaped.
pub fn escape_lines(s: String) -> String {
    if !s.contains(|c| c != '\n' && is_unsafe(c)) {
        return s;
    }
    s.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn terminal_and_line_controls_become_visible_escapes() {
        assert_eq!(
            escape("ca.example\u{1b}]0;owned\u{7}\n\u{85}\u{9b}31m\u{2028}\u{202e}gro.elpmaxe"),
            "ca.example\\u{1b}]0;owned\\u{7}\\u{a}\\u{85}\\u{9b}31m\\u{2028}\\u{202e}gro.elpmaxe"
        );
        assert_eq!(escape("tab\there\u{7f}"), "tab\\u{9}here\\u{7f}");
    }

    #[test]
    fn lines_keep_their_breaks() {
        assert_eq!(
            escape_lines("Delete:\nx. IN CAA 0 issue \"\u{1b}[2J\r\"".into()),
            "Delete:\nx. IN CAA 0 issue \"\\u{1b}[2J\\u{d}\""
        );
        assert_eq!(escape_lines("a\nb".into()), "a\nb");
    }

    #[test]
    fn clean_text_is_borrowed_unchanged() {
        for s in [
            "letsencrypt.org; accounturi=https://x",
            "bücher.example",
            "",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s));
        }
    }

    /// Any characters at all, controls and separators included (`any::<String>()` has none).
    fn any_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..64).prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        #[test]
        fn escaped_text_never_contains_an_unsafe_character(s in any_text()) {
            let out = escape(&s);
            prop_assert!(!out.chars().any(is_unsafe), "{:?}", out);
            prop_assert_eq!(escape(&out), out.clone(), "escaping twice changes nothing");
            prop_assert_eq!(escape_owned(s.clone()), out.into_owned());
            let lines = escape_lines(s);
            prop_assert!(!lines.chars().any(|c| c != '\n' && is_unsafe(c)), "{:?}", lines);
        }

        #[test]
        fn text_without_unsafe_characters_is_kept(s in "[^\\p{Cc}\u{2028}\u{2029}\u{61c}\u{200e}\u{200f}\u{202a}-\u{202e}\u{2066}-\u{2069}]*") {
            prop_assert_eq!(escape(&s), s.as_str());
        }
    }
}
