//! The HTML part, through lol_html: [`collect`] finds the links of `<a href>` and `<area href>`
//! elements, [`write`] puts the sealed links in their `href`, removes the attributes meant for
//! the sender's tooling, and inserts the decoy and the pixel. lol_html copies everything it is
//! not asked to change byte for byte; a start tag it changes is re-serialised (attributes
//! separated by one space), its other attributes kept as written. Not strict: HTML a browser
//! would parse ambiguously (a `<script>` in a `<select>`, …) is rewritten like any other.
//! `<noscript>` text, raw text to lol_html, goes through the same pass as markup (a mail client
//! runs no script). The edge's own links are left as written, and a part that carries the
//! message's own pixel or decoy already gets no second one.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use lol_html::errors::RewritingError;
use lol_html::html_content::{ContentType, Element};
use lol_html::{EndTagHandler, HtmlRewriter, Settings, element, end, text};

use super::href::{self, Href, ROLE_ATTRIBUTE};
use super::{Edge, Made, RewriteError, Target};
use crate::links::{EdgeRoute, Role};

/// The elements whose `href` is a link.
const LINKS: &str = "a[href], area[href]";
/// The elements that may be the edge's pixel.
const IMAGES: &str = "img[src]";
/// Raw text to lol_html, markup to a mail client (see [`held_noscript`]).
const NOSCRIPT: &str = "noscript";

/// The links of the HTML part.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Tracked links, in document order (repeats included).
    pub(crate) tracked: Vec<Target>,
    /// Destinations of links that opted out (as written, for one no link can carry).
    pub(crate) opted_out: HashSet<String>,
    /// The message's own pixel, when the part carries it already (rewritten before).
    pub(crate) pixel: Option<String>,
    /// The part carries the message's own decoy already.
    pub(crate) decoy: bool,
    /// Links made for this message the part carries (rewritten before), the decoy included.
    pub(crate) made_links: usize,
}

/// What one link element is.
enum Kind {
    /// Tracked: replace its `href`.
    Tracked(Target),
    /// Carries an opt-out attribute; its destination when it is one the edge would track.
    OptedOut(Option<String>),
    /// The edge's own link (rewritten before, or quoted from another message): left as
    /// written; what it is to this message, if it was made for it.
    Own(Option<Made>),
    /// Not a link the edge tracks.
    Left,
}

/// A link that refuses the message.
#[derive(Debug, Clone, thiserror::Error)]
enum Refusal {
    /// A `data-clickedge-role` that names no role: the value and the link's `href`.
    #[error("data-clickedge-role {0:?}")]
    BadRole(String, String),
    /// An `href` a browser follows that no sealed link can carry.
    #[error("link {0:?} cannot be tracked")]
    Untrackable(String, crate::links::LinkError),
    /// An `href` of a part still quoted-printable.
    #[error("link {0:?} is quoted-printable")]
    Encoded(String),
}

impl<E: std::error::Error> From<Refusal> for RewriteError<E> {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::BadRole(value, link) => RewriteError::BadRole(value, link),
            Refusal::Untrackable(href, why) => RewriteError::Untrackable { href, why },
            Refusal::Encoded(href) => RewriteError::Encoded(href),
        }
    }
}

fn inspect(el: &Element<'_, '_>, edge: &Edge<'_>) -> Result<Kind, Refusal> {
    let href = el.get_attribute("href").unwrap_or_default();
    // `<a href=3D"https://…">`: the attribute unquoted, its value the encoded quote and all.
    if let [a, b, c, ..] = href.as_bytes()
        && [*a, *b].eq_ignore_ascii_case(b"3D")
        && matches!(c, b'"' | b'\'')
    {
        return Err(Refusal::Encoded(href));
    }
    let opted_out = el
        .attributes()
        .iter()
        .any(|a| href::opts_out(&a.name(), &a.value()) == Some(true));
    if opted_out {
        return Ok(Kind::OptedOut(href::classify(&href).opt_out_key()));
    }
    let role = match el.get_attribute(ROLE_ATTRIBUTE) {
        Some(v) => href::role(&v).ok_or_else(|| Refusal::BadRole(v, href.clone()))?,
        None => Role::Content,
    };
    let url = match href::classify(&href) {
        Href::Tracked(url) => url,
        Href::Left => return Ok(Kind::Left),
        Href::Untrackable { why, .. } => return Err(Refusal::Untrackable(href, why)),
    };
    Ok(match edge.route(&url) {
        Some(_) => Kind::Own((edge.made)(&url)),
        None => Kind::Tracked(Target { url, role }),
    })
}

/// The links of `html`, or the first refused role. The edge's own links and pixels (`edge`) are
/// not tracked; those made for this message are counted.
pub(crate) fn collect<E: std::error::Error>(
    html: &str,
    edge: &Edge<'_>,
) -> Result<Found, RewriteError<E>> {
    let found = RefCell::new(Found::default());
    let bad = RefCell::new(None);
    let result = collect_part(html, edge, &found, &bad, Part::Document);
    if let Some(refusal) = bad.into_inner() {
        return Err(refusal.into());
    }
    result.map_err(RewriteError::Html)?;
    Ok(found.into_inner())
}

/// Which part of the HTML a pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The whole part: `<noscript>` text goes through a pass of its own, the insertions go in.
    Document,
    /// The text of a `<noscript>`: its links only (a `<noscript>` inside it stays text).
    Noscript,
}

fn collect_part(
    html: &str,
    edge: &Edge<'_>,
    found: &RefCell<Found>,
    bad: &RefCell<Option<Refusal>>,
    part: Part,
) -> Result<(), RewritingError> {
    let held = RefCell::new(String::new());
    let mut settings = Settings::new()
        .append_element_content_handler(element!(LINKS, |el| {
            match inspect(el, edge) {
                Ok(Kind::Tracked(t)) => found.borrow_mut().tracked.push(t),
                Ok(Kind::OptedOut(Some(url))) => {
                    found.borrow_mut().opted_out.insert(url);
                }
                Ok(Kind::Own(Some(Made::Link(role)))) => {
                    let mut found = found.borrow_mut();
                    found.made_links += 1;
                    found.decoy |= role == Role::Decoy;
                }
                Ok(Kind::Own(_)) => {}
                Ok(Kind::OptedOut(None) | Kind::Left) => {}
                Err(e) => {
                    *bad.borrow_mut() = Some(e.clone());
                    return Err(Box::new(e));
                }
            }
            Ok(())
        }))
        .append_element_content_handler(element!(IMAGES, |el| {
            let src = el.get_attribute("src").unwrap_or_default();
            if let Some(url) = href::destination(&src)
                && edge.route(&url) == Some(EdgeRoute::Pixel)
                && (edge.made)(&url) == Some(Made::Pixel)
            {
                found.borrow_mut().pixel.get_or_insert(url);
            }
            Ok(())
        }));
    if part == Part::Document {
        settings = settings.append_element_content_handler(text!(NOSCRIPT, |t| {
            if let Some(fragment) = held_noscript(&held, t.as_str(), t.last_in_text_node()) {
                collect_part(&fragment, edge, found, bad, Part::Noscript)?;
            }
            Ok(())
        }));
    }
    run(html, settings.with_strict(false)).map(drop)
}

/// Holds back the text of a `<noscript>` until its last chunk, then hands back the whole of it.
///
/// lol_html reads `<noscript>` as a browser with scripts does: raw text. A mail client runs no
/// script and reads it as markup, so its links are visible and clickable: the text goes through
/// the same pass as a fragment of its own (one level: a `<noscript>` inside it stays text, as it
/// would be nowhere but in a document nested on purpose).
fn held_noscript(held: &RefCell<String>, chunk: &str, last: bool) -> Option<String> {
    let mut held = held.borrow_mut();
    held.push_str(chunk);
    last.then(|| std::mem::take(&mut *held))
}

/// What [`write`] puts in.
pub(crate) struct Writes<'a> {
    /// The sealed link of each tracked link.
    pub(crate) links: &'a HashMap<&'a Target, &'a str>,
    /// The pixel's URL.
    pub(crate) pixel: Option<&'a str>,
    /// The decoy's link.
    pub(crate) decoy: Option<&'a str>,
    /// The edge's own links and pixels (left as written).
    pub(crate) edge: &'a Edge<'a>,
}

/// `html` with its tracked links replaced, the sender's attributes removed, the decoy right
/// after `<body>` and the pixel just before `</body>` (both at the end without them).
pub(crate) fn write<E: std::error::Error>(
    html: &str,
    writes: &Writes<'_>,
) -> Result<String, RewriteError<E>> {
    let out = write_part(html, writes, Part::Document).map_err(RewriteError::Html)?;
    // lol_html writes what it read (UTF-8 in, UTF-8 out) and inserts only our ASCII.
    String::from_utf8(out)
        .map_err(|e| RewriteError::Html(RewritingError::ContentHandlerError(Box::new(e))))
}

fn write_part(html: &str, writes: &Writes<'_>, part: Part) -> Result<Vec<u8>, RewritingError> {
    let document = part == Part::Document;
    let pixel = writes.pixel.filter(|_| document).map(pixel_html);
    let decoy = writes.decoy.filter(|_| document).map(decoy_html);
    let decoy_done = Cell::new(decoy.is_none());
    let pixel_done = Rc::new(Cell::new(pixel.is_none()));
    let held = RefCell::new(String::new());
    let mut settings = Settings::new().append_element_content_handler(element!(LINKS, |el| {
        let kind = inspect(el, writes.edge)?;
        strip_sender_attributes(el);
        if let Kind::Tracked(t) = kind
            && let Some(link) = writes.links.get(&t)
        {
            el.set_attribute("href", link)?;
        }
        Ok(())
    }));
    if document {
        settings = settings
            .append_element_content_handler(text!(NOSCRIPT, |t| {
                // Every chunk but the last is held back; the last carries the whole text,
                // rewritten. Nothing in it can close the `<noscript>`: only `href` values
                // change, to sealed links, and attribute values are escaped.
                match held_noscript(&held, t.as_str(), t.last_in_text_node()) {
                    Some(fragment) => {
                        let out = write_part(&fragment, writes, Part::Noscript)?;
                        t.replace(&String::from_utf8(out)?, ContentType::Html);
                    }
                    None => t.remove(),
                }
                Ok(())
            }))
            .append_element_content_handler(element!("body", |el| {
                if let Some(d) = decoy.as_deref()
                    && !decoy_done.replace(true)
                {
                    el.prepend(d, ContentType::Html);
                }
                if let Some(p) = pixel.clone()
                    && !pixel_done.get()
                {
                    let done = pixel_done.clone();
                    let before_end: EndTagHandler<'static> = Box::new(move |end| {
                        if !done.replace(true) {
                            end.before(&p, ContentType::Html);
                        }
                        Ok(())
                    });
                    el.on_end_tag(before_end)?;
                }
                Ok(())
            }))
            .append_document_content_handler(end!(|end| {
                if let Some(d) = decoy.as_deref()
                    && !decoy_done.replace(true)
                {
                    end.append(d, ContentType::Html);
                }
                if let Some(p) = pixel.as_deref()
                    && !pixel_done.replace(true)
                {
                    end.append(p, ContentType::Html);
                }
                Ok(())
            }));
    }
    run(html, settings.with_strict(false))
}

/// Removes the opt-out and role attributes: they are for the sender's tooling.
fn strip_sender_attributes(el: &mut Element<'_, '_>) {
    let mut names: Vec<String> = el
        .attributes()
        .iter()
        .map(|a| a.name())
        .filter(|n| n == ROLE_ATTRIBUTE || href::opts_out(n, "").is_some())
        .collect();
    // Once each: removing a name removes every copy of it, and a tag repeating one thousands
    // of times would otherwise be scanned again for each copy.
    names.sort_unstable();
    names.dedup();
    for n in names {
        let value = el.get_attribute(&n).unwrap_or_default();
        if n == ROLE_ATTRIBUTE || href::opts_out(&n, &value) == Some(true) {
            el.remove_attribute(&n);
        }
    }
}

/// The open pixel: a 1×1 image, not hidden (clients skip hidden images).
fn pixel_html(url: &str) -> String {
    format!(
        r#"<img src="{}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0">"#,
        htmlize::escape_attribute(url)
    )
}

/// The decoy: a link no person sees or reaches by keyboard, skipped by screen readers.
fn decoy_html(url: &str) -> String {
    format!(
        r#"<a href="{}" aria-hidden="true" tabindex="-1" style="display:none;mso-hide:all;font-size:0;line-height:0;max-height:0;overflow:hidden"></a>"#,
        htmlize::escape_attribute(url)
    )
}

fn run(html: &str, settings: Settings<'_, '_>) -> Result<Vec<u8>, RewritingError> {
    let mut out = Vec::with_capacity(html.len() + 512);
    let mut rewriter = HtmlRewriter::new(settings, |c: &[u8]| out.extend_from_slice(c));
    rewriter.write(html.as_bytes())?;
    rewriter.end()?;
    Ok(out)
}
