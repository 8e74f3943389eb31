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
//! they are (one that gained links since is refused: their places would repeat the earlier
//! ones'). Links inside `<noscript>` (markup to a mail client, which runs no script) are
//! tracked like any other.
//!
//! Pure: minting, and telling which of the edge's links in the message were made for it, is
//! the caller's [`Minter`] (the message id, metadata, send time and keys are its business); this module decides what is minted, in which order, and where it goes. Two passes
//! over the HTML: the first finds the links (the count must be sealed in every token), the
//! second writes them.

pub mod href;
pub mod html;
pub mod text;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::links::context::MAX_LINKS_PER_MESSAGE;
use crate::links::{EdgeRoute, Role};

/// A message to prepare.
#[derive(Debug, Clone, Copy, Default)]
pub struct Message<'a> {
    /// The HTML part.
    pub html: Option<&'a str>,
    /// The plain-text part.
    pub text: Option<&'a str>,
    /// Insert an open pixel just before `</body>` (at the end without one), unless the HTML part
    /// carries this message's pixel already.
    pub pixel: bool,
    /// Insert a hidden decoy link (HTML part only) right after `<body>` (at the end without one),
    /// unless the HTML part carries this message's decoy already.
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
    /// What the edge's link or pixel `url` is to this message: made for it (its
    /// token opens on the message's domain and carries the message's id), or `None` (made for
    /// another message, or not to be opened here). Only a pixel or decoy made for this message
    /// stands in for the one asked; another message's, quoted in this one, does not.
    fn made_for_this_message(&self, url: &str) -> Option<Made>;
}

/// An edge link or pixel made for the message being rewritten (rewritten before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Its open pixel.
    Pixel,
    /// One of its links, with the role sealed in it.
    Link(Role),
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
    /// The pixel's URL, when asked and the message has an HTML part: the one it carries
    /// already, if any, else a new one.
    pub pixel: Option<String>,
    /// What became of the decoy, when asked.
    pub decoy: Option<Decoy>,
}

/// What became of the decoy a rewrite was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoy {
    /// Added: the last of the links, role decoy.
    Added,
    /// The HTML part carries this message's decoy already (rewritten before): kept as it is.
    Kept,
    /// None could be placed.
    Skipped(NoDecoy),
}

/// Why a decoy asked for was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoDecoy {
    /// The decoy is an HTML link; the message has no HTML part.
    #[error("the message has no HTML part (the decoy is a hidden HTML link)")]
    NoHtml,
    /// No link a decoy may lead to.
    #[error(
        "the message has no content or footer link for the decoy to lead to (never where an \
         unsubscribe or confirm link leads)"
    )]
    NoDestination,
    /// Rewritten before without one: its links are numbered already, the decoy's place with them.
    #[error(
        "the message was rewritten before without a decoy; one is added only when the original \
         message is rewritten (and has a content or footer link to lead to)"
    )]
    RewrittenWithout,
}

impl Decoy {
    /// As the API writes it: `added`, `kept` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decoy::Added => "added",
            Decoy::Kept => "kept",
            Decoy::Skipped(_) => "skipped",
        }
    }
}

/// The most a rewritten message (both parts) may come to: 16 MiB, eight times the largest
/// message `POST /v1/rewrite` takes.
pub const MAX_OUTPUT_BYTES: usize = 16 << 20;

/// Why a message was not rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError<E: std::error::Error + 'static> {
    /// The rewritten message would be over [`MAX_OUTPUT_BYTES`] (links repeated many times,
    /// each sealed link longer than the URL it replaces).
    #[error(
        "the rewritten message would be {bytes} bytes, over the 16777216 (16 MiB) a message may \
         come to: its links appear too often, or their metadata makes each sealed link long; \
         send less metadata, or fewer copies of the links"
    )]
    TooLarge {
        /// What it would have come to.
        bytes: usize,
    },
    /// More distinct links than a message may declare.
    #[error("the message has {0} distinct links; at most 1000 can be tracked (opt some out)")]
    TooManyLinks(usize),
    /// A `data-clickedge-role` names no role a person may give.
    #[error(
        "data-clickedge-role {0:?} is not one of content, footer, unsubscribe, confirm \
         (on the link to {1})"
    )]
    BadRole(String, String),
    /// The message holds links (or the open pixel) made for it already: it was rewritten
    /// before, and it has links that are not: the new ones' places would repeat the old ones',
    /// and a link the first rewrite left for its opt-out attribute (which it removed) would be
    /// tracked now.
    #[error(
        "the message was rewritten before: it holds {} this edge made for its message id and \
         {added} links it did not (new ones, or ones the first rewrite left for their opt-out \
         attribute, which it removed); rewrite the original message instead",
        made_before(*made, *pixel)
    )]
    RewrittenBefore {
        /// Links made for the message already.
        made: usize,
        /// Whether its open pixel is there already.
        pixel: bool,
        /// Distinct links that are not.
        added: usize,
    },
    /// A link a browser follows that no sealed link can carry: left as it is, it would go out
    /// untracked.
    #[error(
        "the link {href:?} cannot be tracked: {why}; write it as https://host/… within 4096 \
         bytes, or opt it out (clicktracking=\"off\")"
    )]
    Untrackable {
        /// The link as written.
        href: String,
        /// Why no sealed link carries it.
        why: crate::links::LinkError,
    },
    /// An `href` written `3D"…`: the HTML part is still quoted-printable (`=3D` is `=`), so no
    /// link in it reads as one, and all would go out untracked.
    #[error(
        "the HTML part looks quoted-printable encoded (the link {0:?} starts with 3D, an encoded \
         \"=\"): send each part decoded, as UTF-8 text"
    )]
    Encoded(String),
    /// The HTML could not be processed.
    #[error("rewriting the HTML part")]
    Html(#[source] lol_html::errors::RewritingError),
    /// A link was not minted.
    #[error("minting the link to {url}")]
    Mint {
        /// The destination.
        url: String,
        /// Why.
        #[source]
        source: E,
    },
    /// The open pixel was not minted.
    #[error("minting the message's open pixel")]
    MintPixel(#[source] E),
}

/// What [`RewriteError::RewrittenBefore`] found made for the message already, in words.
fn made_before(links: usize, pixel: bool) -> String {
    let links = match links {
        0 => None,
        1 => Some("1 link".to_owned()),
        n => Some(format!("{n} links")),
    };
    match (links, pixel) {
        (Some(links), true) => format!("{links} and the open pixel"),
        (Some(links), false) => links,
        (None, _) => "the open pixel".to_owned(),
    }
}

/// How the passes tell the edge's own links and pixels (see [`Minter::is_edge_domain`] and
/// [`Minter::made_for_this_message`]).
pub(crate) struct Edge<'a> {
    pub(crate) is_edge_domain: &'a dyn Fn(&str) -> bool,
    pub(crate) made: &'a dyn Fn(&str) -> Option<Made>,
}

impl Edge<'_> {
    /// The edge route of `url` when it is the edge's own link or pixel.
    pub(crate) fn route(&self, url: &str) -> Option<EdgeRoute> {
        href::edge_route(url, self.is_edge_domain)
    }
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
    let made = |url: &str| minter.made_for_this_message(url);
    let edge = Edge {
        is_edge_domain: &is_edge_domain,
        made: &made,
    };
    let found = match message.html {
        Some(h) => html::collect(h, &edge)?,
        None => html::Found::default(),
    };
    let (text_urls, text_made) = match message.text.map(|t| text::find(t, &edge, &found.opted_out))
    {
        Some(Ok(found)) => found,
        Some(Err((href, why))) => return Err(RewriteError::Untrackable { href, why }),
        None => Default::default(),
    };
    let mut targets: Vec<Target> = Vec::new();
    let mut seen: HashMap<Target, u32> = HashMap::new();
    // The link the text part's URL gets: the HTML's first to it, or its unsubscribe or confirm
    // link when it has one (a plain redirect would act on a scanner's GET).
    let mut by_url: HashMap<String, u32> = HashMap::new();
    let is_action = |role: Role| matches!(role, Role::Unsubscribe | Role::Confirm);
    let mut add = |t: Target, targets: &mut Vec<Target>| {
        let next = u32::try_from(targets.len()).unwrap_or(u32::MAX);
        let index = *seen.entry(t.clone()).or_insert(next);
        if index == next {
            match by_url.entry(t.url.clone()) {
                Entry::Vacant(e) => {
                    e.insert(index);
                }
                Entry::Occupied(mut e)
                    if is_action(t.role) && !is_action(targets[*e.get() as usize].role) =>
                {
                    e.insert(index);
                }
                Entry::Occupied(_) => {}
            }
            targets.push(t);
        }
        index as usize
    };
    // How often each link appears in the HTML part, for the size of what is written.
    let mut uses: Vec<usize> = Vec::new();
    for t in found.tracked {
        let index = add(t, &mut targets);
        uses.resize(uses.len().max(index + 1), 0);
        uses[index] += 1;
    }
    // The limit is on the links a person sees; the decoy comes after them. Checked once the
    // parts' links are collected, before any is minted.
    let too_many = |targets: &[Target]| targets.len() > MAX_LINKS_PER_MESSAGE as usize;
    if too_many(&targets) {
        return Err(RewriteError::TooManyLinks(targets.len()));
    }
    let html_urls: HashSet<String> = targets.iter().map(|t| t.url.clone()).collect();
    for (_, url) in &text_urls {
        if !html_urls.contains(url) && !found.opted_out.contains(url) {
            add(
                Target {
                    url: url.clone(),
                    role: Role::Content,
                },
                &mut targets,
            );
            if too_many(&targets) {
                return Err(RewriteError::TooManyLinks(targets.len()));
            }
        }
    }
    // Rewritten before, with links added since: numbered from 0 again, the new links would
    // share places with the old ones, and the verdict's count of distinct links clicked (and
    // coverage) would read two links as one. Rewritten before with nothing added: unchanged.
    let made_links = found.made_links + text_made;
    let pixel_before = found.pixel.is_some();
    if (made_links > 0 || pixel_before) && !targets.is_empty() {
        return Err(RewriteError::RewrittenBefore {
            made: made_links,
            pixel: pixel_before,
            added: targets.len(),
        });
    }
    // The decoy leads where the message's first content or footer link does: a scanner
    // following it sees a live page, and no person ever sees it. Never where an unsubscribe or
    // confirm link leads: a GET of the decoy is a plain redirect, and a scanner would
    // unsubscribe or confirm on the recipient's behalf without passing the action link's
    // confirm page. A message with only such links gets no decoy, and so does one that
    // carries its own decoy already (rewritten before: that one stays as it is).
    let action_urls: HashSet<&str> = targets
        .iter()
        .filter(|t| matches!(t.role, Role::Unsubscribe | Role::Confirm))
        .map(|t| t.url.as_str())
        .collect();
    let first = targets
        .iter()
        .find(|t| {
            matches!(t.role, Role::Content | Role::Footer) && !action_urls.contains(t.url.as_str())
        })
        .map(|t| t.url.clone());
    let decoy = match (message.decoy, message.html, found.decoy, first) {
        (false, ..) => None,
        (true, None, ..) => Some(Decoy::Skipped(NoDecoy::NoHtml)),
        (true, Some(_), true, _) => Some(Decoy::Kept),
        // Rewritten before (made links or the pixel refuse any target above).
        (true, Some(_), false, None) if made_links > 0 || pixel_before => {
            Some(Decoy::Skipped(NoDecoy::RewrittenWithout))
        }
        (true, Some(_), false, None) => Some(Decoy::Skipped(NoDecoy::NoDestination)),
        (true, Some(_), false, Some(url)) => {
            targets.push(Target {
                url,
                role: Role::Decoy,
            });
            Some(Decoy::Added)
        }
    };
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
    // pixels would count every open twice. A message without an HTML part has no place for one.
    let new_pixel = match (message.pixel, message.html, &found.pixel) {
        (true, Some(_), None) => Some(minter.pixel().map_err(RewriteError::MintPixel)?),
        _ => None,
    };

    // What pass two would write, before it is written: a message within 2 MiB that repeats one
    // URL could otherwise grow to gigabytes of sealed links (each up to limits.max_uri_bytes).
    let sealed = |index: u32| links.get(index as usize).map_or(0, |l| l.link.len());
    let html_growth: usize = (0u32..).zip(&uses).map(|(i, n)| n * sealed(i)).sum();
    let text_growth: usize = text_urls
        .iter()
        .filter_map(|(_, url)| by_url.get(url))
        .map(|&i| sealed(i))
        .sum();
    let bytes = message.html.map_or(0, str::len)
        + message.text.map_or(0, str::len)
        + html_growth
        + text_growth;
    if bytes > MAX_OUTPUT_BYTES {
        return Err(RewriteError::TooLarge { bytes });
    }

    // Pass two: write the links.
    let lookup: HashMap<&Target, &str> = targets
        .iter()
        .zip(&links)
        .map(|(t, l)| (t, l.link.as_str()))
        .collect();
    let decoy_link = links
        .iter()
        .find(|l| l.role == Role::Decoy)
        .map(|l| l.link.as_str());
    let is_edge_domain = |host: &str| minter.is_edge_domain(host);
    // Pass two only leaves the edge's links as written; what they are to the message is known.
    let made = |_: &str| None;
    let edge = Edge {
        is_edge_domain: &is_edge_domain,
        made: &made,
    };
    let html = match message.html {
        Some(h) => Some(html::write(
            h,
            &html::Writes {
                links: &lookup,
                pixel: new_pixel.as_deref(),
                decoy: decoy_link,
                edge: &edge,
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
        decoy,
    })
}

#[cfg(test)]
mod tests;
