//! What a recipient gets from a link that does not open, on a real edge: a 404 page (HTML for
//! browsers, with a CSP that loads nothing, `no-store`, the domain it was served on and no word
//! of why) or, when the operator set one for the domain, a 302 to exactly that fallback URL.
//! Never a click, never anything taken from the token, never another domain's fallback.

mod common;

use common::Edge;
use reqwest::Method;
use serde_json::json;

const DEST: &str = "https://shop.example.com/sale";
const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

/// `link` with its token altered in the middle: a forged link.
fn forged(link: &str) -> String {
    let (prefix, token) = link.rsplit_once('/').expect("token");
    let mut t = token.as_bytes().to_vec();
    let i = t.len() / 2;
    t[i] = if t[i] == b'A' { b'B' } else { b'A' };
    format!("{prefix}/{}", String::from_utf8(t).unwrap())
}

async fn patch_fallback(
    edge: &Edge,
    domain: &str,
    url: serde_json::Value,
) -> (u16, serde_json::Value) {
    edge.admin(
        Method::PATCH,
        &format!("/v1/domains/{domain}"),
        Some(json!({ "fallback_url": url })),
    )
    .await
}

#[tokio::test]
async fn a_forged_link_shows_a_page_without_the_reason_and_logs_no_click() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    edge.add_domain("other.example.com").await;
    let client = edge.client(&["links.example.com", "other.example.com"]);
    let link = edge.mint("links.example.com", DEST, json!({})).await;
    let elsewhere = edge.mint("other.example.com", DEST, json!({})).await;
    // Two different reasons: a forged token, and a token minted for another domain.
    let unopened = [
        forged(&link),
        elsewhere.replace("other.example.com", "links.example.com"),
    ];
    let mut pages = Vec::new();
    for url in &unopened {
        let res = client
            .get(url)
            .header("accept", BROWSER_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{url}");
        assert!(res.headers().get("location").is_none());
        let h = res.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-store");
        let csp = h["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("style-src 'unsafe-inline'"), "{csp}");
        let page = res.text().await.unwrap();
        assert!(page.contains("not valid or has expired"), "{page}");
        assert!(
            page.contains("<strong>links.example.com</strong>"),
            "{page}"
        );
        assert!(page.contains("width=device-width"), "{page}");
        // Nothing loaded from anywhere: no link, script, image or frame.
        for tag in ["<link", "<script", "<img", "<iframe", "src=", "href="] {
            assert!(!page.contains(tag), "{tag} in {page}");
        }
        pages.push(page);
    }
    assert_eq!(
        pages[0], pages[1],
        "the page must not tell the reasons apart"
    );

    // A client that does not ask for HTML keeps the line of text.
    let res = client.get(&unopened[0]).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.text().await.unwrap(), "not found\n");

    assert_eq!(client.get(&link).send().await.unwrap().status(), 302);
    let clicks = edge.wait_for_clicks(1);
    assert_eq!(clicks.len(), 1, "only the good link is a click: {clicks:?}");
    assert_eq!(
        edge.metric("clickedge_requests_total{outcome=\"bad_token\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn with_a_fallback_url_a_link_that_does_not_open_redirects_there_and_nowhere_else() {
    let edge = Edge::start();
    let fallback = "https://www.example.com/link-expired";
    let (status, body) = edge
        .admin(
            Method::POST,
            "/v1/domains",
            Some(json!({ "name": "links.example.com", "fallback_url": fallback })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["fallback_url"], fallback);
    edge.add_domain("other.example.com").await;
    let client = edge.client(&["links.example.com", "other.example.com"]);
    let link = edge.mint("links.example.com", DEST, json!({})).await;
    let other = edge.mint("other.example.com", DEST, json!({})).await;

    for accept in [BROWSER_ACCEPT, "*/*"] {
        let res = client
            .get(forged(&link))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 302);
        assert_eq!(res.headers()["location"], fallback);
        assert_eq!(res.headers()["cache-control"], "no-store");
    }
    // A good link still goes where it was minted to go.
    let res = client.get(&link).send().await.unwrap();
    assert_eq!(res.headers()["location"], DEST);

    // The other domain has no fallback: its forged links get the page, not links.example.com's
    // fallback.
    let res = client
        .get(forged(&other))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("location").is_none());
    let page = res.text().await.unwrap();
    assert!(
        page.contains("<strong>other.example.com</strong>"),
        "{page}"
    );
    assert!(!page.contains(fallback), "{page}");

    // Its own fallback, set later, is its own.
    let own = "http://other.example.net/";
    let (status, body) = patch_fallback(&edge, "other.example.com", json!(own)).await;
    assert_eq!(status, 200, "{body}");
    let res = client.get(forged(&other)).send().await.unwrap();
    assert_eq!(
        (
            res.status().as_u16(),
            res.headers()["location"].to_str().unwrap()
        ),
        (302, own)
    );
    let res = client.get(forged(&link)).send().await.unwrap();
    assert_eq!(res.headers()["location"], fallback);

    // Cleared: the page again.
    let (status, body) = patch_fallback(&edge, "links.example.com", json!(null)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fallback_url"], json!(null));
    let res = client.get(forged(&link)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.headers().get("location").is_none());

    let clicks = edge.wait_for_clicks(1);
    assert_eq!(clicks.len(), 1, "fallbacks are not clicks: {clicks:?}");
}

#[tokio::test]
async fn a_fallback_url_is_checked_like_a_link_destination() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    for bad in [
        "ftp://files.example.com/",
        "javascript:alert(1)",
        "https:///path",
        "/relative",
        "https://",
    ] {
        let (status, body) = patch_fallback(&edge, "links.example.com", json!(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("fallback_url"),
            "{body}"
        );
        let (status, body) = edge
            .admin(
                Method::POST,
                "/v1/domains",
                Some(json!({ "name": "new.example.com", "fallback_url": bad })),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, list) = edge.admin(Method::GET, "/v1/domains", None).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "a refused add adds nothing: {list:?}");
    assert_eq!(list[0]["fallback_url"], json!(null), "nothing was set");

    let (status, _) =
        patch_fallback(&edge, "absent.example.com", json!("https://a.example/")).await;
    assert_eq!(status, 404);
    for body in [
        json!({}),
        json!({ "fallback_url": 7 }),
        json!({ "name": "x" }),
    ] {
        let (status, answer) = edge
            .admin(
                Method::PATCH,
                "/v1/domains/links.example.com",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
}

/// A HEAD for a link that does not open (as scanners send) gets the 404's headers and no body,
/// over h2 too, where a client takes a body on a HEAD answer for a protocol error.
#[tokio::test]
async fn a_head_for_a_link_that_does_not_open_gets_the_404_without_a_body_over_h2() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    let client = edge.client(&["links.example.com"]);
    let link = forged(&edge.mint("links.example.com", DEST, json!({})).await);
    for accept in ["*/*", BROWSER_ACCEPT] {
        let res = client
            .head(&link)
            .header("accept", accept)
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD with accept {accept}: {e:?}"));
        assert_eq!(res.version(), reqwest::Version::HTTP_2);
        assert_eq!(res.status(), 404, "{accept}");
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert!(res.bytes().await.unwrap().is_empty(), "{accept}");
    }
}
