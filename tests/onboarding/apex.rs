//! Names that cannot be a CNAME to `cname_target`: a zone's apex, and names whose DNS provider
//! flattens CNAMEs into address records. With `cname_target` alone (no `addresses`), their A
//! records at the target's own addresses point at the edge.

use reqwest::Method;
use serde_json::json;

use super::common::Edge;
use super::common::dns::Dns;
use super::common::pebble::free_tcp_port;
use super::{TARGET, add, click, failing, find};

/// A DNS server where the edge's name resolves to 127.0.0.1, and an edge that knows only that
/// name (`cname_target`), asks it, and checks reachability on its own HTTP port.
async fn start_knowing_only_its_name() -> (Dns, Edge) {
    let dns = Dns::start().await;
    dns.add_a(TARGET, &["127.0.0.1"]).await;
    let (https, http) = (free_tcp_port(), free_tcp_port());
    let config = format!(
        "[onboarding]\ncname_target = \"{TARGET}\"\ndns_servers = [\"{}\"]\nhttp_port = {http}\ndanger_allow_private_addresses = true\n",
        dns.addr
    );
    let edge = Edge::start_in_at(tempfile::tempdir().unwrap(), &config, https, http);
    (dns, edge)
}

/// The apex's provider answers the target's address (an ALIAS): every check passes, the edge
/// reaches itself through it, the first click gets its certificate. Another address at an apex
/// is replaced by the target's, not by a CNAME the apex cannot hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apex_at_the_targets_address_passes_and_a_stray_one_gets_that_address() {
    let (dns, edge) = start_knowing_only_its_name().await;

    let name = "shop.test";
    dns.add_a(name, &["127.0.0.1"]).await;
    let d = add(&edge, name).await;
    assert_eq!(failing(&d), Vec::<String>::new(), "{d:#}");
    let points = find(&d, "points-to-edge")["message"].as_str().unwrap();
    assert_eq!(
        points,
        format!("{name} points at the edge: 127.0.0.1, as {TARGET} does")
    );
    assert_eq!(find(&d, "http-reachable")["status"], "pass", "{d:#}");
    assert_eq!(click(&edge, name).await.unwrap().status(), 302);

    let stray = "othershop.test";
    dns.add_a(stray, &["192.0.2.7"]).await;
    let d = add(&edge, stray).await;
    assert_eq!(failing(&d), vec!["points-to-edge"], "{d:#}");
    let c = find(&d, "points-to-edge");
    let fix = c["fix"].as_str().unwrap();
    assert!(
        fix.starts_with(&format!(
            "Point {stray} at {TARGET} with your DNS provider's ALIAS, ANAME or CNAME flattening"
        )),
        "{fix}"
    );
    assert_eq!(
        c["fix_records"],
        json!([
            {"action": "delete", "type": "A", "name": stray, "host": "@",
             "zone": stray, "value": "192.0.2.7", "ttl": null},
            {"action": "add", "type": "A", "name": stray, "host": "@",
             "zone": stray, "value": "127.0.0.1", "ttl": 300},
        ]),
        "{c:#}"
    );
    assert!(click(&edge, stray).await.is_err(), "held back, no click");

    // The customer follows the fix: the next check passes and the click is answered.
    dns.clear_a(stray).await;
    dns.add_a(stray, &["127.0.0.1"]).await;
    let (status, d) = edge
        .admin(Method::POST, &format!("/v1/domains/{stray}/check"), None)
        .await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(failing(&d), Vec::<String>::new(), "{d:#}");
    assert_eq!(click(&edge, stray).await.unwrap().status(), 302);
}

/// Below the apex a provider that flattens every CNAME answers the target's addresses too:
/// that passes, where a name at other addresses is still asked for the CNAME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flattened_cname_passes_below_the_apex_and_a_stray_name_gets_the_cname() {
    let (dns, edge) = start_knowing_only_its_name().await;
    let flat = "links.flat.test";
    dns.add_a(flat, &["127.0.0.1"]).await;
    let d = add(&edge, flat).await;
    assert_eq!(failing(&d), Vec::<String>::new(), "{d:#}");
    assert_eq!(click(&edge, flat).await.unwrap().status(), 302);

    let stray = "links.stray.test";
    dns.add_a(stray, &["192.0.2.7"]).await;
    let d = add(&edge, stray).await;
    let c = find(&d, "points-to-edge");
    assert_eq!(c["fix_records"][1]["type"], "CNAME", "{c:#}");
    assert_eq!(c["fix_records"][1]["value"], TARGET, "{c:#}");
}
