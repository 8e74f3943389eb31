//! `clickedge classify --replay FILE`: judges recorded request traces with the rules `serve`
//! would use under the same config (catalogue file, windows, table bounds), writes the click and
//! revision lines the edge would have logged to stdout, and, when traces carry labels, the
//! confusion table with precision and recall for `machine` to stderr (so stdout stays a click
//! log for analysts' tools; a reader gone ends it quietly, as [`super::out`] does). See [`crate::clicks::verdict::replay`] for the trace format.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::clicks::verdict::Rules;
use crate::clicks::verdict::networks::SharedCatalogue;
use crate::clicks::verdict::replay::Replay;
use crate::config::Config;
use crate::metrics::Metrics;

/// Replays the traces in `file` (`-` for stdin).
pub(super) fn run(config: &Config, file: &Path) -> anyhow::Result<()> {
    let catalogue = Arc::new(
        SharedCatalogue::load(config.clicks.networks_file.as_deref())
            .context("loading clicks.networks_file")?,
    );
    let metrics = Metrics::new(&prometheus::Registry::new()).context("building the counters")?;
    let mut replay =
        Replay::new(|revise| Rules::replaying(catalogue, &config.clicks, &metrics, revise));
    let input: Box<dyn std::io::Read> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file)
                .with_context(|| format!("opening the traces {}", file.display()))?,
        )
    };
    let mut out = Vec::new();
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let line = line.with_context(|| format!("reading the traces {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.clear();
        replay.trace(n + 1, &line, &mut out)?;
        // The lines are JSON written from Rust strings: UTF-8.
        super::out::text(&String::from_utf8_lossy(&out));
    }
    let tally = replay.tally();
    if tally.counts.iter().flatten().any(|c| *c > 0) {
        eprint!("{}", tally.report());
    }
    Ok(())
}
