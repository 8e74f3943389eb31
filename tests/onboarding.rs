//! Domain onboarding checks against a real DNS server (pebble-challtestsrv): a correct CNAME
//! passes and gets its certificate; a stray A record, CAA for another CA, SERVFAIL and no
//! records each fail naming what is wrong and what to add; a failing check holds back the
//! certificate order until the DNS is fixed; `clickedge domain check` prints and exits by the
//! result; reports survive a restart; an edge without `[onboarding]` holds nothing back; a zone's
//! apex and a flattened CNAME point at the target's addresses (`onboarding/apex.rs`); a real
//! ACME CA's (Pebble's) refusal is explained in plain words (`onboarding/acme.rs`). And what a
//! hostile DNS cannot do: make the reachability check connect anywhere but the edge's own public
//! addresses, learn what answered there, or put control characters on a terminal or in the log
//! (`onboarding/hostile_dns.rs`).
//!
//! Everything runs on loopback, so most edges here set
//! `onboarding.danger_allow_private_addresses`; the tests of the address rules say when not.

mod common;

#[path = "onboarding/acme.rs"]
mod acme;
#[path = "onboarding/apex.rs"]
mod apex;
#[path = "onboarding/hostile_dns.rs"]
mod hostile_dns;

use std::process::Command;

use common::dns::Dns;
use common::pebble::free_tcp_port;
use common::{Edge, bin};
use reqwest::Method;
use serde_json::{Value, json};

const TARGET: &str = "edge.example.net";

/// An edge whose onboarding expects a CNAME to `edge.example.net` (or 127.0.0.1), asks `dns`,
/// and checks reachability on its own HTTP port.
fn edge_with(dns: &Dns, extra: &str) -> Edge {
    let (https, http) = (free_tcp_port(), free_tcp_port());
    let config = format!(
        "[onboarding]\ncname_target = \"{TARGET}\"\naddresses = [\"127.0.0.1\"]\ndns_servers = [\"{}\"]\nhttp_port = {http}\ndanger_allow_private_addresses = true\n{extra}",
        dns.addr
    );
    Edge::start_in_at(tempfile::tempdir().unwrap(), &config, https, http)
}

async fn start() -> (Dns, Edge) {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    let edge = edge_with(&dns, "");
    (dns, edge)
}

/// Adds `name` and returns the domain as the API answers (checks included).
async fn add(edge: &Edge, name: &str) -> Value {
    let (status, body) = edge
        .admin(Method::POST, "/v1/domains", Some(json!({ "name": name })))
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn check(edge: &Edge, name: &str) -> Value {
    let (status, body) = edge
        .admin(Method::POST, &format!("/v1/domains/{name}/check"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn find<'a>(domain: &'a Value, id: &str) -> &'a Value {
    domain["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no {id} check in {domain:#}"))
}

fn failing(domain: &Value) -> Vec<String> {
    domain["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn click(edge: &Edge, name: &str) -> reqwest::Result<reqwest::Response> {
    let link = edge.mint(name, "https://example.com/", json!({})).await;
    edge.client(&[name]).get(&link).send().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_cname_passes_every_check_and_gets_its_certificate() {
    let (dns, edge) = start().await;
    let name = "good.example.com";
    dns.set_cname(name, TARGET).await;
    // Checks run when the domain is added; the answer carries them.
    let d = add(&edge, name).await;
    assert_eq!(failing(&d), Vec::<String>::new(), "{d:#}");
    assert!(d["checked_at"].is_string(), "{d:#}");
    for id in [
        "dns-server",
        "resolves",
        "points-to-edge",
        "no-stray-aaaa",
        "caa",
        "http-reachable",
    ] {
        assert_eq!(find(&d, id)["status"], "pass", "{id}: {d:#}");
    }
    assert!(
        find(&d, "points-to-edge")["message"]
            .as_str()
            .unwrap()
            .contains("CNAME to edge.example.net")
    );
    let reach = find(&d, "http-reachable")["message"].as_str().unwrap();
    assert!(
        reach.contains(&format!("http://{name}:{}/", edge.http.port())),
        "{reach}"
    );
    assert_eq!(find(&d, "certificate")["status"], "warn");

    assert_eq!(click(&edge, name).await.unwrap().status(), 302);
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{name}"), None)
        .await;
    let cert = find(&d, "certificate");
    assert_eq!(cert["status"], "pass", "{d:#}");
    assert!(cert["message"].as_str().unwrap().starts_with("valid until"));

    // A nonce that no check run issued is not answered.
    let res = reqwest::get(format!(
        "http://{}/.well-known/clickedge-check/0123456789abcdef",
        edge.http
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 404);
}

/// In a cluster the check's fetch lands on whichever node the name's addresses lead to: here
/// the target leads only to node B, and node A's check passes through it, B answering A's
/// nonce. A stranger there (a node of another cluster, with its own seal key) does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_check_reaches_the_edge_through_another_node() {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.3"]).await;
    let http = free_tcp_port();
    let node = |ip: &str, url: &str, seal: &str| {
        let config = format!(
            "[store]\nurl = \"{url}\"\n[cluster]\nnode_id = \"node-{ip}\"\n[onboarding]\ncname_target = \"{TARGET}\"\ndns_servers = [\"{}\"]\nhttp_port = {http}\ndanger_allow_private_addresses = true\n",
            dns.addr
        );
        Edge::start_on(
            ip,
            free_tcp_port(),
            http,
            &[("CLICKEDGE_SEAL_KEY", seal)],
            &config,
        )
    };
    let url = common::postgres::shared().fresh_database();
    let a = node("127.0.0.2", &url, &"a1".repeat(32));
    let _b = node("127.0.0.3", &url, &"a1".repeat(32));
    let name = "links.cluster.example";
    dns.set_cname(name, TARGET).await;
    let d = add(&a, name).await;
    assert_eq!(failing(&d), Vec::<String>::new(), "{d:#}");
    let reach = find(&d, "http-reachable")["message"].as_str().unwrap();
    assert!(reach.contains("127.0.0.3"), "{reach}");

    drop(_b);
    let stranger_db = common::postgres::shared().fresh_database();
    let _stranger = node("127.0.0.3", &stranger_db, &"b2".repeat(32));
    let d = check(&a, name).await;
    assert_eq!(failing(&d), vec!["http-reachable"], "{d:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_a_record_fails_naming_it_holds_back_the_order_until_fixed() {
    let (dns, edge) = start().await;
    let name = "stray.example.com";
    dns.add_a(name, &["192.0.2.7"]).await;
    let d = add(&edge, name).await;
    assert_eq!(failing(&d), vec!["points-to-edge"], "{d:#}");
    let c = find(&d, "points-to-edge");
    assert_eq!(c["blocking"], true);
    // `domain add` says what holds the certificate back.
    let out = edge.cli(&["domain", "add", name]);
    assert!(
        out.contains(
            "certificate: none until points-to-edge passes; then issued at the first HTTPS request"
        ) && out.contains("no certificate until these are fixed"),
        "{out}"
    );
    let message = c["message"].as_str().unwrap();
    assert!(message.contains("an A record 192.0.2.7"), "{message}");
    let fix = c["fix"].as_str().unwrap();
    assert!(fix.contains("stray.example.com. IN A 192.0.2.7"), "{fix}");
    assert!(
        fix.contains("stray.example.com. 300 IN CNAME edge.example.net."),
        "{fix}"
    );
    // The same fix as records a DNS provider's form takes, the name relative to the zone too.
    assert_eq!(
        c["fix_records"],
        json!([
            {"action": "delete", "type": "A", "name": name, "host": "stray",
             "zone": "example.com", "value": "192.0.2.7", "ttl": null},
            {"action": "add", "type": "CNAME", "name": name, "host": "stray",
             "zone": "example.com", "value": TARGET, "ttl": 300},
        ]),
        "{c:#}"
    );
    // The edge never fetches from an address that is not its own.
    assert!(
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "http-reachable")
    );

    // No order while the check fails; last_error says which check.
    assert!(
        click(&edge, name).await.is_err(),
        "no certificate, no click"
    );
    let (_, d) = edge
        .admin(Method::GET, &format!("/v1/domains/{name}"), None)
        .await;
    let last_error = d["certificate"]["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("`points-to-edge` check fails"),
        "{last_error}"
    );
    assert!(last_error.contains("192.0.2.7"), "{last_error}");
    assert_eq!(
        edge.metric("clickedge_certificates_issued_total{issuer=\"local\"}")
            .await,
        0.0
    );
    assert_eq!(find(&d, "certificate")["status"], "warn", "{d:#}");

    // The customer fixes the record and checks again: the next request gets its certificate.
    dns.clear_a(name).await;
    dns.set_cname(name, TARGET).await;
    let d = check(&edge, name).await;
    assert_eq!(failing(&d), Vec::<String>::new(), "{d:#}");
    assert!(d["certificate"]["last_error"].is_null(), "{d:#}");
    assert_eq!(click(&edge, name).await.unwrap().status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caa_for_another_ca_names_the_identity_to_allow_and_warns_only_under_the_local_ca() {
    let (dns, edge) = start().await;
    let name = "links.shop.example.com";
    dns.set_cname(name, TARGET).await;
    // On the parent: CAA is found by climbing the tree.
    dns.add_caa_issue("shop.example.com", "other-ca.example")
        .await;
    let d = add(&edge, name).await;
    assert_eq!(failing(&d), Vec::<String>::new(), "{d:#}");
    let c = find(&d, "caa");
    assert_eq!(c["status"], "warn", "{c:#}");
    let message = c["message"].as_str().unwrap();
    assert!(
        message
            .contains("CAA at shop.example.com allows only other-ca.example, not letsencrypt.org")
            && message.contains("the edge's built-in CA does not read CAA"),
        "{message}"
    );
    assert!(
        c["fix"]
            .as_str()
            .unwrap()
            .ends_with("shop.example.com. 300 IN CAA 0 issue \"letsencrypt.org\""),
        "{c:#}"
    );
    assert_eq!(
        c["fix_records"],
        json!([{"action": "add", "type": "CAA", "name": "shop.example.com", "host": "shop",
                "zone": "example.com", "value": "0 issue \"letsencrypt.org\"", "ttl": 300}]),
        "{c:#}"
    );
    // The built-in CA does not read CAA: a warning about the CA to come, not a hold.
    assert_eq!(c["blocking"], false, "{c:#}");
    let out = edge.cli(&["domain", "add", name]);
    assert!(
        out.contains("certificate: issued at the first HTTPS request for this name")
            && out.contains("nothing fails")
            && !out.contains("no certificate until"),
        "{out}"
    );
    assert_eq!(click(&edge, name).await.unwrap().status(), 302);
}

/// RFC 8659 follows a CNAME at the name: the CAA set found is the target's, and only there can
/// it change (no record sits next to a CNAME), so the fix names it, outside the customer's zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caa_reached_through_the_cname_is_named_where_it_is() {
    let (dns, edge) = start().await;
    let name = "links.cnamed.example.com";
    dns.set_cname(name, TARGET).await;
    dns.add_caa_issue(TARGET, "other-ca.example").await;
    let d = add(&edge, name).await;
    let c = find(&d, "caa");
    // A warning under the built-in CA, which reads no CAA.
    assert_eq!(c["status"], "warn", "{d:#}");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "CAA at {TARGET} (where the CNAME of {name} leads) allows only other-ca.example"
        )),
        "{message}"
    );
    let fix = c["fix"].as_str().unwrap();
    assert!(
        fix.contains(&format!("whoever runs the zone of {TARGET}")),
        "{fix}"
    );
    // The edge's own name: the operator's zone, nothing for the domain's owner to change.
    assert!(fix.starts_with("Tell the edge's operator: "), "{fix}");
    assert!(
        fix.ends_with(&format!("{TARGET}. 300 IN CAA 0 issue \"letsencrypt.org\"")),
        "{fix}"
    );
    assert_eq!(c["fix_records"][0]["name"], TARGET, "{c:#}");
    assert!(c["fix_records"][0]["host"].is_null(), "{c:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_is_reported_as_a_dns_server_failure_naming_the_resolver() {
    let (dns, edge) = start().await;
    let name = "broken.example.com";
    dns.set_servfail(name).await;
    let d = add(&edge, name).await;
    assert_eq!(failing(&d), vec!["dns-server"], "{d:#}");
    let c = find(&d, "dns-server");
    let message = c["message"].as_str().unwrap();
    assert!(message.starts_with("DNS server failure"), "{message}");
    assert!(message.contains(&dns.addr.to_string()), "{message}");
    assert!(
        message.contains("SERVFAIL for broken.example.com (CNAME, A, AAAA, CAA)"),
        "{message}"
    );
    assert!(c["fix"].as_str().unwrap().contains("NS and DS records"));
    // Nothing is guessed from a failed lookup.
    assert!(
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "resolves")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_records_fail_with_the_record_to_add() {
    let (_dns, edge) = start().await;
    let name = "nothing.example.com";
    let d = add(&edge, name).await;
    assert_eq!(failing(&d), vec!["resolves"], "{d:#}");
    let c = find(&d, "resolves");
    assert_eq!(
        c["message"],
        "nothing.example.com does not resolve: it has no CNAME, A or AAAA record"
    );
    assert_eq!(
        c["fix"],
        "Add this record at your DNS provider:\nnothing.example.com. 300 IN CNAME edge.example.net."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_http_port_fails_naming_the_address_to_open() {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    let name = "closed.example.com";
    dns.set_cname(name, TARGET).await;
    // Nothing listens there: as if a firewall dropped port 80 in front of the edge.
    let closed = free_tcp_port();
    let edge = Edge::start_with(&format!(
        "[onboarding]\ncname_target = \"{TARGET}\"\ndns_servers = [\"{}\"]\nhttp_port = {closed}\ndanger_allow_private_addresses = true\n",
        dns.addr
    ));
    let d = add(&edge, name).await;
    assert_eq!(failing(&d), vec!["http-reachable"], "{d:#}");
    let c = find(&d, "http-reachable");
    // Reached or not, and through which of the edge's addresses; never what answered or why,
    // which would turn the check into a port scanner.
    assert_eq!(
        c["message"],
        format!("http://{name}:{closed}/ through 127.0.0.1:{closed} did not reach the edge")
    );
    let log = edge.stderr();
    assert!(
        log.contains("reachability check did not reach the edge")
            && log.contains("connection refused"),
        "the operator log keeps the reason: {log}"
    );
    assert!(
        c["fix"].as_str().unwrap().starts_with(&format!(
            "Edge operator: port {closed} of 127.0.0.1 must reach the edge"
        )),
        "{c:#}"
    );
    // The local issuer validates nothing over HTTP: this does not hold back the certificate.
    assert_eq!(c["blocking"], false);
    assert_eq!(click(&edge, name).await.unwrap().status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_check_prints_each_check_and_exits_by_the_result() {
    let (dns, edge) = start().await;
    dns.set_cname("good.example.com", TARGET).await;
    dns.add_a("bad.example.com", &["192.0.2.7"]).await;
    dns.add_aaaa("bad.example.com", &["2001:db8::7"]).await;
    edge.add_domain("good.example.com").await;
    edge.add_domain("bad.example.com").await;
    let admin = format!("http://{}", edge.admin);
    let run = |args: &[&str]| {
        Command::new(bin())
            .arg("--config")
            .arg(edge.config_path())
            .args(["domain", "check"])
            .args(args)
            .args(["--admin", &admin])
            .output()
            .unwrap()
    };

    let out = run(&["good.example.com"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("good.example.com: ready\n"), "{stdout}");
    assert!(
        stdout.contains("✓ points-to-edge  good.example.com is a CNAME to edge.example.net"),
        "{stdout}"
    );
    assert!(stdout.contains("✓ http-reachable"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "plain text when piped: {stdout:?}"
    );

    let out = run(&["bad.example.com"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("bad.example.com: 2 checks fail"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✗ points-to-edge  bad.example.com has an A record 192.0.2.7"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✗ no-stray-aaaa   bad.example.com has an AAAA record 2001:db8::7"),
        "{stdout}"
    );
    assert!(
        stdout.contains("    fix: Delete these records:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("         bad.example.com. 300 IN CNAME edge.example.net."),
        "{stdout}"
    );
    assert!(
        stderr.contains("2 checks fail for bad.example.com"),
        "{stderr}"
    );

    let out = run(&["bad.example.com", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(failing(&v), vec!["points-to-edge", "no-stray-aaaa"]);

    let out = run(&["unknown.example.com"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("clickedge domain add unknown.example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_domain_is_checked_again_on_its_own_until_it_works() {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    let edge = edge_with(&dns, "recheck_interval = \"10s\"\n");
    let name = "later.example.com";
    let first = add(&edge, name).await;
    assert_eq!(failing(&first), vec!["resolves"]);
    // The customer adds the record and does nothing else.
    dns.set_cname(name, TARGET).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, d) = edge
            .admin(Method::GET, &format!("/v1/domains/{name}"), None)
            .await;
        if d["checked_at"] != first["checked_at"] && failing(&d).is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not re-checked within 60 s: {d:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(click(&edge, name).await.unwrap().status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_checks_survive_a_restart() {
    let (dns, edge) = start().await;
    dns.add_a("stray.example.com", &["192.0.2.7"]).await;
    let before = add(&edge, "stray.example.com").await;
    let (https, http) = (edge.https.port(), edge.http.port());
    let config = std::fs::read_to_string(edge.config_path()).unwrap();
    let tables = config[config.find("[onboarding]").unwrap()..].to_owned();
    let dir = edge.stop_keep_dir();
    let edge = Edge::start_in_at(dir, &tables, https, http);
    let (_, after) = edge
        .admin(Method::GET, "/v1/domains/stray.example.com", None)
        .await;
    assert_eq!(after["checked_at"], before["checked_at"]);
    assert_eq!(failing(&after), vec!["points-to-edge"]);
    // The stored failure still holds back the order after the restart.
    assert!(click(&edge, "stray.example.com").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_onboarding_config_checks_on_request_and_holds_nothing_back() {
    let dns = Dns::start().await;
    dns.add_a("stray.example.com", &["192.0.2.7"]).await;
    let edge = Edge::start_with(&format!("[onboarding]\ndns_servers = [\"{}\"]\n", dns.addr));
    let d = add(&edge, "stray.example.com").await;
    assert_eq!(d["checks"], json!([]), "not checked on add: {d:#}");
    assert!(d["checked_at"].is_null());
    let d = check(&edge, "stray.example.com").await;
    assert_eq!(find(&d, "points-to-edge")["status"], "warn", "{d:#}");
    assert!(
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["blocking"] == false)
    );
    assert!(
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "http-reachable")
    );
    // Issuance at the first handshake, exactly as without onboarding.
    assert_eq!(
        click(&edge, "stray.example.com").await.unwrap().status(),
        302
    );
}
