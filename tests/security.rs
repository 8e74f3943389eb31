//! Security promises, each tested: the admin API is not exposed beyond loopback without an
//! explicitly configured token; tokens are checked exactly; private keys never reach the log;
//! even a validly sealed token never redirects anywhere but http(s); no link is minted that the
//! edge would refuse as too long; a DNS name rebound to the admin listener reads nothing. (Key
//! files mode 0600, key rotation/removal and the page's sessions are covered in admin.rs and
//! ui.rs.)

mod common;

use std::process::Command;

use clickedge::links::{KeyId, KeyRing, Link, LinkKey, seal};
use common::{Edge, bin};
use reqwest::Method;
use serde_json::json;

const DOMAIN: &str = "links.example.com";

#[test]
fn admin_refuses_a_non_loopback_bind_without_a_configured_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[listen]\nhttps = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nadmin = \"0.0.0.0:0\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.token") && err.contains("0.0.0.0"),
        "{err}"
    );
}

#[tokio::test]
async fn near_miss_tokens_are_refused() {
    let edge = Edge::start();
    let token = edge.token.clone();
    let mut last_changed = token.clone().into_bytes();
    let n = last_changed.len();
    last_changed[n - 1] = if last_changed[n - 1] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let last_changed = String::from_utf8(last_changed).unwrap();
    for wrong in [
        &token[..token.len() - 1],
        &format!("{token}0"),
        last_changed.as_str(),
        &token.to_uppercase(),
        "",
    ] {
        let (status, _) = edge
            .admin_with_token(Method::GET, "/v1/domains", None, Some(wrong))
            .await;
        assert_eq!(status, 401, "{wrong:?}");
    }
    let (status, _) = edge.admin(Method::GET, "/v1/domains", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn private_keys_never_reach_the_log() {
    // Most verbose logging, dependencies included.
    let mut edge = Edge::start_with_env(&[("CLICKEDGE_LOG", "trace")], "");
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/", json!({})).await;
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
    assert!(edge.terminate().success());

    let db = rusqlite::Connection::open(edge.data_dir().join("clickedge.db")).unwrap();
    let leaf_key: String = db
        .query_row("SELECT key_pem FROM certificates", [], |r| r.get(0))
        .unwrap();
    let ca_key = std::fs::read_to_string(edge.data_dir().join("ca-key.pem")).unwrap();
    let log = edge.stderr();
    assert!(log.len() > 1000, "expected a verbose log");
    assert!(!log.contains("PRIVATE KEY"));
    for pem in [&leaf_key, &ca_key] {
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() >= 20)
        {
            assert!(!log.contains(&line[..20]), "key material in the log");
        }
    }
}

#[tokio::test]
async fn a_validly_sealed_token_never_redirects_to_a_non_http_url() {
    let mut edge = Edge::start_with(common::HELD_CLICKS);
    edge.add_domain(DOMAIN).await;
    let db = rusqlite::Connection::open(edge.data_dir().join("clickedge.db")).unwrap();
    let (id, secret): (u16, Vec<u8>) = db
        .query_row("SELECT id, secret FROM link_keys", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let ring = KeyRing::new(vec![LinkKey::new(
        KeyId(id),
        secret.try_into().unwrap(),
        std::time::SystemTime::UNIX_EPOCH,
    )])
    .unwrap();
    let client = edge.client(&[DOMAIN]);
    for url in [
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://example.com/",
        "//evil.example",
    ] {
        // Sealed with the edge's own key, bypassing the minting checks.
        let link = Link {
            url: url.into(),
            meta: vec![],
            minted_at: 0,
            context: None,
        };
        let token = seal(&ring, DOMAIN, &link);
        let res = client
            .get(format!("https://{DOMAIN}:{}/c/{token}", edge.https.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{url}");
        assert!(res.headers().get("location").is_none());
    }
    // The same key and a good URL do redirect: the refusal above is the scheme check.
    let good = seal(
        &ring,
        DOMAIN,
        &Link {
            url: "https://example.com/".into(),
            meta: vec![],
            minted_at: 0,
            context: None,
        },
    );
    let res = client
        .get(format!("https://{DOMAIN}:{}/c/{good}", edge.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    // That good click is the only one logged.
    let clicks = edge.clicks_at_stop();
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    assert_eq!(clicks[0]["url"], "https://example.com/");
}

#[tokio::test]
async fn the_api_never_mints_a_link_the_edge_will_not_open() {
    let edge = Edge::start_with("[limits]\nmax_uri_bytes = 600\n");
    edge.add_domain(DOMAIN).await;
    // Under the limit: minted, and it opens.
    let fits = format!("https://example.com/{}", "a".repeat(300));
    let link = edge.mint(DOMAIN, &fits, json!({})).await;
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);

    // A path that long is what the edge refuses to open...
    let res = edge
        .client(&[DOMAIN])
        .get(format!(
            "https://{DOMAIN}:{}/c/{}",
            edge.https.port(),
            "A".repeat(600)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 414);
    // ...so a link that long is not minted: 400 naming the limit, the length and the fix.
    let long = format!("https://example.com/{}", "a".repeat(600));
    let (status, body) = edge
        .admin(
            Method::POST,
            "/v1/links",
            Some(json!({ "domain": DOMAIN, "url": long })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    for part in [
        "limits.max_uri_bytes (600)",
        " bytes",
        "shorten the URL or the metadata",
    ] {
        assert!(message.contains(part), "{message}");
    }

    // `clickedge link` says the same.
    let out = Command::new(bin())
        .arg("--config")
        .arg(edge.config_path())
        .args(["link", &long, "--domain", DOMAIN])
        .args(["--admin", &format!("http://{}", edge.admin)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(message) && err.contains("400"), "{err}");
}

/// GETs `path` on the admin listener through the name `host`, which resolves to it (as a
/// rebound DNS name would), with the admin token; returns the status and the body.
async fn admin_as(edge: &Edge, host: &str, path: &str) -> (u16, String) {
    let res = reqwest::Client::builder()
        .resolve(host, edge.admin)
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{host}:{}{path}", edge.admin.port()))
        .bearer_auth(&edge.token)
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test]
async fn dns_rebinding_cannot_read_the_admin_listener() {
    let edge = Edge::start_with("[admin]\nhosts = [\"admin.example.net\"]\n");
    // A page on rebound.example, now resolving to the edge, reads through the visitor's browser.
    for path in ["/metrics", "/v1/domains", "/v1/keys", "/ui/", "/nowhere"] {
        let (status, body) = admin_as(&edge, "rebound.example", path).await;
        assert_eq!(status, 421, "{path}: {body}");
        assert!(
            body.contains("admin.hosts") && body.contains("rebound.example"),
            "{path}: {body}"
        );
        assert!(!body.contains("clickedge_"), "{path}: {body}");
    }
    assert_eq!(admin_as(&edge, "rebound.example", "/healthz").await.0, 200);

    // The listener's address, localhost (it is on loopback) and the configured name answer.
    for host in ["127.0.0.1", "localhost", "admin.example.net"] {
        let (status, body) = admin_as(&edge, host, "/metrics").await;
        assert_eq!(status, 200, "{host}: {body}");
        assert!(body.contains("clickedge_requests_total"), "{host}");
        assert_eq!(admin_as(&edge, host, "/v1/keys").await.0, 200, "{host}");
    }
    // So does the CLI, which uses the address.
    edge.cli(&["keys", "list"]);
}
