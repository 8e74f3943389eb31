//! The click log as configured: the shipper to NATS (with `clicks.stream`), the file sink that is
//! its spool, the batcher thread writing it, and the queue the request path pushes into.

use std::num::{NonZeroU32, NonZeroU64};

use anyhow::Context as _;
use prometheus::Registry;

use crate::clicks::file::{Access, FileSink, FileSinkConfig};
use crate::clicks::ship::{MAX_IN_FLIGHT, NatsTarget, Progress, ShipMetrics, Shipper};
use crate::clicks::{BatchConfig, ClickIds, ClickQueue, ClickWriter};
use crate::clock::Clock;
use crate::config::{Config, StreamKind};
use crate::metrics::Metrics;

/// The click log, started.
pub(super) struct ClickLog {
    /// The shipper, to be run (with `clicks.stream`).
    pub shipper: Option<Shipper>,
    /// How far shipping got, for retention and health.
    pub shipping: Option<Progress>,
    /// The batcher thread; closing it writes what is queued.
    pub writer: ClickWriter,
    /// The request path's way in.
    pub queue: ClickQueue,
}

/// Opens the click log of `config` (recovering what a crash left) and starts its writer.
pub(super) async fn start(
    config: &Config,
    metrics: &Metrics,
    registry: &Registry,
    clock: &Clock,
) -> anyhow::Result<ClickLog> {
    let shipper = match config.clicks.stream {
        Some(StreamKind::Nats) => Some(
            Shipper::new(
                config.clicks_dir(),
                NatsTarget::from_config(&config.clicks, &config.cluster.node_id()),
                ShipMetrics::new(registry).context("registering shipping metrics")?,
                clock.clone(),
            )
            .await
            .context("setting up click shipping to NATS")?,
        ),
        None => None,
    };
    let shipping = shipper.as_ref().map(Shipper::progress);
    let sink = FileSink::open(
        FileSinkConfig {
            dir: config.clicks_dir(),
            max_file_bytes: config.clicks.max_file_bytes.get(),
            rotate_interval: config.clicks.rotate_interval,
            access: if config.clicks.group_read {
                Access::GroupRead
            } else {
                Access::Private
            },
            max_total_bytes: NonZeroU64::new(config.clicks.max_total_bytes),
            max_age: config.clicks.retention,
            shipped: shipping.clone(),
        },
        metrics.clone(),
        clock.clone(),
    )?;
    let mut next = sink.next_click_seq();
    if let Some(newest) = match &shipper {
        Some(shipper) => shipper.newest_in_stream().await,
        None => None,
    } && newest >= next
    {
        // The local log lost what it shipped (a replaced volume, a deleted directory): ids it
        // would hand out again are ones the stream and its consumers have seen. The last message
        // is not always the newest id: a line published again after a refusal lands after
        // those in flight with it (at most `MAX_IN_FLIGHT`), which the stream kept already.
        let after = newest.saturating_add(MAX_IN_FLIGHT as u64);
        tracing::warn!(
            local = next,
            newest,
            after,
            "the stream holds newer click ids of this node than its click log: ids go on after the stream's"
        );
        next = after.saturating_add(1);
    }
    let ids = ClickIds::new(config.cluster.node_id(), next);
    let (writer, mut queue) = ClickWriter::start(
        sink,
        BatchConfig {
            flush_interval: config.clicks.flush_interval,
            queue_capacity: config.clicks.queue_capacity.get(),
            durability: config.clicks.durability,
            max_buffered_bytes: config.clicks.max_buffered_bytes.get(),
            ids,
        },
        metrics.clone(),
        clock.clone(),
    )?;
    if let Some(per_sec) = NonZeroU32::new(config.clicks.max_clicks_per_ip_per_sec) {
        queue = queue.with_rate_per_address(per_sec);
    }
    Ok(ClickLog {
        shipper,
        shipping,
        writer,
        queue,
    })
}
