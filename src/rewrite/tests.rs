use std::convert::Infallible;

use proptest::prelude::*;

use super::*;

/// Mints `https://t.example/c/<index>` and remembers every call; `made` says which of the
/// edge's links and pixels were made for the message (as opening their tokens would).
#[derive(Default)]
struct Recorder {
    links: Vec<(String, Place)>,
    pixels: usize,
    made: HashMap<String, Made>,
    /// Bytes added to each sealed link (metadata making it long).
    pad: usize,
}

impl Minter for Recorder {
    type Error = Infallible;
    fn link(&mut self, url: &str, place: Place) -> Result<String, Infallible> {
        self.links.push((url.to_owned(), place));
        Ok(format!(
            "https://t.example/c/{}{}",
            place.index,
            "x".repeat(self.pad)
        ))
    }
    fn pixel(&mut self) -> Result<String, Infallible> {
        self.pixels += 1;
        Ok("https://t.example/o/px".into())
    }
    fn is_edge_domain(&self, host: &str) -> bool {
        host == "t.example"
    }
    fn made_for_this_message(&self, url: &str) -> Option<Made> {
        self.made.get(url).copied()
    }
}

const PIXEL: &str = r#"<img src="https://t.example/o/px" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0">"#;

fn decoy(index: u32) -> String {
    format!(
        r#"<a href="https://t.example/c/{index}" aria-hidden="true" tabindex="-1" style="display:none;mso-hide:all;font-size:0;line-height:0;max-height:0;overflow:hidden"></a>"#
    )
}

fn html(h: &str) -> (Rewritten, Recorder) {
    let mut m = Recorder::default();
    let out = rewrite(
        Message {
            html: Some(h),
            ..Message::default()
        },
        &mut m,
    )
    .unwrap();
    (out, m)
}

#[test]
fn tracked_links_get_sealed_links_and_everything_else_is_left_alone() {
    let input = concat!(
        r#"<p>Hi <a href="https://shop.example/a?x=1&amp;y=2" class="btn">https://other.example/</a>"#,
        r##" <a href="mailto:a@example.com">mail</a> <a href="tel:+44">tel</a> <a href="sms:+44">sms</a>"##,
        r##" <a href="#top">top</a> <a href="/rel">rel</a> <area href="https://map.example/">"##,
        r#" <a href='https://shop.example/a?x=1&y=2'>again</a> <img src="https://img.example/i.png"></p>"#,
    );
    let (out, m) = html(input);
    assert_eq!(
        out.html.unwrap(),
        concat!(
            // The link's text, a URL pointing elsewhere, stays as it is.
            r#"<p>Hi <a href="https://t.example/c/0" class="btn">https://other.example/</a>"#,
            r##" <a href="mailto:a@example.com">mail</a> <a href="tel:+44">tel</a> <a href="sms:+44">sms</a>"##,
            r##" <a href="#top">top</a> <a href="/rel">rel</a> <area href="https://t.example/c/1">"##,
            r#" <a href="https://t.example/c/0">again</a> <img src="https://img.example/i.png"></p>"#,
        )
    );
    let urls: Vec<_> = out.links.iter().map(|l| l.url.as_str()).collect();
    assert_eq!(
        urls,
        ["https://shop.example/a?x=1&y=2", "https://map.example/"]
    );
    assert!(m.links.iter().all(|(_, p)| p.count == 2));
}

/// A `<base href>` is not applied: a relative `href`, often a template's placeholder filled in
/// after the rewrite, stays as written; absolute links are tracked as always.
#[test]
fn a_base_href_leaves_relative_links_as_written() {
    let input = concat!(
        r#"<head><base href="https://shop.example/spring/"></head><body>"#,
        r#"<a href="sale">sale</a> <a href="{{unsubscribe_url}}">unsubscribe</a>"#,
        r#" <a href="https://shop.example/a">a</a></body>"#,
    );
    let (out, _) = html(input);
    assert_eq!(
        out.html.unwrap(),
        input.replace("https://shop.example/a\"", "https://t.example/c/0\"")
    );
    let urls: Vec<_> = out.links.iter().map(|l| l.url.as_str()).collect();
    assert_eq!(urls, ["https://shop.example/a"]);
}

#[test]
fn opt_out_attributes_leave_the_link_and_are_removed() {
    for attr in [
        r#"clicktracking="off""#,
        r#"clicktracking=OFF"#,
        "data-pm-no-track",
        r#"disable-tracking="true""#,
        "ses:no-track",
        r#"data-clickedge="off""#,
    ] {
        let (out, m) = html(&format!(
            r#"<a href="https://a.example/" {attr} id="x">a</a>"#
        ));
        assert_eq!(
            out.html.unwrap(),
            r#"<a href="https://a.example/" id="x">a</a>"#,
            "{attr}"
        );
        assert!(m.links.is_empty(), "{attr}");
    }
    // Not an opt-out: tracked, and the attribute stays.
    let (out, _) = html(r#"<a href="https://a.example/" clicktracking="on">a</a>"#);
    assert_eq!(
        out.html.unwrap(),
        r#"<a href="https://t.example/c/0" clicktracking="on">a</a>"#
    );
}

#[test]
fn a_role_attribute_marks_the_role_and_is_removed() {
    let (out, m) = html(concat!(
        r#"<a href="https://a.example/u" data-clickedge-role="unsubscribe">Unsubscribe</a>"#,
        r#"<a href="https://a.example/u">same URL, content</a>"#,
    ));
    assert_eq!(
        out.html.unwrap(),
        r#"<a href="https://t.example/c/0">Unsubscribe</a><a href="https://t.example/c/1">same URL, content</a>"#
    );
    assert_eq!(m.links[0].1.role, Role::Unsubscribe);
    assert_eq!(m.links[1].1.role, Role::Content);

    let err = rewrite(
        Message {
            html: Some(r#"<a href="https://a.example/" data-clickedge-role="decoy">x</a>"#),
            ..Message::default()
        },
        &mut Recorder::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RewriteError::BadRole(v, _) if v == "decoy"),
        "{err}"
    );
}

#[test]
fn entities_and_non_ascii_urls_round_trip() {
    let (out, m) = html(
        r#"<a href="https://bücher.example/straße?q=grüße&amp;r=1&#38;s=&quot;">Bücher &amp; mehr</a>"#,
    );
    assert_eq!(
        out.html.unwrap(),
        r#"<a href="https://t.example/c/0">Bücher &amp; mehr</a>"#
    );
    let parsed = url::Url::parse(&m.links[0].0).unwrap();
    assert_eq!(parsed.host_str(), Some("xn--bcher-kva.example"));
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    assert_eq!(
        pairs,
        [
            ("q".into(), "grüße".into()),
            ("r".into(), "1".into()),
            ("s".into(), "\"".into())
        ]
    );
}

#[test]
fn pixel_goes_before_body_end_and_decoy_after_body_start() {
    let mut m = Recorder::default();
    let out = rewrite(
        Message {
            html: Some(r#"<html><body class="b"><a href="https://a.example/">a</a></body></html>"#),
            text: Some("Read https://a.example/ now."),
            pixel: true,
            decoy: true,
        },
        &mut m,
    )
    .unwrap();
    assert_eq!(
        out.html.unwrap(),
        format!(
            r#"<html><body class="b">{}<a href="https://t.example/c/0">a</a>{PIXEL}</body></html>"#,
            decoy(1)
        )
    );
    // The decoy is absent from the text part; its destination is the first link's.
    assert_eq!(out.text.unwrap(), "Read https://t.example/c/0 now.");
    assert_eq!(
        m.links[1],
        (
            "https://a.example/".to_owned(),
            Place {
                index: 1,
                count: 2,
                role: Role::Decoy
            }
        )
    );
    assert_eq!(out.pixel.as_deref(), Some("https://t.example/o/px"));
    assert_eq!(out.decoy, Some(Decoy::Added));

    // Without a body, both go at the end.
    let mut m = Recorder::default();
    let out = rewrite(
        Message {
            html: Some(r#"<a href="https://a.example/">a</a>"#),
            pixel: true,
            decoy: true,
            ..Message::default()
        },
        &mut m,
    )
    .unwrap();
    assert_eq!(
        out.html.unwrap(),
        format!(
            r#"<a href="https://t.example/c/0">a</a>{}{PIXEL}"#,
            decoy(1)
        )
    );
}

/// A scanner's GET of the decoy is a plain redirect, so it never leads where an action link does:
/// that would unsubscribe or confirm without the action link's confirm page.
#[test]
fn the_decoy_never_leads_where_an_action_link_does() {
    let rewrite_with_decoy = |h: &str| {
        let mut m = Recorder::default();
        let out = rewrite(
            Message {
                html: Some(h),
                decoy: true,
                ..Message::default()
            },
            &mut m,
        )
        .unwrap();
        (out, m)
    };
    let (_, m) = rewrite_with_decoy(concat!(
        r#"<body><a href="https://list.example/confirm?t=abc" data-clickedge-role="confirm">Confirm</a>"#,
        r#"<a href="https://list.example/unsub" data-clickedge-role="unsubscribe">Unsubscribe</a>"#,
        r#"<a href="https://shop.example/">Shop</a></body>"#,
    ));
    let decoy = m.links.iter().find(|(_, p)| p.role == Role::Decoy).unwrap();
    assert_eq!(decoy.0, "https://shop.example/");
    // Coverage is read against the links a person sees: theirs count three, the decoy's four.
    assert_eq!((decoy.1.index, decoy.1.count), (3, 4));
    assert!(
        m.links
            .iter()
            .filter(|(_, p)| p.role != Role::Decoy)
            .all(|(_, p)| p.count == 3),
        "{:?}",
        m.links
    );

    // An action link's destination linked again without a role (a header's "Unsubscribe"):
    // still not the decoy's.
    let (_, m) = rewrite_with_decoy(concat!(
        r#"<body><a href="https://list.example/unsub">Unsubscribe</a>"#,
        r#"<a href="https://shop.example/">Shop</a>"#,
        r#"<a href="https://list.example/unsub" data-clickedge-role="unsubscribe">Unsubscribe</a></body>"#,
    ));
    let decoy = m.links.iter().find(|(_, p)| p.role == Role::Decoy).unwrap();
    assert_eq!(decoy.0, "https://shop.example/");

    let (out, m) = rewrite_with_decoy(
        r#"<body><a href="https://list.example/confirm?t=abc" data-clickedge-role="confirm">Confirm</a></body>"#,
    );
    assert!(m.links.iter().all(|(_, p)| p.role != Role::Decoy));
    assert_eq!(
        out.html.unwrap(),
        r#"<body><a href="https://t.example/c/0">Confirm</a></body>"#
    );
    assert_eq!(out.decoy, Some(Decoy::Skipped(NoDecoy::NoDestination)));

    // The decoy is an HTML link: a text part alone gets none, and says so.
    let out = rewrite(
        Message {
            text: Some("https://shop.example/"),
            decoy: true,
            ..Message::default()
        },
        &mut Recorder::default(),
    )
    .unwrap();
    assert_eq!(out.decoy, Some(Decoy::Skipped(NoDecoy::NoHtml)));
}

#[test]
fn the_text_part_follows_the_html_links_and_opt_outs() {
    let mut m = Recorder::default();
    let out = rewrite(
        Message {
            html: Some(concat!(
                r#"<a href="https://a.example/x">x</a>"#,
                r#"<a href="https://b.example/" clicktracking=off>b</a>"#,
            )),
            text: Some(
                "x: https://a.example/x\nb: (https://b.example/)\nc: https://c.example/c.\n\
                 mail: mailto:a@example.com ftp://f.example/ www.d.example",
            ),
            ..Message::default()
        },
        &mut m,
    )
    .unwrap();
    assert_eq!(
        out.text.unwrap(),
        "x: https://t.example/c/0\nb: (https://b.example/)\nc: https://t.example/c/1.\n\
         mail: mailto:a@example.com ftp://f.example/ www.d.example"
    );
    assert_eq!(out.links.len(), 2);
    assert_eq!(out.links[1].url, "https://c.example/c");
    assert!(m.links.iter().all(|(_, p)| p.count == 2));
}

#[test]
fn a_link_a_browser_follows_that_no_sealed_link_carries_refuses_the_message() {
    let long = format!("https://shop.example/?q={}", "x".repeat(4100));
    for href in [
        long.as_str(),
        r"https:\\evil.example/x",
        "https:///evil.example/x",
    ] {
        let (out, m) = rewrite_html_result(&format!(r#"<a href="{href}">x</a>"#));
        let err = out.unwrap_err();
        assert!(
            matches!(&err, RewriteError::Untrackable { href: h, .. } if h == href),
            "{href}: {err}"
        );
        assert!(err.to_string().contains("opt it out"), "{err}");
        assert!(m.links.is_empty());
    }
    // In the text part too.
    let mut m = Recorder::default();
    let text = format!("Go to {long} now.");
    let err = rewrite_text(&text, &mut m).unwrap_err();
    assert!(matches!(err, RewriteError::Untrackable { .. }), "{err}");
    // Opted out in the HTML, it is left in both parts.
    let html_part = format!(r#"<a href="{long}" clicktracking="off">reset</a>"#);
    let out = rewrite_both(&html_part, &text).unwrap();
    assert_eq!(out.text.as_deref(), Some(text.as_str()));
    assert!(out.links.is_empty());
    // Not a link a browser follows: left, as before.
    let (out, _) = rewrite_html_result(r#"<a href="https://">x</a><a href="//">y</a>"#);
    assert!(out.unwrap().links.is_empty());
    // Protocol-relative: a webmail page over HTTPS follows it, so it is refused naming it,
    // unless it opts out.
    let (out, _) = rewrite_html_result(r#"<a href="//x.example/sale">y</a>"#);
    let err = out.unwrap_err();
    assert!(matches!(err, RewriteError::Untrackable { .. }), "{err}");
    assert!(err.to_string().contains("\"//x.example/sale\""), "{err}");
    assert!(
        err.to_string().contains("write it as https://host/"),
        "{err}"
    );
    let (out, _) = rewrite_html_result(r#"<a href="//x.example/sale" clicktracking="off">y</a>"#);
    assert!(out.unwrap().links.is_empty());
    // A backslash for either slash, as a browser reads it, entity-written too.
    for href in [
        r"\\x.example/sale",
        r"/\x.example/sale",
        r"\/x.example/sale",
        "/&#x5C;x.example/sale",
    ] {
        let (out, m) = rewrite_html_result(&format!(r#"<a href="{href}">y</a>"#));
        let err = out.unwrap_err();
        assert!(
            matches!(err, RewriteError::Untrackable { .. }),
            "{href}: {err}"
        );
        assert!(m.links.is_empty());
    }
}

/// A pixel is an image in the HTML part: a message of text alone gets none, and says so.
#[test]
fn a_pixel_asked_for_a_message_without_html_is_none() {
    let mut m = Recorder::default();
    let out = rewrite(
        Message {
            text: Some("Hello https://shop.example/"),
            pixel: true,
            ..Message::default()
        },
        &mut m,
    )
    .unwrap();
    assert_eq!(out.pixel, None);
    assert_eq!(m.pixels, 0);
}

/// Rewrites a message of a text part alone, minting with `m`.
/// Text from HTML (a `&nbsp;` becomes U+00A0) and Japanese text run on after a URL with no
/// ASCII space: the URL ends where the text resumes, and the text is kept.
#[test]
fn a_url_in_text_ends_at_a_no_break_space_or_cjk_punctuation() {
    for (text, url, rest) in [
        (
            "Shop:\u{a0}https://x.example/sale\u{a0}— 50% off",
            "https://x.example/sale",
            "\u{a0}— 50% off",
        ),
        (
            "詳細はhttps://x.example/sale\u{3000}までご確認ください。",
            "https://x.example/sale",
            "\u{3000}までご確認ください。",
        ),
        ("（https://x.example/a。）", "https://x.example/a", "。）"),
        (
            "see https://x.example/b.\u{a0}Then",
            "https://x.example/b",
            ".\u{a0}Then",
        ),
        (
            "(see https://x.example/c)\u{a0}next",
            "https://x.example/c",
            ")\u{a0}next",
        ),
        // An IRI's own letters stay in it, 々 among them.
        (
            "https://x.example/佐々木\u{3000}様",
            "https://x.example/%E4%BD%90%E3%80%85%E6%9C%A8",
            "\u{3000}様",
        ),
        (
            "https://x.example/東京 ok",
            "https://x.example/%E6%9D%B1%E4%BA%AC",
            " ok",
        ),
    ] {
        let out = rewrite_text(text, &mut Recorder::default()).unwrap();
        assert_eq!(out.links.len(), 1, "{text}");
        assert_eq!(out.links[0].url, url, "{text}");
        let written = out.text.unwrap();
        assert!(
            written.ends_with(&format!("https://t.example/c/0{rest}")),
            "{text}: {written}"
        );
    }
}

/// A part still quoted-printable: no link in it reads as one, so it is refused, not returned
/// with every link untracked.
#[test]
fn a_quoted_printable_html_part_is_refused_naming_the_encoding() {
    let (out, _) = rewrite_html_result("<a href=3D\"https://x.example/a?b=3Dc\">x</a>");
    let err = out.unwrap_err().to_string();
    assert!(err.contains("looks quoted-printable encoded"), "{err}");
    assert!(err.contains("send each part decoded"), "{err}");
}

fn rewrite_text(text: &str, m: &mut Recorder) -> Result<Rewritten, RewriteError<Infallible>> {
    rewrite(
        Message {
            text: Some(text),
            ..Message::default()
        },
        m,
    )
}

/// Rewrites both parts, `html` and `text`.
fn rewrite_both(html: &str, text: &str) -> Result<Rewritten, RewriteError<Infallible>> {
    rewrite(
        Message {
            html: Some(html),
            text: Some(text),
            ..Message::default()
        },
        &mut Recorder::default(),
    )
}

/// Rewrites `h` as the HTML part alone.
fn rewrite_html_result(h: &str) -> (Result<Rewritten, RewriteError<Infallible>>, Recorder) {
    let mut m = Recorder::default();
    let out = rewrite(
        Message {
            html: Some(h),
            ..Message::default()
        },
        &mut m,
    );
    (out, m)
}

#[test]
fn more_than_a_thousand_links_are_refused() {
    let many: String = (0..1001)
        .map(|i| format!(r#"<a href="https://a.example/{i}">{i}</a>"#))
        .collect();
    let err = rewrite(
        Message {
            html: Some(&many),
            ..Message::default()
        },
        &mut Recorder::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RewriteError::TooManyLinks(1001)), "{err}");
}

/// The text part's links count towards the limit as they are added: a message with thousands
/// of links in both parts is refused at the 1001st, before any is minted, and the text part's
/// links that the HTML has already count once.
#[test]
fn links_of_both_parts_count_once_each_and_the_limit_stops_the_adding() {
    let html: String = (0..600)
        .map(|i| format!(r#"<a href="https://a.example/{i}">{i}</a>"#))
        .collect();
    let text = |range: std::ops::Range<usize>| -> String {
        range.map(|i| format!("https://a.example/{i}\n")).collect()
    };
    // The text repeats the HTML's 600 and adds 400: 1000, at the limit.
    let at_limit = text(0..1000);
    let out = rewrite_both(&html, &at_limit).unwrap();
    assert_eq!(out.links.len(), 1000);
    // 5000 more: refused at the first past it.
    let over = text(0..6000);
    let err = rewrite_both(&html, &over).unwrap_err();
    assert!(matches!(err, RewriteError::TooManyLinks(1001)), "{err}");
}

/// A text part's unsubscribe URL gets the HTML's unsubscribe link, not a plain redirect the
/// HTML's first link to it (a header's "Unsubscribe" without a role) would have given it.
#[test]
fn the_text_part_gets_the_action_link_to_its_url() {
    let out = rewrite_both(
        concat!(
            r#"<a href="https://list.example/unsub">Unsubscribe</a>"#,
            r#"<a href="https://list.example/unsub" data-clickedge-role="unsubscribe">u</a>"#,
        ),
        "Unsubscribe: https://list.example/unsub",
    )
    .unwrap();
    assert_eq!(out.links[1].role, Role::Unsubscribe);
    assert_eq!(
        out.text.as_deref(),
        Some("Unsubscribe: https://t.example/c/1")
    );
}

/// A message whose output would be over 16 MiB (one URL repeated, each sealed link long with
/// its metadata) is refused before it is written.
#[test]
fn a_rewrite_that_would_grow_past_its_limit_is_refused() {
    let text = "https://a.example/ ".repeat(2_100);
    let mut m = Recorder {
        pad: 8_000,
        ..Recorder::default()
    };
    let err = rewrite_text(&text, &mut m).unwrap_err();
    assert!(
        matches!(err, RewriteError::TooLarge { bytes } if bytes > MAX_OUTPUT_BYTES),
        "{err}"
    );
    assert!(err.to_string().contains("16 MiB"), "{err}");
    // Half as often, it is written.
    let text = "https://a.example/ ".repeat(1_000);
    let out = rewrite_text(&text, &mut m).unwrap();
    assert!(out.text.unwrap().len() > 8_000_000);
}

mod again;
mod model;
