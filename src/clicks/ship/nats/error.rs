//! What goes wrong with NATS: setting up the client and the stream ([`NatsError`]), and a
//! publish whose acknowledgement did not come ([`PublishError`]).

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

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
    /// The credentials file holds no JWT and seed.
    #[error("reading NATS credentials {path} (clicks.nats_credentials): {reason}")]
    CredentialsFormat {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// The client could not be set up.
    #[error("connecting to NATS at {url}")]
    Connect {
        /// `clicks.nats_url`, without its password.
        url: String,
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
    /// The stream exists but its subjects do not take the node's: every publish would find no
    /// responders.
    #[error(
        "stream {stream} exists but does not take subject {subject} (its subjects: {subjects}): \
         add {subject} (or {stream_subject} for every node) to the stream's subjects"
    )]
    SubjectNotInStream {
        /// The stream.
        stream: String,
        /// The node's subject.
        subject: String,
        /// The subject that would take every node's (`clicks.nats_subject` with a wildcard).
        stream_subject: String,
        /// The stream's subjects, comma-separated.
        subjects: String,
    },
    /// The stream exists but keeps or answers clicks in a way that loses them silently or never
    /// acknowledges them.
    #[error(
        "stream {stream} has {setting}: {why}; change it (nats stream edit {stream}, or delete the \
         stream and let the edge create it), or name another clicks.nats_stream"
    )]
    StreamUnfit {
        /// The stream.
        stream: String,
        /// The setting as the stream has it.
        setting: &'static str,
        /// What it would do to clicks.
        why: &'static str,
    },
    /// The last message on the node's subject could not be read.
    #[error("reading the last message on {subject} in stream {stream}")]
    LastMessage {
        /// The stream.
        stream: String,
        /// The node's subject.
        subject: String,
        /// The client's error.
        #[source]
        source: stream::LastRawMessageError,
    },
}

/// A publish whose acknowledgement did not come: nothing is known of it, and the shipper
/// re-publishes from the last acknowledged line.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection failed (refused, reset, closed while writing).
    #[error("the connection to NATS failed")]
    Io(#[source] std::io::Error),
    /// The TLS handshake with NATS failed.
    #[error("TLS to NATS: {0}")]
    Tls(String),
    /// The credentials could not be used.
    #[error("authenticating to NATS: {0}")]
    Auth(String),
    /// The server said something this client does not read.
    #[error("NATS protocol: {0}")]
    Protocol(&'static str),
    /// The server refused (`-ERR`): bad credentials, a permission, a limit.
    #[error("NATS refused: {0}")]
    Server(String),
    /// No acknowledgement (or no room to write) within the timeout.
    #[error("no answer from NATS within {0:?}")]
    TimedOut(Duration),
    /// The server closed the connection.
    #[error("the NATS connection closed")]
    Closed,
    /// Nothing listens on the subject: no stream takes it (deleted, or not yet created, or one
    /// whose subjects leave it out).
    #[error(
        "no stream takes subject {subject} (no responders): stream {stream} is missing (it is \
         created again) or does not take the subject (add it to the stream's subjects)"
    )]
    NoStream {
        /// The subject published on.
        subject: String,
        /// `clicks.nats_stream`.
        stream: String,
    },
    /// A status instead of an acknowledgement.
    #[error("NATS answered a publish with status {0}")]
    Status(String),
    /// A click line larger than the server takes. Shipping stops at it (the clicks after it
    /// wait in the log, in order) until the server takes more: each retry connects again and
    /// reads the server's limit anew.
    #[error(
        "a click line of {bytes} bytes is more than the NATS server takes (max_payload {max}): \
         raise max_payload in the server's config; shipping resumes at this line"
    )]
    TooLarge {
        /// The message with its headers.
        bytes: usize,
        /// The server's `max_payload`.
        max: usize,
    },
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
    /// The answer was JSON without a stream and a sequence number: not the stream's.
    #[error(
        "an answer to a publish names no stream and sequence number: something other than a \
         JetStream stream answers on the subject; stop that subscriber"
    )]
    NotAck,
    /// Another stream acknowledged: it takes the subject (an operator moved it there), and
    /// counting its acknowledgements as `clicks.nats_stream`'s would delete click files the
    /// stream never got.
    #[error(
        "stream {took} acknowledged a click meant for stream {stream}: it takes subject \
         {subject}; take the subject out of {took}'s subjects (shipping waits until then)"
    )]
    OtherStream {
        /// The subject published on.
        subject: String,
        /// `clicks.nats_stream`.
        stream: String,
        /// The stream that acknowledged.
        took: String,
    },
}

/// JetStream's error code for "stream not found".
const STREAM_NOT_FOUND: u64 = 10059;

impl PublishError {
    /// Whether the stream is missing (to be created again before the next attempt).
    pub(in crate::clicks::ship) fn stream_missing(&self) -> bool {
        match self {
            PublishError::NoStream { .. } => true,
            PublishError::Refused { err_code, .. } => *err_code == STREAM_NOT_FOUND,
            _ => false,
        }
    }
}
