//! Opens: who fetched an open pixel ([`OpenClass`], [`classify`]), and which messages this node
//! saw opened ([`SeenOpens`]), so that a person's click on a message whose open was never seen
//! says the open it implies (`"implied_open": true`).
//!
//! Classification is pure and allocation-free: the user agent, the request's shape
//! ([`super::verdict::shape`]) and the network catalogue entry of the client's address, looked up
//! by the caller. It never blocks and never does I/O. Whether an open line is written at all
//! (the token, the per-address rate) is the request handler's business.

mod seen;

pub use seen::SeenOpens;

use super::verdict::Class;
use super::verdict::networks::Network;
use super::verdict::shape::Shape;

/// Who fetched an open pixel: the line's `"open_class"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpenClass {
    /// The reader's own mail client or browser.
    Direct,
    /// Apple Mail Privacy Protection: every image fetched through Apple's relays on delivery,
    /// whether or not anyone reads the message (`User-Agent` exactly `Mozilla/5.0` from a range
    /// of the catalogue's `apple-mpp` entry).
    AppleMpp,
    /// Gmail's image proxy (`GoogleImageProxy`), fetching when a reader opens the message and
    /// caching the image afterwards.
    GmailProxy,
    /// Yahoo Mail's image proxy (`YahooMailProxy`), the same.
    YahooProxy,
    /// A scanner or other machine, by the verdict's request-shape markers or catalogue.
    Scanner,
}

impl OpenClass {
    /// Every class, in the order of the metric's labels.
    pub const ALL: [OpenClass; 5] = [
        OpenClass::Direct,
        OpenClass::AppleMpp,
        OpenClass::GmailProxy,
        OpenClass::YahooProxy,
        OpenClass::Scanner,
    ];

    /// The value of the line's `"open_class"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OpenClass::Direct => "direct",
            OpenClass::AppleMpp => "apple_mpp",
            OpenClass::GmailProxy => "gmail_proxy",
            OpenClass::YahooProxy => "yahoo_proxy",
            OpenClass::Scanner => "scanner",
        }
    }
}

/// The catalogue name whose ranges are Apple's relays (iCloud Private Relay egress, which Mail
/// Privacy Protection's image loads come from).
pub const APPLE_MPP_NETWORK: &str = "net:apple-mpp";

/// The exact `User-Agent` of Mail Privacy Protection's image loads.
const APPLE_MPP_UA: &[u8] = b"Mozilla/5.0";

/// An open's class, verdict and reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    /// Who fetched the pixel.
    pub class: OpenClass,
    /// Whether the fetch shows a person opening the message: `human` for a direct open,
    /// `unknown` for an image proxy (it fetches on a reader's open, then serves its copy) or a
    /// probable scanner range, `machine` for Apple's prefetch and scanners.
    pub verdict: Class,
    /// The codes that decided it, in the click line's vocabulary.
    pub reasons: Vec<&'static str>,
}

/// Judges an open from its user agent `ua`, the request's `shape` and the catalogue entry `net`
/// of the client's address among the ranges judging opens ([`Scope::Opens`] lookup).
///
/// [`Scope::Opens`]: super::verdict::networks::Scope::Opens
pub fn classify(ua: Option<&[u8]>, shape: &Shape, net: Option<Network>) -> Judged {
    let judged = |class, verdict, reasons| Judged {
        class,
        verdict,
        reasons,
    };
    if let Some(ua) = ua {
        if contains_ci(ua, b"googleimageproxy") {
            return judged(
                OpenClass::GmailProxy,
                Class::Unknown,
                vec!["ua:googleimageproxy"],
            );
        }
        if contains_ci(ua, b"yahoomailproxy") {
            return judged(
                OpenClass::YahooProxy,
                Class::Unknown,
                vec!["ua:yahoomailproxy"],
            );
        }
    }
    let apple = net.filter(|n| n.reason == APPLE_MPP_NETWORK);
    if let Some(n) = apple
        && ua == Some(APPLE_MPP_UA)
    {
        return judged(OpenClass::AppleMpp, Class::Machine, vec![n.reason]);
    }
    let mut reasons: Vec<&'static str> = shape.machine.iter().flatten().copied().collect();
    let mut machine = !reasons.is_empty();
    if let Some(n) = net {
        reasons.push(n.reason);
        // Apple's relays carry people too (Private Relay): only the prefetch's exact user agent
        // makes them Mail Privacy Protection.
        machine |= n.certainty == super::verdict::networks::Certainty::Certain
            && n.reason != APPLE_MPP_NETWORK;
    }
    match (machine, reasons.is_empty()) {
        (true, _) => judged(OpenClass::Scanner, Class::Machine, reasons),
        (false, false) => judged(OpenClass::Direct, Class::Unknown, reasons),
        (false, true) => judged(OpenClass::Direct, Class::Human, reasons),
    }
}

fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clicks::verdict::networks::{Catalogue, Certainty, Scope};
    use crate::clicks::verdict::shape::shape;
    use http::HeaderMap;

    fn judge(method: &str, ua: Option<&str>, ip: &str) -> Judged {
        let mut headers = HeaderMap::new();
        if let Some(ua) = ua {
            headers.insert(http::header::USER_AGENT, ua.parse().unwrap());
        }
        let net = Catalogue::defaults().lookup(ip.parse().unwrap(), Scope::Opens);
        classify(ua.map(str::as_bytes), &shape(method, &headers), net)
    }

    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 \
                          (KHTML, like Gecko)";

    #[test]
    fn apple_mpp_is_the_bare_user_agent_from_apples_relays() {
        let mpp = judge("GET", Some("Mozilla/5.0"), "172.224.224.9");
        assert_eq!(
            (mpp.class, mpp.verdict, mpp.reasons),
            (OpenClass::AppleMpp, Class::Machine, vec!["net:apple-mpp"])
        );
        // A full user agent through the same relay is a person using Private Relay.
        let relay = judge("GET", Some(SAFARI), "172.224.224.9");
        assert_eq!(
            (relay.class, relay.verdict),
            (OpenClass::Direct, Class::Unknown)
        );
        // The bare user agent from elsewhere is not Apple's.
        let elsewhere = judge("GET", Some("Mozilla/5.0"), "203.0.113.7");
        assert_eq!(
            (elsewhere.class, elsewhere.verdict),
            (OpenClass::Direct, Class::Human)
        );
    }

    #[test]
    fn image_proxies_and_scanners_are_named() {
        let gmail = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
        let g = judge("GET", Some(gmail), "66.249.84.1");
        assert_eq!(
            (g.class, g.verdict),
            (OpenClass::GmailProxy, Class::Unknown)
        );
        let y = judge(
            "GET",
            Some("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"),
            "98.136.0.1",
        );
        assert_eq!(y.class, OpenClass::YahooProxy);
        let curl = judge("GET", Some("curl/8.5.0"), "203.0.113.7");
        assert_eq!(
            (curl.class, curl.verdict, curl.reasons),
            (OpenClass::Scanner, Class::Machine, vec!["ua:curl"])
        );
        let head = judge("HEAD", Some(SAFARI), "203.0.113.7");
        assert_eq!(
            (head.class, head.reasons),
            (OpenClass::Scanner, vec!["head"])
        );
        let eop_only_clicks = judge("GET", Some(SAFARI), "40.92.0.1");
        assert_eq!(eop_only_clicks.class, OpenClass::Direct, "scope clicks");
        let proofpoint = judge("GET", Some(SAFARI), "148.163.130.5");
        assert_eq!(
            (proofpoint.class, proofpoint.verdict),
            (OpenClass::Direct, Class::Unknown),
            "probable"
        );
        let lab = Catalogue::parse("198.51.100.0/24 lab opens certain\n").unwrap();
        let n = lab.lookup("198.51.100.1".parse().unwrap(), Scope::Opens);
        assert_eq!(n.map(|n| n.certainty), Some(Certainty::Certain));
        let s = classify(Some(SAFARI.as_bytes()), &Shape::default(), n);
        assert_eq!((s.class, s.reasons), (OpenClass::Scanner, vec!["net:lab"]));
        let direct = judge("GET", Some(SAFARI), "203.0.113.7");
        assert_eq!(
            (direct.class, direct.verdict, direct.reasons),
            (OpenClass::Direct, Class::Human, vec![])
        );
    }
}
