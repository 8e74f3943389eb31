//! The rule set end to end over one click at a time: which reasons make which verdict, and the
//! revisions a later click sends for earlier ones.

use std::net::IpAddr;
use std::sync::Mutex;

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::Domain;
use crate::clicks::{ClickEvent, Truncated};
use crate::clock::from_unix_secs;
use crate::links::MessageContext;

const SENT: u64 = 1_764_000_000;
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                      Gecko) Chrome/131.0.0.0 Safari/537.36";

#[derive(Default)]
struct Seen(Mutex<Vec<(u64, Vec<&'static str>)>>);

impl Revise for Arc<Seen> {
    fn revise(&self, revision: Revision) {
        assert_eq!(revision.class, Class::Machine);
        assert_eq!(revision.rules, RULES_VERSION);
        self.0
            .lock()
            .unwrap()
            .push((revision.handle, revision.reasons));
    }
}

fn rules() -> (Rules, Arc<Seen>, Metrics) {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    let seen = Arc::new(Seen::default());
    let rules = Rules::new(
        Arc::new(SharedCatalogue::new(
            super::super::networks::Catalogue::defaults(),
        )),
        messages::Config {
            ttl: Duration::from_secs(600),
            max_bytes: 1 << 20,
            idle_expiry: true,
        },
        Timing::default(),
        &metrics,
        Box::new(seen.clone()),
    );
    (rules, seen, metrics)
}

fn click(ip: &str, after_send: u64) -> ClickEvent {
    ClickEvent {
        ts: from_unix_secs(SENT + after_send),
        domain: Domain::parse("links.example.com").unwrap(),
        url: "https://shop.example.com/a".into(),
        meta: vec![],
        minted_at: from_unix_secs(SENT),
        ip: ip.parse::<IpAddr>().unwrap(),
        ua: Some(CHROME.into()),
        referer: None,
        method: "GET",
        tls: Some("1.3"),
        http: "2",
        tls_fp: None,
        verdict: None,
        message: None,
        truncated: Truncated::default(),
        open: None,
        implied_open: false,
        marked_seen: false,
        visitor: None,
    }
}

fn browser() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static(CHROME));
    h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    h.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
    h.insert("sec-fetch-dest", HeaderValue::from_static("document"));
    h
}

fn judge(r: &Rules, c: &ClickEvent, h: &HeaderMap, ctx: Option<&MessageContext>) -> Verdict {
    r.judge(&Facts {
        click: c,
        headers: h,
        context: ctx,
    })
    .unwrap()
}

#[test]
fn a_browser_an_hour_after_the_send_is_human() {
    let (r, _, m) = rules();
    let v = judge(&r, &click("203.0.113.7", 3600), &browser(), None);
    assert_eq!((v.class, v.reasons.as_slice()), (Class::Human, &[][..]));
    assert_eq!(v.rules, RULES_VERSION);
    assert_eq!(
        m.clicks_by_verdict.with_label_values(&["human"]).get(),
        0,
        "counted when its line is written, not when judged"
    );
}

#[test]
fn safe_links_from_microsoft_eop_is_a_machine_even_with_a_browser_shape() {
    let (r, _, _) = rules();
    let v = judge(&r, &click("40.107.22.5", 3600), &browser(), None);
    assert_eq!(v.class, Class::Machine);
    assert_eq!(v.reasons, ["net:microsoft-eop"]);
}

#[test]
fn a_probable_network_is_a_machine_only_soon_after_the_send() {
    let (r, _, _) = rules();
    let v = judge(&r, &click("148.163.130.5", 300), &browser(), None);
    assert_eq!(
        (v.class, v.reasons.clone()),
        (Class::Machine, vec!["net:proofpoint", "early"])
    );
    let v = judge(&r, &click("148.163.130.5", 3600), &browser(), None);
    assert_eq!(
        (v.class, v.reasons.clone()),
        (Class::Unknown, vec!["net:proofpoint"])
    );
}

#[test]
fn early_alone_is_unknown_and_with_a_second_count_against_a_machine() {
    let (r, _, _) = rules();
    let v = judge(&r, &click("203.0.113.7", 20), &browser(), None);
    assert_eq!(
        (v.class, v.reasons.clone()),
        (Class::Unknown, vec!["early"])
    );
    let mut bare = HeaderMap::new();
    bare.insert("user-agent", HeaderValue::from_static(CHROME));
    let v = judge(&r, &click("203.0.113.7", 20), &bare, None);
    assert_eq!(
        (v.class, v.reasons.clone()),
        (Class::Machine, vec!["early", "no-sec-fetch"])
    );
}

/// Browsers send `Sec-Fetch-*` only to potentially trustworthy (HTTPS) URLs: a Chrome user
/// agent without them over plain HTTP is what a real Chrome sends there.
#[test]
fn no_sec_fetch_counts_only_over_tls() {
    let (r, _, _) = rules();
    let mut bare = HeaderMap::new();
    bare.insert("user-agent", HeaderValue::from_static(CHROME));
    let https = click("203.0.113.7", 3600);
    let v = judge(&r, &https, &bare, None);
    assert_eq!(
        (v.class, v.reasons.clone()),
        (Class::Unknown, vec!["no-sec-fetch"])
    );
    let plain = ClickEvent { tls: None, ..https };
    let v = judge(&r, &plain, &bare, None);
    assert_eq!((v.class, v.reasons.clone()), (Class::Human, vec![]));
    assert_eq!(v.sec_fetch, Some(""), "the line still says none came");
}

#[test]
fn sent_at_moves_the_timing_window() {
    let (r, _, _) = rules();
    let ctx = MessageContext {
        message: "m".into(),
        sent_at: Some(SENT + 3590),
        ..MessageContext::default()
    };
    let v = judge(&r, &click("203.0.113.7", 3600), &browser(), Some(&ctx));
    assert_eq!(v.reasons, ["early"]);
    // Seconds before the send: clocks apart, at the send.
    let ctx = MessageContext {
        sent_at: Some(SENT + 3630),
        ..ctx
    };
    let v = judge(&r, &click("203.0.113.7", 3600), &browser(), Some(&ctx));
    assert_eq!(v.reasons, ["early"]);
    // Long before it (a scheduled send, a sent_at years ahead): time says nothing.
    for ahead in [3600 + 3600, 3600 + 40 * 365 * 86_400] {
        let ctx = MessageContext {
            sent_at: Some(SENT + ahead),
            ..ctx.clone()
        };
        let v = judge(&r, &click("203.0.113.7", 3600), &browser(), Some(&ctx));
        assert_eq!(v.reasons, Vec::<&str>::new(), "{ahead}");
        assert_eq!(v.class, Class::Human);
    }
}

#[test]
fn a_burst_judges_the_second_click_and_revises_the_first() {
    let (r, seen, _) = rules();
    let at = |index| MessageContext {
        message: "m-1".into(),
        index: Some(index),
        count: Some(6),
        ..MessageContext::default()
    };
    let first = judge(&r, &click("203.0.113.7", 3600), &browser(), Some(&at(0)));
    assert_eq!(first.class, Class::Human);
    assert_eq!(
        first.handle,
        Some(1),
        "a click with a message can be revised"
    );
    let second = judge(&r, &click("203.0.113.7", 3601), &browser(), Some(&at(1)));
    assert_eq!(
        (second.class, second.reasons.clone()),
        (Class::Machine, vec!["burst"])
    );
    assert_eq!(*seen.0.lock().unwrap(), [(1, vec!["burst"])]);
}

/// A click the edge could not log (dropped, or refused with a 503 and retried) is never named
/// by a later revision: its revision line would name a `click_id` the log does not hold.
#[test]
fn a_click_that_was_not_logged_is_never_revised() {
    let (r, seen, m) = rules();
    let at = |index| MessageContext {
        message: "m-1".into(),
        index: Some(index),
        count: Some(6),
        ..MessageContext::default()
    };
    let refused = judge(&r, &click("203.0.113.7", 3600), &browser(), Some(&at(0)));
    r.unlogged(refused.handle.unwrap());
    // The client's retry of the same link, logged this time.
    let retried = judge(&r, &click("203.0.113.7", 3600), &browser(), Some(&at(0)));
    assert_eq!(
        retried.class,
        Class::Human,
        "the same link again is no burst"
    );
    let second = judge(&r, &click("203.0.113.7", 3601), &browser(), Some(&at(1)));
    assert_eq!(second.reasons, ["burst"]);
    assert_eq!(
        *seen.0.lock().unwrap(),
        [(retried.handle.unwrap(), vec!["burst"])],
        "only the logged click is revised"
    );
    assert_eq!(m.verdict_revisions_lost.get(), 1);
}

#[test]
fn head_and_scripts_keep_every_reason_in_order() {
    let (r, _, _) = rules();
    let mut c = click("40.92.1.1", 5);
    c.method = "HEAD";
    let mut h = HeaderMap::new();
    h.insert(
        "user-agent",
        HeaderValue::from_static("python-requests/2.32"),
    );
    let v = judge(&r, &c, &h, None);
    assert_eq!(v.class, Class::Machine);
    assert_eq!(
        v.reasons,
        ["head", "ua:python-requests", "net:microsoft-eop", "early"]
    );
}

#[test]
fn an_action_link_fetched_is_never_human_and_its_confirmation_always_is() {
    let (r, _, _) = rules();
    let action = |role| MessageContext {
        message: "m-2".into(),
        index: Some(0),
        count: Some(2),
        role: Some(role),
        ..MessageContext::default()
    };
    for (i, role) in [Role::Unsubscribe, Role::Confirm].into_iter().enumerate() {
        // A browser's fetch that would be human on any other link.
        let ip = format!("203.0.113.{}", 10 + i);
        let v = judge(&r, &click(&ip, 3600), &browser(), Some(&action(role)));
        assert_eq!(
            (v.class, v.reasons.as_slice()),
            (Class::Unknown, &["unconfirmed"][..]),
            "{role:?}"
        );
        // A scanner's stays a machine, with every reason.
        let mut scanner = click("40.92.0.1", 3600);
        scanner.ua = None;
        let v = judge(&r, &scanner, &HeaderMap::new(), Some(&action(role)));
        assert_eq!(v.class, Class::Machine, "{role:?}");
        assert_eq!(v.reasons.last(), Some(&"unconfirmed"), "{v:?}");
    }
    let content = judge(
        &r,
        &click("203.0.113.20", 3600),
        &browser(),
        Some(&MessageContext {
            message: "m-3".into(),
            role: Some(Role::Footer),
            ..MessageContext::default()
        }),
    );
    assert_eq!((content.class, content.reasons.len()), (Class::Human, 0));

    let mut post = click("203.0.113.10", 3601);
    post.method = "POST";
    let ctx = action(Role::Unsubscribe);
    let v = r
        .confirmed(&Facts {
            click: &post,
            headers: &browser(),
            context: Some(&ctx),
        })
        .unwrap();
    assert_eq!(
        (v.class, v.reasons.as_slice(), v.rules, v.handle),
        (Class::Human, &["confirmed"][..], RULES_VERSION, None)
    );
    assert_eq!(v.sec_fetch, Some("dest,mode,site"));
}
