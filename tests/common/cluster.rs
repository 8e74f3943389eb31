//! Three clickedge nodes the way a cluster runs: on 127.0.0.2, .3 and .4 with the same HTTPS and
//! HTTP ports (Pebble's validation authority dials fixed ports), one throwaway PostgreSQL
//! database, one seal key, issuing from a Pebble whose DNS points each name at the node that
//! must answer its challenges. Everything is killed on drop.

#![allow(dead_code)]

use super::Edge;
use super::pebble::{Pebble, PebbleOptions, PebblePorts, free_tcp_port};
use super::postgres;

/// The nodes' addresses: node `i` listens on `ADDRESSES[i]`.
pub const ADDRESSES: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// A running cluster of three nodes and its CA.
pub struct Cluster {
    pub nodes: Vec<Edge>,
    pub pebble: Pebble,
    /// The database's URL.
    pub url: String,
}

impl Cluster {
    /// Three nodes sharing a fresh database, ordering from a fresh Pebble with `challenges`;
    /// `extra` is more config for every node (tables).
    pub async fn start(challenges: &[&str], options: &PebbleOptions, extra: &str) -> Cluster {
        Cluster::start_with_acme(challenges, options, "", extra).await
    }

    /// [`Cluster::start`] with more `[acme]` settings (lines) for every node.
    pub async fn start_with_acme(
        challenges: &[&str],
        options: &PebbleOptions,
        acme_extra: &str,
        extra: &str,
    ) -> Cluster {
        let url = postgres::shared().fresh_database();
        let ports = PebblePorts::reserve();
        let (https, http) = (free_tcp_port(), free_tcp_port());
        let seal = "c1".repeat(32);
        let nodes = ADDRESSES
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let config = format!(
                    "[tls]\nissuer = \"acme\"\non_demand_timeout = \"60s\"\n{acme}lease_ttl = \"3s\"\n{acme_extra}\
                     [store]\nurl = \"{url}\"\n[cluster]\nnode_id = \"edge-{i}\"\n{extra}",
                    acme = ports.acme_toml(challenges),
                );
                Edge::start_on(ip, https, http, &[("CLICKEDGE_SEAL_KEY", &seal)], &config)
            })
            .collect();
        let pebble = ports.start(http, https, options).await;
        Cluster { nodes, pebble, url }
    }

    /// Node `i`.
    /// Waits until every node serves `name` from memory (its registration, made on one node,
    /// arrived everywhere): a node's plain HTTP listener answers a click of `link` (minted for
    /// `name`) with 302 once it knows the name, 404 before. Fails after a minute: a hang guard.
    pub async fn until_every_node_serves(&self, name: &str, link: &str) {
        let path = &link[link.find("/c/").expect("a link")..];
        for edge in &self.nodes {
            let url = format!("http://{name}:{}{path}", edge.http.port());
            let client = reqwest::Client::builder()
                .resolve(name, edge.http)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("client");
            let served = super::within(std::time::Duration::from_secs(60), || async {
                client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 302)
            })
            .await;
            assert!(served.is_some(), "{name} is not served by {}", edge.http);
        }
    }

    pub fn node(&self, i: usize) -> &Edge {
        &self.nodes[i]
    }

    /// Runs `sql` in the cluster's database; its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let db = self.url.rsplit('/').next().expect("a database in the URL");
        postgres::shared().psql(db, sql)
    }
}
