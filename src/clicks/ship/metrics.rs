//! The shipper's metrics, registered into the registry it is handed only when a stream is
//! configured (an edge that ships nothing exports no shipping series).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What the shipper exports.
#[derive(Clone)]
pub struct ShipMetrics {
    /// Click lines the stream acknowledged, duplicates included.
    pub shipped: IntCounter,
    /// Of those, lines the stream acknowledged as duplicates of a message it already had (a
    /// re-publish after a timeout or a restart).
    pub duplicates: IntCounter,
    /// Failed publishes, stream set-ups and reads of the click log (each episode's retries
    /// included).
    pub errors: IntCounter,
    /// Bytes of the click log after the checkpoint.
    pub unshipped_bytes: IntGauge,
    /// Age in seconds of the oldest click not yet acknowledged; 0 when everything is shipped,
    /// or when the first unshipped bytes hold no `ts` to read (a line still being written).
    pub oldest_unshipped_seconds: IntGauge,
    /// What the reader skipped and never shipped, by `reason`: `partial_line` (a finished
    /// file's last line without its newline), `file_gone` (the rest of a file deleted by someone
    /// else before it was shipped whole).
    pub skipped: IntCounterVec,
}

/// The `reason`s of [`ShipMetrics::skipped`], each a series from the start.
pub const SKIP_REASONS: [&str; 2] = ["partial_line", "file_gone"];

impl ShipMetrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<ShipMetrics> {
        let m = ShipMetrics::unregistered();
        registry.register(Box::new(m.shipped.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.unshipped_bytes.clone()))?;
        registry.register(Box::new(m.oldest_unshipped_seconds.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        Ok(m)
    }

    /// The metrics, in no registry (tests).
    pub fn unregistered() -> ShipMetrics {
        // Invariant: the names and help texts are valid literals.
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let skipped = IntCounterVec::new(
            Opts::new(
                "clickedge_click_ship_skipped_total",
                "Click log parts the shipper skipped and never shipped: a finished file's partial last line, or the rest of a file deleted before it was shipped",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in SKIP_REASONS {
            skipped.with_label_values(&[reason]);
        }
        ShipMetrics {
            skipped,
            shipped: counter(
                "clickedge_clicks_shipped_total",
                "Click lines acknowledged by the stream, duplicates included",
            ),
            duplicates: counter(
                "clickedge_click_ship_duplicates_total",
                "Click lines the stream acknowledged as duplicates (re-published after a timeout or restart)",
            ),
            errors: counter(
                "clickedge_click_ship_errors_total",
                "Failed publishes, stream set-ups or reads of the click log, retries included",
            ),
            unshipped_bytes: gauge(
                "clickedge_click_unshipped_bytes",
                "Bytes of the click log not yet acknowledged by the stream",
            ),
            oldest_unshipped_seconds: gauge(
                "clickedge_click_unshipped_oldest_age_seconds",
                "Age of the oldest click not yet acknowledged by the stream; 0 when all are (or no timestamp is readable yet)",
            ),
        }
    }
}
