//! The rewriter against a model: generated HTML with links of every kind comes back with only
//! its tracked hrefs changed (and the insertions), and malformed or arbitrary input never panics.

use super::*;

/// An href as written and the destination it leads to.
const URLS: [(&str, &str); 4] = [
    (
        "https://shop.example/a?x=1&amp;y=2",
        "https://shop.example/a?x=1&y=2",
    ),
    (
        "https://bücher.example/straße",
        "https://xn--bcher-kva.example/stra%C3%9Fe",
    ),
    ("HTTPS://News.Example/", "https://news.example/"),
    ("http://plain.example/p", "http://plain.example/p"),
];
const LEFT: [&str; 5] = [
    "mailto:a@b.example",
    "tel:+44",
    "sms:1",
    "#top",
    "../rel?a=1&amp;b",
];
const OPT_OUTS: [&str; 5] = [
    r#" clicktracking="off""#,
    " data-pm-no-track",
    r#" disable-tracking="true""#,
    " ses:no-track",
    r#" data-clickedge="off""#,
];

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Link {
        href: Result<usize, usize>,
        opt_out: Option<usize>,
        role: Option<Role>,
        text: String,
    },
    Other(&'static str),
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9 .,!äü€😀]{0,8}",
            Just("&amp;".to_owned()),
            Just("&lt;a href=\"https://x.example/\"&gt;".to_owned()),
            Just("&#x1F600;".to_owned()),
            Just("https://in-text.example/".to_owned()),
        ],
        0..3,
    )
    .prop_map(|v| v.concat())
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        text().prop_map(Piece::Text),
        (
            prop_oneof![(0..URLS.len()).prop_map(Ok), (0..LEFT.len()).prop_map(Err)],
            prop::option::of(0..OPT_OUTS.len()),
            prop::option::of(prop::sample::select(vec![
                Role::Content,
                Role::Footer,
                Role::Unsubscribe,
                Role::Confirm
            ])),
            text(),
        )
            .prop_map(|(href, opt_out, role, text)| Piece::Link {
                href,
                opt_out,
                role,
                text
            }),
        prop::sample::select(vec![
            "<p class=\"x\">",
            "</p>",
            "<img src=\"https://img.example/a.png\">",
            "<!-- <a href=\"https://c.example/\">c</a> -->",
            "<script>var a = '<a href=\"https://s.example/\">';</script>",
            "<textarea><a href=\"https://t.example/\"></textarea>",
            "<br/>",
        ])
        .prop_map(Piece::Other),
    ]
}

/// The input, and the output expected from the model: only hrefs change, distinct
/// (destination, role) pairs numbered in order of appearance.
fn model(pieces: &[Piece], body: bool, pixel: bool) -> (String, String, usize) {
    let (mut input, mut expected) = (String::new(), String::new());
    let mut distinct: Vec<(&str, Role)> = Vec::new();
    if body {
        input.push_str("<html><body>");
        expected.push_str("<html><body>");
    }
    for p in pieces {
        match p {
            Piece::Text(t) => {
                input.push_str(t);
                expected.push_str(t);
            }
            Piece::Other(o) => {
                input.push_str(o);
                expected.push_str(o);
            }
            Piece::Link {
                href,
                opt_out,
                role,
                text,
            } => {
                let raw = match href {
                    Ok(i) => URLS[*i].0,
                    Err(i) => LEFT[*i],
                };
                let role_attr = role
                    .map(|r| format!(" data-clickedge-role=\"{}\"", r.as_str()))
                    .unwrap_or_default();
                let opt = opt_out.map(|i| OPT_OUTS[i]).unwrap_or_default();
                input.push_str(&format!(
                    "<a href=\"{raw}\"{opt}{role_attr} title=\"t\">{text}</a>"
                ));
                let href_out = match (href, opt_out) {
                    (Ok(i), None) => {
                        let key = (URLS[*i].1, role.unwrap_or(Role::Content));
                        let index = distinct.iter().position(|d| *d == key).unwrap_or_else(|| {
                            distinct.push(key);
                            distinct.len() - 1
                        });
                        format!("https://t.example/c/{index}")
                    }
                    _ => raw.to_owned(),
                };
                expected.push_str(&format!("<a href=\"{href_out}\" title=\"t\">{text}</a>"));
            }
        }
    }
    if pixel {
        expected.push_str(PIXEL);
    }
    if body {
        input.push_str("</body></html>");
        expected.push_str("</body></html>");
    }
    (input, expected, distinct.len())
}

proptest! {
    #[test]
    fn rewriting_changes_only_hrefs_and_the_insertions(
        pieces in prop::collection::vec(piece(), 0..12),
        body in any::<bool>(),
        pixel in any::<bool>(),
    ) {
        let (input, expected, distinct) = model(&pieces, body, pixel);
        let mut m = Recorder::default();
        let out = rewrite(Message { html: Some(&input), pixel, ..Message::default() }, &mut m)
            .unwrap();
        prop_assert_eq!(out.html.unwrap(), expected);
        prop_assert_eq!(m.links.len(), distinct);
        prop_assert!(m.links.iter().all(|(_, p)| p.count as usize == distinct));
    }

    #[test]
    fn malformed_html_never_panics_and_without_links_is_kept_byte_for_byte(
        input in r#"(<|>|/|=|"|'|&|a|href|body|script|noscript|!--|-->|[ \t\n]|[^<>]{0,6}|ä|😀|#|:|https://x.example/|https://t.example/c/x)*"#,
        pixel in any::<bool>(),
    ) {
        let mut m = Recorder::default();
        let out = rewrite(Message { html: Some(&input), pixel, ..Message::default() }, &mut m);
        let Ok(out) = out else { return Ok(()) };
        let html = out.html.unwrap();
        if m.links.is_empty() && !input.contains(href::ROLE_ATTRIBUTE) {
            // Nothing to rewrite: the input comes back as it was, the pixel (once) aside.
            prop_assert_eq!(html.replacen(PIXEL, "", usize::from(pixel)), input);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(input in "\\PC*") {
        let _ = rewrite(
            Message { html: Some(&input), text: Some(&input), pixel: true, decoy: true },
            &mut Recorder::default(),
        );
    }
}
