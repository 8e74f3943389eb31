//! `clickedge cluster ...`: setting up nodes that share one store and watching them. `keygen`
//! writes the cluster's seal key (locally, talking to no edge); `status` asks any node's admin
//! API (`GET /v1/cluster`).

use std::path::PathBuf;

use clap::Subcommand;

use reqwest::Method;
use serde_json::Value;

use super::out::say;
use super::{Client, ClientArgs, escape};
use crate::config::Config;
use crate::seal::{self, SEAL_KEY_ENV};

/// `clickedge cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterAction {
    /// Write a new seal key (32 random bytes as 64 hex characters, mode 0600) to FILE, which
    /// must not exist. Every node of a cluster needs the same key: cluster.seal_key_file = FILE,
    /// or the key in CLICKEDGE_SEAL_KEY.
    Keygen {
        /// Where to write the key, e.g. /etc/clickedge/seal.key.
        file: PathBuf,
    },
    /// Show the nodes alive, the leases held, the orders in flight, the shared order budget left
    /// and each node's propagation lag (any node answers; it reads the shared store).
    Status {
        /// Where and how to reach the admin API.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a `cluster` command.
pub async fn run(config: &Config, action: ClusterAction) -> anyhow::Result<()> {
    match action {
        ClusterAction::Status { client } => {
            let v = Client::new(config, &client)?
                .call(Method::GET, "/v1/cluster", None)
                .await?;
            if client.json {
                say!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(())
        }
        ClusterAction::Keygen { file } => {
            seal::write_new_key(&file)?;
            say!(
                "wrote a new seal key to {f} (mode 0600); give every node the same key: \
                 [cluster] seal_key_file = \"{f}\", or {SEAL_KEY_ENV}; keep a copy offline, \
                 as what it sealed opens only with it",
                f = file.display()
            );
            Ok(())
        }
    }
}

/// The status as a few tables.
fn print_status(v: &Value) {
    let text = |x: &Value| {
        x.as_str()
            .map_or_else(|| "-".to_owned(), |s| escape(s).into_owned())
    };
    let rows = |x: &Value| x.as_array().cloned().unwrap_or_default();
    say!(
        "store version {} (asked {})",
        v["version"],
        text(&v["node_id"])
    );
    say!();
    say!(
        "{:<24} {:<6} {:>10} {:>6} LAST HEARTBEAT",
        "NODE",
        "ALIVE",
        "APPLIED",
        "LAG"
    );
    for n in rows(&v["nodes"]) {
        let alive = if n["alive"].as_bool() == Some(true) {
            "yes"
        } else {
            "NO"
        };
        say!(
            "{:<24} {:<6} {:>10} {:>6} {}",
            text(&n["node_id"]),
            alive,
            n["applied"].as_u64().unwrap_or(0),
            n["lag"].as_u64().unwrap_or(0),
            text(&n["heartbeat_at"])
        );
    }
    say!();
    let leases = rows(&v["leases"]);
    let held = leases
        .iter()
        .filter(|l| l["held"].as_bool() == Some(true))
        .count();
    say!(
        "leases held: {held}; orders in flight: {}",
        v["orders_in_flight"]
    );
    for l in &leases {
        say!(
            "  {:<40} {:<24} fence {:<8} until {}{}",
            text(&l["name"]),
            text(&l["holder"]),
            l["fence"].as_u64().unwrap_or(0),
            text(&l["expires_at"]),
            if l["order_url"].is_string() {
                "  (order kept)"
            } else {
                ""
            }
        );
    }
    for b in rows(&v["budgets"]) {
        let paused = b["paused_until"]
            .as_str()
            .map(|t| format!(", paused until {}", escape(t)))
            .unwrap_or_default();
        say!(
            "order budget {}: {} of {} left{paused}",
            text(&b["name"]),
            b["left"],
            b["of"]
        );
    }
}
