//! A message that holds the edge's own links (rewritten before, or made by `POST /v1/links`),
//! the link limit with a decoy, and links inside `<noscript>`.

use super::*;

fn rewrite_html(h: &str, pixel: bool, decoy: bool) -> (Rewritten, Recorder) {
    let (out, m) = rewrite_html_with(Recorder::default(), h, pixel, decoy);
    (out.unwrap(), m)
}

fn rewrite_html_with(
    mut m: Recorder,
    h: &str,
    pixel: bool,
    decoy: bool,
) -> (Result<Rewritten, RewriteError<Infallible>>, Recorder) {
    let out = rewrite(
        Message {
            html: Some(h),
            pixel,
            decoy,
            ..Message::default()
        },
        &mut m,
    );
    (out, m)
}

/// A minter that knows what `first` made for the message (as opening the tokens tells).
fn after(first: &Rewritten) -> Recorder {
    let mut made: HashMap<String, Made> = first
        .links
        .iter()
        .map(|l| (l.link.clone(), Made::Link(l.role)))
        .collect();
    made.extend(first.pixel.clone().map(|p| (p, Made::Pixel)));
    Recorder {
        made,
        ..Recorder::default()
    }
}

#[test]
fn the_edges_own_links_are_left_as_written_and_not_reported() {
    let own = concat!(
        r#"<a href="https://t.example/c/x">a</a>"#,
        r#"<a href="HTTP://T.Example./c/y?z=1">b</a>"#,
        r#"<area href="https://t.example/o/px">"#,
    );
    let (out, m) = rewrite_html(own, false, false);
    assert_eq!(out.html.as_deref(), Some(own));
    assert!(out.links.is_empty(), "{:?}", out.links);
    assert!(m.links.is_empty(), "{:?}", m.links);

    // In the text part too.
    let mut m = Recorder::default();
    let text = "Read https://t.example/c/x now.";
    let out = rewrite(
        Message {
            text: Some(text),
            ..Message::default()
        },
        &mut m,
    )
    .unwrap();
    assert_eq!(out.text.as_deref(), Some(text));
    assert!(out.links.is_empty());

    // Another host's /c/, and the edge's other paths (a status page), are destinations.
    let (out, m) = rewrite_html(
        r#"<a href="https://other.example/c/x">a</a><a href="https://t.example/s/tok">s</a>"#,
        false,
        false,
    );
    assert_eq!(
        out.html.unwrap(),
        r#"<a href="https://t.example/c/0">a</a><a href="https://t.example/c/1">s</a>"#
    );
    assert_eq!(m.links.len(), 2);
}

#[test]
fn a_message_whose_first_rewrite_tracked_nothing_is_refused_if_its_opt_outs_are_gone() {
    // Only an opted-out link (a password reset): the first rewrite leaves it, removes the
    // attribute, and adds the pixel.
    let input =
        r#"<body><a href="https://reset.example/?t=SECRET" clicktracking="off">Reset</a></body>"#;
    let (once, _) = rewrite_html(input, true, true);
    assert!(once.links.is_empty());
    let once_html = once.html.clone().unwrap();
    assert!(!once_html.contains("clicktracking"), "{once_html}");
    // Sent through again (a retry): its pixel says it was rewritten, and tracking the reset
    // link now would log its secret and give scanners a decoy to it.
    let (again, m) = rewrite_html_with(after(&once), &once_html, true, true);
    let err = again.unwrap_err();
    assert!(
        matches!(
            err,
            RewriteError::RewrittenBefore {
                made: 0,
                pixel: true,
                added: 1
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("the open pixel"), "{err}");
    assert!(m.links.is_empty());
}

#[test]
fn a_message_rewritten_again_keeps_its_one_pixel_its_decoy_and_its_links() {
    let input = r#"<html><body><a href="https://a.example/">a</a></body></html>"#;
    let (once, _) = rewrite_html(input, true, true);
    let once_html = once.html.clone().unwrap();
    let (twice, m) = rewrite_html_with(after(&once), &once_html, true, true);
    let twice = twice.unwrap();
    let twice_html = twice.html.unwrap();
    assert_eq!(twice_html, once_html);
    assert_eq!(twice_html.matches(PIXEL).count(), 1, "{twice_html}");
    assert_eq!(twice_html.matches("aria-hidden").count(), 1, "{twice_html}");
    assert!(m.links.is_empty(), "nothing minted: {:?}", m.links);
    assert_eq!(m.pixels, 0);
    // The pixel the message carries is the one reported.
    assert_eq!(twice.pixel.as_deref(), Some("https://t.example/o/px"));
    assert!(twice.links.is_empty());
    assert_eq!(once.decoy, Some(Decoy::Added));
    assert_eq!(twice.decoy, Some(Decoy::Kept));
    // Rewritten the first time without a decoy: one asked for now is not added, and the answer
    // says why.
    let (plain, _) = rewrite_html(input, true, false);
    assert_eq!(plain.decoy, None);
    let (again, m) = rewrite_html_with(after(&plain), plain.html.as_deref().unwrap(), true, true);
    let again = again.unwrap();
    assert_eq!(again.html, plain.html);
    assert_eq!(again.decoy, Some(Decoy::Skipped(NoDecoy::RewrittenWithout)));
    assert!(m.links.is_empty());

    // A link added since would take a place the earlier links hold: refused, nothing minted.
    let grown = once_html.replace("</body>", r#"<a href="https://b.example/">b</a></body>"#);
    let (err, m) = rewrite_html_with(after(&once), &grown, true, true);
    let err = err.unwrap_err();
    assert!(
        matches!(
            err,
            RewriteError::RewrittenBefore {
                made: 2,
                added: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rewrite the original message"));
    assert!(m.links.is_empty() && m.pixels == 0);
    // The same in the text part: the original text with the rewritten HTML.
    let mut m = after(&once);
    let err = rewrite(
        Message {
            html: Some(&once_html),
            text: Some("https://c.example/"),
            ..Message::default()
        },
        &mut m,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RewriteError::RewrittenBefore {
                made: 2,
                added: 1,
                ..
            }
        ),
        "{err}"
    );
}

/// Another message's links, pixel and decoy quoted in this one (a forward, a digest) are left
/// as written, and stand in for nothing of this message's: it gets its own pixel and decoy,
/// and its links are numbered as if they were not there.
#[test]
fn another_messages_pixel_and_decoy_do_not_stand_in_for_this_ones() {
    let (other, _) = rewrite_html(
        r#"<html><body><a href="https://a.example/">a</a></body></html>"#,
        true,
        true,
    );
    let quoted = other
        .html
        .unwrap()
        .replace("</body>", r#"<a href="https://b.example/">b</a></body>"#);
    let (out, m) = rewrite_html(&quoted, true, true);
    let html = out.html.unwrap();
    assert_eq!(m.pixels, 1);
    assert_eq!(out.pixel.as_deref(), Some("https://t.example/o/px"));
    assert_eq!(html.matches(PIXEL).count(), 2, "{html}");
    assert_eq!(html.matches("aria-hidden").count(), 2, "{html}");
    assert_eq!(m.links.len(), 2, "b and its decoy: {:?}", m.links);
    assert_eq!(m.links[0].0, "https://b.example/");
    assert_eq!((m.links[0].1.index, m.links[0].1.count), (0, 1));
    assert_eq!(m.links[1].1.role, Role::Decoy);
}

#[test]
fn a_thousand_links_and_the_decoy_are_accepted_and_the_decoy_counts_itself() {
    let links = |n: usize| -> String {
        (0..n)
            .map(|i| format!(r#"<a href="https://a.example/{i}">{i}</a>"#))
            .collect()
    };
    let (out, m) = rewrite_html(&links(1000), false, true);
    assert_eq!(out.links.len(), 1001);
    let decoy = m.links.last().unwrap();
    assert_eq!(
        decoy.1,
        Place {
            index: 1000,
            count: 1001,
            role: Role::Decoy
        }
    );
    assert!(m.links[..1000].iter().all(|(_, p)| p.count == 1000));

    let err = rewrite(
        Message {
            html: Some(&links(1001)),
            decoy: true,
            ..Message::default()
        },
        &mut Recorder::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RewriteError::TooManyLinks(1001)), "{err}");
}

#[test]
fn links_inside_noscript_are_rewritten_as_any_other() {
    let input = concat!(
        r#"<body><a href="https://a.example/">a</a>"#,
        r#"<noscript><p class=x>No scripts &amp; <a href="https://o.example/" data-pm-no-track>off</a> "#,
        r#"<a href="https://n.example/" data-clickedge-role="footer" title="t">n</a> "#,
        r#"<a href="https://a.example/">a again</a></p></noscript></body>"#,
    );
    let mut m = Recorder::default();
    let out = rewrite(
        Message {
            html: Some(input),
            text: Some("o: https://o.example/ n: https://n.example/"),
            ..Message::default()
        },
        &mut m,
    )
    .unwrap();
    assert_eq!(
        out.html.unwrap(),
        concat!(
            r#"<body><a href="https://t.example/c/0">a</a>"#,
            r#"<noscript><p class=x>No scripts &amp; <a href="https://o.example/">off</a> "#,
            r#"<a href="https://t.example/c/1" title="t">n</a> "#,
            r#"<a href="https://t.example/c/0">a again</a></p></noscript></body>"#,
        )
    );
    assert_eq!(m.links[1].0, "https://n.example/");
    assert_eq!(m.links[1].1.role, Role::Footer);
    // The text part follows the links and opt-outs inside the noscript.
    assert_eq!(
        out.text.unwrap(),
        "o: https://o.example/ n: https://t.example/c/1"
    );

    // A role refused inside a noscript is refused as anywhere.
    let err = rewrite(
        Message {
            html: Some(r#"<noscript><a href="https://n.example/" data-clickedge-role="x">n</a>"#),
            ..Message::default()
        },
        &mut Recorder::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RewriteError::BadRole(v, _) if v == "x"),
        "{err}"
    );
}

#[test]
fn a_noscript_left_open_or_cut_inside_a_tag_keeps_its_bytes() {
    // Unclosed to the end of the part.
    let (out, _) = rewrite_html(
        r#"<noscript><a href="https://n.example/">n</a>"#,
        true,
        false,
    );
    assert_eq!(
        out.html.unwrap(),
        format!(r#"<noscript><a href="https://t.example/c/0">n</a>{PIXEL}"#)
    );
    // An attribute that holds `</noscript>` ends the noscript there, as in a browser with
    // scripts; what follows is read as the rest of the document.
    let input = r#"<noscript><a title="</noscript><a href="https://a.example/">">x</a>"#;
    let (out, m) = rewrite_html(input, false, false);
    assert_eq!(
        out.html.unwrap(),
        r#"<noscript><a title="</noscript><a href="https://t.example/c/0">">x</a>"#
    );
    assert_eq!(m.links.len(), 1);
    // A noscript inside a noscript stays text.
    let nested = r#"<noscript><noscript><a href="https://n.example/">n</a></noscript>"#;
    let (out, m) = rewrite_html(nested, false, false);
    assert_eq!(out.html.as_deref(), Some(nested));
    assert!(m.links.is_empty());
}
