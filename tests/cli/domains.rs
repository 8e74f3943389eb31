//! Domain commands as an operator meets them: names in both forms, fallback URLs, mistakes
//! answered for what they are, and names the built-in CA will not vouch for.

use std::process::Command;

use super::common::{Edge, bin};
use super::run_client;

#[tokio::test]
async fn an_internationalised_domain_is_added_as_its_a_labels_and_shown_in_both_forms() {
    let edge = Edge::start();
    let (status, body) = edge
        .admin(
            reqwest::Method::POST,
            "/v1/domains",
            Some(serde_json::json!({ "name": "bücher.example" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "xn--bcher-kva.example");
    assert_eq!(body["unicode"], "bücher.example");
    edge.add_domain("links.example.com").await;
    let (_, ascii) = edge
        .admin(reqwest::Method::GET, "/v1/domains/links.example.com", None)
        .await;
    assert_eq!(
        ascii["unicode"], "links.example.com",
        "always present: {ascii}"
    );

    let (ok, out, err) = run_client(&edge, &["domain", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("xn--bcher-kva.example (bücher.example)"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("links.example.com"))
        .unwrap();
    assert!(
        !line.contains('('),
        "no second form for an ASCII name: {line}"
    );
    let (ok, out, err) = run_client(&edge, &["domain", "show", "bücher.example"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("name:        xn--bcher-kva.example (bücher.example)"),
        "{out}"
    );
    let link = edge
        .mint(
            "bücher.example",
            "https://example.com/",
            serde_json::json!({}),
        )
        .await;
    assert!(link.starts_with("https://xn--bcher-kva.example:"), "{link}");
    assert_eq!(edge.click_status("xn--bcher-kva.example", &link).await, 302);
}

#[tokio::test]
async fn domain_add_takes_a_fallback_url_and_domain_set_changes_or_clears_it() {
    let edge = Edge::start();
    let fallback = "https://www.example.com/expired";
    let (ok, out, err) = run_client(
        &edge,
        &[
            "domain",
            "add",
            "links.example.com",
            "--fallback-url",
            fallback,
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&format!("fallback:    {fallback}")), "{out}");
    let (_, body) = edge
        .admin(reqwest::Method::GET, "/v1/domains/links.example.com", None)
        .await;
    assert_eq!(body["fallback_url"], fallback);
    let (_, out, _) = run_client(&edge, &["domain", "list"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("links.example.com"))
        .unwrap();
    assert!(line.ends_with(fallback), "{line}");
    let (_, out, _) = run_client(&edge, &["domain", "show", "links.example.com"]);
    assert!(out.contains(&format!("fallback:    {fallback}")), "{out}");

    let (ok, _, err) = run_client(
        &edge,
        &[
            "domain",
            "set",
            "links.example.com",
            "--fallback-url",
            "ftp://x.example/",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("fallback_url") && err.contains("http"),
        "{err}"
    );
    let (ok, _, err) = run_client(&edge, &["domain", "set", "links.example.com"]);
    assert!(!ok, "set with nothing to change");
    assert!(err.contains("--fallback-url"), "{err}");

    let (ok, out, err) = run_client(
        &edge,
        &["domain", "set", "links.example.com", "--no-fallback-url"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("fallback none"), "{out}");
    let (_, body) = edge
        .admin(reqwest::Method::GET, "/v1/domains/links.example.com", None)
        .await;
    assert_eq!(body["fallback_url"], serde_json::Value::Null);
    let (ok, _, _) = run_client(
        &edge,
        &[
            "domain",
            "set",
            "links.example.com",
            "--fallback-url",
            "https://a.example/",
        ],
    );
    assert!(ok);
    let (_, body) = edge
        .admin(reqwest::Method::GET, "/v1/domains/links.example.com", None)
        .await;
    assert_eq!(body["fallback_url"], "https://a.example/");
}

/// Mistakes an operator makes with names and removals get an answer about the mistake: a URL or
/// a wildcard is named as such, a name added again says so, and a removal of something that is
/// not there fails before asking to confirm it.
#[tokio::test]
async fn domain_and_key_mistakes_are_answered_for_what_they_are() {
    let edge = Edge::start();
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("--config")
            .arg(edge.config_path())
            .args(args)
            .args(["--admin", &format!("http://{}", edge.admin)])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    // Refused, each with its words: before any request for a name that is no name (in a path it
    // would only meet "no such endpoint"); standard input is not a terminal, so a removal that
    // could go ahead would ask for --yes, and one that cannot must not.
    let refused = |args: &[&str], says: &str| {
        let (code, out) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {out}");
        assert!(out.contains(says), "{args:?}: {out}");
        out
    };
    refused(
        &["domain", "add", "https://links.example.com/"],
        "a URL, not a host name",
    );
    refused(
        &["domain", "add", "*.example.com"],
        "wildcards are not served",
    );
    refused(
        &["domain", "remove", "https://links.example.com/"],
        "a URL, not a host name",
    );
    refused(
        &["domain", "add", "xn--zz.example"],
        "not a valid internationalised domain name",
    );

    let (code, out) = run(&["domain", "add", "links.example.com"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("added links.example.com\n"), "{out}");
    let (code, out) = run(&["domain", "add", "Links.Example.COM."]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("links.example.com (given as Links.Example.COM.) was registered already"),
        "{out}"
    );

    for (args, says) in [
        (
            &["domain", "remove", "never.example.com"][..],
            "never.example.com",
        ),
        (&["keys", "remove", "999"], "no link key 999"),
        (&["keys", "remove", "1"], "key 1 is the sealing key"),
    ] {
        let out = refused(args, says);
        assert!(!out.contains("--yes"), "{args:?}: {out}");
    }
    refused(
        &["domain", "remove", "links.example.com"],
        &format!(
            "domain remove links.example.com --admin http://{} --yes",
            edge.admin
        ),
    );
}

/// The built-in CA vouches only for `tls.local_ca_names`: a name outside them is added, and the
/// operator is told at once, and by `domain show` from then on, why it will get no certificate
/// and what to change.
#[tokio::test]
async fn adding_a_name_the_built_in_ca_will_not_vouch_for_warns_at_once() {
    let edge = Edge::start();
    let out = edge.cli(&["domain", "add", "links.mycorp.io"]);
    assert!(out.starts_with("added links.mycorp.io\n"), "{out}");
    assert!(
        out.contains(
            "warning:     the built-in CA vouches only for names under tls.local_ca_names"
        ) && out.contains("not links.mycorp.io: add its zone there"),
        "{out}"
    );
    assert!(
        out.contains("certificate: none (see the warning)"),
        "no promise of a certificate: {out}"
    );
    let out = edge.cli(&["domain", "show", "links.mycorp.io"]);
    assert!(
        out.contains(
            "warning:     the built-in CA vouches only for names under tls.local_ca_names"
        ),
        "domain show says it too: {out}"
    );
    let out = edge.cli(&["domain", "add", "links.example.com"]);
    assert!(!out.contains("warning"), "{out}");
    assert!(
        out.contains("certificate: issued at the first HTTPS request for this name"),
        "{out}"
    );
    let out = edge.cli(&["domain", "show", "links.example.com"]);
    assert!(!out.contains("warning"), "{out}");
}

#[tokio::test]
async fn domains_are_listed_a_page_at_a_time_in_name_order_by_api_and_cli() {
    let edge = Edge::start();
    // Byte order: "a-c" before "ab" ('-' sorts before 'b').
    let names = ["b.example.com", "ab.example.com", "a-c.example.com"];
    for name in names {
        edge.add_domain(name).await;
    }
    // One of them with a certificate: a listing shows it as showing the domain does.
    let link = edge
        .mint(
            "ab.example.com",
            "https://example.com/",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(edge.click_status("ab.example.com", &link).await, 302);
    let get = |path: &'static str| edge.admin(reqwest::Method::GET, path, None);

    let (status, all) = get("/v1/domains").await;
    assert_eq!(status, 200, "{all}");
    let listed: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["a-c.example.com", "ab.example.com", "b.example.com"]
    );
    let (_, shown) = get("/v1/domains/ab.example.com").await;
    assert_eq!(all[1]["certificate"], shown["certificate"]);
    assert_eq!(all[1]["certificate"]["status"], "valid");

    let (_, first) = get("/v1/domains?limit=2").await;
    assert_eq!(first.as_array().unwrap().len(), 2);
    assert_eq!(first[1]["name"], "ab.example.com");
    let (_, rest) = get("/v1/domains?after=ab.example.com&limit=2").await;
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(rest[0]["name"], "b.example.com");
    let (_, after) = get("/v1/domains?after=a-c.example.com").await;
    assert_eq!(
        after.as_array().unwrap().len(),
        2,
        "all after the name: {after}"
    );
    // Any text is a place to start, in the case names are stored in.
    let (_, from_b) = get("/v1/domains?after=B").await;
    assert_eq!(from_b.as_array().unwrap().len(), 1, "{from_b}");
    assert_eq!(from_b[0]["name"], "b.example.com");

    let long = format!("/v1/domains?after={}", "a".repeat(254));
    for (path, names) in [
        ("/v1/domains?limit=0", "limit \"0\""),
        ("/v1/domains?limit=1001", "limit \"1001\""),
        ("/v1/domains?limit=2&limit=1000", "limit is given twice"),
        (
            "/v1/domains?after=a%00b",
            "after \"a\\0b\": a control character",
        ),
        (long.as_str(), "after: 254 bytes"),
        ("/v1/domains?page=2", "\"page\""),
    ] {
        let (status, body) = edge.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(names), "{path}: {error}");
    }

    let (ok, out, err) = run_client(&edge, &["domain", "list", "--limit", "2"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("more may follow: run the same command with --after ab.example.com"),
        "{out}"
    );
    let (ok, out, err) = run_client(
        &edge,
        &[
            "domain",
            "list",
            "--after",
            "ab.example.com",
            "--limit",
            "2",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("b.example.com") && !out.contains("more may follow"),
        "{out}"
    );
    let (ok, out, err) = run_client(&edge, &["domain", "list", "--after", "b.example.com"]);
    assert!(ok, "{err}");
    assert!(out.contains("no domains after b.example.com"), "{out}");
    let (ok, _, err) = run_client(&edge, &["domain", "list", "--limit", "0"]);
    assert!(!ok && err.contains("0"), "{err}");
}
