//! Which links are tracked: an absolute `http`/`https` URL with a host, read as a browser reads
//! the attribute (entities decoded, surrounding whitespace stripped), on an element without an
//! opt-out attribute. `mailto:`, `tel:`, `sms:`, fragments, relative links and anything else are
//! left exactly as written (a `<base href>` is not applied: a relative `href` may be a template's
//! placeholder, `{{unsubscribe_url}}`, filled in after the rewrite), and so are the edge's own links and pixels ([`edge_route`]: `/c/` and
//! `/o/` on one of its domains). The attributes this module reads (opt-outs and
//! `data-clickedge-role`) are for the sender's tooling, not the recipient: they are removed from
//! the output.

use crate::links::{self, EdgeRoute, Link, LinkError, Role};

/// The per-link opt-out attributes of the field, and ours, with the value that opts out (none:
/// the attribute's presence does). SendGrid, Postmark, Mailgun, Amazon SES, clickedge.
pub const OPT_OUTS: [(&str, Option<&str>); 5] = [
    ("clicktracking", Some("off")),
    ("data-pm-no-track", None),
    ("disable-tracking", None),
    ("ses:no-track", None),
    ("data-clickedge", Some("off")),
];

/// The attribute that gives a link's role.
pub const ROLE_ATTRIBUTE: &str = "data-clickedge-role";

/// What an opt-out attribute with `value` means, for the attribute `name`: `Some(true)` opts
/// out, `Some(false)` is one of ours that does not, `None` is not an opt-out attribute.
pub fn opts_out(name: &str, value: &str) -> Option<bool> {
    OPT_OUTS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, off)| off.is_none_or(|off| value.trim().eq_ignore_ascii_case(off)))
}

/// The role a `data-clickedge-role` value names; the decoy is the edge's own and never given.
pub fn role(value: &str) -> Option<Role> {
    Role::parse(value.trim()).filter(|r| *r != Role::Decoy)
}

/// What an `href` (or a URL in text) is to the rewriter.
#[derive(Debug, PartialEq, Eq)]
pub enum Href {
    /// A link the edge tracks, to this destination in the normalised form a sealed link
    /// carries.
    Tracked(String),
    /// Not a link the edge tracks (another scheme, relative, no host): left as written.
    Left,
    /// A URL a browser follows that no sealed link can carry (longer than links take, or its
    /// host written `https:\\host` or `https:///host`): leaving it untracked silently would
    /// send an untracked link, so the message is refused naming it (unless it opted out).
    Untrackable {
        /// The URL as a browser reads it (entities decoded, whitespace stripped).
        url: String,
        /// Why no sealed link carries it.
        why: LinkError,
    },
}

impl Href {
    /// What an opt-out of this link is recorded as, for the text part to honour: its
    /// destination, or as written when no link can carry it; none when it is no link.
    pub fn opt_out_key(self) -> Option<String> {
        match self {
            Href::Tracked(url) | Href::Untrackable { url, .. } => Some(url),
            Href::Left => None,
        }
    }
}

/// What an `href` attribute's raw value (as written, entities and all) is.
pub fn classify(raw: &str) -> Href {
    url_href(&htmlize::unescape_attribute(raw))
}

/// The destination an `href` attribute's raw value leads to, when it is a link the edge tracks.
pub fn destination(raw: &str) -> Option<String> {
    match classify(raw) {
        Href::Tracked(url) => Some(url),
        Href::Left | Href::Untrackable { .. } => None,
    }
}

/// As [`classify`], for a URL as written in plain text.
pub fn url_href(url: &str) -> Href {
    // Browsers strip leading and trailing ASCII whitespace and C0 controls from URLs, then
    // every tab and line break within (`ht&Tab;tps:` is `https:`).
    let url = url.trim_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control());
    let url: std::borrow::Cow<'_, str> = if url.contains(['\t', '\n', '\r']) {
        url.replace(['\t', '\n', '\r'], "").into()
    } else {
        url.into()
    };
    // Protocol-relative (`//host/path`, or with either slash a backslash, which a browser reads
    // as one): a webmail page served over HTTPS follows it to `https://host/path`, so it is a
    // link a browser follows, and none a sealed link carries as written.
    let mut lead = url.chars();
    if matches!(
        (lead.next(), lead.next()),
        (Some('/' | '\\'), Some('/' | '\\'))
    ) && url::Url::parse(&format!("https:{url}"))
        .is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()))
    {
        return Href::Untrackable {
            url: url.to_string(),
            why: LinkError::BadUrl(url.into_owned()),
        };
    }
    let Some((scheme, _)) = url.split_once(':') else {
        return Href::Left;
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Href::Left;
    }
    match Link::new(&url, Vec::new(), 0) {
        Ok(link) => Href::Tracked(link.url),
        // What a browser makes of it: a host it goes to, or nothing to follow.
        Err(why)
            if url::Url::parse(&url).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty())) =>
        {
            Href::Untrackable {
                url: url.into_owned(),
                why,
            }
        }
        Err(_) => Href::Left,
    }
}

/// The edge's own route `url` (a destination as [`destination`] returns it) is, when its host is
/// one of the edge's domains (`is_edge_domain`): a link or pixel the edge made (an earlier
/// rewrite, `POST /v1/links`), left as written rather than wrapped in a second redirect.
pub fn edge_route(url: &str, is_edge_domain: &dyn Fn(&str) -> bool) -> Option<EdgeRoute> {
    links::edge_route(url)
        .filter(|edge| is_edge_domain(&edge.host))
        .map(|edge| edge.route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_links_are_tracked() {
        for left in [
            "mailto:a@example.com",
            "tel:+441234",
            "sms:+441234",
            "#top",
            "/relative",
            "relative.html",
            "//example.com/protocol-relative",
            "javascript:alert(1)",
            "ftp://example.com/",
            "https://",
            "{{unsubscribe_url}}",
            "",
        ] {
            assert_eq!(destination(left), None, "{left}");
        }
        assert_eq!(
            destination(" https://example.com/a?b=1&amp;c=2 ").as_deref(),
            Some("https://example.com/a?b=1&c=2")
        );
        assert_eq!(
            destination("HTTP://Example.COM").as_deref(),
            Some("http://example.com/")
        );
    }

    #[test]
    fn entities_decode_as_a_browser_reads_an_attribute() {
        // A legacy entity without `;` followed by `=` stays literal in an attribute.
        assert_eq!(
            destination("https://example.com/?a=1&copy=2").as_deref(),
            Some("https://example.com/?a=1&copy=2")
        );
        assert_eq!(
            destination("https://example.com/&#x2F;x&#47;y").as_deref(),
            Some("https://example.com//x/y")
        );
        // Non-ASCII: the host as an A-label, the path percent-encoded, as a browser sends them.
        assert_eq!(
            destination("https://bücher.example/straße?q=grüße").as_deref(),
            Some("https://xn--bcher-kva.example/stra%C3%9Fe?q=gr%C3%BC%C3%9Fe")
        );
    }

    /// A tab or line break inside an href is dropped as a browser drops it, so the link a
    /// person follows is the one tracked.
    #[test]
    fn tabs_and_line_breaks_within_are_dropped_as_a_browser_drops_them() {
        for raw in [
            "https:&#10;//example.com/",
            "ht&#9;tps://example.com/",
            "ht&Tab;tps://exa&NewLine;mple.com/",
            "https:\r\n//example.com/",
        ] {
            assert_eq!(
                destination(raw).as_deref(),
                Some("https://example.com/"),
                "{raw}"
            );
        }
        // Other spaces within are no part of a scheme.
        assert_eq!(destination("ht tps://example.com/"), None);
    }

    #[test]
    fn opt_outs_by_presence_or_value() {
        assert_eq!(opts_out("clicktracking", "off"), Some(true));
        assert_eq!(opts_out("ClickTracking", " OFF "), Some(true));
        assert_eq!(opts_out("clicktracking", "on"), Some(false));
        assert_eq!(opts_out("data-pm-no-track", ""), Some(true));
        assert_eq!(opts_out("disable-tracking", "true"), Some(true));
        assert_eq!(opts_out("ses:no-track", ""), Some(true));
        assert_eq!(opts_out("data-clickedge", "off"), Some(true));
        assert_eq!(opts_out("class", "off"), None);
        assert_eq!(role("unsubscribe"), Some(Role::Unsubscribe));
        assert_eq!(role("decoy"), None);
    }
}
