//! `[cluster]`: who this node is among several sharing one store and one click stream. This module
//! parses; the store and the click shipper apply.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// This node's name, unique among the nodes sharing a store or a click stream: it prefixes
    /// every `click_id` and names the node in `cluster status`. Default: the host name.
    pub node_id: Option<NodeId>,
    /// The cluster's seal key: 32 random bytes as 64 hex characters (`clickedge cluster keygen
    /// FILE` writes one), mode 0600. The environment variable `CLICKEDGE_SEAL_KEY` may carry it
    /// instead. Default none.
    pub seal_key_file: Option<PathBuf>,
    /// How often a node reads every change since the last one it applied, whatever the change
    /// notifications said (they are only a hint, and can be lost). A new link key seals only
    /// after two of these (plus 5 s), once every node opens it. Default 30 s.
    #[serde(with = "super::duration")]
    pub scan_interval: Duration,
}

impl Default for Cluster {
    fn default() -> Cluster {
        Cluster {
            node_id: None,
            seal_key_file: None,
            scan_interval: Duration::from_secs(30),
        }
    }
}

impl Cluster {
    /// `node_id`, or the host name when it is not set (or `node` if the host name is not a
    /// valid node id).
    pub fn node_id(&self) -> NodeId {
        self.node_id.clone().unwrap_or_else(NodeId::host)
    }

    /// How long a new link key waits before it seals links: by then every node reachable from
    /// the store has scanned (twice) and opens it, so no node answers 404 for a fresh link.
    pub fn key_seal_delay(&self) -> Duration {
        self.scan_interval.saturating_mul(2) + Duration::from_secs(5)
    }
}

/// A node's name: 1 to 64 ASCII letters, digits, `-`, `_` and `.`, a dot only between two of the
/// others (as in a host name), so it fits a NATS subject (where dots separate tokens, none of them
/// empty), a file name and a log line unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

/// Why a node id is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "node id {0:?} is not usable: use 1 to 64 ASCII letters, digits, '-', '_' or '.' (a dot \
     only between two of the others), for example \"edge-a\" or \"edge-a.eu\""
)]
pub struct NodeIdError(String);

impl NodeId {
    /// Parses a node id.
    pub fn parse(input: &str) -> Result<NodeId, NodeIdError> {
        let ok = (1..=64).contains(&input.len())
            && input.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
            });
        if ok {
            Ok(NodeId(input.to_owned()))
        } else {
            Err(NodeIdError(input.to_owned()))
        }
    }

    /// The host name (its first label if the whole name is not a valid id), or `node`.
    pub fn host() -> NodeId {
        let uname = rustix::system::uname();
        let host = uname.nodename().to_string_lossy();
        NodeId::parse(&host)
            .or_else(|_| NodeId::parse(host.split('.').next().unwrap_or_default()))
            .unwrap_or_else(|_| NodeId("node".to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        let s = String::deserialize(d)?;
        NodeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_letters_digits_and_separators() {
        assert_eq!(
            NodeId::parse("edge-a.eu_1").unwrap().as_str(),
            "edge-a.eu_1"
        );
        for bad in [
            "",
            "edge a",
            "edge/a",
            "edge*",
            "é",
            &"a".repeat(65),
            // Each would make an empty token in the NATS subject `clicks.{node_id}`.
            ".",
            "edge.",
            ".edge",
            "edge..a",
        ] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_default_node_id_is_a_valid_one() {
        let id = Cluster::default().node_id();
        assert_eq!(NodeId::parse(id.as_str()), Ok(id));
    }
}
