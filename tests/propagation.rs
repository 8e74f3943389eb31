//! Cluster mode with real processes: nodes sharing one throwaway PostgreSQL. A write on one node
//! reaches the others' memory by the NOTIFY hint (with no scan due during the test), by the scan
//! when notifications are lost, and nodes keep serving with the database stopped, answering admin
//! writes with 503, and resync when it is back, without a restart. Unknown SNI never costs a
//! store query.

mod common;

use std::time::{Duration, Instant};

use common::postgres::{self, PgServer};
use common::{Edge, within};
use reqwest::Method;
use serde_json::{Value, json};

const DEST: &str = "https://shop.example.com/sale";

/// A scan interval past the test: a change that arrives came by the NOTIFY hint.
const NO_SCAN: &str = "1h";

/// How long a test waits for a change before it fails: a hang guard, not a speed claim (the
/// hint takes milliseconds).
const ARRIVES: Duration = Duration::from_secs(60);

/// A node `id` on the database at `url`, scanning every `scan`.
fn node(url: &str, id: &str, scan: &str) -> Edge {
    node_with(url, id, scan, "")
}

/// [`node`] with more configuration (`[table]`s).
fn node_with(url: &str, id: &str, scan: &str, extra: &str) -> Edge {
    Edge::start_with_env(
        &[("CLICKEDGE_SEAL_KEY", &"5e".repeat(32))],
        &format!(
            "[store]\nurl = \"{url}\"\n[cluster]\nnode_id = \"{id}\"\nscan_interval = \"{scan}\"\n{extra}"
        ),
    )
}

/// Every node's CA: a certificate may come from any of them.
fn roots(nodes: &[&Edge]) -> String {
    nodes.iter().map(|n| n.ca_pem.as_str()).collect()
}

/// The status of a click on `link` (as minted, `https://<domain>/c/...`) sent to `edge`; none
/// when the handshake or the request fails (the domain is not served there).
async fn click(edge: &Edge, roots: &str, domain: &str, link: &str) -> Option<u16> {
    let client = edge
        .client_trusting(roots, &[domain])
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let res = client.get(edge.on_port(link)).send().await.ok()?;
    Some(res.status().as_u16())
}

/// A link to `DEST` minted on `edge`, as minted (no port).
async fn mint(edge: &Edge, domain: &str) -> String {
    let (status, body) = edge
        .admin(
            Method::POST,
            "/v1/links",
            Some(json!({ "domain": domain, "url": DEST, "meta": {} })),
        )
        .await;
    assert_eq!(status, 201, "minting: {body}");
    body["link"].as_str().expect("link").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_keys_and_removals_reach_the_other_node_by_the_hint() {
    let url = postgres::shared().fresh_database();
    let a = node(&url, "edge-a", NO_SCAN);
    let b = node(&url, "edge-b", NO_SCAN);
    let roots = roots(&[&a, &b]);
    let domain = "p1.example.com";

    a.add_domain(domain).await;
    let link = mint(&a, domain).await;
    let took = within(ARRIVES, || async {
        click(&b, &roots, domain, &link).await == Some(302)
    })
    .await;
    assert!(took.is_some(), "the domain added on a is not served by b");

    // A key rotated on a seals only once every node has it; a link minted right after the
    // rotation opens on b at once.
    let (status, key) = a.admin(Method::POST, "/v1/keys", None).await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(
        key["active"], false,
        "a new key sealing before it propagated: {key}"
    );
    let fresh = mint(&a, domain).await;
    assert_eq!(click(&b, &roots, domain, &fresh).await, Some(302));
    let listed = within(ARRIVES, || async {
        let (_, keys) = b.admin(Method::GET, "/v1/keys", None).await;
        keys.as_array().is_some_and(|k| k.len() == 2)
    })
    .await;
    assert!(listed.is_some(), "b does not hold the new key");

    let (status, body) = a
        .admin(Method::DELETE, &format!("/v1/domains/{domain}"), None)
        .await;
    assert_eq!(status, 204, "{body}");
    let gone = within(ARRIVES, || async {
        click(&b, &roots, domain, &link).await.is_none()
    })
    .await;
    assert!(gone.is_some(), "b still serves the domain removed on a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_notifications_lost_changes_arrive_by_the_scan() {
    let server = postgres::shared();
    let url = server.fresh_database();
    let db = url.rsplit('/').next().expect("database").to_owned();
    let a = node(&url, "edge-a", "3s");
    let b = node(&url, "edge-b", "3s");
    let roots = roots(&[&a, &b]);

    // Both listening first: a node is ready before its listener has connected (changes reach
    // it by the scan meanwhile), and on a busy machine that can take a moment.
    let listening = within(Duration::from_secs(30), || async {
        server
            .psql(
                &db,
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE 'LISTEN %' AND datname = current_database()",
            )
            .trim()
            == "2"
    })
    .await;
    assert!(listening.is_some(), "both nodes listen within 30 s");
    // The listeners' backends killed: the nodes scan and listen again.
    let killed = server.psql(
        &db,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE 'LISTEN %' AND datname = current_database()",
    );
    assert_eq!(killed.trim(), "2", "both nodes listen");
    a.add_domain("p2.example.com").await;
    let link = mint(&a, "p2.example.com").await;
    let took = within(Duration::from_secs(30), || async {
        click(&b, &roots, "p2.example.com", &link).await == Some(302)
    })
    .await;
    assert!(
        took.is_some(),
        "not served by b within 30 s of the listener's death"
    );

    // A write that sends no notification at all (triggers off for this session: the row still
    // takes a version, as a lost notification leaves it): found by the scan, within its interval.
    server.psql(
        &db,
        "SET session_replication_role = replica; \
         INSERT INTO domains (name, origin, created_at) VALUES ('p3.example.com', 'admin', 0)",
    );
    let link = link.replace("p2.example.com", "p3.example.com");
    let took = within(ARRIVES, || async {
        click(&b, &roots, "p3.example.com", &link).await.is_some()
    })
    .await;
    assert!(
        took.is_some(),
        "a change without a notification never arrived"
    );
}

/// Clicks `link` on every node in turn until `stop`; (302 answers, anything else).
async fn load(
    nodes: Vec<(&Edge, String)>,
    roots: &str,
    domain: &str,
    stop: Instant,
) -> (usize, Vec<String>) {
    let (mut ok, mut failed) = (0, Vec::new());
    while Instant::now() < stop {
        for (edge, link) in &nodes {
            // A new client each time: a fresh handshake, the certificate from memory.
            match click(edge, roots, domain, link).await {
                Some(302) => ok += 1,
                other => failed.push(format!("{}: {other:?}", edge.https)),
            }
        }
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_stopped_three_nodes_keep_serving_refuse_writes_and_resync_after() {
    let server = PgServer::start();
    let url = server.fresh_database();
    // Every click logged, however fast the load comes from one address.
    let unbounded = "[clicks]\nmax_clicks_per_ip_per_sec = 0\n";
    let a = node_with(&url, "edge-a", "30s", unbounded);
    let b = node_with(&url, "edge-b", "30s", unbounded);
    let c = node_with(&url, "edge-c", "30s", unbounded);
    let nodes = [&a, &b, &c];
    let roots = roots(&nodes);
    let domain = "s1.example.com";
    a.add_domain(domain).await;
    let link = mint(&a, domain).await;
    // Every node serves the domain before the outage: its certificate is in their memory.
    for edge in nodes {
        let served = within(ARRIVES, || async {
            click(edge, &roots, domain, &link).await == Some(302)
        });
        assert!(served.await.is_some());
    }

    server.stop();
    let outage = Instant::now() + Duration::from_secs(20);
    let (clicks, writes) = tokio::join!(
        load(
            nodes.iter().map(|n| (*n, link.clone())).collect(),
            &roots,
            domain,
            outage
        ),
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let started = Instant::now();
            let add = a
                .admin(
                    Method::POST,
                    "/v1/domains",
                    Some(json!({ "name": "s2.example.com" })),
                )
                .await;
            let rotate = b.admin(Method::POST, "/v1/keys", None).await;
            // A remove the store refused changes nothing: c keeps serving the name (the load
            // goes on clicking it there).
            let remove = c
                .admin(Method::DELETE, &format!("/v1/domains/{domain}"), None)
                .await;
            (vec![add, rotate, remove], started.elapsed())
        }
    );
    let (ok, failed) = clicks;
    assert!(
        failed.is_empty(),
        "{} of {} clicks failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 0, "no click answered during the outage");
    let (answers, _) = writes;
    for (status, body) in &answers {
        assert_eq!(*status, 503, "{body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains("database is unreachable"), "{message}");
    }
    // A read of the store says it cannot read, not that a change was not made.
    let (status, body) = a.admin(Method::GET, "/v1/cluster", None).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("cannot be read now"), "{message}");
    assert!(!message.contains("change"), "{message}");
    assert_eq!(click(&c, &roots, domain, &link).await, Some(302));

    // Every click answered is in a click log: none lost.
    let expected = ok + nodes.len() + 1;
    let logged = || nodes.iter().map(|n| n.clicks().len()).sum::<usize>();
    let settled = within(Duration::from_secs(10), || async { logged() == expected }).await;
    assert!(
        settled.is_some(),
        "{} clicks logged, {expected} answered",
        logged()
    );

    // Back: writes work again and reach the other nodes, nobody restarted.
    server.start_again();
    let back = within(Duration::from_secs(30), || async {
        a.admin(
            Method::POST,
            "/v1/domains",
            Some(json!({ "name": "s2.example.com" })),
        )
        .await
        .0 == 201
    })
    .await;
    assert!(
        back.is_some(),
        "admin writes still fail 30 s after the database returned"
    );
    let link2 = mint(&a, "s2.example.com").await;
    for edge in [&b, &c] {
        let seen = within(Duration::from_secs(30), || async {
            click(edge, &roots, "s2.example.com", &link2).await == Some(302)
        })
        .await;
        assert!(
            seen.is_some(),
            "{} did not resync after the database returned",
            edge.https
        );
    }
    // The refused remove left the name registered everywhere.
    for edge in nodes {
        assert_eq!(click(edge, &roots, domain, &link).await, Some(302));
    }
    // Every node heartbeats again, caught up with every change.
    let caught_up = within(Duration::from_secs(30), || async {
        let status: Value = a.admin(Method::GET, "/v1/cluster", None).await.1;
        status["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["alive"] == true && n["lag"] == 0))
    })
    .await;
    let status: Value = a.admin(Method::GET, "/v1/cluster", None).await.1;
    assert!(caught_up.is_some(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_never_touch_the_database() {
    let url = postgres::shared().fresh_database();
    let a = node(&url, "edge-a", "1h");
    let known = "k1.example.com";
    a.add_domain(known).await;
    let metric = "clickedge_store_queries_total";
    // Background work (the heartbeat every 5 s) queries too: a round counts only if it saw
    // none; a handshake that queried would spoil every round.
    let mut rounds = Vec::new();
    for round in 0..5 {
        let before = a.metric(metric).await;
        for i in 0..100 {
            let name = format!("r{round}-{i}.unknown.example.net");
            let ok = a
                .client(&[&name])
                .get(format!("https://{name}:{}/", a.https.port()))
                .send()
                .await;
            assert!(ok.is_err(), "an unknown name was served");
        }
        let after = a.metric(metric).await;
        rounds.push(after - before);
        if after == before {
            break;
        }
    }
    assert_eq!(
        rounds.last(),
        Some(&0.0),
        "store queries per round of 100 unknown-SNI handshakes: {rounds:?}"
    );
    assert!(a.metric(metric).await > 0.0, "the counter counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_url_set_on_one_node_is_followed_by_the_other_by_the_hint() {
    let url = postgres::shared().fresh_database();
    let a = node(&url, "edge-a", NO_SCAN);
    let b = node(&url, "edge-b", NO_SCAN);
    let roots = roots(&[&a, &b]);
    let domain = "fallback.example.com";
    a.add_domain(domain).await;
    let link = mint(&a, domain).await;
    let forged = format!("{link}A");
    let fallback = "https://www.example.com/expired";
    // Where b sends a link that does not open: its status and Location.
    let answer = || {
        let client = b
            .client_trusting(&roots, &[domain])
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let forged = b.on_port(&forged);
        async move {
            let res = client.get(forged).send().await.ok()?;
            let location = res
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned());
            Some((res.status().as_u16(), location))
        }
    };
    let served = within(ARRIVES, || async { answer().await == Some((404, None)) }).await;
    assert!(served.is_some(), "b does not serve the domain added on a");

    let (status, body) = a
        .admin(
            Method::PATCH,
            &format!("/v1/domains/{domain}"),
            Some(json!({ "fallback_url": fallback })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let set = within(ARRIVES, || async {
        answer().await == Some((302, Some(fallback.to_owned())))
    })
    .await;
    assert!(set.is_some(), "b does not follow the fallback set on a");

    let (status, body) = a
        .admin(
            Method::PATCH,
            &format!("/v1/domains/{domain}"),
            Some(json!({ "fallback_url": null })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let cleared = within(ARRIVES, || async { answer().await == Some((404, None)) }).await;
    assert!(cleared.is_some(), "b keeps the fallback cleared on a");
}

/// A changed row another node cannot read (here a certificate whose sealed key was moved from
/// another row, as a careless restore would) is skipped, loudly, instead of holding back every
/// change after it on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_is_skipped_and_later_changes_still_arrive() {
    let server = postgres::shared();
    let url = server.fresh_database();
    let db = url.rsplit('/').next().expect("database").to_owned();
    let a = node(&url, "edge-a", "30s");
    let b = node(&url, "edge-b", "30s");
    let roots = roots(&[&a, &b]);
    for domain in ["p4.example.com", "p5.example.com"] {
        a.add_domain(domain).await;
        let link = mint(&a, domain).await;
        assert_eq!(
            click(&a, &roots, domain, &link).await,
            Some(302),
            "{domain}"
        );
    }
    server.psql(
        &db,
        "UPDATE certificates SET key_sealed = \
         (SELECT key_sealed FROM certificates WHERE domain = 'p4.example.com') \
         WHERE domain = 'p5.example.com'",
    );
    b.wait_for_log("a changed row cannot be applied; skipped", 1);

    a.add_domain("p6.example.com").await;
    let link = mint(&a, "p6.example.com").await;
    let took = within(ARRIVES, || async {
        click(&b, &roots, "p6.example.com", &link).await == Some(302)
    })
    .await;
    assert!(
        took.is_some(),
        "a domain added after the bad row never reached b"
    );
}

/// Two live nodes with one `cluster.node_id` (cloned hosts, a shared host name) hand out the
/// same click ids, and the stream keeps one click of each pair: each says so at its heartbeats,
/// in its log and in `clickedge_cluster_node_id_shared`; a node with its own id does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_nodes_with_one_id_say_so() {
    let url = postgres::shared().fresh_database();
    let a = node(&url, "edge-a", "1h");
    let twin = node(&url, "edge-a", "1h");
    let own = node(&url, "edge-b", "1h");
    let said = "another node runs with this node's cluster.node_id";
    a.wait_for_log(said, 1);
    twin.wait_for_log(said, 1);
    assert_eq!(a.metric("clickedge_cluster_node_id_shared").await, 1.0);
    // Two heartbeats later (the first node says it at each), the node with its own id has
    // checked too, and said nothing.
    a.wait_for_log(said, 3);
    assert!(!own.stderr().contains(said), "{}", own.stderr());
    assert_eq!(own.metric("clickedge_cluster_node_id_shared").await, 0.0);
}
