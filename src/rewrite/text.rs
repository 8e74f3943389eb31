//! The plain-text part: URLs found by linkify (which gets the boundaries right around
//! punctuation and brackets), the tracked ones replaced, every other byte kept. The edge's own
//! links and pixels are not tracked.

use std::ops::Range;

use linkify::{LinkFinder, LinkKind};

use super::href;
use super::html::IsEdgeDomain;

/// The tracked URLs of `text`: where each is and its normalised destination. URLs on one of the
/// edge's domains (`is_edge_domain`) at its own routes are left alone.
pub(crate) fn find(text: &str, is_edge_domain: IsEdgeDomain<'_>) -> Vec<(Range<usize>, String)> {
    let mut finder = LinkFinder::new();
    finder.kinds(&[LinkKind::Url]);
    finder
        .links(text)
        .filter_map(|l| Some((l.start()..l.end(), href::url_destination(l.as_str())?)))
        .filter(|(_, url)| href::edge_route(url, is_edge_domain).is_none())
        .collect()
}

/// `text` with each URL of `found` that `link` maps replaced by its sealed link.
pub(crate) fn write<'a>(
    text: &str,
    found: &[(Range<usize>, String)],
    link: impl Fn(&str) -> Option<&'a str>,
) -> String {
    let mut out = String::with_capacity(text.len() + found.len() * 64);
    let mut at = 0;
    for (range, url) in found {
        if let Some(sealed) = link(url) {
            out.push_str(&text[at..range.start]);
            out.push_str(sealed);
            at = range.end;
        }
    }
    out.push_str(&text[at..]);
    out
}
