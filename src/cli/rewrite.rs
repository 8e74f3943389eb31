//! `clickedge rewrite`: prepares a whole message through `POST /v1/rewrite` and prints the
//! rewritten parts as they are (with `--json`, the API's answer). With both parts given, each
//! is printed after a `==> html <==` / `==> text <==` line, as `head` does for several files.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use super::client::Client;
use super::out::{say, text};
use super::{ClientArgs, meta_object, parse_meta};
use crate::config::Config;

/// `clickedge rewrite` arguments.
#[derive(Debug, clap::Args)]
pub struct RewriteArgs {
    /// Where and how to reach the admin API.
    #[command(flatten)]
    client: ClientArgs,
    /// Link domain (must be registered).
    #[arg(long)]
    domain: String,
    /// The message's id (1 to 128 bytes), sealed in every link and the pixel.
    #[arg(long)]
    message: String,
    /// The HTML part (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// The plain-text part (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Metadata carried in every link and the pixel; repeatable, each key once.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// When the message is sent (RFC 3339).
    #[arg(long)]
    sent_at: Option<String>,
    /// Insert an open pixel just before </body> (HTML only: needs --html).
    #[arg(long, requires = "html")]
    pixel: bool,
    /// Insert a hidden decoy link (a hit marks its source as a machine; HTML only: needs --html).
    #[arg(long, requires = "html")]
    decoy: bool,
}

fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the message from stdin")
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Runs `clickedge rewrite`.
pub(super) async fn run(config: &Config, args: RewriteArgs) -> anyhow::Result<()> {
    if args.html.is_none() && args.text.is_none() {
        anyhow::bail!("nothing to rewrite: give --html FILE, --text FILE or both");
    }
    let stdin = Path::new("-");
    if args.html.as_deref() == Some(stdin) && args.text.as_deref() == Some(stdin) {
        anyhow::bail!(
            "--html - and --text - would both read stdin (the text part would be empty): give one of them a file"
        );
    }
    let mut body = serde_json::Map::new();
    body.insert("domain".into(), args.domain.into());
    body.insert("message".into(), args.message.into());
    body.insert("meta".into(), meta_object(args.meta)?.into());
    if let Some(p) = &args.html {
        body.insert("html".into(), read(p)?.into());
    }
    if let Some(p) = &args.text {
        body.insert("text".into(), read(p)?.into());
    }
    if let Some(s) = args.sent_at {
        body.insert("sent_at".into(), s.into());
    }
    body.insert("pixel".into(), args.pixel.into());
    body.insert("decoy".into(), args.decoy.into());
    let c = Client::new(config, &args.client)?;
    let v = c
        .call(
            reqwest::Method::POST,
            "/v1/rewrite",
            Some(Value::Object(body)),
        )
        .await?;
    if args.client.json {
        say!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(why) = v["decoy_skipped"].as_str() {
        eprintln!("warning: no decoy: {why}");
    }
    let both = args.html.is_some() && args.text.is_some();
    for part in ["html", "text"] {
        if let Some(s) = v[part].as_str() {
            if both {
                say!("==> {part} <==");
            }
            text(s);
            // The next part's header on a line of its own, as `head` prints it.
            if both && part == "html" && !s.is_empty() && !s.ends_with('\n') {
                say!("");
            }
        }
    }
    Ok(())
}
