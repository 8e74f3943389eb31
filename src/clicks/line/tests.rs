//! The click line against serde_json, byte for byte (plus the escapes of the Unicode line
//! breaks), with and without a verdict; the timestamp writer against the generic formatter.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::*;
use crate::Domain;
use crate::clicks::id::ClickId;
use crate::clicks::verdict::{Class, Verdict};
use crate::clock::from_unix_secs;
use crate::config::NodeId;

fn node() -> NodeId {
    NodeId::parse("edge-a.eu").unwrap()
}

/// The member every line of the tests ends with.
const ID_MEMBER: &str = ",\"click_id\":\"edge-a.eu-42\"";

fn write(ev: &ClickEvent, out: &mut Vec<u8>) {
    ev.write_json(ClickId::new(&node(), 42), out);
}
use crate::links::MessageContext;

fn contract_event() -> ClickEvent {
    ClickEvent {
        ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
        domain: Domain::parse("links.example.com").unwrap(),
        url: "https://example.com/".into(),
        meta: vec![("c".into(), "spring".into())],
        minted_at: from_unix_secs(1_764_000_000),
        ip: "127.0.0.1".parse().unwrap(),
        ua: Some("curl/8".into()),
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

#[test]
fn line_has_contract_fields() {
    let ev = contract_event();
    let mut out = Vec::new();
    write(&ev, &mut out);
    assert_eq!(out.last(), Some(&b'\n'));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["ts"], "2025-11-24T16:00:00.123Z");
    assert_eq!(v["kind"], "click");
    assert_eq!(v["domain"], "links.example.com");
    assert_eq!(v["url"], "https://example.com/");
    assert_eq!(v["meta"]["c"], "spring");
    assert_eq!(v["ip"], "127.0.0.1");
    assert_eq!(v["ua"], "curl/8");
    assert!(v["referer"].is_null());
    assert_eq!(v["method"], "GET");
    assert_eq!(v["tls"], "1.3");
    assert_eq!(v["http"], "2");
    assert_eq!(v["minted_at"], "2025-11-24T16:00:00.000Z");
    assert_eq!(v["click_id"], "edge-a.eu-42");
    // No verdict, no verdict fields: the line is the one written before verdicts existed, and
    // the click id.
    assert_eq!(v.as_object().unwrap().len(), 13);
}

#[test]
fn a_verdict_appends_its_three_fields_after_the_unchanged_line() {
    let mut ev = contract_event();
    let mut plain = Vec::new();
    write(&ev, &mut plain);
    ev.verdict = Some(Verdict {
        class: Class::Machine,
        reasons: vec!["ua-bot", "prefetch"],
        rules: "2026-01",
        handle: None,
        sec_fetch: None,
    });
    let mut judged = Vec::new();
    write(&ev, &mut judged);
    // Additive: everything before the click id is the line without a verdict.
    let head = &plain[..plain.len() - 2 - ID_MEMBER.len()];
    assert_eq!(&judged[..head.len()], head);
    assert_eq!(
        std::str::from_utf8(&judged[head.len()..]).unwrap(),
        format!(
            ",\"verdict\":\"machine\",\"reasons\":[\"ua-bot\",\"prefetch\"],\"rules\":\"2026-01\"{ID_MEMBER}}}\n"
        )
    );
}

#[test]
fn an_open_is_a_line_of_kind_open_without_url_naming_its_class() {
    let mut ev = contract_event();
    ev.url = String::new();
    ev.open = Some(crate::clicks::opens::OpenClass::AppleMpp);
    ev.verdict = Some(Verdict {
        class: Class::Machine,
        reasons: vec!["net:apple-mpp"],
        rules: "r3+n2",
        handle: None,
        sec_fetch: None,
    });
    let mut out = Vec::new();
    write(&ev, &mut out);
    let text = std::str::from_utf8(&out).unwrap();
    assert!(
        text.starts_with(
            "{\"ts\":\"2025-11-24T16:00:00.123Z\",\"kind\":\"open\",\"domain\":\"links.example.com\",\"url\":null,"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "\"minted_at\":\"2025-11-24T16:00:00.000Z\",\"open_class\":\"apple_mpp\",\"verdict\":\"machine\",\"reasons\":[\"net:apple-mpp\"]"
        ),
        "{text}"
    );
}

#[test]
fn implied_open_and_visitor_come_after_everything_but_the_click_id() {
    let mut ev = contract_event();
    let mut plain = Vec::new();
    write(&ev, &mut plain);
    ev.implied_open = true;
    ev.visitor = Some(crate::clicks::privacy::Visitors::default().visitor(
        ev.ts,
        "links.example.com",
        ev.ip,
        None,
    ));
    let mut out = Vec::new();
    write(&ev, &mut out);
    let head = &plain[..plain.len() - 2 - ID_MEMBER.len()];
    assert_eq!(&out[..head.len()], head);
    let tail = std::str::from_utf8(&out[head.len()..]).unwrap();
    let visitor = ev.visitor.as_ref().unwrap().as_str();
    assert_eq!(
        tail,
        format!(",\"implied_open\":true,\"visitor\":\"{visitor}\"{ID_MEMBER}}}\n")
    );
}

#[test]
fn cut_fields_are_listed_last_and_only_when_something_was_cut() {
    let mut ev = contract_event();
    let mut plain = Vec::new();
    write(&ev, &mut plain);
    ev.verdict = Some(Verdict {
        class: Class::Human,
        reasons: vec![],
        rules: "r1",
        handle: None,
        sec_fetch: None,
    });
    ev.truncated = Truncated {
        ua: true,
        referer: true,
    };
    let mut cut = Vec::new();
    write(&ev, &mut cut);
    let head = &plain[..plain.len() - 2 - ID_MEMBER.len()];
    assert_eq!(&cut[..head.len()], head);
    assert_eq!(
        std::str::from_utf8(&cut[head.len()..]).unwrap(),
        format!(
            ",\"verdict\":\"human\",\"reasons\":[],\"rules\":\"r1\",\"truncated\":[\"ua\",\"referer\"]{ID_MEMBER}}}\n"
        )
    );
}

#[test]
fn unicode_line_breaks_in_a_header_do_not_split_the_click_line() {
    // A User-Agent and a Referer carrying the breaks that Unicode-aware line splitters honour
    // (NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR): a reader splitting the log on them must still
    // see one whole record.
    let mut ev = contract_event();
    ev.ua = Some("evil\u{2028}{\"kind\":\"click\"}\u{2029}x\u{85}y".into());
    ev.referer = Some("https://a.example/\u{2028}".into());
    let mut out = Vec::new();
    write(&ev, &mut out);
    let text = std::str::from_utf8(&out).unwrap();
    let records: Vec<&str> = text
        .split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'])
        .filter(|r| !r.is_empty())
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    assert!(
        text.contains(r#"evil\u2028{\"kind\":\"click\"}\u2029x\u0085y"#),
        "{text}"
    );
    // Still the same strings to a JSON reader.
    let v: serde_json::Value = serde_json::from_str(records[0]).unwrap();
    assert_eq!(v["ua"], ev.ua.unwrap());
    assert_eq!(v["referer"], ev.referer.unwrap());
}

/// The click log contract's line as a struct: what [`ClickEvent::write_json`] must write, byte
/// for byte, as serde_json serialises it.
#[derive(serde::Serialize)]
struct Line<'a> {
    ts: String,
    kind: &'static str,
    domain: &'a str,
    url: Option<&'a str>,
    meta: BTreeMap<&'a str, &'a str>,
    ip: IpAddr,
    ua: Option<&'a str>,
    referer: Option<&'a str>,
    method: &'static str,
    tls: Option<&'static str>,
    http: &'static str,
    minted_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verdict: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<&'a [&'static str]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sec_fetch: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    truncated: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_fp: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    implied_open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    visitor: Option<&'a str>,
    click_id: &'static str,
}

#[derive(serde::Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

fn reference_line(ev: &ClickEvent) -> Vec<u8> {
    let line = Line {
        ts: format_ts(ev.ts),
        kind: if ev.open.is_some() { "open" } else { "click" },
        domain: ev.domain.as_str(),
        url: ev.open.is_none().then_some(ev.url.as_str()),
        meta: ev
            .meta
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        ip: ev.ip,
        ua: ev.ua.as_deref(),
        referer: ev.referer.as_deref(),
        method: ev.method,
        tls: ev.tls,
        http: ev.http,
        minted_at: format_ts(ev.minted_at),
        open_class: ev.open.map(crate::clicks::opens::OpenClass::as_str),
        verdict: ev.verdict.as_ref().map(|v| v.class.as_str()),
        reasons: ev.verdict.as_ref().map(|v| v.reasons.as_slice()),
        rules: ev.verdict.as_ref().map(|v| v.rules),
        sec_fetch: ev.verdict.as_ref().and_then(|v| v.sec_fetch),
        truncated: ev.truncated.fields().collect(),
        message: ev.message.as_ref().map(|m| Message {
            id: &m.message,
            index: m.index,
            count: m.count,
            sent_at: m.sent_at.map(|s| format_ts(from_unix_secs(s))),
            role: m.role.map(|r| r.as_str()),
        }),
        tls_fp: ev.tls_fp.as_ref().map(crate::tls::Ja4::as_str),
        implied_open: ev.implied_open,
        visitor: ev
            .visitor
            .as_ref()
            .map(crate::clicks::privacy::Visitor::as_str),
        click_id: "edge-a.eu-42",
    };
    // serde_json leaves the Unicode line breaks raw; the click line escapes them. Outside strings
    // a JSON text holds none, so replacing every one is escaping those in strings.
    let mut out = serde_json::to_string(&line)
        .unwrap()
        .replace('\u{85}', "\\u0085")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .into_bytes();
    out.push(b'\n');
    out
}

/// Any string, weighted towards what needs escaping, and towards characters that share a first
/// byte with the Unicode line breaks (U+0080..U+00BF, U+2000..U+2FFF).
fn text() -> impl proptest::strategy::Strategy<Value = String> {
    proptest::string::string_regex(
        "[a-z\"\\\\\\x00-\\x1f\\x7f/é€😀 \u{85}\u{a0}\u{2028}\u{2029}\u{2027}\u{202a}—]{0,12}",
    )
    .unwrap()
}

/// Reason codes and rule versions are `&'static str`: a fixed pool, some needing escapes.
fn code() -> impl proptest::strategy::Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "",
        "ua-bot",
        "prefetch",
        "confirmed",
        "unconfirmed",
        "2026-01",
        "q\"uote",
        "back\\slash",
        "tab\t",
        "é€😀",
        "line\u{2028}break",
    ])
}

fn verdict() -> impl proptest::strategy::Strategy<Value = Verdict> {
    use proptest::strategy::Strategy as _;
    (
        proptest::sample::select(vec![Class::Human, Class::Machine, Class::Unknown]),
        proptest::collection::vec(code(), 0..4),
        code(),
        proptest::option::of(proptest::sample::select(
            (0..16)
                .map(crate::clicks::verdict::shape::sec_fetch_code)
                .collect::<Vec<_>>(),
        )),
    )
        .prop_map(|(class, reasons, rules, sec_fetch)| Verdict {
            class,
            reasons,
            rules,
            handle: None,
            sec_fetch,
        })
}

fn message() -> impl proptest::strategy::Strategy<Value = MessageContext> {
    use proptest::prelude::any;
    use proptest::strategy::Strategy as _;
    (
        text(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(0u64..4_000_000_000),
        proptest::option::of(proptest::sample::select(crate::links::Role::ALL.to_vec())),
    )
        .prop_map(|(message, index, count, sent_at, role)| MessageContext {
            message,
            index,
            count,
            sent_at,
            role,
        })
}

proptest::proptest! {
    #[test]
    fn line_is_what_serde_json_writes_for_the_contract_struct(
        ms in 0u64..4_000_000_000_000,
        minted_at in 0u64..4_000_000_000,
        url in text(),
        meta in proptest::collection::vec((text(), text()), 0..4),
        ip in proptest::prelude::any::<IpAddr>(),
        ua in proptest::option::of(text()),
        referer in proptest::option::of(text()),
        tls in proptest::option::of(proptest::sample::select(vec!["1.3", "1.2"])),
        verdict in proptest::option::of(verdict()),
        message in proptest::option::of(message()),
        tls_fp in proptest::option::of(proptest::sample::select(vec![
            "t13d1516h2_8daaf6152771_e5627efa2ab1",
            "t12i0000bd_000000000000_000000000000",
            "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6",
        ])),
        (ua_cut, referer_cut) in proptest::prelude::any::<(bool, bool)>(),
        method in proptest::sample::select(vec!["GET", "HEAD", "POST"]),
        open in proptest::option::of(proptest::sample::select(
            crate::clicks::opens::OpenClass::ALL.to_vec()
        )),
        (implied_open, with_visitor) in proptest::prelude::any::<(bool, bool)>(),
    ) {
        let ts = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let visitor = with_visitor.then(|| {
            crate::clicks::privacy::Visitors::default().visitor(ts, "links.example.com", ip, None)
        });
        let ev = ClickEvent {
            ts,
            domain: Domain::parse("links.example.com").unwrap(),
            url,
            meta,
            minted_at: from_unix_secs(minted_at),
            ip,
            ua,
            referer,
            method,
            tls,
            http: "1.1",
            tls_fp: tls_fp.map(|s| crate::tls::Ja4::parse(s).unwrap()),
            verdict,
            message,
            truncated: Truncated { ua: ua_cut, referer: referer_cut },
            open,
            implied_open,
            // What the writer does with a line it drops, never written.
            marked_seen: implied_open,
            visitor,
        };
        let mut out = Vec::new();
        write(&ev, &mut out);
        // One line: the batch a sink is handed splits on newlines, and a reader splitting on
        // Unicode line breaks finds no other.
        proptest::prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = std::str::from_utf8(&out).unwrap();
        let breaks = ['\u{85}', '\u{2028}', '\u{2029}'];
        proptest::prop_assert!(!text.contains(breaks), "raw Unicode line break in {}", text);
        proptest::prop_assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(reference_line(&ev)).unwrap()
        );
    }
}

proptest::proptest! {
    #[test]
    fn stamp_writes_what_format_ts_writes(
        ms in -377_705_116_800_000i64..253_402_300_800_000
    ) {
        // Every instant `time` represents, years -9999 to 9999; negative years take the
        // generic formatter.
        let d = Duration::from_millis(ms.unsigned_abs());
        let t = if ms < 0 { SystemTime::UNIX_EPOCH - d } else { SystemTime::UNIX_EPOCH + d };
        let stamp = Stamp::new(t);
        proptest::prop_assert_eq!(stamp.as_str(), format_ts(t));
    }
}
