//! Whole messages: every tracked link of an email's HTML and plain-text parts replaced by a
//! sealed link carrying its place in the message (index, count, role), and, when asked, an open
//! pixel just before `</body>` and a hidden decoy link.
//!
//! The HTML part goes through a streaming HTML rewriter ([`html`], lol_html), never regular
//! expressions: only the `href` of `<a>` and `<area>` elements changes (their start tag is
//! re-serialised, nothing else is), the text of a link never does. The plain-text part's URLs are
//! found by a linkifier ([`text`]). Which links are tracked is [`href`]'s decision: absolute
//! `http`/`https` URLs, unless the element carries an opt-out attribute or the URL is the edge's
//! own link or pixel, so a message rewritten again keeps its links, its pixel and its decoy as
//! they are. Links inside `<noscript>` (markup to a mail client, which runs no script) are
//! tracked like any other.
//!
//! Pure: minting is the caller's [`Minter`] (the message id, metadata and send time are its
//! business); this module decides what is minted, in which order, and where it goes. Two passes
//! over the HTML: the first finds the links (the count must be sealed in every token), the
//! second writes them.

pub mod href;
pub mod html;
pub mod text;

use std::collections::HashMap;

use crate::links::Role;
use crate::links::context::MAX_LINKS_PER_MESSAGE;

/// A message to prepare.
#[derive(Debug, Clone, Copy, Default)]
pub struct Message<'a> {
    /// The HTML part.
    pub html: Option<&'a str>,
    /// The plain-text part.
    pub text: Option<&'a str>,
    /// Insert an open pixel just before `</body>` (at the end without one), unless the HTML part
    /// carries the edge's pixel already.
    pub pixel: bool,
    /// Insert a hidden decoy link (HTML part only) right after `<body>` (at the end without one),
    /// unless the HTML part carries the edge's decoy already.
    pub decoy: bool,
}

/// Where a link sits in its message: what its token carries besides the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Position among the message's distinct links, from 0.
    pub index: u32,
    /// How many distinct links the message has that a person can click (the decoy left out, so
    /// coverage, "most links of the message clicked", is read against what a person sees); the
    /// decoy's own place counts every link, itself included (it comes last).
    pub count: u32,
    /// What the link is for.
    pub role: Role,
}

/// Seals links and the pixel for one message.
pub trait Minter {
    /// Why minting failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The sealed link to `url` (absolute http(s), checked by [`href`]) at `place`.
    fn link(&mut self, url: &str, place: Place) -> Result<String, Self::Error>;
    /// The open pixel's URL for the message.
    fn pixel(&mut self) -> Result<String, Self::Error>;
    /// True when `host` is one of the edge's domains: there, a `/c/` or `/o/` URL is a link or
    /// pixel the edge made (an earlier rewrite, `POST /v1/links`), left as written rather than
    /// wrapped in a second redirect that would log every click twice.
    fn is_edge_domain(&self, host: &str) -> bool;
}

/// One distinct link of a rewritten message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedLink {
    /// Its place among the message's links.
    pub index: u32,
    /// The destination, normalised.
    pub url: String,
    /// The sealed link that replaced it.
    pub link: String,
    /// What it is for.
    pub role: Role,
}

/// A rewritten message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The HTML part, when one was given.
    pub html: Option<String>,
    /// The plain-text part, when one was given.
    pub text: Option<String>,
    /// The distinct links, by index.
    pub links: Vec<MintedLink>,
    /// The pixel's URL, when asked: the one the HTML part carries already, if any, else a new
    /// one.
    pub pixel: Option<String>,
}

/// Why a message was not rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError<E: std::error::Error + 'static> {
    /// More distinct links than a message may declare.
    #[error("the message has {0} distinct links; at most 1000 can be tracked (opt some out)")]
    TooManyLinks(usize),
    /// A `data-clickedge-role` names no role a person may give.
    #[error(
        "data-clickedge-role {0:?} is not one of content, footer, unsubscribe, confirm \
         (on the link to {1})"
    )]
    BadRole(String, String),
    /// The HTML could not be processed.
    #[error("rewriting the HTML part")]
    Html(#[source] lol_html::errors::RewritingError),
    /// A link or the pixel was not minted.
    #[error("minting the link to {url}")]
    Mint {
        /// The destination (empty for the pixel).
        url: String,
        /// Why.
        #[source]
        source: E,
    },
}

/// A distinct link of the message: its destination and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) role: Role,
}

/// Rewrites `message`, minting with `minter`.
pub fn rewrite<M: Minter>(
    message: Message<'_>,
    minter: &mut M,
) -> Result<Rewritten, RewriteError<M::Error>> {
    // Pass one: the distinct links, HTML first, then the text part's (which reuse the HTML's
    // link to the same destination and leave alone what the HTML opted out).
    let is_edge_domain = |host: &str| minter.is_edge_domain(host);
    let found = match message.html {
        Some(h) => html::collect(h, &is_edge_domain)?,
        None => html::Found::default(),
    };
    let text_urls = message
        .text
        .map(|t| text::find(t, &is_edge_domain))
        .unwrap_or_default();
    let mut targets: Vec<Target> = Vec::new();
    let mut seen: HashMap<Target, u32> = HashMap::new();
    let mut by_url: HashMap<String, u32> = HashMap::new();
    let mut add = |t: Target, targets: &mut Vec<Target>| {
        let next = u32::try_from(targets.len()).unwrap_or(u32::MAX);
        let index = *seen.entry(t.clone()).or_insert(next);
        if index == next {
            by_url.entry(t.url.clone()).or_insert(index);
            targets.push(t);
        }
    };
    for t in found.tracked {
        add(t, &mut targets);
    }
    let html_links = targets.len();
    for (_, url) in &text_urls {
        let known = targets[..html_links].iter().any(|t| &t.url == url);
        if !known && !found.opted_out.contains(url) {
            add(
                Target {
                    url: url.clone(),
                    role: Role::Content,
                },
                &mut targets,
            );
        }
    }
    // The limit is on the links a person sees; the decoy comes after them.
    if targets.len() > MAX_LINKS_PER_MESSAGE as usize {
        return Err(RewriteError::TooManyLinks(targets.len()));
    }
    // The decoy leads where the message's first content or footer link does: a scanner
    // following it sees a live page, and no person ever sees it. Never where an unsubscribe or
    // confirm link leads: a GET of the decoy is a plain redirect, and a scanner would
    // unsubscribe or confirm on the recipient's behalf without passing the action link's
    // confirm page. A message with only such links gets no decoy, and so does one that
    // carries the edge's decoy already (rewritten before: that one stays as it is).
    if message.decoy
        && message.html.is_some()
        && !found.decoy
        && let Some(first) = targets
            .iter()
            .find(|t| matches!(t.role, Role::Content | Role::Footer))
    {
        let decoy = Target {
            url: first.url.clone(),
            role: Role::Decoy,
        };
        targets.push(decoy);
    }
    // Invariant: at most MAX_LINKS_PER_MESSAGE (1000) targets and the decoy, checked above.
    let count = targets.len() as u32;
    let visible = count - u32::from(targets.last().is_some_and(|t| t.role == Role::Decoy));

    let mut links = Vec::with_capacity(targets.len());
    for (index, t) in (0u32..).zip(&targets) {
        let place = Place {
            index,
            count: if t.role == Role::Decoy {
                count
            } else {
                visible
            },
            role: t.role,
        };
        let link = minter
            .link(&t.url, place)
            .map_err(|source| RewriteError::Mint {
                url: t.url.clone(),
                source,
            })?;
        links.push(MintedLink {
            index,
            url: t.url.clone(),
            link,
            role: t.role,
        });
    }
    // A part that carries the edge's pixel already (rewritten before) gets no second one: two
    // pixels would count every open twice.
    let new_pixel = match (message.pixel, &found.pixel) {
        (true, None) => Some(minter.pixel().map_err(|source| RewriteError::Mint {
            url: String::new(),
            source,
        })?),
        _ => None,
    };

    // Pass two: write the links.
    let lookup: HashMap<&Target, &str> = targets
        .iter()
        .zip(&links)
        .map(|(t, l)| (t, l.link.as_str()))
        .collect();
    let decoy = links
        .iter()
        .find(|l| l.role == Role::Decoy)
        .map(|l| l.link.as_str());
    let is_edge_domain = |host: &str| minter.is_edge_domain(host);
    let html = match message.html {
        Some(h) => Some(html::write(
            h,
            &html::Writes {
                links: &lookup,
                pixel: new_pixel.as_deref(),
                decoy,
                is_edge_domain: &is_edge_domain,
            },
        )?),
        None => None,
    };
    let text = message.text.map(|t| {
        text::write(t, &text_urls, |url| {
            by_url.get(url).map(|&i| links[i as usize].link.as_str())
        })
    });
    let pixel = if message.pixel {
        new_pixel.or(found.pixel)
    } else {
        None
    };
    Ok(Rewritten {
        html,
        text,
        links,
        pixel,
    })
}

#[cfg(test)]
mod tests;
