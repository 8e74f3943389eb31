//! Preparing a whole message on a running edge: `POST /v1/rewrite` and `clickedge rewrite`
//! against the real binary; the links it returns redirect and log their message context; the
//! 2 MiB body limit; the edge's own links left as written, so a second rewrite changes nothing.

mod common;

use common::Edge;
use reqwest::Method;
use serde_json::{Value, json};

const DOMAIN: &str = "links.example.com";

const HTML: &str = concat!(
    "<html><body>\n<p>Hello &amp; welcome. <a href=\"https://shop.example/spring?a=1&amp;b=2\" ",
    "class=\"btn\">Spring sale</a></p>\n",
    "<p><a href=\"mailto:help@shop.example\">Write to us</a> · ",
    "<a href=\"https://shop.example/terms\" data-pm-no-track>Terms</a></p>\n",
    "<p><a href=\"https://shop.example/unsubscribe?u=42\" data-clickedge-role=\"unsubscribe\">",
    "Unsubscribe</a></p>\n</body></html>\n",
);

const TEXT: &str = "Spring sale: https://shop.example/spring?a=1&b=2\n\
                    Terms: https://shop.example/terms\n\
                    Unsubscribe: https://shop.example/unsubscribe?u=42\n";

async fn rewrite(edge: &Edge, body: Value) -> (u16, Value) {
    edge.admin(Method::POST, "/v1/rewrite", Some(body)).await
}

#[tokio::test]
async fn a_whole_message_is_rewritten_and_its_links_redirect_with_their_place_in_the_message() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let (status, out) = rewrite(
        &edge,
        json!({
            "domain": DOMAIN, "message": "msg-1", "html": HTML, "text": TEXT,
            "meta": {"campaign": "spring"}, "sent_at": "2025-11-24T09:00:00Z",
            "pixel": true, "decoy": true,
        }),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let links = out["links"].as_array().unwrap();
    let described: Vec<(u64, &str, &str)> = links
        .iter()
        .map(|l| {
            (
                l["index"].as_u64().unwrap(),
                l["url"].as_str().unwrap(),
                l["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            (0, "https://shop.example/spring?a=1&b=2", "content"),
            (1, "https://shop.example/unsubscribe?u=42", "unsubscribe"),
            (2, "https://shop.example/spring?a=1&b=2", "decoy"),
        ]
    );
    let link = |i: usize| links[i]["link"].as_str().unwrap();
    let pixel = out["pixel"].as_str().unwrap();
    assert!(
        pixel.starts_with(&format!("https://{DOMAIN}/o/")),
        "{pixel}"
    );
    let html = out["html"].as_str().unwrap();
    let expected = HTML
        .replace("https://shop.example/spring?a=1&amp;b=2", link(0))
        .replace(" data-pm-no-track", "")
        .replace(
            "https://shop.example/unsubscribe?u=42\" data-clickedge-role=\"unsubscribe\"",
            &format!("{}\"", link(1)),
        )
        .replace(
            "<html><body>",
            &format!(
                "<html><body><a href=\"{}\" aria-hidden=\"true\" tabindex=\"-1\" style=\"display:none;mso-hide:all;font-size:0;line-height:0;max-height:0;overflow:hidden\"></a>",
                link(2)
            ),
        )
        .replace(
            "</body>",
            &format!(
                "<img src=\"{pixel}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;width:1px;height:1px;border:0\"></body>"
            ),
        );
    assert_eq!(html, expected);
    assert_eq!(
        out["text"].as_str().unwrap(),
        TEXT.replace("https://shop.example/spring?a=1&b=2", link(0))
            .replace("https://shop.example/unsubscribe?u=42", link(1))
    );

    // The rewritten unsubscribe link is an action link: its GET shows the confirm page, its
    // POST redirects to the destination; both log its place in the message.
    let client = edge.client(&[DOMAIN]);
    let res = client.get(edge.on_port(link(1))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("location").is_none());
    let res = client.post(edge.on_port(link(1))).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"],
        "https://shop.example/unsubscribe?u=42"
    );
    let clicks = edge.wait_for_clicks(2);
    assert_eq!(clicks.len(), 2, "{clicks:#?}");
    for click in clicks {
        assert_eq!(click["meta"], json!({"campaign": "spring"}));
        assert_eq!(
            click["message"],
            // Two links a person sees; the hidden decoy (the third) is not counted in theirs.
            json!({"id": "msg-1", "index": 1, "count": 2, "sent_at": "2025-11-24T09:00:00.000Z", "role": "unsubscribe"})
        );
    }
}

#[tokio::test]
async fn refusals_name_their_cause() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let cases = [
        (
            json!({"domain": DOMAIN, "message": "m",
                   "html": "<a href=\"https://a.example/\" data-clickedge-role=\"hidden\">a</a>"}),
            400,
            "data-clickedge-role \"hidden\" is not one of",
        ),
        (
            json!({"domain": "other.example.com", "message": "m",
                   "html": "<a href=\"https://a.example/\">a</a>"}),
            400,
            "not registered",
        ),
        // Nothing to mint: still refused, as minting would.
        (
            json!({"domain": "other.example.com", "message": "m", "html": "<p>hi</p>"}),
            400,
            "not registered",
        ),
        (
            json!({"domain": DOMAIN, "message": "", "html": "<a href=\"https://a.example/\">a</a>"}),
            400,
            "message id must be 1-128 bytes",
        ),
        (
            json!({"domain": DOMAIN, "message": "m", "html": "x", "sent_at": "yesterday"}),
            400,
            "sent_at \"yesterday\" is not an RFC 3339 time",
        ),
        // A message id minting would refuse, with nothing to mint.
        (
            json!({"domain": DOMAIN, "message": "", "html": "<p>hi</p>"}),
            400,
            "message id must be 1-128 bytes, not 0",
        ),
        (
            json!({"domain": DOMAIN, "message": "m".repeat(200), "text": "no links"}),
            400,
            "message id must be 1-128 bytes, not 200",
        ),
        // Metadata minting would refuse, with nothing to mint.
        (
            json!({"domain": DOMAIN, "message": "m", "html": "<p>hi</p>", "meta": {"": "x"}}),
            400,
            "a metadata key is empty",
        ),
        // A pixel that does not mint says so (its destination is no URL).
        (
            json!({"domain": DOMAIN, "message": "m", "html": "<p>hi</p>", "pixel": true,
                   "meta": (0..32).map(|i| (format!("k{i}"), Value::from("v".repeat(512))))
                       .collect::<serde_json::Map<String, Value>>()}),
            400,
            "minting the message's open pixel: the link's path would be",
        ),
    ];
    for (body, status, words) in cases {
        let (got, answer) = rewrite(&edge, body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(words), "{body}: {error}");
    }
    // A read-only token may not mint.
    let edge = Edge::start_with("[admin]\nread_tokens = [\"read-only-token-0123456789\"]\n");
    let (status, answer) = edge
        .admin_with_token(
            Method::POST,
            "/v1/rewrite",
            Some(json!({"domain": DOMAIN, "message": "m", "text": "x"})),
            Some("read-only-token-0123456789"),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
}

#[tokio::test]
async fn messages_up_to_2_mib_are_accepted_and_larger_get_413_naming_the_limit() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    // Past the 64 KiB of limits.admin_max_body_bytes, within 2 MiB.
    let filler = "<p>Lorem ipsum dolor sit amet.</p>\n".repeat(50_000);
    let html = format!("<html><body>{filler}<a href=\"https://a.example/\">a</a></body></html>");
    assert!(html.len() > 1_500_000 && html.len() < 2 * 1024 * 1024 - 1024);
    let (status, out) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "m", "html": html}),
    )
    .await;
    assert_eq!(status, 200, "{}", out["error"]);
    assert_eq!(out["links"].as_array().unwrap().len(), 1);

    let html = "x".repeat(2 * 1024 * 1024);
    let (status, out) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "m", "html": html}),
    )
    .await;
    assert_eq!(status, 413);
    let error = out["error"].as_str().unwrap();
    assert!(error.contains("2097152 bytes (2 MiB)"), "{error}");
}

#[tokio::test]
async fn the_cli_prints_the_rewritten_parts() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let dir = tempfile::tempdir().unwrap();
    let (html, text) = (dir.path().join("m.html"), dir.path().join("m.txt"));
    std::fs::write(&html, HTML).unwrap();
    std::fs::write(&text, TEXT).unwrap();
    let run = |args: &[&str]| {
        let command = [
            &["rewrite", "--domain", DOMAIN, "--message", "msg-cli"],
            args,
        ]
        .concat();
        edge.cli(&command)
    };
    let only_text = run(&["--text", text.to_str().unwrap()]);
    let link_prefix = format!("https://{DOMAIN}/c/");
    assert!(
        only_text.starts_with(&format!("Spring sale: {link_prefix}")),
        "{only_text}"
    );
    // Alone, the text part opts nothing out.
    assert!(
        only_text.contains(&format!("Terms: {link_prefix}")),
        "{only_text}"
    );
    assert_eq!(only_text.lines().count(), 3);

    let both = run(&[
        "--html",
        html.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--meta",
        "campaign=spring",
    ]);
    let (html_part, text_part) = both
        .strip_prefix("==> html <==\n")
        .and_then(|rest| rest.split_once("==> text <==\n"))
        .unwrap_or_else(|| panic!("{both}"));
    assert!(
        html_part.contains(&format!("<a href=\"{link_prefix}")),
        "{html_part}"
    );
    assert!(html_part.contains("<a href=\"mailto:help@shop.example\">"));
    assert!(text_part.starts_with(&format!("Spring sale: {link_prefix}")));
    // With the HTML part, its opt-out holds in the text part too.
    assert!(
        text_part.contains("Terms: https://shop.example/terms\n"),
        "{text_part}"
    );

    // An HTML part that does not end its last line: the text part's header still starts one.
    std::fs::write(&html, HTML.trim_end()).unwrap();
    let both = run(&[
        "--html",
        html.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
    ]);
    assert!(both.contains("</html>\n==> text <==\n"), "{both}");

    let json: Value = serde_json::from_str(&run(&["--text", "-", "--json"])).unwrap_or_default();
    assert_eq!(json["links"], json!([]), "stdin is empty here");

    // A decoy asked for and not placed: the parts are printed, and a warning says why.
    std::fs::write(
        &html,
        r#"<body><a href="https://list.example/confirm" data-clickedge-role="confirm">Yes</a></body>"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clickedge"))
        .arg("--config")
        .arg(edge.config_path())
        .args([
            "rewrite",
            "--domain",
            DOMAIN,
            "--message",
            "msg-cli",
            "--decoy",
        ])
        .args(["--html", html.to_str().unwrap()])
        .args(["--admin", &format!("http://{}", edge.admin)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("<a href=\"{link_prefix}")),
        "{out:?}"
    );
    assert!(
        stderr.contains("warning: no decoy: the message has no content or footer link"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_pixel_answers_the_same_transparent_gif_never_cached_and_without_a_cookie() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let (status, out) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "m", "pixel": true,
               "html": "<p><a href=\"https://a.example/\">hi</a></p>"}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let pixel = edge.on_port(out["pixel"].as_str().unwrap());
    let forged = format!("{}x", pixel);
    let client = edge.client(&[DOMAIN]);
    let mut bodies = Vec::new();
    for (method, url) in [
        (Method::GET, &pixel),
        (Method::HEAD, &pixel),
        (Method::GET, &forged),
    ] {
        let body = common::fetch_pixel(&client, method.clone(), url, None).await;
        if method == Method::GET {
            bodies.push(body);
        }
    }
    assert_eq!(bodies[0], bodies[1], "a bad token gets the same bytes");
    let gif = &bodies[0];
    // GIF89a, 1×1, a graphic control extension whose transparency flag is set for colour 0.
    assert_eq!(&gif[..6], b"GIF89a");
    assert_eq!((&gif[6..8], &gif[8..10]), (&[1u8, 0][..], &[1u8, 0][..]));
    let gce = gif.windows(2).position(|w| w == [0x21, 0xf9]).unwrap();
    assert_eq!((gif[gce + 3] & 1, gif[gce + 6]), (1, 0));
    assert_eq!(gif.last(), Some(&b';'));
    let res = client.post(&pixel).send().await.unwrap();
    assert_eq!(res.status(), 405);
    // The GET and the HEAD are opens; the forged token and the POST wrote nothing: the next
    // line is the click made after them.
    let link = edge.on_port(out["links"][0]["link"].as_str().unwrap());
    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    let lines = edge.wait_for_clicks(3);
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["open", "open", "click"], "{lines:?}");
    assert_eq!(lines[2]["url"], "https://a.example/");
}

#[tokio::test]
async fn the_edges_own_links_are_left_as_written_and_a_second_rewrite_changes_nothing() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let (status, body) = edge
        .admin(
            Method::POST,
            "/v1/links",
            Some(json!({"domain": DOMAIN, "url": "https://shop.example/"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let minted = body["link"].as_str().unwrap().to_owned();
    // A link made by POST /v1/links is the edge's own: left as it is, not reported.
    let html = format!("<p><a href=\"{minted}\">a</a></p>");
    let (status, out) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "m", "html": html, "text": minted}),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["html"], html);
    assert_eq!(out["text"], minted.as_str());
    assert_eq!(out["links"], json!([]));
    // Nor is it minted as a destination.
    let (status, answer) = edge
        .admin(
            Method::POST,
            "/v1/links",
            Some(json!({"domain": DOMAIN, "url": minted})),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains(&format!("{minted:?}")), "{error}");
    assert!(error.contains("already a link of this edge"), "{error}");

    // A message rewritten again comes back as it was: one pixel, one decoy, nothing minted.
    let plain = "<html><body><p><a href=\"https://shop.example/a\">a</a></p></body></html>";
    let first =
        json!({"domain": DOMAIN, "message": "m", "html": plain, "pixel": true, "decoy": true});
    let (status, once) = rewrite(&edge, first).await;
    assert_eq!(status, 200, "{once}");
    let again = json!({"domain": DOMAIN, "message": "m", "html": once["html"], "pixel": true, "decoy": true});
    let (status, twice) = rewrite(&edge, again).await;
    assert_eq!(status, 200, "{twice}");
    assert_eq!(twice["html"], once["html"]);
    assert_eq!(twice["pixel"], once["pixel"]);
    assert_eq!(twice["links"], json!([]));
    let html = twice["html"].as_str().unwrap();
    assert_eq!(html.matches("/o/").count(), 1, "{html}");
    assert_eq!(html.matches("aria-hidden").count(), 1, "{html}");
    assert_eq!(
        (&once["decoy"], &twice["decoy"]),
        (&json!("added"), &json!("kept"))
    );
    assert_eq!(twice["decoy_skipped"], json!(null));

    // Rewritten the first time without a decoy, a decoy asked for the second time is skipped,
    // and the answer says why.
    let (status, without) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "w", "html": plain, "pixel": true}),
    )
    .await;
    assert_eq!(status, 200, "{without}");
    assert_eq!(without["decoy"], json!(null));
    let again = json!({"domain": DOMAIN, "message": "w", "html": without["html"], "pixel": true, "decoy": true});
    let (status, skipped) = rewrite(&edge, again).await;
    assert_eq!(status, 200, "{skipped}");
    assert_eq!(skipped["html"], without["html"]);
    assert_eq!(skipped["decoy"], "skipped");
    let why = skipped["decoy_skipped"].as_str().unwrap();
    assert!(why.contains("rewritten before without a decoy"), "{why}");

    // Quoted in another message, it is that message's content: its links and pixel are left as
    // written, and the other message gets a pixel of its own.
    let quoted = json!({"domain": DOMAIN, "message": "n", "html": once["html"], "pixel": true});
    let (status, other) = rewrite(&edge, quoted).await;
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["pixel"], once["pixel"]);
    let html = other["html"].as_str().unwrap();
    assert_eq!(html.matches("/o/").count(), 2, "{html}");
    assert!(html.contains(once["pixel"].as_str().unwrap()), "{html}");

    // Rewritten again with a link it did not have (here the one its opt-out attribute kept
    // out, the attribute removed from the output): refused, saying to rewrite the original.
    let (status, opted) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "m", "html": HTML}),
    )
    .await;
    assert_eq!(status, 200, "{opted}");
    let (status, answer) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "m", "html": opted["html"]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("the message was rewritten before"),
        "{error}"
    );
    assert!(error.contains("rewrite the original message"), "{error}");
}

#[tokio::test]
async fn a_thousand_links_and_the_decoy_are_sealed_and_one_more_link_is_refused() {
    let edge = Edge::start();
    edge.add_domain(DOMAIN).await;
    let links = |n: usize| -> String {
        (0..n)
            .map(|i| format!("<a href=\"https://a.example/{i}\">{i}</a>"))
            .collect()
    };
    let (status, out) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "m", "html": links(1000), "decoy": true}),
    )
    .await;
    assert_eq!(status, 200, "{}", out["error"]);
    let sealed = out["links"].as_array().unwrap();
    assert_eq!(sealed.len(), 1001);
    assert_eq!(sealed[1000]["role"], "decoy");
    let (status, out) = rewrite(
        &edge,
        json!({"domain": DOMAIN, "message": "m", "html": links(1001), "decoy": true}),
    )
    .await;
    assert_eq!(status, 400);
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("the message has 1001 distinct links"),
        "{error}"
    );
}
