//! The `clickedge` binary: parses arguments, loads config, installs the crypto provider, and either
//! runs the edge until a signal or runs a client command.

use std::process::ExitCode;

use clap::Parser as _;
use clickedge::app::App;
use clickedge::cli::{Cli, Command};
use clickedge::config::{Config, Limits, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => serve(config, cli.log_format).await,
        command => clickedge::cli::run_client(&config, command).await,
    }
}

async fn serve(config: Config, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    init_logging(log_format_of(log_format, &config)?);
    // The only global: rustls's process-wide crypto provider (aws-lc-rs), for any client config
    // built without an explicit provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    raise_open_files_limit(&config.limits);
    // Listened for before the edge says it is ready: a signal sent right after the ready line
    // must drain like any other, not kill the process with the default action.
    let mut signals = Signals::install();

    let app = App::start(&config).await?;
    let a = app.addrs();
    let data = config.data_dir.display();
    println!(
        "clickedge {} listening: https={} http={} admin={}",
        env!("CARGO_PKG_VERSION"),
        a.https,
        a.http,
        a.admin
    );
    println!(
        "data dir {data} (clicks in {}); local CA root: {data}/ca.pem",
        config.clicks_dir().display()
    );
    // The hints name this binary the way it was started, so they paste as they are.
    let me = std::env::args()
        .next()
        .unwrap_or_else(|| "clickedge".into());
    println!("try, in another terminal:");
    println!("  {me} domain add links.example.com");
    println!(
        "  {me} link https://example.com/hello --domain links.example.com --meta campaign=spring"
    );
    println!(
        "  curl -i --cacert {data}/ca.pem --resolve links.example.com:{port}:{ip} <the link with :{port} after the domain>",
        port = a.https.port(),
        ip = a.https.ip()
    );

    Signals::next(&mut signals).await;
    tracing::info!("shutting down: no new connections; finishing requests and writing clicks");
    // A second signal stops at once.
    tokio::spawn(async move {
        Signals::next(&mut signals).await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
    app.shutdown().await;
    Ok(())
}

/// Raises the open-files soft limit to the hard limit (each connection is a file descriptor), and
/// warns when the connection caps of `[limits]` cannot fit in it: past the limit `accept` fails
/// and the edge can no longer open its store or click files.
fn raise_open_files_limit(limits: &Limits) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: maximum,
        maximum,
    };
    let soft = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => maximum,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-files limit to its hard limit");
            current
        }
    };
    let needed = limits.open_files_needed();
    // `None` is no limit at all.
    if let Some(soft) = soft.filter(|&soft| soft < needed) {
        tracing::warn!(
            "open-files limit {soft} is below the {needed} that [limits] may need \
             (max_connections + http_max_connections + admin_max_connections + a reserve); \
             raise the hard limit (systemd LimitNOFILE=, ulimit -Hn) or lower the caps"
        );
    } else {
        tracing::debug!(?soft, needed, "open-files limit");
    }
}

/// The log format: `--log-format`, else `CLICKEDGE_LOG_FORMAT` (`json` or `text`), else the
/// config's `log_format`.
fn log_format_of(flag: Option<LogFormat>, config: &Config) -> anyhow::Result<LogFormat> {
    use clap::ValueEnum as _;
    if let Some(f) = flag {
        return Ok(f);
    }
    match std::env::var("CLICKEDGE_LOG_FORMAT") {
        Ok(v) => LogFormat::from_str(&v, true).map_err(|_| {
            anyhow::anyhow!("CLICKEDGE_LOG_FORMAT={v:?} is not a log format: use json or text")
        }),
        Err(_) => Ok(config.log_format),
    }
}

/// Logs go to stderr: human-readable (`text`) or one JSON object per line (`json`); the level
/// filter is `CLICKEDGE_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter =
        EnvFilter::try_from_env("CLICKEDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// SIGTERM and SIGINT, the signals that stop the edge.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Replaces the default action of both signals (exit) with delivery here; `None` if the
    /// handlers cannot be installed.
    fn install() -> Option<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some(Signals { term, int }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM and SIGINT: the edge can only be killed");
                None
            }
        }
    }

    /// The next SIGTERM or SIGINT. Without handlers, never: waiting forever is better than
    /// exiting at once.
    async fn next(signals: &mut Option<Signals>) {
        let Some(s) = signals else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = s.term.recv() => {}
            _ = s.int.recv() => {}
        }
    }
}

/// jemalloc rather than glibc malloc: its thread caches make the per-click allocations (request,
/// headers, the click on its way to the writer thread) cheaper, and an idle connection's partly
/// used buffers cost fewer resident pages. Figures in BENCHMARKS.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
