//! `clickedge cluster ...`: setting up nodes that share one store. `keygen` writes the cluster's
//! seal key; it runs locally and talks to no edge.

use std::path::PathBuf;

use clap::Subcommand;

use super::out::say;
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
}

/// Runs a `cluster` command.
pub fn run(action: ClusterAction) -> anyhow::Result<()> {
    match action {
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
