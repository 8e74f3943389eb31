//! The HTML part, through lol_html: [`collect`] finds the links of `<a href>` and `<area href>`
//! elements, [`write`] puts the sealed links in their `href`, removes the attributes meant for
//! the sender's tooling, and inserts the decoy and the pixel. lol_html copies everything it is
//! not asked to change byte for byte; a start tag it changes is re-serialised (attributes
//! separated by one space), its other attributes kept as written. Not strict: HTML a browser
//! would parse ambiguously (a `<script>` in a `<select>`, …) is rewritten like any other.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use lol_html::html_content::{ContentType, Element};
use lol_html::{EndTagHandler, HtmlRewriter, Settings, element, end};

use super::href::{self, ROLE_ATTRIBUTE};
use super::{RewriteError, Target};
use crate::links::Role;

/// The elements whose `href` is a link.
const LINKS: &str = "a[href], area[href]";

/// The links of the HTML part.
#[derive(Debug, Default)]
pub(crate) struct Found {
    /// Tracked links, in document order (repeats included).
    pub(crate) tracked: Vec<Target>,
    /// Destinations of links that opted out.
    pub(crate) opted_out: HashSet<String>,
}

/// What one link element is.
enum Kind {
    /// Tracked: replace its `href`.
    Tracked(Target),
    /// Carries an opt-out attribute; its destination when it is one the edge would track.
    OptedOut(Option<String>),
    /// Not a link the edge tracks.
    Left,
}

/// A `data-clickedge-role` that names no role: the value and the link's `href`.
#[derive(Debug, thiserror::Error)]
#[error("data-clickedge-role {0:?}")]
struct BadRole(String, String);

fn inspect(el: &Element<'_, '_>) -> Result<Kind, BadRole> {
    let href = el.get_attribute("href").unwrap_or_default();
    let opted_out = el
        .attributes()
        .iter()
        .any(|a| href::opts_out(&a.name(), &a.value()) == Some(true));
    if opted_out {
        return Ok(Kind::OptedOut(href::destination(&href)));
    }
    let role = match el.get_attribute(ROLE_ATTRIBUTE) {
        Some(v) => href::role(&v).ok_or_else(|| BadRole(v, href.clone()))?,
        None => Role::Content,
    };
    Ok(match href::destination(&href) {
        Some(url) => Kind::Tracked(Target { url, role }),
        None => Kind::Left,
    })
}

/// The links of `html`, or the first refused role.
pub(crate) fn collect<E: std::error::Error>(html: &str) -> Result<Found, RewriteError<E>> {
    let found = RefCell::new(Found::default());
    let bad = RefCell::new(None);
    let settings = Settings::new()
        .append_element_content_handler(element!(LINKS, |el| {
            match inspect(el) {
                Ok(Kind::Tracked(t)) => found.borrow_mut().tracked.push(t),
                Ok(Kind::OptedOut(Some(url))) => {
                    found.borrow_mut().opted_out.insert(url);
                }
                Ok(Kind::OptedOut(None) | Kind::Left) => {}
                Err(e) => {
                    *bad.borrow_mut() = Some((e.0.clone(), e.1.clone()));
                    return Err(Box::new(e));
                }
            }
            Ok(())
        }))
        .with_strict(false);
    let result = run(html, settings);
    if let Some((value, link)) = bad.into_inner() {
        return Err(RewriteError::BadRole(value, link));
    }
    result.map_err(RewriteError::Html)?;
    Ok(found.into_inner())
}

/// What [`write`] puts in.
pub(crate) struct Writes<'a> {
    /// The sealed link of each tracked link.
    pub(crate) links: &'a HashMap<&'a Target, &'a str>,
    /// The pixel's URL.
    pub(crate) pixel: Option<&'a str>,
    /// The decoy's link.
    pub(crate) decoy: Option<&'a str>,
}

/// `html` with its tracked links replaced, the sender's attributes removed, the decoy right
/// after `<body>` and the pixel just before `</body>` (both at the end without them).
pub(crate) fn write<E: std::error::Error>(
    html: &str,
    writes: &Writes<'_>,
) -> Result<String, RewriteError<E>> {
    let pixel = writes.pixel.map(pixel_html);
    let decoy = writes.decoy.map(decoy_html);
    let decoy_done = Cell::new(decoy.is_none());
    let pixel_done = Rc::new(Cell::new(pixel.is_none()));
    let settings = Settings::new()
        .append_element_content_handler(element!(LINKS, |el| {
            let kind = inspect(el)?;
            strip_sender_attributes(el);
            if let Kind::Tracked(t) = kind
                && let Some(link) = writes.links.get(&t)
            {
                el.set_attribute("href", link)?;
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
        }))
        .with_strict(false);
    let out = run(html, settings).map_err(RewriteError::Html)?;
    // lol_html writes what it read (UTF-8 in, UTF-8 out) and inserts only our ASCII.
    String::from_utf8(out).map_err(|e| {
        RewriteError::Html(lol_html::errors::RewritingError::ContentHandlerError(
            Box::new(e),
        ))
    })
}

/// Removes the opt-out and role attributes: they are for the sender's tooling.
fn strip_sender_attributes(el: &mut Element<'_, '_>) {
    let names: Vec<String> = el
        .attributes()
        .iter()
        .map(|a| a.name())
        .filter(|n| n == ROLE_ATTRIBUTE || href::opts_out(n, "").is_some())
        .collect();
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

fn run(
    html: &str,
    settings: Settings<'_, '_>,
) -> Result<Vec<u8>, lol_html::errors::RewritingError> {
    let mut out = Vec::with_capacity(html.len() + 512);
    let mut rewriter = HtmlRewriter::new(settings, |c: &[u8]| out.extend_from_slice(c));
    rewriter.write(html.as_bytes())?;
    rewriter.end()?;
    Ok(out)
}
