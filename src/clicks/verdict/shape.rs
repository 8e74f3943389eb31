//! Request-shape signals: what a single request says about its sender, from its method and
//! headers alone. `HEAD`, a prefetch or preview header, a missing `User-Agent` and user-agent
//! markers of scanners and HTTP libraries are machines; a browser user agent of an engine that
//! always sends `Sec-Fetch-*` on a navigation, arriving without any, counts against the click.
//!
//! Pure and allocation-free: every reason is a `&'static str`, and the user agent is read once,
//! by one case-insensitive Aho-Corasick pass that finds the scanner markers and the engine
//! markers together (24 separate substring scans cost the click about 3 µs).

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use http::HeaderMap;

/// User-agent markers of scanners, gateways and HTTP libraries, each with its reason code.
/// Matched case-insensitively anywhere in the user agent; the first that matches names it.
pub const UA_MARKERS: &[(&str, &str)] = &[
    ("safelinks", "ua:safelinks"),
    ("urldefense", "ua:urldefense"),
    ("proofpoint", "ua:proofpoint"),
    ("mimecast", "ua:mimecast"),
    ("barracuda", "ua:barracuda"),
    ("headless", "ua:headless"),
    ("curl/", "ua:curl"),
    ("wget/", "ua:wget"),
    ("python-requests", "ua:python-requests"),
    ("python-urllib", "ua:python-urllib"),
    ("aiohttp", "ua:aiohttp"),
    ("go-http-client", "ua:go-http-client"),
    ("java/", "ua:java"),
    // The JDK's java.net.http client (11 and later): `Java-http-client/17.0.2`.
    ("java-http-client", "ua:java"),
    ("okhttp", "ua:okhttp"),
    ("libwww-perl", "ua:libwww-perl"),
    ("httpclient", "ua:httpclient"),
    ("node-fetch", "ua:node-fetch"),
    ("axios/", "ua:axios"),
    ("googleimageproxy", "ua:googleimageproxy"),
    ("slackbot", "ua:slackbot"),
    ("spider", "ua:spider"),
    ("crawler", "ua:crawler"),
    ("bot", "ua:bot"),
];

/// What one request's shape says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Reasons that make the click a machine, in order: `head`, `prefetch`, `no-ua`, `ua:…`.
    pub machine: [Option<&'static str>; 4],
    /// A browser engine that always sends `Sec-Fetch-*` sent none (`no-sec-fetch`): counts
    /// against the click, never decides alone, and only over TLS (the rules check that):
    /// browsers send these headers only to potentially trustworthy URLs, none over plain HTTP.
    pub no_sec_fetch: bool,
    /// Which `Sec-Fetch-*` headers came, for the click log ([`sec_fetch_code`]).
    pub sec_fetch: u8,
}

/// `Sec-Fetch-Dest`, `-Mode`, `-Site`, `-User`, as bits of [`Shape::sec_fetch`].
const SEC_FETCH: [&str; 4] = [
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
];

/// The prefetch and preview headers browsers and mail clients send.
const PREFETCH: [&str; 4] = ["sec-purpose", "purpose", "x-purpose", "x-moz"];

/// Reads the shape of a request with `method` and `headers`.
///
/// The headers are read in one pass over the map (a handful of entries) rather than by nine
/// lookups, each of which hashes its name: the lookups were half of the verdict's work per click.
/// A repeated `User-Agent` is judged by its first value; a prefetch marker counts in any value
/// of a repeated prefetch header.
pub fn shape(method: &str, headers: &HeaderMap) -> Shape {
    let mut s = Shape::default();
    let mut prefetch = false;
    let mut ua = None;
    for (name, value) in headers {
        let name = name.as_str();
        if let Some(bit) = SEC_FETCH.iter().position(|h| *h == name) {
            s.sec_fetch |= 1 << bit;
        } else if name == "user-agent" {
            // The first value, as `HeaderMap::get` gives it.
            ua.get_or_insert(value.as_bytes());
        } else if PREFETCH.contains(&name) {
            let v = value.as_bytes();
            prefetch |= contains_ci(v, b"prefetch")
                || contains_ci(v, b"preview")
                || contains_ci(v, b"prerender");
        }
    }
    let mut n = 0;
    let mut push = |reason| {
        s.machine[n] = Some(reason);
        n += 1;
    };
    if method == "HEAD" {
        push("head");
    }
    if prefetch {
        push("prefetch");
    }
    let scan = ua.map(UaScan::of);
    match (ua, &scan) {
        (Some(ua), Some(scan)) if !ua.iter().all(u8::is_ascii_whitespace) => {
            if let Some(reason) = scan.marker(ua) {
                push(reason);
            }
        }
        _ => push("no-ua"),
    }
    // Chromium (since 76) and Firefox (since 90) send Sec-Fetch-Site/Mode/Dest on every
    // navigation; Safari only since 16.4 and never Sec-Fetch-User, so its absence alone is no
    // signal, and Safari user agents are not judged by it at all.
    s.no_sec_fetch = s.sec_fetch == 0
        && scan
            .zip(ua)
            .is_some_and(|(scan, ua)| scan.fetch_metadata_engine(ua));
    s
}

/// The reason code of the first user-agent marker in `ua`, or `None`. Old Chrome versions
/// (38 to 42), frozen in some scanners' user agents, count as a marker (`ua:old-chrome`).
pub fn ua_marker(ua: &[u8]) -> Option<&'static str> {
    UaScan::of(ua).marker(ua)
}

/// The index of the bare `bot` marker in [`UA_MARKERS`].
const BOT: usize = UA_MARKERS.len() - 1;

/// Engine markers, searched in the same pass as [`UA_MARKERS`] (their pattern ids follow).
const ENGINES: [&str; 4] = ["chrome/", "firefox/", "iphone", "ipad"];

/// One automaton for [`UA_MARKERS`] then [`ENGINES`], ASCII case-insensitive. Standard match
/// semantics, searched for overlapping matches: every marker present is seen, so the first of
/// the list wins whatever its place in the user agent.
static MARKERS: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .build(UA_MARKERS.iter().map(|(m, _)| *m).chain(ENGINES))
        // A handful of short literal patterns is far below any of the builder's limits.
        .expect("the user-agent markers build an automaton")
});

/// What one pass over a user agent found.
#[derive(Debug, Default)]
struct UaScan {
    /// The lowest index into [`UA_MARKERS`] that occurs.
    marker: Option<usize>,
    /// Where the version after the first `chrome/` starts.
    chrome: Option<usize>,
    /// Where the version after the first `firefox/` starts.
    firefox: Option<usize>,
    /// `iphone` or `ipad` occurs.
    ios: bool,
}

impl UaScan {
    fn of(ua: &[u8]) -> UaScan {
        let mut scan = UaScan::default();
        for m in MARKERS.find_overlapping_iter(ua) {
            let id = m.pattern().as_usize();
            match id.checked_sub(UA_MARKERS.len()) {
                // A phone maker's name in an Android WebView's user agent (`CUBOT KINGKONG 9
                // Build/…; wv`) is no bot.
                None if id == BOT
                    && m.start() >= 2
                    && ua[m.start() - 2..m.start()].eq_ignore_ascii_case(b"cu") => {}
                None => scan.marker = Some(scan.marker.map_or(id, |first| first.min(id))),
                Some(0) => _ = scan.chrome.get_or_insert(m.end()),
                Some(1) => _ = scan.firefox.get_or_insert(m.end()),
                Some(_) => scan.ios = true,
            }
        }
        scan
    }

    /// The reason code of the first marker in the list, or `ua:old-chrome`, or `None`.
    fn marker(&self, ua: &[u8]) -> Option<&'static str> {
        if let Some(i) = self.marker {
            return Some(UA_MARKERS[i].1);
        }
        let version = &ua[self.chrome?..];
        let major = version.get(..2)?;
        let old = matches!(major, b"38" | b"39" | b"40" | b"41" | b"42")
            && version.get(2).is_none_or(|b| !b.is_ascii_digit());
        old.then_some("ua:old-chrome")
    }

    /// A user agent of an engine that sends `Sec-Fetch-*` on every navigation: Chromium-based
    /// (`Chrome/` 76 or later, not on iOS where every browser is WebKit) or Firefox 90 or later.
    fn fetch_metadata_engine(&self, ua: &[u8]) -> bool {
        if self.ios {
            return false;
        }
        let major = |at: Option<usize>| -> Option<u32> {
            let digits = ua[at?..].iter().take_while(|b| b.is_ascii_digit()).take(4);
            digits.fold(None, |acc: Option<u32>, d| {
                Some(acc.unwrap_or(0) * 10 + u32::from(d - b'0'))
            })
        };
        major(self.chrome).is_some_and(|v| v >= 76) || major(self.firefox).is_some_and(|v| v >= 90)
    }
}

/// The click log's `"sec_fetch"` value for the bits of [`Shape::sec_fetch`]: the present
/// headers' suffixes, comma-separated, in the order dest, mode, site, user (`""` for none).
pub fn sec_fetch_code(bits: u8) -> &'static str {
    const CODES: [&str; 16] = [
        "",
        "dest",
        "mode",
        "dest,mode",
        "site",
        "dest,site",
        "mode,site",
        "dest,mode,site",
        "user",
        "dest,user",
        "mode,user",
        "dest,mode,user",
        "site,user",
        "dest,site,user",
        "mode,site,user",
        "dest,mode,site,user",
    ];
    CODES[usize::from(bits & 0xf)]
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    find_ci(hay, needle).is_some()
}

/// Where the ASCII-lowercase `needle` first occurs in `hay`, ignoring ASCII case.
fn find_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| {
        w.iter()
            .zip(needle)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy as _;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                          (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
                          (KHTML, like Gecko) Version/17.5 Safari/605.1.15";

    fn reasons(s: &Shape) -> Vec<&'static str> {
        s.machine.iter().flatten().copied().collect()
    }

    #[test]
    fn a_browser_navigation_has_no_reason() {
        let h = headers(&[
            ("user-agent", CHROME),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
            ("sec-fetch-user", "?1"),
        ]);
        let s = shape("GET", &h);
        assert_eq!(reasons(&s), Vec::<&str>::new());
        assert!(!s.no_sec_fetch);
        assert_eq!(sec_fetch_code(s.sec_fetch), "dest,mode,site,user");
    }

    #[test]
    fn safari_without_sec_fetch_user_or_any_sec_fetch_is_not_held_against() {
        let s = shape("GET", &headers(&[("user-agent", SAFARI)]));
        assert_eq!(reasons(&s), Vec::<&str>::new());
        assert!(!s.no_sec_fetch);
        let s = shape(
            "GET",
            &headers(&[
                ("user-agent", SAFARI),
                ("sec-fetch-site", "none"),
                ("sec-fetch-mode", "navigate"),
                ("sec-fetch-dest", "document"),
            ]),
        );
        assert!(!s.no_sec_fetch);
        assert_eq!(sec_fetch_code(s.sec_fetch), "dest,mode,site");
    }

    #[test]
    fn chrome_without_any_sec_fetch_counts_against() {
        let s = shape("GET", &headers(&[("user-agent", CHROME)]));
        assert!(s.no_sec_fetch);
        assert_eq!(reasons(&s), Vec::<&str>::new());
    }

    #[test]
    fn head_prefetch_and_missing_ua_are_machines_in_order() {
        let s = shape("HEAD", &headers(&[("sec-purpose", "prefetch;prerender")]));
        assert_eq!(reasons(&s), ["head", "prefetch", "no-ua"]);
        for (h, v) in [
            ("purpose", "prefetch"),
            ("x-purpose", "preview"),
            ("x-moz", "prefetch"),
        ] {
            let s = shape("GET", &headers(&[(h, v), ("user-agent", CHROME)]));
            assert_eq!(reasons(&s), ["prefetch"], "{h}");
        }
        let s = shape("GET", &headers(&[("user-agent", "  ")]));
        assert_eq!(reasons(&s), ["no-ua"]);
    }

    #[test]
    fn java_clients_old_and_new_are_java() {
        for ua in ["Java/1.8.0_392", "Java-http-client/17.0.2"] {
            let s = shape("GET", &headers(&[("user-agent", ua)]));
            assert_eq!(reasons(&s), ["ua:java"], "{ua}");
        }
    }

    #[test]
    fn a_repeated_header_reads_its_first_user_agent_and_any_prefetch_value() {
        // The user agent judged is the first, as `HeaderMap::get` gives it (the verdict's
        // fingerprint check reads it that way too).
        let s = shape(
            "GET",
            &headers(&[("user-agent", "curl/8.5.0"), ("user-agent", CHROME)]),
        );
        assert_eq!(reasons(&s), ["ua:curl"]);
        let s = shape(
            "GET",
            &headers(&[("user-agent", CHROME), ("user-agent", "curl/8.5.0")]),
        );
        assert_eq!(reasons(&s), Vec::<&str>::new());
        // A prefetch marker in any of a header's values counts, as in a comma-joined one.
        let s = shape(
            "GET",
            &headers(&[
                ("purpose", "navigate"),
                ("purpose", "prefetch"),
                ("user-agent", CHROME),
            ]),
        );
        assert_eq!(reasons(&s), ["prefetch"]);
    }

    #[test]
    fn user_agent_markers_are_found_case_insensitively() {
        for (ua, reason) in [
            ("curl/8.5.0", "ua:curl"),
            ("python-requests/2.31.0", "ua:python-requests"),
            ("Go-http-client/1.1", "ua:go-http-client"),
            ("Mozilla/5.0 (compatible; Googlebot/2.1)", "ua:bot"),
            ("Mozilla/5.0 HeadlessChrome/120.0.0.0", "ua:headless"),
            (
                "Mozilla/5.0 Chrome/41.0.2228.0 Safari/537.36",
                "ua:old-chrome",
            ),
        ] {
            assert_eq!(ua_marker(ua.as_bytes()), Some(reason), "{ua}");
        }
        assert_eq!(ua_marker(CHROME.as_bytes()), None);
        assert_eq!(ua_marker(b"Mozilla/5.0 Chrome/420.0"), None);
        assert_eq!(UA_MARKERS[BOT].0, "bot");
        // A phone maker's name in Outlook's in-app browser on Android is no bot; a bot's name
        // next to it still is.
        let cubot = "Mozilla/5.0 (Linux; Android 13; CUBOT KINGKONG 9 Build/TP1A.220624.014; wv) \
                     AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.230 \
                     Mobile Safari/537.36";
        assert_eq!(ua_marker(cubot.as_bytes()), None);
        assert_eq!(
            ua_marker(format!("{cubot} Cubot-bot/1").as_bytes()),
            Some("ua:bot")
        );
    }

    #[test]
    fn the_first_marker_of_the_list_names_the_click_wherever_it_stands() {
        // `bot` stands first in the user agent but last in the list.
        let ua = b"MyBot/1.0 (via Safelinks; CURL/8)";
        assert_eq!(ua_marker(ua), Some("ua:safelinks"));
    }

    /// The marker search as it was written first: one case-insensitive scan per marker, in the
    /// list's order, then the old-Chrome check on the first `chrome/`.
    fn marker_by_scans(ua: &[u8]) -> Option<&'static str> {
        // `bot` anywhere but in `cubot`.
        let bot = |ua: &[u8]| {
            (0..ua.len().saturating_sub(2)).any(|i| {
                ua[i..i + 3].eq_ignore_ascii_case(b"bot")
                    && !(i >= 2 && ua[i - 2..i].eq_ignore_ascii_case(b"cu"))
            })
        };
        if let Some((_, reason)) = UA_MARKERS.iter().find(|(m, _)| match *m {
            "bot" => bot(ua),
            m => find_ci(ua, m.as_bytes()).is_some(),
        }) {
            return Some(reason);
        }
        let version = &ua[find_ci(ua, b"chrome/")? + 7..];
        let old = matches!(version.get(..2)?, b"38" | b"39" | b"40" | b"41" | b"42")
            && version.get(2).is_none_or(|b| !b.is_ascii_digit());
        old.then_some("ua:old-chrome")
    }

    proptest::proptest! {
        #[test]
        fn one_pass_finds_what_a_scan_per_marker_finds(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(
                        UA_MARKERS.iter().map(|(m, _)| *m).chain(ENGINES)
                            .chain(["Chrome/41.0", "chrome/4", "CHROME/39", "Firefox/95.0", "cu", "CUBOT"])
                            .collect::<Vec<_>>()
                    ).prop_map(str::to_owned),
                    "[ -~]{0,12}",
                ],
                0..8,
            ),
            upper in proptest::collection::vec(proptest::bool::ANY, 0..64),
        ) {
            let mut ua: Vec<u8> = parts.concat().into_bytes();
            for (b, up) in ua.iter_mut().zip(upper) {
                if up {
                    b.make_ascii_uppercase();
                }
            }
            proptest::prop_assert_eq!(ua_marker(&ua), marker_by_scans(&ua));
        }
    }
}
