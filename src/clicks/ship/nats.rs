//! The shipper's NATS side (async-nats, JetStream): the connection, the stream it publishes to
//! (created when missing), and one publish per click line with its `click_id` as `Nats-Msg-Id`.
//!
//! The client connects in the background and reconnects by itself; a publish while NATS is away
//! fails or times out, and the shipper backs off and re-publishes the same lines with the same
//! ids. The stream is created with file storage, every node's subject (`{node_id}` as a
//! wildcard) and a duplicate window of [`DUPLICATE_WINDOW`]: a re-publish inside it is
//! acknowledged as a duplicate, not stored twice. Nothing here reads the click log.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::{HeaderMap, header::NATS_MESSAGE_ID};
use bytes::Bytes;

use crate::config::{Clicks, NodeId};

/// How long the stream remembers message ids to drop re-published ones (the server's default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a publish waits for the stream's acknowledgement before it counts as failed (and is
/// re-published with the same id).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where clicks are published.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// `clicks.nats_url`.
    pub url: url::Url,
    /// `clicks.nats_subject` with this node's id in it.
    pub subject: String,
    /// The stream's subject: `clicks.nats_subject` with `{node_id}` as a wildcard, so every node
    /// publishes into one stream.
    pub stream_subject: String,
    /// `clicks.nats_stream`.
    pub stream: String,
    /// `clicks.nats_credentials`.
    pub credentials: Option<PathBuf>,
    /// Names the connection (`clickedge-{node_id}`) in the server's monitoring.
    pub client_name: String,
}

impl NatsTarget {
    /// The target of `[clicks]` for node `node`.
    pub fn from_config(clicks: &Clicks, node: &NodeId) -> NatsTarget {
        let template = &clicks.nats_subject;
        // A node id may hold dots (several subject tokens): as the last token, `>` matches it
        // whole; elsewhere `*` matches ids without dots.
        let stream_subject = match template.strip_suffix("{node_id}") {
            Some(prefix) if !prefix.contains("{node_id}") => format!("{prefix}>"),
            _ => template.replace("{node_id}", "*"),
        };
        NatsTarget {
            url: clicks.nats_url.clone(),
            subject: template.replace("{node_id}", node.as_str()),
            stream_subject,
            stream: clicks.nats_stream.clone(),
            credentials: clicks.nats_credentials.clone(),
            client_name: format!("clickedge-{node}"),
        }
    }
}

/// NATS could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The credentials file could not be read.
    #[error("reading NATS credentials {path} (clicks.nats_credentials)")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The client could not be set up.
    #[error("connecting to NATS at {url}")]
    Connect {
        /// `clicks.nats_url`.
        url: url::Url,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The stream could not be looked up.
    #[error("looking up stream {stream}")]
    GetStream {
        /// The stream.
        stream: String,
        /// The client's error.
        #[source]
        source: jetstream::context::GetStreamError,
    },
    /// The stream could not be created.
    #[error("creating stream {stream}")]
    CreateStream {
        /// The stream.
        stream: String,
        /// The client's error.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
}

/// The client options for `target`: its credentials file, if it has one (TLS follows from a
/// `tls://` URL). Shared by the shipper and the stream's readers (`clickedge clicks follow`).
pub async fn connect_options(target: &NatsTarget) -> Result<async_nats::ConnectOptions, NatsError> {
    match &target.credentials {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| NatsError::Credentials {
                path: path.clone(),
                source,
            }),
        None => Ok(async_nats::ConnectOptions::new()),
    }
}

/// A JetStream context on one connection.
pub(super) struct Nats {
    js: jetstream::Context,
    target: NatsTarget,
}

impl Nats {
    /// Starts the connection; it is made (and remade) in the background.
    pub(super) async fn connect(target: NatsTarget) -> Result<Nats, NatsError> {
        let client = connect_options(&target)
            .await?
            .name(&target.client_name)
            .retry_on_initial_connect()
            .connect(target.url.as_str())
            .await
            .map_err(|source| NatsError::Connect {
                url: target.url.clone(),
                source,
            })?;
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_TIMEOUT);
        Ok(Nats { js, target })
    }

    /// The target published to.
    pub(super) fn target(&self) -> &NatsTarget {
        &self.target
    }

    /// Makes sure the stream exists; true if it had to be created.
    pub(super) async fn ensure_stream(&self) -> Result<bool, NatsError> {
        let name = &self.target.stream;
        match self.js.get_stream(name).await {
            Ok(_) => return Ok(false),
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {}
            Err(source) => {
                return Err(NatsError::GetStream {
                    stream: name.clone(),
                    source,
                });
            }
        }
        self.js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![self.target.stream_subject.clone()],
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|source| NatsError::CreateStream {
                stream: name.clone(),
                source,
            })?;
        Ok(true)
    }

    /// Publishes one click line (without its newline) with `id` as its `Nats-Msg-Id`; the future
    /// resolves with the stream's acknowledgement.
    pub(super) async fn publish(
        &self,
        id: Option<&str>,
        line: Bytes,
    ) -> Result<PublishAckFuture, jetstream::context::PublishError> {
        let mut headers = HeaderMap::new();
        if let Some(id) = id {
            headers.insert(NATS_MESSAGE_ID, id);
        }
        self.js
            .publish_with_headers(self.target.subject.clone(), headers, line)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_subject_takes_every_node_and_the_subject_this_one() {
        let node = NodeId::parse("edge-a.eu").unwrap();
        let mut clicks = Clicks::default();
        let t = NatsTarget::from_config(&clicks, &node);
        assert_eq!(t.subject, "clicks.edge-a.eu");
        assert_eq!(t.stream_subject, "clicks.>");
        clicks.nats_subject = "acme.{node_id}.clicks".into();
        let t = NatsTarget::from_config(&clicks, &node);
        assert_eq!(t.subject, "acme.edge-a.eu.clicks");
        assert_eq!(t.stream_subject, "acme.*.clicks");
        clicks.nats_subject = "clicks".into();
        assert_eq!(
            NatsTarget::from_config(&clicks, &node).stream_subject,
            "clicks"
        );
    }
}
