//! Preparing a whole message (`rewrite`, off the click path: the admin API's): a newsletter's
//! links sealed and its pixel and decoy inserted.

use clickedge::rewrite::{self, Message, Minter, Place};

use super::*;

/// Seals a message's links with the bench ring, as the admin API does (one token per link).
pub(super) struct RingMinter<'a>(&'a KeyRing);

impl Minter for RingMinter<'_> {
    type Error = links::LinkError;
    fn link(&mut self, url: &str, place: Place) -> Result<String, links::LinkError> {
        let link = Link::new(url, vec![("c".into(), "spring".into())], 1_764_000_000)?
            .with_context(links::MessageContext {
                message: "msg-2025-11-24-0001".into(),
                index: Some(place.index),
                count: Some(place.count),
                sent_at: Some(1_764_000_000),
                role: Some(place.role),
            })?;
        Ok(format!(
            "https://{DOMAIN}/c/{}",
            links::seal(self.0, DOMAIN, &link)
        ))
    }
    fn pixel(&mut self) -> Result<String, links::LinkError> {
        Ok(format!("https://{DOMAIN}/o/pixel"))
    }
    fn is_edge_domain(&self, host: &str) -> bool {
        host == DOMAIN
    }
    fn made_for_this_message(&self, _: &str) -> Option<rewrite::Made> {
        None
    }
}

pub(super) const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
    tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud.";

/// A newsletter of about 100 KB with 200 distinct links: table layout, inline styles, entities
/// in hrefs and text, a plain-text part with the same links.
pub(super) fn newsletter() -> (String, String) {
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>td{padding:0}</style></head>\
         <body style=\"margin:0\"><table role=\"presentation\" width=\"100%\">",
    );
    let mut text = String::new();
    for i in 0..200 {
        let url =
            format!("https://shop.example.com/item/{i}?utm_source=email&amp;utm_campaign=spring");
        html.push_str(&format!(
            "<tr><td class=\"item\" style=\"font-family:Arial,sans-serif;font-size:14px;color:#333\">\
             <h2>Item {i} &mdash; Fr&uuml;hling</h2><p>{LOREM}</p>\
             <a href=\"{url}\" style=\"color:#06c;text-decoration:none\">See item {i} &rarr;</a>\
             </td></tr><tr><td height=\"16\" style=\"font-size:0;line-height:0\">&nbsp;</td></tr>"
        ));
        text.push_str(&format!("Item {i}\n{}\n\n", url.replace("&amp;", "&")));
    }
    html.push_str("</table></body></html>");
    (html, text)
}

/// A whole message prepared: two lol_html passes, 200 links sealed, the text part linkified.
pub(super) fn bench_rewrite(c: &mut Criterion) {
    let ring = ring();
    let (html, text) = newsletter();
    assert!((95_000..=110_000).contains(&html.len()), "{}", html.len());
    let message = Message {
        html: Some(&html),
        text: Some(&text),
        pixel: true,
        decoy: true,
    };
    let out = rewrite::rewrite(message, &mut RingMinter(&ring)).unwrap();
    assert_eq!(out.links.len(), 201);
    let mut g = c.benchmark_group("rewrite");
    g.bench_function("newsletter_100k_200_links", |b| {
        b.iter(|| rewrite::rewrite(black_box(message), &mut RingMinter(&ring)))
    });
    g.finish();
}
