//! The shipper's NATS side (async-nats, JetStream): the connection, the stream it publishes to
//! (created when missing), and one publish per click line with its `click_id` as `Nats-Msg-Id`.
//!
//! A publish is a plain NATS publish whose reply subject is `<inbox>.<n>`, the stream's
//! acknowledgements all arriving on one subscription to `<inbox>.*` and taken in publishing
//! order ([`Nats::ack`]; one that overtakes an earlier one, as a replicated stream's leader may
//! answer a duplicate before a message still in consensus, is kept until its turn). This is what the JetStream context's own publish does, without its
//! per-message costs (a fresh inbox name, a waiting table entry, a timer and a generic JSON
//! response per line), which measured several µs of CPU per click (BENCHMARKS.md).
//!
//! The client connects in the background and reconnects by itself; a publish while NATS is away
//! fails or times out, and the shipper backs off and re-publishes the same lines with the same
//! ids. The stream is created with file storage, every node's subject (`{node_id}` as a
//! wildcard) and a duplicate window of [`DUPLICATE_WINDOW`]: a re-publish inside it is
//! acknowledged as a duplicate, not stored twice. Nothing here reads the click log.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, StatusCode, Subject, Subscriber, header::NATS_MESSAGE_ID};
use bytes::Bytes;
use futures_util::StreamExt as _;

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
    client: async_nats::Client,
    js: jetstream::Context,
    target: NatsTarget,
    /// `target.subject`, built once.
    subject: Subject,
    /// The prefix of every reply subject: `<inbox>.`.
    inbox: String,
    /// The subscription to `<inbox>.*`, made at the first publish.
    acks: Option<Subscriber>,
    /// Acknowledgements that came before their turn, by publish number.
    early: BTreeMap<u64, async_nats::Message>,
    /// The number of the next publish (its reply subject's last token).
    next: u64,
}

/// The stream's answer to one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ack {
    /// The message's sequence number in the stream.
    pub seq: u64,
    /// The stream already had a message with this id (inside its duplicate window).
    pub duplicate: bool,
}

/// A publish whose acknowledgement did not come: nothing is known of it, and the shipper
/// re-publishes from the last acknowledged line.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The client could not take the message (its connection is closed).
    #[error("publishing to NATS")]
    Send(#[source] async_nats::PublishError),
    /// The subscription for acknowledgements could not be made.
    #[error("subscribing to the stream's acknowledgements")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// No acknowledgement (or no room in the client's queue) within the timeout.
    #[error("no answer from NATS within {0:?}")]
    TimedOut(Duration),
    /// The subscription ended (the client was closed).
    #[error("the NATS connection closed")]
    Closed,
    /// Nothing listens on the subject: no stream takes it (deleted, or not yet created).
    #[error("no stream takes subject {0} (no responders)")]
    NoStream(String),
    /// The stream answered with an error.
    #[error("the stream refused the message: {description} (err_code {err_code})")]
    Refused {
        /// JetStream's error code.
        err_code: u64,
        /// JetStream's description.
        description: String,
    },
    /// The answer was not a JetStream acknowledgement.
    #[error("the stream's answer is not an acknowledgement")]
    Malformed(#[source] serde_json::Error),
}

/// JetStream's error code for "stream not found".
const STREAM_NOT_FOUND: u64 = 10059;

impl PublishError {
    /// Whether the stream is missing (to be created again before the next attempt).
    pub(super) fn stream_missing(&self) -> bool {
        match self {
            PublishError::NoStream(_) => true,
            PublishError::Refused { err_code, .. } => *err_code == STREAM_NOT_FOUND,
            _ => false,
        }
    }
}

/// A JetStream publish acknowledgement as sent: `{"stream", "seq", "duplicate"?}` or
/// `{"error": {"code", "err_code", "description"}}`.
#[derive(serde::Deserialize)]
struct AckReply<'a> {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    #[serde(borrow)]
    error: Option<ApiError<'a>>,
}

#[derive(serde::Deserialize)]
struct ApiError<'a> {
    #[serde(default)]
    err_code: u64,
    #[serde(borrow, default)]
    description: Cow<'a, str>,
}

impl Nats {
    /// Starts the connection; it is made (and remade) in the background.
    pub(super) async fn connect(target: NatsTarget) -> Result<Nats, NatsError> {
        let client = connect_options(&target)
            .await?
            .name(&target.client_name)
            .retry_on_initial_connect()
            // The subjects published on need no check per message: the configured one is
            // checked when the config is loaded, and a reply subject is the client's own inbox
            // and a number. The client's check of both on every message cost 3% of a shipped
            // click's instructions (BENCHMARKS.md).
            .skip_subject_validation(true)
            .connect(target.url.as_str())
            .await
            .map_err(|source| NatsError::Connect {
                url: target.url.clone(),
                source,
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ACK_TIMEOUT);
        let inbox = format!("{}.", client.new_inbox());
        Ok(Nats {
            subject: Subject::from(target.subject.as_str()),
            client,
            js,
            target,
            inbox,
            acks: None,
            early: BTreeMap::new(),
            next: 0,
        })
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

    /// Publishes one click line (without its newline) with `id` as its `Nats-Msg-Id`; returns
    /// the publish's number, which [`Nats::ack`] waits for.
    pub(super) async fn publish(
        &mut self,
        id: Option<&str>,
        line: Bytes,
    ) -> Result<u64, PublishError> {
        if self.acks.is_none() {
            let all = format!("{}*", self.inbox);
            let sub = self
                .client
                .subscribe(all)
                .await
                .map_err(PublishError::Subscribe)?;
            self.acks = Some(sub);
        }
        let mut headers = HeaderMap::new();
        if let Some(id) = id {
            headers.insert(NATS_MESSAGE_ID, id);
        }
        let n = self.next;
        self.next += 1;
        let reply = Subject::from(reply_subject(&self.inbox, n));
        // While NATS is away the client queues messages; once its queue is full this waits.
        let send =
            self.client
                .publish_with_reply_and_headers(self.subject.clone(), reply, headers, line);
        tokio::time::timeout(ACK_TIMEOUT, send)
            .await
            .map_err(|_| PublishError::TimedOut(ACK_TIMEOUT))?
            .map_err(PublishError::Send)?;
        Ok(n)
    }

    /// Waits for the acknowledgement of publish `n`, the oldest still waited for. Older ones
    /// left from a failed attempt are dropped; newer ones that overtake it are kept for their
    /// turn (at most [`super::MAX_IN_FLIGHT`] of them: the shipper waits for none further out).
    pub(super) async fn ack(&mut self, n: u64) -> Result<Ack, PublishError> {
        if let Some(msg) = self.early.remove(&n) {
            return self.decode(&msg);
        }
        // Anything kept from before `n` belongs to an attempt given up on.
        self.early = self.early.split_off(&n);
        let acks = self.acks.as_mut().ok_or(PublishError::Closed)?;
        loop {
            let msg = tokio::time::timeout(ACK_TIMEOUT, acks.next())
                .await
                .map_err(|_| PublishError::TimedOut(ACK_TIMEOUT))?
                .ok_or(PublishError::Closed)?;
            let got = msg
                .subject
                .rsplit_once('.')
                .and_then(|(_, n)| n.parse::<u64>().ok());
            match got {
                Some(got) if got == n => return self.decode(&msg),
                Some(got) if got > n && self.early.len() < super::MAX_IN_FLIGHT => {
                    self.early.insert(got, msg);
                }
                _ => {}
            }
        }
    }

    /// The acknowledgement (or refusal) a reply says.
    fn decode(&self, msg: &async_nats::Message) -> Result<Ack, PublishError> {
        if msg.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(PublishError::NoStream(self.target.subject.clone()));
        }
        parse_ack(&msg.payload)
    }
}

/// Publish `n`'s reply subject, `<inbox>.<n>` (`inbox` ends with its dot), built without the
/// formatting machinery (about 550 instructions less per click shipped).
fn reply_subject(inbox: &str, mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut subject = String::with_capacity(inbox.len() + digits.len() - at);
    subject.push_str(inbox);
    subject.extend(digits[at..].iter().map(|&d| char::from(d)));
    subject
}

/// The acknowledgement in a reply's payload.
fn parse_ack(payload: &[u8]) -> Result<Ack, PublishError> {
    let reply: AckReply<'_> = serde_json::from_slice(payload).map_err(PublishError::Malformed)?;
    if let Some(e) = reply.error {
        return Err(PublishError::Refused {
            err_code: e.err_code,
            description: e.description.into_owned(),
        });
    }
    Ok(Ack {
        seq: reply.seq,
        duplicate: reply.duplicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_end_with_the_publish_number() {
        for n in [0, 7, 42, 1_000_000, u64::MAX] {
            assert_eq!(reply_subject("_INBOX.abc.", n), format!("_INBOX.abc.{n}"));
        }
    }

    #[test]
    fn acknowledgements_are_read_as_jetstream_sends_them() {
        let ack = parse_ack(br#"{"stream":"CLICKS","seq":42}"#).unwrap();
        assert_eq!(
            ack,
            Ack {
                seq: 42,
                duplicate: false
            }
        );
        let ack = parse_ack(br#"{"stream":"CLICKS","domain":"hub","seq":7,"duplicate":true}"#);
        assert_eq!(
            ack.unwrap(),
            Ack {
                seq: 7,
                duplicate: true
            }
        );
        let err = parse_ack(
            br#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
        )
        .unwrap_err();
        assert!(err.stream_missing(), "{err}");
        assert_eq!(
            err.to_string(),
            "the stream refused the message: stream not found (err_code 10059)"
        );
        let err = parse_ack(br#"{"error":{"code":503,"err_code":10077,"description":"x \"y\""}}"#)
            .unwrap_err();
        assert!(!err.stream_missing());
        assert!(err.to_string().contains(r#"x "y""#), "{err}");
        assert!(matches!(parse_ack(b"+OK"), Err(PublishError::Malformed(_))));
    }

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
