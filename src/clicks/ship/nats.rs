//! The shipper's NATS side (async-nats, JetStream): the connection, the stream it publishes to
//! (created when missing), and one publish per click line with its `click_id` as `Nats-Msg-Id`.
//!
//! The publishes themselves go over the shipper's own connection ([`super::wire`]): one frame
//! per line with reply subject `<inbox>.<n>`, the stream's acknowledgements all arriving on one
//! subscription to `<inbox>.*` and taken in publishing order ([`Nats::ack`]; one that overtakes an
//! earlier one, as a replicated stream's leader may answer a duplicate before a message still in
//! consensus, is kept until its turn). The async-nats client looks the stream up and creates it.
//!
//! The async-nats client connects in the background and reconnects by itself; the publishing
//! connection is made at the first publish and again after any failure. A publish while NATS is
//! away fails or times out, and the shipper backs off and re-publishes the same lines with the
//! same ids. The stream is created with file storage, every node's subject (`{node_id}` as a
//! wildcard) and a duplicate window of [`DUPLICATE_WINDOW`]: a re-publish inside it is
//! acknowledged as a duplicate, not stored twice. Nothing here reads the click log.

mod error;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::wire::{Credentials, Wire};
use crate::config::{Clicks, NodeId};
use crate::errors::chain as error_chain;
pub use error::{NatsError, PublishError};

/// How long the stream remembers message ids to drop re-published ones (the server's default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a publish waits for the stream's acknowledgement before it counts as failed (and is
/// re-published with the same id).
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where clicks are published.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// This node's id: its click ids are `{node}-{seq}`.
    pub node: String,
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
    /// The URL's user and password, or token, percent-decoded.
    pub auth: UrlAuth,
}

/// How the URL authenticates: `nats://user:password@host`, `nats://token@host`, or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlAuth {
    /// No user in the URL.
    None,
    /// A user and a password.
    UserPassword(String, String),
    /// A user without a password: a token.
    Token(String),
}

impl UrlAuth {
    /// The URL's user and password, or token, percent-decoded (`%40` is `@`).
    fn of(url: &url::Url) -> UrlAuth {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        match (url.username(), url.password()) {
            ("", None) => UrlAuth::None,
            (user, Some(pass)) => UrlAuth::UserPassword(decode(user), decode(pass)),
            (token, None) => UrlAuth::Token(decode(token)),
        }
    }
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
            node: node.to_string(),
            url: clicks.nats_url.clone(),
            subject: template.replace("{node_id}", node.as_str()),
            stream_subject,
            stream: clicks.nats_stream.clone(),
            credentials: clicks.nats_credentials.clone(),
            client_name: format!("clickedge-{node}"),
            auth: UrlAuth::of(&clicks.nats_url),
        }
    }

    /// The server to connect to: the URL without its user and password, which the clients get
    /// decoded from [`NatsTarget::auth`].
    pub fn server(&self) -> String {
        let mut url = self.url.clone();
        // Only URLs that cannot have a user fail these (never a nats:// or tls:// one).
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.to_string()
    }

    /// The URL as logs and errors show it: without its password or token.
    pub fn shown(&self) -> String {
        crate::config::nats_url_shown(&self.url)
    }

    /// Why the server may not have answered, for a log line: its address tried once (for at
    /// most a second) and what that said (`Connection refused`: nothing listens there), or, when
    /// it takes connections, what to check then. The client library retries in silence, or in
    /// its own words ("IO error"), which name neither.
    pub async fn why_unanswered(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.url.port().unwrap_or(4222);
        let dial = tokio::net::TcpStream::connect((host, port));
        match tokio::time::timeout(Duration::from_secs(1), dial).await {
            Ok(Ok(_)) => "it takes connections: check the NATS user and password (or the \
                          credentials file) and that JetStream is enabled"
                .to_owned(),
            Ok(Err(e)) => format!("connecting to {host}:{port}: {e}"),
            Err(_) => format!("connecting to {host}:{port}: no answer within 1 s"),
        }
    }
}

/// The client options for `target`: its credentials file, if it has one, and the URL's user and
/// password or token, decoded (TLS follows from a `tls://` URL). Connect to
/// [`NatsTarget::server`]. Shared by the shipper and the stream's readers (`clickedge clicks
/// follow`).
pub async fn connect_options(target: &NatsTarget) -> Result<async_nats::ConnectOptions, NatsError> {
    let options = match &target.credentials {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| NatsError::Credentials {
                path: path.clone(),
                source,
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    Ok(match &target.auth {
        UrlAuth::None => options,
        UrlAuth::UserPassword(user, pass) => options.user_and_password(user.clone(), pass.clone()),
        UrlAuth::Token(token) => options.token(token.clone()),
    })
}

/// The stream (through async-nats) and the publishing connection.
pub(super) struct Nats {
    js: jetstream::Context,
    target: NatsTarget,
    credentials: Option<Credentials>,
    /// The prefix of every reply subject: `<inbox>.`.
    inbox: String,
    /// The publishing connection, made at the first publish and after a failure.
    wire: Option<Wire>,
    /// Answers that came before their turn, by publish number.
    early: BTreeMap<u64, Result<Ack, PublishError>>,
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

/// A JetStream publish acknowledgement as sent: `{"stream", "seq", "duplicate"?}` or
/// `{"error": {"code", "err_code", "description"}}`. Without `stream` and `seq` it is no
/// acknowledgement: something other than a stream answered.
#[derive(serde::Deserialize)]
pub(super) struct AckReply<'a> {
    #[serde(borrow, default)]
    pub stream: Option<Cow<'a, str>>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(borrow)]
    pub error: Option<ApiError<'a>>,
}

#[derive(serde::Deserialize)]
pub(super) struct ApiError<'a> {
    #[serde(default)]
    pub err_code: u64,
    #[serde(borrow, default)]
    pub description: Cow<'a, str>,
}

impl Nats {
    /// Starts the async-nats client (it connects in the background) and reads the credentials;
    /// the publishing connection is made at the first publish.
    pub(super) async fn connect(target: NatsTarget) -> Result<Nats, NatsError> {
        let credentials = match &target.credentials {
            Some(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|source| {
                    NatsError::Credentials {
                        path: path.clone(),
                        source,
                    }
                })?;
                let creds =
                    Credentials::parse(&text).map_err(|reason| NatsError::CredentialsFormat {
                        path: path.clone(),
                        reason,
                    })?;
                Some(creds)
            }
            None => None,
        };
        let client = connect_options(&target)
            .await?
            .name(&target.client_name)
            .retry_on_initial_connect()
            .connect(target.server())
            .await
            .map_err(|source| NatsError::Connect {
                url: target.shown(),
                source,
            })?;
        let inbox = format!("{}.", client.new_inbox());
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_TIMEOUT);
        Ok(Nats {
            js,
            target,
            credentials,
            inbox,
            wire: None,
            early: BTreeMap::new(),
            next: 0,
        })
    }

    /// The target published to.
    pub(super) fn target(&self) -> &NatsTarget {
        &self.target
    }

    /// The sequence number of the newest id this node published to the stream: the
    /// `Nats-Msg-Id` of the last message on its subject. None when the stream, or this node's
    /// subject in it, holds nothing.
    pub(super) async fn newest_seq(&self) -> Result<Option<u64>, NatsError> {
        let name = &self.target.stream;
        let stream = match self.js.get_stream(name).await {
            Ok(stream) => stream,
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Ok(None);
            }
            Err(source) => {
                return Err(NatsError::GetStream {
                    stream: name.clone(),
                    source,
                });
            }
        };
        match stream
            .get_last_raw_message_by_subject(&self.target.subject)
            .await
        {
            // Only this node's own id counts: a subject without `{node_id}` is every node's.
            Ok(message) => Ok(message
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .and_then(|id| id.as_str().strip_prefix(self.target.node.as_str()))
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|seq| seq.parse().ok())),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(source) => Err(NatsError::LastMessage {
                stream: name.clone(),
                subject: self.target.subject.clone(),
                source,
            }),
        }
    }

    /// Makes sure the stream exists and takes this node's subject; true if it had to be
    /// created.
    pub(super) async fn ensure_stream(&self) -> Result<bool, NatsError> {
        let name = &self.target.stream;
        match self.js.get_stream(name).await {
            Ok(stream) => {
                let config = &stream.cached_info().config;
                // A stream without subjects takes the subject of its own name.
                let subjects = if config.subjects.is_empty() {
                    std::slice::from_ref(name)
                } else {
                    &config.subjects[..]
                };
                if subjects.iter().any(|s| takes(s, &self.target.subject)) {
                    return unfit(name, config).map(|()| false);
                }
                return Err(NatsError::SubjectNotInStream {
                    stream: name.clone(),
                    subject: self.target.subject.clone(),
                    stream_subject: self.target.stream_subject.clone(),
                    subjects: subjects.join(", "),
                });
            }
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
    /// the publish's number, which [`Nats::ack`] waits for. Connects first if there is no
    /// connection.
    pub(super) async fn publish(
        &mut self,
        id: Option<&str>,
        line: &[u8],
    ) -> Result<u64, PublishError> {
        let n = self.next;
        self.next += 1;
        let wire = match &mut self.wire {
            Some(wire) => wire,
            None => {
                let connect = Wire::connect(&self.target, self.credentials.as_ref(), &self.inbox);
                let wire = tokio::time::timeout(ACK_TIMEOUT, connect)
                    .await
                    .map_err(|_| PublishError::TimedOut(ACK_TIMEOUT))??;
                self.early.clear();
                self.wire.insert(wire)
            }
        };
        match wire.publish(id, line, n).await {
            // Refused before a byte of it was queued: the connection is as it was, with the
            // lines before it still to be acknowledged on it.
            Err(e @ PublishError::TooLarge { .. }) => Err(e),
            sent => {
                self.keep_if_ok(sent)?;
                Ok(n)
            }
        }
    }

    /// Waits `wait` while nothing is published, keeping the connection alive
    /// ([`Wire::idle`]); one that fails meanwhile is dropped (the next publish connects again).
    pub(super) async fn idle(&mut self, wait: Duration) {
        let Some(wire) = &mut self.wire else {
            return tokio::time::sleep(wait).await;
        };
        if let Err(e) = wire.idle(wait).await {
            tracing::debug!(error = %error_chain(&e), "the idle connection to NATS ended; the next click connects again");
            self.wire = None;
        }
    }

    /// Drops the publishing connection: the next publish connects again (and reads the
    /// server's limits anew).
    pub(super) fn disconnect(&mut self) {
        self.wire = None;
    }

    /// Waits for the acknowledgement of publish `n`, the oldest still waited for. Older ones
    /// left from a failed attempt are dropped; newer ones that overtake it are kept for their
    /// turn (at most [`super::MAX_IN_FLIGHT`] of them: the shipper waits for none further out).
    pub(super) async fn ack(&mut self, n: u64) -> Result<Ack, PublishError> {
        if let Some(ack) = self.early.remove(&n) {
            return ack;
        }
        // Anything kept from before `n` belongs to an attempt given up on.
        self.early = self.early.split_off(&n);
        loop {
            let wire = self.wire.as_mut().ok_or(PublishError::Closed)?;
            let reply = wire.reply().await;
            let reply = self.keep_if_ok(reply)?;
            match reply.n {
                Some(got) if got == n => return reply.ack,
                Some(got) if got > n && self.early.len() < super::MAX_IN_FLIGHT => {
                    self.early.insert(got, reply.ack);
                }
                _ => {}
            }
        }
    }

    /// Drops the connection if `result` is a failure: what was written on it is unknown.
    fn keep_if_ok<T>(&mut self, result: Result<T, PublishError>) -> Result<T, PublishError> {
        if result.is_err() {
            self.wire = None;
        }
        result
    }
}

/// Whether the stream subject `pattern` takes `subject`: token by token, `*` any one token, `>`
/// (last) one or more.
fn takes(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Whether the settings of an existing stream keep what the shipper publishes: an error for one
/// that would lose clicks silently (interest or work-queue retention: a message no consumer is
/// interested in yet is acknowledged and not kept) or never acknowledge them (`no_ack`); a
/// warning for a duplicate window too short to catch a re-publish after a timed-out answer.
fn unfit(name: &str, config: &stream::Config) -> Result<(), NatsError> {
    let refuse = |setting, why| NatsError::StreamUnfit {
        stream: name.to_owned(),
        setting,
        why,
    };
    match config.retention {
        stream::RetentionPolicy::Limits => {}
        stream::RetentionPolicy::Interest => {
            return Err(refuse(
                "retention interest",
                "clicks published while no consumer is interested are acknowledged and not kept, \
                 so the edge would delete its copy of clicks the stream never stored; use limits",
            ));
        }
        stream::RetentionPolicy::WorkQueue => {
            return Err(refuse(
                "retention workqueue",
                "a click taken by one consumer is gone for every other; use limits",
            ));
        }
    }
    if config.no_ack {
        return Err(refuse(
            "no_ack",
            "it never acknowledges a publish, so no click would ever count as shipped",
        ));
    }
    if config.duplicate_window < DUPLICATE_WINDOW {
        tracing::warn!(
            stream = name,
            duplicate_window = ?config.duplicate_window,
            "the stream's duplicate window is shorter than {DUPLICATE_WINDOW:?}: a click published \
             again after an answer that came too late may be stored twice (consumers deduplicate \
             by Nats-Msg-Id)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
