//! `[clicks]`: where the click log goes, how durable a click is before its 302, what one
//! client or the whole log may cost, and the stream the log is shipped to (parsed and checked
//! here, enforced by the click pipeline).

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::NodeId;

/// The most clicks `clicks.queue_capacity` may queue: 16 times the default. Each place is
/// reserved at start, so a mistyped number would take all memory there.
const MAX_QUEUE_CAPACITY: usize = 1 << 20;

/// How clicks reach storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Written within `flush_interval`; a crash loses at most that window.
    Buffered,
    /// The 302 waits until the click is on disk (fsync, group commit).
    Synced,
}

/// Where clicks go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    /// JSON Lines files under `clicks.dir`.
    File,
}

/// Where the click log is shipped, besides being kept in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// A NATS JetStream stream (`nats_url`, `nats_subject`, `nats_stream`).
    Nats,
}

/// What a line keeps of the client's address (`clicks.ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpField {
    /// The whole address.
    #[default]
    Full,
    /// Its network only: IPv4 /24, IPv6 /48 (the rest zero).
    Truncated,
}

/// `[clicks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Clicks {
    /// Sink. Default `file`.
    pub sink: SinkKind,
    /// Directory of the click log. Default `<data_dir>/clicks`.
    pub dir: Option<PathBuf>,
    /// `buffered` (default) or `synced`.
    pub durability: Durability,
    /// Longest time a click waits in memory before it is written. Default `100ms`.
    #[serde(with = "super::duration")]
    pub flush_interval: Duration,
    /// Clicks queued between the request path and the writer; past it clicks are dropped and
    /// counted. Default `65536`.
    pub queue_capacity: NonZeroUsize,
    /// A click file is closed and a new one started past this size. Default `67108864` (64 MiB).
    #[serde(deserialize_with = "super::size::positive_u64")]
    pub max_file_bytes: NonZeroU64,
    /// ...or past this age. Default `1h`.
    #[serde(with = "super::duration")]
    pub rotate_interval: Duration,
    /// Clicks held in memory while the click log cannot be written (disk full, unwritable
    /// directory), in bytes; past it buffered clicks are dropped (counted) and synced clicks get
    /// 503. Default `67108864` (64 MiB).
    #[serde(deserialize_with = "super::size::positive_usize")]
    pub max_buffered_bytes: NonZeroUsize,
    /// Whether the edge's group may read the click log: directory `0750` and files `0640`
    /// instead of `0700` and `0600`, for a shipping agent in that group. The modes are set
    /// whatever the umask, also on a directory and files that already exist. Default `false`.
    pub group_read: bool,
    /// The most the click files may add up to, in bytes; before a write would pass it the
    /// oldest files are deleted (each logged and counted). `0`: no cap. Otherwise at least twice
    /// `max_file_bytes`. Default `10737418240` (10 GiB).
    #[serde(deserialize_with = "super::size::or_zero_for_no_cap")]
    pub max_total_bytes: u64,
    /// Clicks logged per second from one client address (an IPv6 client: its /64), in bursts of
    /// up to as many; past it the client is still redirected but its clicks are not logged
    /// (counted in `clickedge_clicks_unlogged_total{reason="rate"}`); a link's first RFC 8058
    /// one-click unsubscribe is logged past it. `0`: no bound. Default `10`.
    pub max_clicks_per_ip_per_sec: u32,
    /// Closed click files older than this are deleted (each logged and counted); when a stream
    /// is configured, only once fully shipped. Default none: kept until `max_total_bytes`.
    #[serde(with = "super::duration::optional")]
    pub retention: Option<Duration>,
    /// Ship every click line to a stream: `"nats"`. Default none (files only).
    pub stream: Option<StreamKind>,
    /// The NATS server: `nats://host:port`, or `tls://host:port` for TLS. Default
    /// `nats://127.0.0.1:4222`.
    #[serde(with = "super::secret_url")]
    pub nats_url: url::Url,
    /// The subject every click of this node is published on; `{node_id}` is replaced by
    /// `[cluster] node_id`. Default `clicks.{node_id}`.
    pub nats_subject: String,
    /// The JetStream stream holding the clicks, created if missing (file storage, the subject
    /// with `{node_id}` as a wildcard, a 2-minute duplicate window). Default `CLICKS`.
    pub nats_stream: String,
    /// A NATS credentials file (`.creds`: user JWT and NKey seed). Default none.
    pub nats_credentials: Option<PathBuf>,
    /// A file of network ranges (`CIDR NAME SCOPE CERTAINTY` a line) extending the compiled-in
    /// catalogue of scanner networks, or replacing it with a line `replace-defaults`; re-read
    /// when it changes. Default: none.
    pub networks_file: Option<PathBuf>,
    /// A click this soon after its message was sent (or its link minted) counts against it.
    /// Default `60s`.
    #[serde(with = "super::duration")]
    pub early_window: Duration,
    /// A click this soon after the send from a probable scanner network is a machine. Default
    /// `600s`.
    #[serde(with = "super::duration")]
    pub probable_window: Duration,
    /// How long the message table remembers a source's clicks on a message after its last one.
    /// Default `10m`.
    #[serde(with = "super::duration")]
    pub message_ttl: Duration,
    /// The most memory the message table may take, in bytes; the least recently used entries are
    /// evicted past it (counted). Default `67108864` (64 MiB).
    #[serde(deserialize_with = "super::size::positive_u64")]
    pub message_table_bytes: NonZeroU64,
    /// What every line's `"ip"` keeps: `"full"` (default) or `"truncated"` (IPv4 /24, IPv6 /48).
    /// Verdicts judge the full address either way; it is cut before the line is queued.
    pub ip: IpField,
    /// Whether lines carry `"visitor"`: a keyed hash of the link domain, the address's /24 or
    /// /48 and the user agent, under a salt of the UTC day kept in memory only. Default `false`.
    pub visitor: bool,
}

impl Default for Clicks {
    fn default() -> Self {
        Clicks {
            sink: SinkKind::File,
            dir: None,
            durability: Durability::Buffered,
            flush_interval: Duration::from_millis(100),
            queue_capacity: NonZeroUsize::new(65_536).expect("non-zero literal"),
            max_file_bytes: NonZeroU64::new(64 << 20).expect("non-zero literal"),
            rotate_interval: Duration::from_secs(3600),
            max_buffered_bytes: NonZeroUsize::new(64 << 20).expect("non-zero literal"),
            group_read: false,
            max_total_bytes: 10 << 30,
            max_clicks_per_ip_per_sec: 10,
            retention: None,
            stream: None,
            // Invariant: a literal that parses.
            nats_url: url::Url::parse("nats://127.0.0.1:4222").expect("valid literal"),
            nats_subject: "clicks.{node_id}".into(),
            nats_stream: "CLICKS".into(),
            nats_credentials: None,
            networks_file: None,
            early_window: Duration::from_secs(60),
            probable_window: Duration::from_secs(600),
            message_ttl: Duration::from_secs(600),
            message_table_bytes: NonZeroU64::new(64 << 20).expect("non-zero literal"),
            ip: IpField::Full,
            visitor: false,
        }
    }
}

impl Clicks {
    /// What is wrong with `nats_subject` for node `node` when a stream is set: `{node_id}` before
    /// the subject's end stands for one token (the stream's `*`), which an id with dots is not.
    pub(super) fn subject_invalid_for(&self, node: &NodeId) -> Option<String> {
        let last = self.nats_subject.ends_with("{node_id}");
        if self.stream.is_none() || last || !self.nats_subject.contains("{node_id}") {
            return None;
        }
        node.as_str().contains('.').then(|| {
            format!(
                "clicks.nats_subject = {:?} puts {{node_id}} before its end, where the stream's \
                 wildcard takes one token, but this node's id {:?} holds dots: set \
                 cluster.node_id without dots, or put {{node_id}} last (e.g. \"clicks.{{node_id}}\")",
                self.nats_subject,
                node.as_str()
            )
        })
    }

    /// What is wrong with the stream and retention settings, in words that say what to write
    /// instead; none when they are usable.
    pub(super) fn invalid(&self) -> Option<String> {
        if self.queue_capacity.get() > MAX_QUEUE_CAPACITY {
            return Some(format!(
                "clicks.queue_capacity is {}; use at most {MAX_QUEUE_CAPACITY} (each place in the \
                 queue is reserved when the edge starts), for example 65536",
                self.queue_capacity
            ));
        }
        if let Some(r) = self.retention.filter(|r| *r < Duration::from_secs(60)) {
            return Some(format!(
                "clicks.retention = \"{}\" is under 1m; use at least 1m, for example \"30d\", or \
                 leave it out to keep files until clicks.max_total_bytes",
                humantime::format_duration(r)
            ));
        }
        let shortest = crate::clicks::verdict::messages::DECOY_WINDOW;
        if self.message_ttl < shortest {
            return Some(format!(
                "clicks.message_ttl is {}; use at least {} (the decoy rule looks that far across \
                 a source's clicks on a message, the burst rule 5s), for example \"10m\"",
                humantime::format_duration(self.message_ttl),
                humantime::format_duration(shortest)
            ));
        }
        let url = &self.nats_url;
        if !matches!(url.scheme(), "nats" | "tls") || url.host_str().is_none_or(str::is_empty) {
            return Some(format!(
                "clicks.nats_url = \"{}\" is not a NATS server address: write \
                 \"nats://host:4222\", or \"tls://host:4222\" for TLS",
                nats_url_shown(url)
            ));
        }
        let template_ok = self.nats_subject.matches("{node_id}").count() <= 1
            && self
                .nats_subject
                .split('.')
                .all(|token| token == "{node_id}" || !token.contains("{node_id}"));
        if !template_ok {
            return Some(format!(
                "clicks.nats_subject = {:?} does not hold {{node_id}} as one whole token of its \
                 own (the stream takes every node's subject with a wildcard in its place): write \
                 it between dots, once, e.g. \"clicks.{{node_id}}\"",
                self.nats_subject
            ));
        }
        let subject = self.nats_subject.replace("{node_id}", "node");
        let subject_ok = !subject.is_empty()
            && subject.split('.').all(|token| {
                !token.is_empty()
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !matches!(b, b'*' | b'>'))
            });
        if !subject_ok {
            return Some(format!(
                "clicks.nats_subject = {:?} is not a NATS subject to publish on: use tokens of \
                 printable characters without '*' or '>', separated by single dots, e.g. \
                 \"clicks.{{node_id}}\"",
                self.nats_subject
            ));
        }
        let stream_ok = (1..=255).contains(&self.nats_stream.len())
            && self
                .nats_stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !stream_ok {
            return Some(format!(
                "clicks.nats_stream = {:?} is not a usable stream name: use letters, digits, '-' \
                 and '_', e.g. \"CLICKS\"",
                self.nats_stream
            ));
        }
        None
    }
}

/// `url` as logs and errors show it: its password, or its user when that is a token (a user
/// without a password), as `***`.
pub fn nats_url_shown(url: &url::Url) -> String {
    let mut url = url.clone();
    // Only URLs that cannot have a user fail these.
    let _ = if url.password().is_some() {
        url.set_password(Some("***"))
    } else if !url.username().is_empty() {
        url.set_username("***")
    } else {
        Ok(())
    };
    url.to_string()
}
