//! `clickedge clicks follow`: prints the click stream (`clicks.stream = "nats"`) as JSON lines,
//! each message's payload as it is (the click line the edge logged), one per line, for scripts
//! and for a look at what consumers get.
//!
//! It reads with an ordered ephemeral consumer (a pull consumer the server forgets when the
//! command ends, recreated by the client at the right sequence after a gap or a reconnect), so it
//! needs no rights to create durable consumers and leaves nothing behind. A failed pull (the
//! server restarting, away for a while) is said once on stderr and followed on: the client
//! recreates the consumer once the server answers again. Like any consumer it gets every click at
//! least once: dedupe by `click_id`. Output is buffered and flushed whenever no message is
//! waiting; a closed pipe (`| head`) ends it with success, and so does `--no-follow` once it has
//! printed what the stream held when it started.

use std::io::{self, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig, OrderedErrorKind};
use clap::{Args, Subcommand};
use futures_util::{FutureExt as _, StreamExt as _};

use crate::clicks::ship::{NatsTarget, connect_options};
use crate::clock::Clock;
use crate::config::Config;

/// How often a follower whose consumer was lost tries to make a new one.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// With `--no-follow`, the longest wait for the next message while more are to be read.
const NO_FOLLOW_WAIT: Duration = Duration::from_secs(30);

/// `clickedge clicks ...`
#[derive(Debug, Subcommand)]
pub enum ClicksAction {
    /// Print the click stream (NATS JetStream) as JSON lines, one click per line as the edge
    /// logged it, and keep following until interrupted. Delivery is at least once: dedupe by
    /// `click_id`. Default: only clicks published from now on.
    Follow(FollowArgs),
}

/// Where `clicks follow` starts and what it reads.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Start with the oldest click the stream holds.
    #[arg(long, group = "start")]
    pub from_start: bool,
    /// Start with the clicks published this long ago (e.g. `10m`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, group = "start")]
    pub since: Option<Duration>,
    /// Start with the last N clicks of the stream (every node's).
    #[arg(long, value_name = "N", group = "start")]
    pub last: Option<u64>,
    /// Stop once the clicks the stream held when the command started are printed, instead of
    /// following (for `| sort | uniq -c` and other readers that wait for the end). Needs
    /// `--from-start`, `--since` or `--last`.
    #[arg(long, requires = "start")]
    pub no_follow: bool,
    /// The NATS server. Default: the config's `clicks.nats_url`. A URL with a user and password
    /// in it is better given as `CLICKEDGE_NATS_URL` than on the command line, where `ps` shows
    /// it.
    #[arg(
        long,
        value_name = "URL",
        env = "CLICKEDGE_NATS_URL",
        hide_env_values = true
    )]
    pub nats_url: Option<String>,
    /// The stream. Default: the config's `clicks.nats_stream`.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
}

/// Runs `clickedge clicks ACTION`.
pub(super) async fn run(config: &Config, action: ClicksAction) -> anyhow::Result<()> {
    match action {
        ClicksAction::Follow(args) => follow(config, args).await,
    }
}

async fn follow(config: &Config, mut args: FollowArgs) -> anyhow::Result<()> {
    // An empty `CLICKEDGE_NATS_URL` is unset, as every `CLICKEDGE_` variable.
    args.nats_url = args.nats_url.filter(|url| !url.is_empty());
    let mut clicks = config.clicks.clone();
    if let Some(url) = &args.nats_url {
        clicks.nats_url = nats_url(url)?;
    }
    if let Some(stream) = args.stream.clone() {
        clicks.nats_stream = stream;
    }
    let target = NatsTarget::from_config(&clicks, &config.cluster.node_id());
    let client = connect_options(&target)
        .await?
        .name(format!("clickedge-follow-{}", config.cluster.node_id()))
        .connect(target.server())
        .await
        .with_context(|| match (&config.clicks.stream, &args.nats_url) {
            // Nothing says where a stream is: this edge keeps its clicks in files.
            (None, None) => format!(
                "connecting to NATS at {}: this config streams no clicks (clicks.stream is not set; they are in {}); give --config of an edge that streams, or --nats-url",
                target.shown(),
                config.clicks_dir().display()
            ),
            (_, Some(_)) => format!("connecting to NATS at {} (--nats-url or CLICKEDGE_NATS_URL)", target.shown()),
            (Some(_), None) => format!(
                "connecting to NATS at {} (clicks.nats_url; --nats-url to read another)",
                target.shown()
            ),
        })?;
    let js = jetstream::new(client);
    let mut stream = js.get_stream(&target.stream).await.with_context(|| {
        format!(
            "opening stream {} (--stream; an edge with clicks.stream = \"nats\" creates it)",
            target.stream
        )
    })?;
    let last_sequence = stream
        .info()
        .await
        .context("reading the stream's state")?
        .state
        .last_sequence;
    let (deliver_policy, from) = match (&args.since, args.last) {
        _ if args.from_start => (DeliverPolicy::All, "its start".to_owned()),
        (Some(ago), _) => {
            // No click is older than 1970: further back (`--since 20000y`, which panicked
            // here) is the whole stream.
            let at = Clock::system()
                .now()
                .checked_sub(*ago)
                .map_or(std::time::UNIX_EPOCH, |at| at.max(std::time::UNIX_EPOCH));
            let start_time = time::OffsetDateTime::from(at);
            let shown = humantime::format_duration(*ago);
            (
                DeliverPolicy::ByStartTime { start_time },
                format!("{shown} ago"),
            )
        }
        // The last N, or (none) what comes after the last one there is now: a position in
        // the stream rather than "new", so a consumer made again after an outage starts there.
        (None, last) => {
            let n = last.unwrap_or(0);
            let start_sequence = last_sequence.saturating_sub(n.saturating_sub(1)).max(1);
            let start_sequence = match n {
                0 => last_sequence + 1,
                _ => start_sequence,
            };
            let from = match last {
                Some(n) => format!("its last {n} clicks"),
                None => "now".to_owned(),
            };
            (DeliverPolicy::ByStartSequence { start_sequence }, from)
        }
    };
    // With --no-follow: the last message there is now (none: nothing to print).
    let end = args.no_follow.then_some(last_sequence);
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer")?;
    // With --no-follow and nothing to read from where it starts: done.
    if end.is_some_and(|end| end == 0 || consumer.cached_info().num_pending == 0) {
        eprintln!("stream {} holds no click from {from}", target.stream);
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .context("reading the stream's messages")?;
    eprintln!(
        "{} stream {} at {} from {from}",
        if end.is_some() {
            "reading"
        } else {
            "following"
        },
        target.stream,
        target.shown()
    );
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    // Whether a failed pull was said since the last message.
    let mut said = false;
    // Where a consumer made again starts: after the last message printed.
    let mut resume = deliver_policy;
    loop {
        let next = match messages.next().now_or_never() {
            Some(next) => next,
            None => {
                // Nothing waiting: what was read goes out before the wait.
                if closed(out.flush())? {
                    return Ok(());
                }
                // With --no-follow the messages are known to be there: a stream that sends
                // none for a while (NATS away, which the library retries without a word)
                // ends the command rather than hold a script for ever.
                match end {
                    None => messages.next().await,
                    Some(_) => tokio::time::timeout(NO_FOLLOW_WAIT, messages.next())
                        .await
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "reading the stream {} at {}: no message for {}s, with more \
                                 to read (is NATS answering?); with --no-follow this stops \
                                 rather than wait: run it again once NATS answers",
                                target.stream,
                                target.shown(),
                                NO_FOLLOW_WAIT.as_secs()
                            )
                        })?,
                }
            }
        };
        let Some(message) = next else {
            closed(out.flush())?;
            return Ok(());
        };
        let message = match message {
            Ok(message) => message,
            // The server went away or restarted, and the consumer, which lives in its memory,
            // with it: a new one after the last message printed, once NATS answers.
            Err(e)
                if matches!(
                    e.kind(),
                    OrderedErrorKind::Pull
                        | OrderedErrorKind::MissingHeartbeat
                        | OrderedErrorKind::Other
                ) =>
            {
                if end.is_some() {
                    return Err(e).context(
                        "reading the stream (with --no-follow this stops rather than wait for \
                         NATS: run it again once NATS answers)",
                    );
                }
                if !said {
                    // What NATS said of a consumer lost with a restart reads as a failure of
                    // its own; it is the restart.
                    let why = crate::errors::chain(&e);
                    let why = match why.contains("consumer not found") {
                        true => "NATS restarted (or lost this reader's consumer)".to_owned(),
                        false => why,
                    };
                    eprintln!("reading the stream: {why}; following on as soon as NATS answers");
                    said = true;
                }
                closed(out.flush())?;
                messages = reopen(&stream, resume).await;
                continue;
            }
            Err(e) => return Err(e).context("reading the stream"),
        };
        said = false;
        if let Ok(info) = message.info() {
            resume = DeliverPolicy::ByStartSequence {
                start_sequence: info.stream_sequence + 1,
            };
        }
        let written = out
            .write_all(&message.payload)
            .and_then(|()| out.write_all(b"\n"));
        if closed(written)? {
            return Ok(());
        }
        if let Some(end) = end {
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("reading a message's stream sequence: {e}"))?;
            if info.stream_sequence >= end || info.pending == 0 {
                closed(out.flush())?;
                return Ok(());
            }
        }
    }
}

/// `--nats-url` parsed here rather than by clap, whose error would repeat the value, password
/// and all.
fn nats_url(given: &str) -> anyhow::Result<url::Url> {
    url::Url::parse(given).map_err(|e| {
        // Everything up to the last '@' may be a user and password, any character in them
        // (one that does not belong is what made it no URL): shown as `***`.
        let authority = given.find("://").map_or(0, |i| i + 3);
        let shown = match given.rfind('@').filter(|&at| at >= authority) {
            Some(at) => format!("{}***{}", &given[..authority], &given[at..]),
            None => given.to_owned(),
        };
        anyhow::anyhow!(
            "--nats-url (or CLICKEDGE_NATS_URL) {shown:?} is not a URL: {e}; e.g. nats://127.0.0.1:4222"
        )
    })
}

/// A new ordered consumer on `stream` starting at `from`, and its messages: tried every second
/// until NATS answers.
async fn reopen(stream: &jetstream::stream::Stream, from: DeliverPolicy) -> Ordered {
    loop {
        tokio::time::sleep(REOPEN_EVERY).await;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: from,
                ..Default::default()
            })
            .await;
        if let Ok(consumer) = consumer
            && let Ok(messages) = consumer.messages().await
        {
            return messages;
        }
    }
}

/// Whether a write found the output closed (the reader of a pipe gone): the command ends with
/// success then. Any other failure is an error.
fn closed(written: io::Result<()>) -> anyhow::Result<bool> {
    match written {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e).context("writing to standard output"),
    }
}
