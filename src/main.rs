//! The `clickedge` binary: parses arguments, loads config, installs the crypto provider, and either
//! runs the edge until a signal or runs a client command.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser as _;
use clickedge::app::App;
use clickedge::cli::{Cli, Command};
use clickedge::config::{Config, Limits, LogFormat};
use clickedge::errors;
use clickedge::signals::{Event, Signals};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The environment variable with the log filter; it wins over the config's `log` at start.
const LOG_ENV: &str = "CLICKEDGE_LOG";

/// Swaps the log filter of the running process (SIGHUP).
type LogFilter = reload::Handle<EnvFilter, Registry>;

/// Set once `serve` logs as JSON: what the process says on its way out is then a log line too,
/// so a pipeline reading one JSON object per line (the journal, kubelet) sees why it stopped.
static JSON_LOGS: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// Says `message` on stderr as the log is written: a JSON error event once `serve` logs JSON,
/// else plain text.
fn say_error(message: &str) {
    if JSON_LOGS.get().is_some() {
        tracing::error!("{message}");
    } else {
        eprintln!("{message}");
    }
}

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
    let result = runtime.block_on(run(cli));
    // What is left running (a click log's last write on a disk that stopped answering, work
    // left at the grace's end) does not hold back the exit: dropping the runtime would wait for
    // its blocking tasks for ever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say_error(&format!("error: {}", errors::chain(e.as_ref())));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = match cli.command.needs_config() {
        true => Config::load(cli.config.as_deref())?,
        false => Config::default(),
    };
    match cli.command {
        Command::Serve { log_format } => {
            serve(config, cli.config.as_deref(), log_format.or(cli.log_format)).await
        }
        command => clickedge::cli::run_client(&config, command).await,
    }
}

async fn serve(
    config: Config,
    config_path: Option<&Path>,
    log_format: Option<LogFormat>,
) -> anyhow::Result<()> {
    let log_format = log_format_of(log_format, &config)?;
    let log_filter = init_logging(log_format, config.log.as_deref());
    if log_format == LogFormat::Json {
        let _ = JSON_LOGS.set(());
    }
    // The only global: rustls's process-wide crypto provider (aws-lc-rs), for any client config
    // built without an explicit provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    raise_open_files_limit(&config.limits);
    // Listened for before the edge says it is ready: a signal sent right after the ready line
    // must drain like any other, not kill the process with the default action.
    let mut signals = match Signals::install() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for signals: the edge can only be killed");
            None
        }
    };

    // A start can wait minutes on the store (migrations queued behind another node's, a
    // database slow to answer): a stop meanwhile is taken at once, with nothing yet served.
    // A SIGHUP meanwhile may be for a change the start read before it was made: it is acted on
    // once the edge serves.
    let start = App::start(&config);
    let mut start = std::pin::pin!(start);
    let mut hup_while_starting = false;
    let app = loop {
        tokio::select! {
            app = &mut start => break app?,
            event = next_signal(&mut signals) => match event {
                Event::Stop(name) => {
                    tracing::info!("{name} while starting: stopped before serving");
                    return Ok(());
                }
                Event::Reload => {
                    tracing::info!("SIGHUP while starting: reloading once started");
                    hup_while_starting = true;
                }
                Event::Ignored(_) => {}
            },
        }
    };
    banner(&app, &config, config_path);

    // A reload runs beside the signals, not instead of them: one that waits on a store away for
    // a minute must not hold back a stop. A SIGHUP during a reload runs one more after it.
    let mut reloading =
        hup_while_starting.then(|| Box::pin(reload(&app, config_path, &log_filter)));
    let mut again = false;
    let stop = loop {
        tokio::select! {
            // A long-lived task died (a bug): stopped like a SIGTERM, then exit 1 (`shutdown`).
            _ = app.failed() => break "a task's panic",
            event = next_signal(&mut signals) => match event {
                Event::Stop(name) => break name,
                Event::Reload if reloading.is_some() => again = true,
                Event::Reload => {
                    reloading = Some(Box::pin(reload(&app, config_path, &log_filter)));
                }
                Event::Ignored(name) => {
                    tracing::info!("{name} received; it means nothing to clickedge")
                }
            },
            () = async { reloading.as_mut().expect("guarded").await }, if reloading.is_some() => {
                reloading = std::mem::take(&mut again)
                    .then(|| Box::pin(reload(&app, config_path, &log_filter)));
            }
        }
    };
    // A reload still running is given up: nothing it would load is needed to stop.
    drop(reloading);
    tracing::info!(
        "{stop}: shutting down: no new connections; finishing requests and writing clicks"
    );
    // A second stop signal stops at once; SIGHUP no longer reloads anything.
    tokio::spawn(async move {
        while !matches!(next_signal(&mut signals).await, Event::Stop(_)) {}
        say_error("second signal: exiting now");
        std::process::exit(130);
    });
    app.shutdown().await
}

/// Logs where the edge listens, and prints it with how to try it. Printed to stdout unless
/// stdout is gone (a closed pipe, a detached terminal): the edge serves on without it.
fn banner(app: &App, config: &Config, config_path: Option<&Path>) {
    use std::fmt::Write as _;
    let a = app.addrs();
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    tracing::info!(
        https = %list(&a.https),
        http = %list(&a.http),
        admin = %a.admin,
        metrics = %a.metrics.map_or_else(|| "none".to_owned(), |m| m.to_string()),
        "listening"
    );
    // With JSON logs the banner is one JSON object too (the journal or kubelet mixes stdout
    // into the log), the addresses and no hints.
    if JSON_LOGS.get().is_some() {
        let strings = |addrs: &[std::net::SocketAddr]| -> Vec<String> {
            addrs.iter().map(ToString::to_string).collect()
        };
        let line = serde_json::json!({
            "message": "listening",
            "version": env!("CARGO_PKG_VERSION"),
            "https": strings(&a.https),
            "http": strings(&a.http),
            "admin": a.admin.to_string(),
            "metrics": a.metrics.map(|m| m.to_string()),
        });
        print_banner(&format!("{line}\n"));
        return;
    }
    let data = config.data_dir.display();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "clickedge {} listening: {} {} admin={}{}",
        env!("CARGO_PKG_VERSION"),
        words("https", &a.https),
        words("http", &a.http),
        a.admin,
        a.metrics
            .map(|m| format!(" metrics={m}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        text,
        "data dir {data} (clicks in {}); local CA root: {data}/ca.pem",
        config.clicks_dir().display()
    );
    // The hints name this binary and its config the way it was started, so they paste as they
    // are.
    let mut me = std::env::args()
        .next()
        .unwrap_or_else(|| "clickedge".into());
    if let Some(path) = config_path {
        // Quoted for a shell when it would not paste as one word.
        let path = path.display().to_string();
        me = format!("{me} --config {}", clickedge::cli::shell_word(&path));
    }
    let _ = writeln!(text, "try, in another terminal:");
    let _ = writeln!(text, "  {me} domain add links.example.com");
    let _ = writeln!(
        text,
        "  {me} link https://example.com/hello --domain links.example.com --meta campaign=spring"
    );
    if let Some(https) = a.https.first() {
        let _ = writeln!(
            text,
            "  curl -i --cacert {data}/ca.pem --resolve links.example.com:{port}:{ip} <the link with :{port} after the domain>",
            port = https.port(),
            ip = https.ip()
        );
    }
    print_banner(&text);
}

/// Prints `text` to stdout, unless stdout is gone (a closed pipe, a detached terminal): the
/// edge serves on without it.
fn print_banner(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        tracing::debug!(error = %e, "the start-up banner was not printed: stdout is closed");
    }
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
    let Some(v) = std::env::var_os("CLICKEDGE_LOG_FORMAT").filter(|v| !v.is_empty()) else {
        return Ok(config.log_format);
    };
    v.to_str()
        .and_then(|v| LogFormat::from_str(v, true).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("CLICKEDGE_LOG_FORMAT={v:?} is not a log format: use json or text")
        })
}

/// Logs go to stderr: human-readable (`text`) or one JSON object per line (`json`); the level
/// filter is `CLICKEDGE_LOG`, else the config's `log`, else `info`. Returns the handle SIGHUP
/// swaps the filter through.
fn init_logging(format: LogFormat, configured: Option<&str>) -> LogFilter {
    use std::io::IsTerminal as _;
    // A bad CLICKEDGE_LOG does not stop the edge: it is said once logging is up.
    let mut refused = None;
    let filter = std::env::var_os(LOG_ENV)
        .and_then(|f| match f.into_string() {
            Ok(f) => Some(f),
            Err(f) => {
                refused = Some((format!("{f:?}"), "not UTF-8".to_owned()));
                None
            }
        })
        .filter(|f| !f.trim().is_empty())
        .and_then(|f| {
            filter_of(&f)
                .map_err(|e| refused = Some((f, e.to_string())))
                .ok()
        })
        .or_else(|| configured.and_then(|f| filter_of(f).ok()))
        .unwrap_or_else(|| filter_of("info").expect("a valid filter"));
    let (filter, handle) = reload::Layer::new(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if format == LogFormat::Json {
        registry.with(layer.json()).init();
    } else {
        registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .init();
    }
    if let Some((value, error)) = refused {
        tracing::warn!(
            %value,
            %error,
            "{LOG_ENV} is not a log filter (e.g. \"info\" or \"info,clickedge=debug\"); using the config's log, else info"
        );
    }
    handle
}

/// The log filter `text` says, with rustls's own log lines at `error` unless it names rustls:
/// rustls warns of a client's odd hello (an address as its name, a name that is no name), with
/// the client's bytes in the line, so at `warn` every client could write to the log at will.
fn filter_of(text: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    if names_rustls(text) {
        EnvFilter::try_new(text)
    } else {
        EnvFilter::try_new(format!("{text},rustls=error"))
    }
}

/// Whether a directive of the filter `text` is for rustls's target or one of its modules
/// (`rustls=warn`, `rustls::server=debug`), not another crate's (`tokio_rustls=debug`).
fn names_rustls(text: &str) -> bool {
    text.split(',').any(|directive| {
        let target = directive
            .split(['=', '['])
            .next()
            .unwrap_or_default()
            .trim();
        target == "rustls" || target.starts_with("rustls::")
    })
}

/// SIGHUP: re-reads the config file for its `log` filter, and the certificates and link keys
/// from the store. Nothing stops serving, no click is touched; other changed keys wait for a
/// restart. A file that no longer parses changes nothing and says why.
async fn reload(app: &App, config_path: Option<&Path>, log_filter: &LogFilter) {
    let filter = match Config::load(config_path) {
        Ok(config) => config.log,
        Err(e) => {
            tracing::warn!(
                error = %errors::chain(&e),
                "SIGHUP: the config file was not re-read; the log filter stays as it was"
            );
            None
        }
    };
    let reloaded = app.reload().await;
    let log = filter.as_deref().unwrap_or("(unchanged)");
    match (&reloaded.certificates, &reloaded.link_keys) {
        (Ok(certificates), Ok(link_keys)) => tracing::info!(
            certificates,
            link_keys,
            log,
            "SIGHUP: reloaded certificates and link keys from the store{}; other config changes \
             take effect at restart",
            if filter.is_some() {
                " and the log filter from the config"
            } else {
                ""
            }
        ),
        // Each part says whether it was reloaded: one may have been though the other failed.
        (certificates, link_keys) => {
            let said = |part: &anyhow::Result<usize>| match part {
                Ok(n) => format!("reloaded ({n})"),
                Err(e) => format!("failed, serving on with what was loaded: {e:#}"),
            };
            tracing::warn!(
                certificates = %said(certificates),
                link_keys = %said(link_keys),
                log,
                "SIGHUP: reloading from the store failed in part; run it again once the store answers"
            );
        }
    }
    // Last, so the lines above are logged whatever the new filter lets through. The config
    // validated the filter: it parses.
    if let Some(filter) = filter
        && let Ok(parsed) = filter_of(&filter)
        && let Err(e) = log_filter.reload(parsed)
    {
        tracing::warn!(error = %e, "SIGHUP: the log filter could not be replaced");
    }
}

/// The next signal. Without handlers, never: waiting forever is better than exiting at once.
async fn next_signal(signals: &mut Option<Signals>) -> Event {
    match signals {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// jemalloc rather than glibc malloc: its thread caches make the per-click allocations (request,
/// headers, the click on its way to the writer thread) cheaper, and an idle connection's partly
/// used buffers cost fewer resident pages. Figures in BENCHMARKS.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `key=addr` for each address, space-separated (`https=0.0.0.0:443 https=[::]:443`).
fn words(key: &str, addrs: &[std::net::SocketAddr]) -> String {
    let words: Vec<String> = addrs.iter().map(|a| format!("{key}={a}")).collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a directive for rustls itself keeps its warnings in the log; one for a crate whose
    /// name holds the word does not.
    #[test]
    fn only_a_directive_for_rustls_itself_names_it() {
        for named in [
            "rustls=warn",
            "info,rustls::server=debug",
            "info,rustls",
            "info, rustls[handshake]=debug",
        ] {
            assert!(names_rustls(named), "{named}");
        }
        for other in ["info", "info,tokio_rustls=debug", "hyper_rustls=trace"] {
            assert!(!names_rustls(other), "{other}");
        }
    }
}
