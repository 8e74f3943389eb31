//! The plain-text part: URLs found by linkify (which gets the boundaries right around
//! punctuation and brackets), cut where the text resumes after a space linkify does not stop
//! at ([`cut`]), the tracked ones replaced, every other byte kept. The edge's own links and
//! pixels are not tracked.

use std::collections::HashSet;
use std::ops::Range;

use linkify::{LinkFinder, LinkKind};

use super::href::{self, Href};
use super::{Edge, Made};
use crate::links::LinkError;

/// A text part's tracked URLs (where each is, and its destination) and how many of the edge's
/// own links made for the message it carries.
pub(crate) type Found = (Vec<(Range<usize>, String)>, usize);

/// The tracked URLs of `text`: where each is and its normalised destination; and how many of
/// the edge's own links it carries that were made for this message. The edge's own links and
/// pixels (`edge`) are left alone. `Err`: a URL no sealed link can carry (unless `opted_out`
/// holds it, as the HTML part's opt-outs are recorded), and why.
pub(crate) fn find(
    text: &str,
    edge: &Edge<'_>,
    opted_out: &HashSet<String>,
) -> Result<Found, (String, LinkError)> {
    let mut finder = LinkFinder::new();
    finder.kinds(&[LinkKind::Url]);
    let mut made = 0;
    let mut tracked = Vec::new();
    for l in finder.links(text) {
        let found = cut(l.as_str());
        let url = match href::url_href(found) {
            Href::Tracked(url) => url,
            Href::Left => continue,
            Href::Untrackable { url, .. } if opted_out.contains(&url) => continue,
            Href::Untrackable { why, .. } => return Err((found.to_owned(), why)),
        };
        match edge.route(&url) {
            None => tracked.push((l.start()..l.start() + found.len(), url)),
            Some(_) => made += usize::from(matches!((edge.made)(&url), Some(Made::Link(_)))),
        }
    }
    Ok((tracked, made))
}

/// A URL as linkify found it, up to where the text resumes: linkify lets an IRI run on through
/// a no-break or ideographic space and CJK punctuation (`。`, `、`, `）`), which no URL holds
/// unescaped, so one of those ends it, and the sentence punctuation before it is left out as
/// linkify leaves it out at a URL's end.
fn cut(url: &str) -> &str {
    let Some(end) = url
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || cjk_punctuation(*c))
        .map(|(i, _)| i)
    else {
        return url;
    };
    let mut url = url[..end].trim_end_matches(['.', ',', ':', ';', '!', '?', '\'', '"']);
    // A closing bracket with no opening one in the URL is the text's, as linkify reads it.
    while let Some(rest) = url.strip_suffix(')')
        && url.matches('(').count() < url.matches(')').count()
    {
        url = rest;
    }
    url
}

/// CJK symbols and punctuation (but the letters among them: 々, 〆, 〇, the Suzhou numerals,
/// the kana repeat marks), and the fullwidth forms of ASCII punctuation.
fn cjk_punctuation(c: char) -> bool {
    matches!(c,
        '\u{3000}'..='\u{3004}'
        | '\u{3008}'..='\u{3020}'
        | '\u{302A}'..='\u{3030}'
        | '\u{3036}'..='\u{303A}'
        | '\u{303D}'..='\u{303F}'
        | '\u{FF01}'..='\u{FF0F}'
        | '\u{FF1A}'..='\u{FF20}'
        | '\u{FF3B}'..='\u{FF40}'
        | '\u{FF5B}'..='\u{FF65}')
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
