//! The onboarding web page (`/ui/` on the admin listener): protected by the admin token (typed
//! into the form, never taken from the address), refuses cross-site posts, ends sessions on the
//! server at sign-out, marks its cookie `Secure` when told the page is reached over HTTPS, and,
//! driven in headless Debian Chromium through chromedriver (WebDriver over HTTP), lets a person
//! sign in, add a domain, read its checks and fixes, fix the DNS and check again. Screenshots go
//! to `$CARGO_TARGET_TMPDIR/ui/`.

mod common;

use std::path::PathBuf;

use common::Edge;
use common::browser::Browser;
use common::dns::Dns;
use common::pebble::free_tcp_port;
use reqwest::header;

const TARGET: &str = "edge.example.net";

async fn start() -> (Dns, Edge) {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    let (https, http) = (free_tcp_port(), free_tcp_port());
    let config = format!(
        "[onboarding]\ncname_target = \"{TARGET}\"\naddresses = [\"127.0.0.1\"]\ndns_servers = [\"{}\"]\nhttp_port = {http}\ndanger_allow_private_addresses = true\n",
        dns.addr
    );
    let edge = Edge::start_in_at(tempfile::tempdir().unwrap(), &config, https, http);
    (dns, edge)
}

fn form_post(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_needs_the_admin_token_and_refuses_cross_site_posts() {
    let (_dns, edge) = start().await;
    edge.add_domain("secret.example.com").await;
    let ui = format!("http://{}/ui/", edge.admin);
    let client = no_redirects();

    let res = client.get(&ui).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let body = res.text().await.unwrap();
    assert!(body.contains("Admin token"), "{body}");
    assert!(!body.contains("secret.example.com"), "{body}");

    let res = form_post(&client, &format!("{ui}domains"))
        .body(form(&[("name", "sneaky.example.com")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = form_post(&client, &format!("{ui}login"))
        .body(form(&[("token", "not-the-token-0123456789")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = form_post(&client, &format!("{ui}login"))
        .body(form(&[("token", edge.token.as_str())]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    assert!(
        !session.contains(&edge.token),
        "the cookie is not the API token"
    );

    let page = client
        .get(&ui)
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("secret.example.com"));
    // A domain's page whose name is not UTF-8 once decoded: the page's own error, naming why.
    let page = client
        .get(format!("{ui}domains/%FF"))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
    assert!(
        page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("is not UTF-8"));

    // A form on another site, with the session cookie (as if SameSite were ignored).
    let res = form_post(&client, &format!("{ui}domains"))
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, "http://evil.example")
        .body(form(&[("name", "sneaky.example.com")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let (status, _) = edge
        .admin(reqwest::Method::GET, "/v1/domains/sneaky.example.com", None)
        .await;
    assert_eq!(status, 404);

    // The session value does not open the API.
    let value = session.split_once('=').unwrap().1;
    let (status, _) = edge
        .admin_with_token(reqwest::Method::GET, "/v1/domains", None, Some(value))
        .await;
    assert_eq!(status, 401);
}

/// Signs in with `token` through the form; returns the status and the `Set-Cookie` value.
async fn sign_in(edge: &Edge, token: &str) -> (u16, Option<String>) {
    let res = form_post(&no_redirects(), &format!("http://{}/ui/login", edge.admin))
        .body(form(&[("token", token)]))
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    (res.status().as_u16(), cookie)
}

/// The status of the domain list for a browser sending `cookie` (a `name=value` pair).
async fn index_status(edge: &Edge, cookie: &str) -> u16 {
    no_redirects()
        .get(format!("http://{}/ui/", edge.admin))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Signing in again from a browser already signed in ends its old session on the edge: sign-out
/// then ends the only one, and a copy of the old cookie stops working with it.
#[tokio::test]
async fn signing_in_again_ends_the_session_the_browser_held() {
    let edge = Edge::start();
    let (_, old) = sign_in(&edge, &edge.token).await;
    let old = old.unwrap().split(';').next().unwrap().to_owned();
    let res = form_post(&no_redirects(), &format!("http://{}/ui/login", edge.admin))
        .header(header::COOKIE, &old)
        .body(form(&[("token", &edge.token)]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let new = res.headers()[header::SET_COOKIE].to_str().unwrap();
    let new = new.split(';').next().unwrap().to_owned();
    assert_eq!(
        index_status(&edge, &old).await,
        401,
        "the old session ended"
    );
    assert_eq!(index_status(&edge, &new).await, 200);
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server_so_a_copied_cookie_stops_working() {
    let edge = Edge::start();
    let (status, cookie) = sign_in(&edge, &edge.token).await;
    assert_eq!(status, 303);
    let cookie = cookie.unwrap();
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP by default: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let (_, other) = sign_in(&edge, &edge.token).await;
    let other = other.unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(index_status(&edge, &session).await, 200);

    // Someone copied the cookie; its owner signs out.
    let copy = session.clone();
    let res = form_post(&no_redirects(), &format!("http://{}/ui/logout", edge.admin))
        .header(header::COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cleared = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(index_status(&edge, &copy).await, 401, "the copy is dead");
    assert_eq!(
        index_status(&edge, &other).await,
        200,
        "other sign-ins stay"
    );
}

#[tokio::test]
async fn the_token_in_the_address_does_not_sign_in() {
    let edge = Edge::start();
    let token: String = url::form_urlencoded::byte_serialize(edge.token.as_bytes()).collect();
    let res = no_redirects()
        .get(format!("http://{}/ui/?token={token}", edge.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let body = res.text().await.unwrap();
    assert!(body.contains("not accepted in the address"), "{body}");
    assert!(body.contains("Admin token"), "the sign-in form: {body}");
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_page_is_reached_over_https() {
    let edge = Edge::start_with("[admin]\nsecure_cookie = true\n");
    let (status, cookie) = sign_in(&edge, &edge.token).await;
    assert_eq!(status, 303);
    let cookie = cookie.unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_adds_a_domain_sees_its_checks_and_checks_again_after_the_fix() {
    let (dns, edge) = start().await;
    let name = "links.shop.example.com";
    dns.add_a(name, &["192.0.2.7"]).await;
    let browser = Browser::start(edge.dir.path()).await;
    let ui = format!("http://{}/ui/", edge.admin);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");

    browser.goto(&ui).await;
    browser.wait_for("/ui/", "Admin token").await;
    browser.type_into("#token", &edge.token).await;
    browser.click("form[action='/ui/login'] button").await;
    browser.wait_for("/ui/", "Add a domain").await;

    browser.type_into("#name", name).await;
    browser.click("form[action='/ui/domains'] button").await;
    let page = browser
        .wait_for(
            &format!("/ui/domains/{name}"),
            "id=\"check-points-to-edge\"",
        )
        .await;
    assert!(
        page.contains("class=\"check fail\" id=\"check-points-to-edge\""),
        "{page}"
    );
    assert!(page.contains("an A record 192.0.2.7"), "{page}");
    assert!(
        page.contains("links.shop.example.com. 300 IN CNAME edge.example.net."),
        "{page}"
    );
    assert!(page.contains("holds back the certificate"), "{page}");
    browser.screenshot(&shots.join("domain-broken.png")).await;
    browser
        .check_phone_width(&shots.join("domain-broken-phone.png"), "holds back")
        .await;

    // The customer applies the fix; "Check again" shows it working.
    dns.clear_a(name).await;
    dns.set_cname(name, TARGET).await;
    browser.click("form.busy-on-submit button").await;
    let page = browser
        .wait_for(
            &format!("/ui/domains/{name}"),
            "class=\"check pass\" id=\"check-points-to-edge\"",
        )
        .await;
    assert!(
        page.contains("class=\"check pass\" id=\"check-http-reachable\""),
        "{page}"
    );
    assert!(!page.contains("class=\"check fail\""), "{page}");
    browser.screenshot(&shots.join("domain-fixed.png")).await;

    // The list shows it at a glance.
    browser.goto(&ui).await;
    let page = browser.wait_for("/ui/", name).await;
    assert!(page.contains("<td class=\"pass\">✓ ready</td>"), "{page}");
    browser.screenshot(&shots.join("domains.png")).await;
}

#[tokio::test]
async fn a_read_only_token_signs_in_to_a_page_without_the_add_form_and_cannot_add() {
    let token = "read-only-dashboard-token-0123456789";
    let edge = Edge::start_with(&format!("[admin]\nread_tokens = [\"{token}\"]\n"));
    edge.add_domain("seen.example.com").await;
    let ui = format!("http://{}/ui/", edge.admin);
    let client = no_redirects();
    let session = |token: &str| {
        let res = form_post(&client, &format!("{ui}login")).body(form(&[("token", token)]));
        async move {
            let res = res.send().await.unwrap();
            assert_eq!(res.status(), 303);
            let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
            cookie.split(';').next().unwrap().to_owned()
        }
    };
    let page = |session: String| {
        let req = client.get(&ui).header(header::COOKIE, session);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let read = session(token).await;
    let body = page(read.clone()).await;
    assert!(body.contains("seen.example.com"), "{body}");
    assert!(!body.contains("action=\"/ui/domains\""), "{body}");
    assert!(body.contains("read-only"), "{body}");
    let full = session(&edge.token).await;
    assert!(page(full).await.contains("action=\"/ui/domains\""));

    let res = form_post(&client, &format!("{ui}domains"))
        .header(header::COOKIE, &read)
        .body(form(&[("name", "added.example.com")]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("scope read"));
    let (_, list) = edge.admin(reqwest::Method::GET, "/v1/domains", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn the_page_shows_both_forms_of_an_internationalised_name_and_each_fallback() {
    let edge = Edge::start();
    let fallback = "https://www.example.com/expired?a=1&b=2";
    let (status, body) = edge
        .admin(
            reqwest::Method::POST,
            "/v1/domains",
            Some(serde_json::json!({ "name": "bücher.example", "fallback_url": fallback })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    edge.add_domain("plain.example.com").await;
    let (status, cookie) = sign_in(&edge, &edge.token).await;
    assert_eq!(status, 303);
    let session = cookie.unwrap().split(';').next().unwrap().to_owned();
    let get = |path: &str| {
        let req = no_redirects()
            .get(format!("http://{}{path}", edge.admin))
            .header(header::COOKIE, &session);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let escaped = "https://www.example.com/expired?a=1&amp;b=2";
    let list = get("/ui/").await;
    assert!(list.contains(">xn--bcher-kva.example</a>"), "{list}");
    assert!(
        list.contains("<span class=\"unicode\" lang=\"und\">bücher.example</span>"),
        "{list}"
    );
    assert!(list.contains(&format!("<code>{escaped}</code>")), "{list}");
    assert_eq!(
        list.matches("class=\"unicode\"").count(),
        1,
        "none for an ASCII name"
    );

    let page = get("/ui/domains/xn--bcher-kva.example").await;
    assert!(
        page.contains("Shown to people as <strong>bücher.example</strong>"),
        "{page}"
    );
    assert!(
        page.contains(&format!("redirects to <code>{escaped}</code>")),
        "{page}"
    );
    let plain = get("/ui/domains/plain.example.com").await;
    assert!(!plain.contains("Shown to people as"), "{plain}");
    assert!(
        plain.contains("shows a page saying the link is not valid"),
        "{plain}"
    );
}

/// A name the built-in CA will never vouch for (outside `tls.local_ca_names`) is added from the
/// form all the same, and its page and the list say at once why it will get no certificate,
/// as the API's `"warning"` does; a name inside them carries no such word.
#[tokio::test]
async fn a_name_the_built_in_ca_will_not_vouch_for_says_so_on_its_page_and_in_the_list() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    let (status, cookie) = sign_in(&edge, &edge.token).await;
    assert_eq!(status, 303);
    let session = cookie.unwrap().split(';').next().unwrap().to_owned();
    let res = form_post(
        &no_redirects(),
        &format!("http://{}/ui/domains", edge.admin),
    )
    .header(header::COOKIE, &session)
    .header(header::ORIGIN, format!("http://{}", edge.admin))
    .body(form(&[("name", "links.mycorp.io")]))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()[header::LOCATION],
        "/ui/domains/links.mycorp.io"
    );
    let get = |path: &str| {
        let req = no_redirects()
            .get(format!("http://{}{path}", edge.admin))
            .header(header::COOKIE, &session);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };

    let page = get("/ui/domains/links.mycorp.io").await;
    assert!(
        page.contains("No certificate will be issued for this name:</strong> the built-in CA vouches only for names under tls.local_ca_names"),
        "{page}"
    );
    assert!(
        !get("/ui/domains/links.example.com")
            .await
            .contains("No certificate will be issued")
    );
    let list = get("/ui/").await;
    assert_eq!(
        list.matches("the issuer will not vouch for it").count(),
        1,
        "{list}"
    );
    let (_, shown) = edge
        .admin(reqwest::Method::GET, "/v1/domains/links.mycorp.io", None)
        .await;
    assert!(
        shown["warning"]
            .as_str()
            .is_some_and(|w| w.contains("not links.mycorp.io: add its zone there")),
        "{shown}"
    );
    let (_, other) = edge
        .admin(reqwest::Method::GET, "/v1/domains/links.example.com", None)
        .await;
    assert!(other.get("warning").is_none(), "{other}");
}

/// The list shows 500 domains a page, in name order; a full page links to the domains after
/// its last name, and that page links back to the first.
#[tokio::test]
async fn the_domain_list_comes_a_page_of_500_at_a_time() {
    use futures_util::StreamExt as _;
    let edge = Edge::start();
    let names: Vec<String> = (0..501).map(|i| format!("d{i:03}.example.com")).collect();
    futures_util::stream::iter(&names)
        .for_each_concurrent(16, |name| edge.add_domain(name))
        .await;
    let (_, cookie) = sign_in(&edge, &edge.token).await;
    let session = cookie.unwrap().split(';').next().unwrap().to_owned();
    let get = |path: String| {
        let req = no_redirects()
            .get(format!("http://{}{path}", edge.admin))
            .header(header::COOKIE, &session);
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.text().await.unwrap())
        }
    };
    let rows = |page: &str| page.matches("<a href=\"/ui/domains/").count();

    let (status, first) = get("/ui/".into()).await;
    assert_eq!(status, 200);
    assert_eq!(rows(&first), 500);
    assert!(first.contains("d000.example.com") && !first.contains("d500.example.com"));
    let next = "<a href=\"/ui/?after=d499.example.com\">";
    assert!(first.contains(next), "{first}");

    let (_, second) = get("/ui/?after=d499.example.com".into()).await;
    assert_eq!(rows(&second), 1, "{second}");
    assert!(second.contains("d500.example.com"));
    assert!(
        second.contains("<a href=\"/ui/\">from the first</a>"),
        "{second}"
    );
    assert!(!second.contains("/ui/?after="), "the last page: {second}");
    let (_, past) = get("/ui/?after=e".into()).await;
    assert!(past.contains("No domains after this one."), "{past}");

    let (status, refused) = get(format!("/ui/?after={}", "a".repeat(254))).await;
    assert_eq!(status, 400);
    assert!(refused.contains("254 bytes"), "{refused}");
}
