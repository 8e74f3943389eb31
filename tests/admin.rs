//! The admin API contract: bearer token (401), input errors (400 with a message), domain
//! lifecycle, link minting, key rotation and removal, metrics and health.

mod common;

use common::{Edge, refused_start};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn missing_or_wrong_token_is_401_but_health_and_metrics_are_open() {
    let edge = Edge::start();
    for token in [None, Some("wrong-token"), Some("")] {
        for (method, path) in [
            (Method::GET, "/v1/domains"),
            (Method::POST, "/v1/domains"),
            (Method::POST, "/v1/links"),
            (Method::GET, "/v1/keys"),
        ] {
            let (status, body) = edge
                .admin_with_token(
                    method.clone(),
                    path,
                    Some(json!({ "name": "a.example.com" })),
                    token,
                )
                .await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("the token is in <data_dir>/admin-token"),
                "{body}"
            );
        }
    }
    let (status, _) = edge
        .admin_with_token(Method::GET, "/healthz", None, None)
        .await;
    assert_eq!(status, 200);
    assert!(
        edge.metrics()
            .await
            .contains("clickedge_clicks_dropped_total 0")
    );
    // Nothing was registered by the refused calls.
    let (_, list) = edge.admin(Method::GET, "/v1/domains", None).await;
    assert_eq!(list, json!([]));
    // The scheme is matched without case (RFC 9110 §11.1); only the token must be right.
    for scheme in ["bearer", "BEARER", "Bearer "] {
        let res = reqwest::Client::new()
            .get(format!("http://{}/v1/domains", edge.admin))
            .header("authorization", format!("{scheme} {}", edge.token))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{scheme:?}");
    }
    let res = reqwest::Client::new()
        .get(format!("http://{}/v1/domains", edge.admin))
        .header("authorization", format!("Basic {}", edge.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// The 401 says where the token is as this edge is configured: a token set in the config has
/// no `admin-token` file to point at.
#[tokio::test]
async fn a_401_points_at_where_the_configured_token_is() {
    let edge = Edge::start_with("[admin]\ntoken = \"the-full-admin-token-0123456789\"\n");
    let (status, body) = edge
        .admin_with_token(Method::GET, "/v1/domains", None, None)
        .await;
    assert_eq!(status, 401);
    let said = body["error"].as_str().unwrap();
    assert!(
        said.contains("the token is admin.token in the edge's config"),
        "{said}"
    );
    assert!(!said.contains("admin-token"), "{said}");
}

#[tokio::test]
async fn bad_input_is_400_with_a_message() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    let raw_to = |path: &'static str, body: &'static str| {
        let url = format!("http://{}{path}", edge.admin);
        let token = edge.token.clone();
        async move {
            let res = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (
                res.status().as_u16(),
                res.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let raw = |body: &'static str| raw_to("/v1/domains", body);
    let (status, body) = raw("{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );
    let (status, body) = raw(r#"{"nme": "x.example.com"}"#).await;
    assert_eq!(status, 400, "{body}");

    for bad in ["localhost", "bad_name.example.com", "a..b", "", "127.0.0.1"] {
        let (status, body) = edge
            .admin(Method::POST, "/v1/domains", Some(json!({ "name": bad })))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains(&format!("{bad:?}")),
            "{body}"
        );
    }
    for url in [
        "javascript:alert(1)",
        "ftp://example.com/",
        "/relative",
        "https://",
        "data:text/html,x",
    ] {
        let (status, body) = edge
            .admin(
                Method::POST,
                "/v1/links",
                Some(json!({ "domain": "links.example.com", "url": url })),
            )
            .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(body["error"].as_str().unwrap().contains("http"), "{body}");
    }
    let (status, body) = edge
        .admin(
            Method::POST,
            "/v1/links",
            Some(json!({ "domain": "unknown.example.com", "url": "https://example.com/" })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("clickedge domain add unknown.example.com")
    );
    let (status, _) = edge
        .admin(
            Method::POST,
            "/v1/links",
            Some(json!({ "domain": "links.example.com", "url": "https://example.com/", "meta": { "k": 1 } })),
        )
        .await;
    assert_eq!(status, 400);
    // A key given twice: refused, as the CLI refuses it, rather than one value kept in silence.
    let (status, body) = raw_to(
        "/v1/links",
        r#"{"domain": "links.example.com", "url": "https://example.com/", "meta": {"c": "1", "c": "2"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("\"c\""), "{body}");
    // A path part that is not UTF-8 once decoded: JSON too (it was axum's text).
    for path in ["/v1/keys/%FF/retire", "/v1/domains/%C3%28/check"] {
        let (status, body) = edge.admin(Method::POST, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("is not UTF-8"),
            "{path}: {body}"
        );
    }
}

/// A method a route does not take is a JSON 405 like every other error, with the methods it
/// takes in `Allow` (it was axum's, with no body: the CLI took it for another server).
#[tokio::test]
async fn a_method_a_route_does_not_take_is_a_json_405_naming_it() {
    let edge = Edge::start();
    for (method, path) in [
        (Method::PUT, "/v1/domains"),
        (Method::POST, "/v1/cluster"),
        (Method::DELETE, "/readyz"),
    ] {
        let res = reqwest::Client::new()
            .request(method.clone(), format!("http://{}{path}", edge.admin))
            .bearer_auth(&edge.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        let allow = res.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains("GET"), "{method} {path}: {allow}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            body["error"],
            format!("{method} is not a method of {path}: see the Allow header for those it takes")
        );
    }
    // Under a stranger's Host (DNS rebinding) the Host is refused first, as for any method.
    let res = reqwest::Client::new()
        .put(format!("http://{}/v1/domains", edge.admin))
        .header("host", "evil.example")
        .bearer_auth(&edge.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 421);
}

#[tokio::test]
async fn domain_lifecycle() {
    let edge = Edge::start();
    let (status, body) = edge
        .admin(
            Method::POST,
            "/v1/domains",
            Some(json!({ "name": "Links.Example.COM." })),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["name"], "links.example.com");
    assert_eq!(body["certificate"]["status"], "none");
    let (status, _) = edge
        .admin(
            Method::POST,
            "/v1/domains",
            Some(json!({ "name": "links.example.com" })),
        )
        .await;
    assert_eq!(status, 200);

    // The first click issues the certificate; the status shows it.
    let link = edge
        .mint("links.example.com", "https://example.com/", json!({}))
        .await;
    assert_eq!(edge.click_status("links.example.com", &link).await, 302);
    let (status, body) = edge
        .admin(Method::GET, "/v1/domains/links.example.com", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["certificate"]["status"], "valid");
    assert_eq!(body["certificate"]["issuer"], "local");
    assert!(
        body["certificate"]["not_after"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    assert!(body["certificate"]["last_error"].is_null());

    let (_, list) = edge.admin(Method::GET, "/v1/domains", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let (status, _) = edge
        .admin(Method::DELETE, "/v1/domains/links.example.com", None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = edge
        .admin(Method::GET, "/v1/domains/links.example.com", None)
        .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("clickedge domain add")
    );
    let (status, _) = edge
        .admin(Method::DELETE, "/v1/domains/links.example.com", None)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn key_rotation_keeps_old_links_and_removal_stops_them() {
    let edge = Edge::start();
    edge.add_domain("links.example.com").await;
    let client = edge.client(&["links.example.com"]);
    let old = edge
        .mint("links.example.com", "https://example.com/old", json!({}))
        .await;

    let (status, key) = edge.admin(Method::POST, "/v1/keys", None).await;
    assert_eq!(status, 201);
    assert_eq!(key["id"], 2);
    let new = edge
        .mint("links.example.com", "https://example.com/new", json!({}))
        .await;
    assert_eq!(client.get(&old).send().await.unwrap().status(), 302);
    assert_eq!(client.get(&new).send().await.unwrap().status(), 302);

    // The sealing key cannot be removed; the old one can, and its links stop at once.
    let (status, _) = edge.admin(Method::DELETE, "/v1/keys/2", None).await;
    assert_eq!(status, 409);
    let (status, _) = edge.admin(Method::DELETE, "/v1/keys/1", None).await;
    assert_eq!(status, 204);
    assert_eq!(client.get(&old).send().await.unwrap().status(), 404);
    assert_eq!(client.get(&new).send().await.unwrap().status(), 302);
    let (_, keys) = edge.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    // An id no key can have says which ids there are.
    for bad in ["70000", "0", "two"] {
        for (method, path) in [
            (Method::DELETE, format!("/v1/keys/{bad}")),
            (Method::POST, format!("/v1/keys/{bad}/retire")),
        ] {
            let (status, body) = edge.admin(method, &path, None).await;
            assert_eq!(status, 400, "{path}: {body}");
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains(&format!("{bad:?}")) && error.contains("from 1 to 65535"),
                "{error}"
            );
        }
    }
}

#[tokio::test]
async fn admin_token_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let edge = Edge::start();
    for file in ["admin-token", "ca-key.pem", "clickedge.db"] {
        let mode = std::fs::metadata(edge.data_dir().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is {mode:o}");
    }
}

const READ_TOKEN: &str = "read-only-dashboard-token-0123456789";

#[tokio::test]
async fn a_read_only_token_reads_and_checks_at_a_bounded_rate_but_every_write_is_403() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("read-tokens");
    std::fs::write(&file, "\nsupport-staff-token-0123456789\n").unwrap();
    // The checks ask a DNS server on loopback, not the machine's resolver.
    let dns = common::dns::Dns::start().await;
    let edge = Edge::start_with(&format!(
        "[admin]\nread_tokens = [\"{READ_TOKEN}\"]\nread_tokens_file = \"{}\"\n\
         [onboarding]\ndns_servers = [\"{}\"]\n",
        file.display(),
        dns.addr
    ));
    edge.add_domain("links.example.com").await;
    for token in [READ_TOKEN, "support-staff-token-0123456789"] {
        for (method, path, body) in [
            (Method::GET, "/v1/domains", None),
            (Method::GET, "/v1/domains/links.example.com", None),
            (Method::GET, "/v1/keys", None),
            (Method::GET, "/v1/cluster", None),
        ] {
            let (status, body) = edge
                .admin_with_token(method.clone(), path, body, Some(token))
                .await;
            assert_eq!(status, 200, "{method} {path}: {body}");
        }
        let (_, keys) = edge
            .admin_with_token(Method::GET, "/v1/keys", None, Some(token))
            .await;
        assert!(keys[0]["id"].is_number(), "{keys}");
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/domains",
                Some(json!({"name": "b.example.com"})),
            ),
            (Method::DELETE, "/v1/domains/links.example.com", None),
            (
                Method::POST,
                "/v1/links",
                Some(json!({"domain": "links.example.com", "url": "https://example.org/"})),
            ),
            (
                Method::PATCH,
                "/v1/domains/links.example.com",
                Some(json!({"fallback_url": "https://example.org/"})),
            ),
            (Method::POST, "/v1/domains/links.example.com/share", None),
            (Method::POST, "/v1/keys", None),
            (Method::DELETE, "/v1/keys/1", None),
            (Method::POST, "/v1/keys/1/retire", None),
        ] {
            let (status, body) = edge
                .admin_with_token(method.clone(), path, body, Some(token))
                .await;
            assert_eq!(status, 403, "{method} {path}: {body}");
            let msg = body["error"].as_str().unwrap();
            assert!(msg.contains("scope read"), "{msg}");
            assert!(!msg.contains(token), "{msg}");
        }
    }
    // A read-only token checks a domain, but each one's checks at most once per 10 s whichever
    // read-only token asks (each run queries DNS and connects to the customer's addresses);
    // the admin token is not bound.
    let check = "/v1/domains/links.example.com/check";
    let read_check = |token: &'static str| {
        reqwest::Client::new()
            .post(format!("http://{}{check}", edge.admin))
            .bearer_auth(token)
            .send()
    };
    // Two at once: one runs the checks, the other is told to wait.
    let (a, b) = tokio::join!(
        read_check(READ_TOKEN),
        read_check("support-staff-token-0123456789")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (ran, waits) = match a.status().as_u16() {
        200 => (a, b),
        _ => (b, a),
    };
    assert_eq!(ran.status(), 200);
    let body: serde_json::Value = ran.json().await.unwrap();
    assert!(body["checks"].is_array(), "{body}");
    assert_eq!(waits.status(), 429);
    let wait: u64 = waits.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    let body: serde_json::Value = waits.json().await.unwrap();
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("links.example.com was checked less than 10s ago"),
        "{msg}"
    );
    assert!(msg.contains("admin token"), "{msg}");
    // A name not registered is not found, however often it is asked for.
    for _ in 0..2 {
        let (status, body) = edge
            .admin_with_token(
                Method::POST,
                "/v1/domains/nosuch.example.com/check",
                None,
                Some(READ_TOKEN),
            )
            .await;
        assert_eq!(status, 404, "{body}");
    }
    // A name the store holds but this node has not loaded yet (another node's add, a moment
    // ago; written here behind the edge's back) is bound too.
    rusqlite::Connection::open(edge.data_dir().join("clickedge.db"))
        .unwrap()
        .execute(
            "INSERT INTO domains (name, created_at, origin) VALUES ('late.example.com', 0, 'admin')",
            [],
        )
        .unwrap();
    let late = "/v1/domains/late.example.com/check";
    let (status, body) = edge
        .admin_with_token(Method::POST, late, None, Some(READ_TOKEN))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = edge
        .admin_with_token(Method::POST, late, None, Some(READ_TOKEN))
        .await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = edge.admin(Method::POST, check, None).await;
    assert_eq!(status, 200, "{body}");
    // Nothing changed; the full token still writes.
    let (_, list) = edge.admin(Method::GET, "/v1/domains", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (_, keys) = edge.admin(Method::GET, "/v1/keys", None).await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    let (status, _) = edge.admin(Method::POST, "/v1/keys", None).await;
    assert_eq!(status, 201);
    assert!(!edge.stderr().contains(READ_TOKEN));
}

#[tokio::test]
async fn a_short_read_only_token_or_the_admin_token_reused_refuses_the_start() {
    for (tokens, says) in [
        ("[\"short\"]", "fewer than 16"),
        ("[\"the-full-admin-token-0123456789\"]", "must differ"),
    ] {
        let err = refused_start(
            &format!(
                "[admin]\ntoken = \"the-full-admin-token-0123456789\"\nread_tokens = {tokens}\n"
            ),
            &[],
        );
        assert!(
            err.contains(says) && err.contains("admin.read_tokens"),
            "{err}"
        );
    }
}

/// A token the admin listener could never be presented (it reads the header only as ASCII) is
/// refused at start, naming where it is and never showing it: from the config, a token file,
/// the read-only tokens' file and the data dir's token file.
#[tokio::test]
async fn a_token_outside_visible_ascii_refuses_the_start_naming_where_it_is() {
    let secret = "jeton-secret-numéro-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token-secret");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    let read_file = dir.path().join("read-tokens");
    std::fs::write(
        &read_file,
        format!("support-staff-token-0123456789\n{secret}\n"),
    )
    .unwrap();
    for (config, says) in [
        (
            format!("[admin]\ntoken = \"{secret}\"\n"),
            "admin.token has a character outside visible ASCII".to_owned(),
        ),
        (
            format!("[admin]\nread_tokens = [\"{READ_TOKEN}\", \"with space 0123456789\"]\n"),
            "admin.read_tokens entry 2 has a character outside visible ASCII".to_owned(),
        ),
        (
            format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
            format!(
                "admin.token_file {} has a character outside visible ASCII",
                token_file.display()
            ),
        ),
        (
            format!("[admin]\nread_tokens_file = \"{}\"\n", read_file.display()),
            format!(
                "admin.read_tokens_file {} line 2 has a character outside visible ASCII",
                read_file.display()
            ),
        ),
    ] {
        let err = refused_start(&config, &[]);
        assert!(err.contains(&says), "{config}: {err}");
        assert!(!err.contains("numéro"), "the token is shown: {err}");
    }
    // The data dir's token file, written by hand.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let path = dir.path().join("data").join("admin-token");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    let err = common::refused_start_as(
        std::process::Command::new(common::bin()),
        dir.path(),
        "[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    );
    assert!(
        err.contains(&format!(
            "{} has a character outside visible ASCII",
            path.display()
        )) && err.contains("delete it to have a new token generated"),
        "{err}"
    );
    assert!(!err.contains("numéro"), "the token is shown: {err}");
}

/// Every write route that reads a body refuses one over `limits.admin_max_body_bytes` the way
/// it refuses any bad request: JSON `{"error"}`, naming the limit and its value.
#[tokio::test]
async fn a_body_over_the_limit_is_a_json_413_naming_the_limit_on_every_route() {
    let edge = Edge::start_with("[limits]\nadmin_max_body_bytes = 1024\n");
    edge.add_domain("links.example.com").await;
    let big = json!({ "name": "a".repeat(2048) });
    for (method, path) in [
        (Method::POST, "/v1/domains"),
        (Method::PATCH, "/v1/domains/links.example.com"),
        (Method::POST, "/v1/domains/links.example.com/share"),
        (Method::POST, "/v1/links"),
    ] {
        let (status, body) = edge.admin(method.clone(), path, Some(big.clone())).await;
        assert_eq!(status, 413, "{method} {path}: {body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("over 1024 bytes, limits.admin_max_body_bytes"),
            "{method} {path}: {body}"
        );
    }
}
