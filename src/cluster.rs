//! This node among others sharing one store: what another node changes reaches this one's
//! memory ([`Propagation`]: domains, certificates, link keys, backoff), the node says it is
//! alive (a heartbeat with the last version it applied), and `cluster status` shows the whole
//! ([`status`]). With SQLite the same code runs for the one node.
//!
//! Nothing here is on the request path: handshakes, redirects and clicks read memory, which this
//! module keeps fresh; with the database down, they keep being served from what was loaded.

mod propagation;
pub mod status;

pub use propagation::{Propagation, Settings};
pub use status::StatusReader;
