//! The plain-text part: URLs found by linkify (which gets the boundaries right around
//! punctuation and brackets), the tracked ones replaced, every other byte kept. The edge's own
//! links and pixels are not tracked.

use std::ops::Range;

use linkify::{LinkFinder, LinkKind};

use super::{Edge, Made, href};

/// The tracked URLs of `text`: where each is and its normalised destination; and how many of
/// the edge's own links it carries that were made for this message. The edge's own links and
/// pixels (`edge`) are left alone.
pub(crate) fn find(text: &str, edge: &Edge<'_>) -> (Vec<(Range<usize>, String)>, usize) {
    let mut finder = LinkFinder::new();
    finder.kinds(&[LinkKind::Url]);
    let mut made = 0;
    let tracked = finder
        .links(text)
        .filter_map(|l| Some((l.start()..l.end(), href::url_destination(l.as_str())?)))
        .filter(|(_, url)| match edge.route(url) {
            None => true,
            Some(_) => {
                made += usize::from(matches!((edge.made)(url), Some(Made::Link(_))));
                false
            }
        })
        .collect();
    (tracked, made)
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
