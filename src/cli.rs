//! Command-line interface: argument definitions and the client commands that talk to a running
//! edge's admin API (`domain`, `link`, `rewrite`, `keys`). `serve` itself is in `main.rs` and [`crate::app`].

mod checks;
mod classify;
mod client;
mod cluster;
mod confirm;
mod domain;
mod follow;
mod health;
pub(crate) mod out;
mod rewrite;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::config::{Config, LogFormat};
use crate::onboarding::escape::escape;
use client::Client;
pub use cluster::ClusterAction;
use confirm::confirm;
pub use domain::DomainAction;
pub use follow::{ClicksAction, FollowArgs};
use out::say;
pub use rewrite::RewriteArgs;

/// Environment variable holding the admin token for client commands.
pub const TOKEN_ENV: &str = "CLICKEDGE_ADMIN_TOKEN";

pub(crate) const CONFIG_REFERENCE: &str = "\
Configuration (TOML; every key optional; unknown keys are an error):
  data_dir = \"./clickedge-data\"         store, local CA (ca.pem), admin-token, clicks
  shutdown_grace = \"10s\"                time for in-flight requests after SIGTERM/SIGINT/SIGQUIT
  shutdown_delay = \"0s\"                 /readyz answers 503 this long, still serving, before
                                        the listeners close (load balancers stop sending)
  log_format = \"text\"                   or \"json\"; --log-format and $CLICKEDGE_LOG_FORMAT win
  log = \"info\"                          log filter when CLICKEDGE_LOG is unset; SIGHUP applies it
  [listen]
  https = \"127.0.0.1:8443\"              clicks over TLS
  http  = \"127.0.0.1:8080\"              ACME HTTP-01, upgrade to HTTPS
  admin = \"127.0.0.1:9180\"              admin API, /metrics, /healthz, /readyz
  metrics = (none)                      optional listener serving only /metrics (no token)
  proxy_protocol = false                true: https and http expect a PROXY v1/v2 header
  trusted_proxies = []                  the load balancers sending it: [\"10.0.0.0/8\", ...]
  https_threads = 0                     0: https on the shared runtime; N: N threads of its own
  [store]
  kind = \"sqlite\"                       one embedded file, mode 0600; \"postgres\" with url
  path = \"<data_dir>/clickedge.db\"
  url = (none)                          postgres://USER@HOST:5432/DB: a cluster's shared store
                                        (password in the URL or PGPASSWORD; needs the seal key)
  [tls]
  issuer = \"local\"                      \"local\" (built-in CA) or \"acme\"
  on_demand_timeout = \"10s\"             how long a first handshake waits for its certificate
  session_resumption = true             false forces full handshakes (benchmarks)
  handshake_timeout = \"10s\"             time to send a ClientHello and finish the handshake
  cert_cache_capacity = 100000          certificates kept in memory
  ask = (none)                          URL approving extra names: GET ?domain=NAME, a direct 200
  ask_cache_ttl = \"5m\"                  how long an ask answer is remembered (failures: 10s)
  ask_rate = 10                         ask requests per second, all names; beyond, refused unasked
  ask_burst = 20                        ask requests at once after a quiet spell
  local_ca_names = [\"example\", \"example.com\", \"example.net\", \"example.org\", \"invalid\",
                    \"localhost\", \"test\"]  the only zones the built-in CA vouches for
  [acme]
  directory = \"https://acme-v02.api.letsencrypt.org/directory\"
  contact = []                          mailto: only, e.g. [\"mailto:ops@example.com\"]
  challenges = [\"http-01\", \"tls-alpn-01\"]  in order of preference
  ca_root = (none)                      only root trusted for the ACME server's HTTPS
  eab_kid, eab_hmac_key = (none)        external account binding (both or neither)
  max_orders = 300                      new orders per order_window; more wait
  order_window = \"3h\"
  order_timeout = \"90s\"                 one order, from creation to certificate
  lease_ttl = \"60s\"                     a node's claim on a name's order, renewed every third
  [clicks]
  sink = \"file\"                         JSON Lines files
  dir = \"<data_dir>/clicks\"
  durability = \"buffered\"               or \"synced\": the 302 waits for fdatasync
  flush_interval = \"100ms\"
  queue_capacity = 65536                clicks waiting for the writer (at most 1048576);
                                        beyond, counted drops
  max_file_bytes = 67108864             rotate past 64 MiB...
  rotate_interval = \"1h\"                ...or past this age (at least 1s)
  max_buffered_bytes = 67108864         held in memory while the log cannot be written
  group_read = false                    true: click dir 0750, files 0640 (else 0700, 0600)
  max_total_bytes = 10737418240         10 GiB; oldest click files deleted past it (0: no cap)
  max_clicks_per_ip_per_sec = 10        past it, redirected but not logged (counted); 0: no bound
  retention = (none)                    closed click files last written longer ago deleted (once
                                        shipped; at least 1m)
  stream = (none)                       \"nats\": ship every click to NATS JetStream
  nats_url = \"nats://127.0.0.1:4222\"    tls:// for TLS
  nats_subject = \"clicks.{node_id}\"     {node_id} from [cluster]
  nats_stream = \"CLICKS\"                created if missing
  nats_credentials = (none)             NATS .creds file
  networks_file = (none)                scanner ranges extending (or replacing) the
                                        built-in catalogue
  early_window = \"60s\"                  a click this soon after the send counts against it
  probable_window = \"600s\"              this soon from a probable scanner network: a machine
  message_ttl = \"10m\"                   message table: a source's clicks on a message kept this long
  message_table_bytes = 67108864        message table memory cap (LRU eviction beyond, counted)
  ip = \"full\"                           or \"truncated\": every line's ip cut to its IPv4 /24
                                        or IPv6 /48
  visitor = false                       true: lines get \"visitor\" (daily-salted hash, salt
                                        in memory only)
  [limits]
  header_read_timeout = \"10s\"           slowloris guard
  max_header_bytes = 16384              larger request heads get 431
  max_uri_bytes = 8192                  longer URIs get 414; 256 to max_header_bytes - 4096
  max_connections = 10000               HTTPS listener; past it, accept() waits (backpressure)
  http_max_connections = 1000           HTTP listener, a cap of its own; past it, accept() waits
  max_connections_per_ip = 256          per address (IPv6: per /64) and listener; 0: off
  keepalive_timeout = \"60s\"             no request in flight this long: asked to close
  close_timeout = \"10s\"                 ...and dropped if still open this long after
  write_timeout = \"30s\"                 writes stalled this long (client not reading): dropped
  h2_keepalive_interval = \"20s\"         h2 PING after this long without a frame
  h2_keepalive_timeout = \"10s\"          ...unanswered this long: dropped
  h2_max_concurrent_streams = 100       at least 1
  admin_max_body_bytes = 65536          larger admin requests get 413
  admin_max_connections = 64            admin listener; past it, connections are closed
  admin_header_read_timeout = \"10s\"     half-sent admin requests are closed
  [onboarding]
  cname_target = (none)                 the name customers CNAME to (an apex: ALIAS, or its IPs)
  addresses = []                        edge IPs A/AAAA records may point to
  dns_servers = []                      resolvers (ip:port); default the system's
  caa_identities = [\"letsencrypt.org\"]  CAA identities of the CA, one must be allowed
  http_port = 80                        port of the HTTP reachability check
  recheck_interval = \"5m\"               re-check domains without a valid certificate (at least 10s)
  danger_allow_private_addresses = false  tests only: let the HTTP check use loopback/private IPs
  public_url = (none)                   https://NAME of the customers' status pages
  [admin]
  token = (generated)                   else generated once into <data_dir>/admin-token (0600)
  token_file = (none)                   read the token from this file (a mounted secret)
  read_tokens = []                      read-only tokens (dashboards, support): no change
  read_tokens_file = (none)             more read-only tokens, one a line
  hosts = []                            names answered besides IPs and localhost; others get 421
  secure_cookie = false                 true: the /ui/ session cookie is Secure (HTTPS proxy)
  [cluster]
  node_id = (host name)                 this node's unique name among a cluster's
  seal_key_file = (none)                seal key (clickedge cluster keygen FILE), mode 0600, or
                                        env CLICKEDGE_SEAL_KEY; required with store.url
  scan_interval = \"30s\"                 read every change since the last applied this often
                                        (NOTIFY: sooner); a new link key seals after 2x + 5s

The file is --config FILE, else $CLICKEDGE_CONFIG, else none (all defaults). Byte counts
(*_bytes) take an integer or a size: \"64MiB\", \"10 GiB\", \"512KB\"; durations \"100ms\", \"5m\", \"1h\".

Signals: SIGTERM, SIGINT, SIGQUIT stop gracefully (every queued click written); SIGHUP reloads
the log filter, certificates and link keys; SIGUSR1, SIGUSR2, SIGPIPE are ignored. One serve
per data dir: a second one refuses, naming the first one's pid (<data_dir>/clickedge.lock).";

/// clickedge: HTTPS click-tracking redirect edge with on-demand certificates.
#[derive(Debug, Parser)]
#[command(name = "clickedge", version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML). Default: $CLICKEDGE_CONFIG, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `serve`'s `--log-format` written before the command (`clickedge --log-format json
    /// serve`), as it could be when every command listed it; hidden.
    #[arg(
        long = "log-format",
        id = "log_format_before",
        value_name = "FORMAT",
        hide = true
    )]
    pub log_format: Option<LogFormat>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge (HTTPS clicks, HTTP, admin API).
    #[command(after_long_help = CONFIG_REFERENCE)]
    Serve {
        /// Log lines: `text` or `json` (one object per line). Default: $CLICKEDGE_LOG_FORMAT,
        /// else the config's `log_format`, else `text`.
        #[arg(long, value_name = "FORMAT")]
        log_format: Option<LogFormat>,
    },
    /// Ask a running edge whether it is ready (`/readyz`): exits 0 when it is, 1 when not.
    Health {
        /// Admin API base URL. Default: http://<listen.admin from the config>.
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
    },
    /// Manage link domains on a running edge.
    Domain {
        /// Where and how to reach the admin API.
        #[command(flatten)]
        client: ClientArgs,
        /// What to do.
        #[command(subcommand)]
        action: DomainAction,
    },
    /// Mint a sealed link: prints https://<domain>/c/<token>.
    Link {
        /// Where and how to reach the admin API.
        #[command(flatten)]
        client: ClientArgs,
        /// Destination URL: http:// or https:// with a host, at most 4096 bytes, no user name or
        /// password before the host.
        url: String,
        /// Link domain (must be registered; an internationalised name may be given in Unicode).
        #[arg(long)]
        domain: String,
        /// Metadata carried in the link and logged with each click; repeatable, each key once, at
        /// most 32 pairs (keys 1-64 bytes, values at most 512 bytes).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// Message context sealed in the link, used to judge clicks (see README).
        #[command(flatten)]
        message: MessageArgs,
    },
    /// Prepare a whole message: its links sealed, an open pixel and a decoy when asked; prints
    /// the rewritten parts (see README, "Preparing a message").
    Rewrite(RewriteArgs),
    /// Read the click stream (`clicks.stream = "nats"`).
    Clicks {
        /// What to do.
        #[command(subcommand)]
        action: ClicksAction,
    },
    /// Manage the link keys (rotation).
    Keys {
        /// Where and how to reach the admin API.
        #[command(flatten)]
        client: ClientArgs,
        /// What to do.
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Judge recorded request traces (JSON lines) with the rules `serve` uses under this config:
    /// prints the click and revision lines the edge would log, and for labelled traces a
    /// confusion table with precision and recall for `machine` (on stderr). See README.
    Classify {
        /// The traces, one JSON object a line (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        replay: PathBuf,
    },
    /// Set up and watch nodes sharing one PostgreSQL store (the seal key, their status).
    Cluster {
        /// What to do.
        #[command(subcommand)]
        action: ClusterAction,
    },
}

/// How client commands reach the admin API.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Admin API base URL. Default: http://<listen.admin from the config>.
    #[arg(long, value_name = "URL", global = true)]
    pub admin: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `clickedge keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// List link keys.
    List,
    /// Add a new sealing key; older keys keep opening their links.
    Rotate,
    /// Retire a key: it seals no new link and keeps opening its own (remove it later).
    Retire {
        /// Key id.
        id: u16,
    },
    /// Remove a key: links it sealed stop working at once. Asks first on a terminal; elsewhere
    /// (scripts) refuses without --yes.
    Remove {
        /// Key id.
        id: u16,
        /// Remove without asking.
        #[arg(long)]
        yes: bool,
    },
}

/// The message a minted link belongs to (`clickedge link`), all optional.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MessageArgs {
    /// The message's id (1 to 128 bytes): links of one message are judged together (bursts,
    /// coverage, decoys).
    #[arg(long)]
    message: Option<String>,
    /// This link's position among the message's links, from 0.
    #[arg(long, requires = "message")]
    index: Option<u32>,
    /// How many links the message has.
    #[arg(long, requires = "message")]
    count: Option<u32>,
    /// When the message was sent (RFC 3339); without it, the minting time counts.
    #[arg(long, requires = "message")]
    sent_at: Option<String>,
    /// content, footer, unsubscribe, confirm or decoy (a hidden link no person clicks).
    #[arg(long, requires = "message")]
    role: Option<String>,
}

impl MessageArgs {
    /// The context's members of the `POST /v1/links` body.
    fn add_to(&self, body: &mut serde_json::Map<String, Value>) {
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(k.into(), v);
            }
        };
        put("message", self.message.clone().map(Value::from));
        put("index", self.index.map(Value::from));
        put("count", self.count.map(Value::from));
        put("sent_at", self.sent_at.clone().map(Value::from));
        put("role", self.role.clone().map(Value::from));
    }
}

/// A `--meta` value that is not `KEY=VALUE`.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// No `=` at all.
    #[error("{0:?} is not KEY=VALUE (e.g. --meta campaign=spring)")]
    NoEquals(String),
    /// `=value`.
    #[error("{0:?} has an empty key: give KEY=VALUE (e.g. --meta campaign=spring)")]
    EmptyKey(String),
}

fn parse_meta(s: &str) -> Result<(String, String), MetaError> {
    match s.split_once('=') {
        Some(("", _)) => Err(MetaError::EmptyKey(s.to_owned())),
        Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
        None => Err(MetaError::NoEquals(s.to_owned())),
    }
}

/// The `--meta` pairs as the API's `meta` object; a key given twice is refused.
fn meta_object(meta: Vec<(String, String)>) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut pairs = serde_json::Map::new();
    for (k, v) in meta {
        if pairs.insert(k.clone(), Value::String(v)).is_some() {
            bail!("--meta {k}=… is given twice; give each key once");
        }
    }
    Ok(pairs)
}

impl Command {
    /// Whether the command reads the config: `cluster keygen` runs locally, and `health
    /// --admin URL` is told where to ask, so a config file that is missing or does not load
    /// (`$CLICKEDGE_CONFIG` naming another host's) must not stop them.
    pub fn needs_config(&self) -> bool {
        !matches!(
            self,
            Command::Cluster {
                action: ClusterAction::Keygen { .. }
            } | Command::Health { admin: Some(_) }
        )
    }
}

/// `field` of the admin API's answer `v`, a string; an error naming it when the answer has none
/// (an edge of another version), rather than an empty line a script takes for one.
pub(crate) fn answered<'a>(v: &'a Value, field: &str) -> anyhow::Result<&'a str> {
    v[field].as_str().ok_or_else(|| {
        anyhow::anyhow!("the admin API's answer has no \"{field}\": {v}; is the edge the same version as this command?")
    })
}

/// `word` as it pastes into a POSIX shell: as it is when it is one plain word, else quoted.
pub fn shell_word(word: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@%,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        std::borrow::Cow::Borrowed(word)
    } else {
        std::borrow::Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// Runs a client command against the admin API.
pub async fn run_client(config: &Config, command: Command) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        Command::Serve { .. } => unreachable!("serve is handled by main"),
        Command::Health { admin } => health::run(config, admin.as_deref()).await?,
        Command::Cluster { action } => cluster::run(config, action).await?,
        Command::Clicks { action } => follow::run(config, action).await?,
        Command::Classify { replay } => classify::run(config, &replay)?,
        Command::Rewrite(args) => rewrite::run(config, args).await?,
        Command::Domain { client, action } => domain::run(config, &client, action).await?,
        Command::Link {
            client,
            url,
            domain,
            meta,
            message,
        } => {
            let c = Client::new(config, &client)?;
            let mut body = serde_json::Map::new();
            body.insert("domain".into(), domain.into());
            body.insert("url".into(), url.into());
            body.insert("meta".into(), meta_object(meta)?.into());
            message.add_to(&mut body);
            let v = c
                .call(Method::POST, "/v1/links", Some(Value::Object(body)))
                .await?;
            if client.json {
                say!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                say!("{}", answered(&v, "link")?);
            }
        }
        Command::Keys { client, action } => {
            let c = Client::new(config, &client)?;
            let v = match &action {
                KeysAction::List => c.call(Method::GET, "/v1/keys", None).await?,
                KeysAction::Rotate => c.call(Method::POST, "/v1/keys", None).await?,
                KeysAction::Retire { id } => {
                    c.call(Method::POST, &format!("/v1/keys/{id}/retire"), None)
                        .await?
                }
                KeysAction::Remove { id, yes } => {
                    // Asked only about a key that can be removed: the question is not the
                    // answer's way to say it is not there.
                    let keys = c.call(Method::GET, "/v1/keys", None).await?;
                    let key = keys
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|k| k["id"] == *id);
                    // The store's own refusals, said before the question.
                    match key {
                        None => return Err(crate::keys::KeyError::NoSuchKey(*id).into()),
                        Some(k) if k["active"].as_bool() == Some(true) => {
                            return Err(sealing_refusal(*id, &keys).into());
                        }
                        Some(_) => {}
                    }
                    confirm(
                        *yes,
                        &format!("remove key {id}; links it sealed stop opening"),
                    )?;
                    c.call(Method::DELETE, &format!("/v1/keys/{id}"), None)
                        .await?
                }
            };
            if client.json {
                say!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            match action {
                KeysAction::List => {
                    say!("{:<6} {:<8} {:<21} RETIRED", "ID", "ACTIVE", "CREATED");
                    for k in v.as_array().cloned().unwrap_or_default() {
                        say!(
                            "{:<6} {:<8} {:<21} {}",
                            k["id"].to_string(),
                            if k["active"].as_bool() == Some(true) {
                                "yes"
                            } else {
                                ""
                            },
                            k["created_at"].as_str().unwrap_or("-"),
                            k["retired_at"].as_str().unwrap_or("-")
                        );
                    }
                }
                KeysAction::Retire { id } => say!(
                    "retired key {id}: it seals no new link and keeps opening its own; \
                     remove it when they are no longer clicked: clickedge keys remove {id}"
                ),
                KeysAction::Rotate => say!("{}", rotated(&v)),
                KeysAction::Remove { id, .. } => {
                    say!("removed key {id}; links it sealed no longer open")
                }
            }
        }
    }
    Ok(())
}

/// What `keys rotate` says of the key in the API's answer: in a cluster a new key opens links at
/// once but seals only from its `seals_from` (`"active": false` until then).
fn rotated(key: &Value) -> String {
    let id = &key["id"];
    match key["seals_from"].as_str() {
        Some(from) if key["active"].as_bool() != Some(true) => format!(
            "key {id} opens links now and seals new links from {from}, once every node has it; \
             until then the key sealing now keeps sealing them; older keys keep opening theirs"
        ),
        _ => format!("key {id} now seals new links; older keys keep opening theirs"),
    }
}

/// Why the sealing key `id` cannot be removed, from the key list: as the edge would refuse it,
/// saying when a newer key waiting out the seal delay takes over, if there is one.
fn sealing_refusal(id: u16, keys: &Value) -> crate::keys::KeyError {
    let time = |k: &Value, field: &str| k[field].as_str().and_then(crate::clock::parse_rfc3339);
    let waiting = keys
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| {
            Some((
                k["id"].as_u64()?,
                time(k, "created_at")?,
                time(k, "seals_from")?,
            ))
        })
        .min_by_key(|(_, _, ready_at)| *ready_at);
    match waiting {
        Some((next, created_at, ready_at)) => crate::keys::KeyError::NextNotReady {
            id,
            then: "remove",
            next: u16::try_from(next).unwrap_or(u16::MAX),
            delay: ready_at.duration_since(created_at).unwrap_or_default(),
            ready_at,
        },
        None => crate::keys::KeyError::Sealing(id),
    }
}
