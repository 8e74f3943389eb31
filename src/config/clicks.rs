//! `[clicks]`: where the click log goes, how durable a click is before its 302, and what one
//! client or the whole log may cost (parsed here, enforced by the click pipeline).

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Clicks queued between the request path and the writer; past it clicks are dropped and
    /// counted. Default `65536`.
    pub queue_capacity: NonZeroUsize,
    /// A click file is closed and a new one started past this size. Default `67108864` (64 MiB).
    pub max_file_bytes: NonZeroU64,
    /// ...or past this age. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub rotate_interval: Duration,
    /// Clicks held in memory while the click log cannot be written (disk full, unwritable
    /// directory), in bytes; past it buffered clicks are dropped (counted) and synced clicks get
    /// 503. Default `67108864` (64 MiB).
    pub max_buffered_bytes: NonZeroUsize,
    /// Whether the edge's group may read the click log: directory `0750` and files `0640`
    /// instead of `0700` and `0600`, for a shipping agent in that group. The modes are set
    /// whatever the umask, also on a directory and files that already exist. Default `false`.
    pub group_read: bool,
    /// The most the click files may add up to, in bytes; before a write would pass it the
    /// oldest files are deleted (each logged and counted). `0`: no cap. Otherwise at least twice
    /// `max_file_bytes`. Default `10737418240` (10 GiB).
    pub max_total_bytes: u64,
    /// Clicks logged per second from one client address (an IPv6 client: its /64), in bursts of
    /// up to as many; past it the client is still redirected but its clicks are not logged
    /// (counted in `clickedge_clicks_unlogged_total{reason="rate"}`). `0`: no bound. Default
    /// `10`.
    pub max_clicks_per_ip_per_sec: u32,
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
        }
    }
}
