//! `clickedge domain ...`: link domains on a running edge, through its admin API (`/v1/domains`):
//! add (with an optional fallback URL), list, show, change (`set`), check, share (the
//! customer's status page address), remove. Names are
//! printed as A-labels with their Unicode form beside them when they have one.

use std::borrow::Cow;

use anyhow::bail;
use clap::{ArgGroup, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::checks::{checks_verdict, count_status, print_checks, shown, with_progress};
use super::client::Refused;
use super::out::say;
use super::{Client, ClientArgs, answered, confirm, escape};
use crate::config::Config;

/// `clickedge domain ...`
#[derive(Debug, Subcommand)]
pub enum DomainAction {
    /// Register a domain (its certificate is issued at the first handshake). An
    /// internationalised name may be given in Unicode; it is kept as its A-labels.
    Add {
        /// e.g. links.example.com
        name: String,
        /// Where a link of this domain that does not open (forged, expired, its key removed)
        /// sends the recipient: an http:// or https:// URL with a host. Default: a page saying
        /// the link is not valid or has expired. Adding an existing domain without it keeps
        /// the one it has.
        #[arg(long, value_name = "URL")]
        fallback_url: Option<String>,
    },
    /// List registered domains, sorted by name, with their certificate status and fallback
    /// URL: all of them, or a page (--limit) at a time.
    List {
        /// Start after this name, in name order (it need not be registered; a first letter will
        /// do): the last name of the page before.
        #[arg(long, value_name = "NAME")]
        after: Option<String>,
        /// At most this many domains (1 to 1000); a full page says how to ask for the next.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::domains::LIST_PAGE)))]
        limit: Option<u32>,
    },
    /// Show one domain, with its latest checks.
    Show {
        /// The domain.
        name: String,
    },
    /// Change a domain: set or clear its fallback URL.
    #[command(group(ArgGroup::new("change").required(true).args(["fallback_url", "no_fallback_url"])))]
    Set {
        /// The domain.
        name: String,
        /// Where a link of this domain that does not open sends the recipient (http:// or
        /// https:// with a host).
        #[arg(long, value_name = "URL")]
        fallback_url: Option<String>,
        /// Clear the fallback URL: such links show the page saying the link is not valid.
        #[arg(long)]
        no_fallback_url: bool,
    },
    /// Check a domain's DNS, CAA, HTTP reachability and certificate now, with the fix for each
    /// failure. Exits 0 when nothing fails, 1 otherwise.
    Check {
        /// The domain.
        name: String,
    },
    /// Print the address of the domain's status page for its customer (needs
    /// `[onboarding] public_url`): the checks and the exact records to change, no token needed.
    Share {
        /// The domain.
        name: String,
        /// How long the address opens, e.g. 30d, 12h (at most 366d). Default 30d.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// Unregister a domain and delete its certificate. Asks first on a terminal; elsewhere
    /// (scripts) refuses without --yes.
    Remove {
        /// The domain.
        name: String,
        /// Remove without asking.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a `domain` command against the admin API.
pub(super) async fn run(
    config: &Config,
    client: &ClientArgs,
    action: DomainAction,
) -> anyhow::Result<()> {
    // A name that is no name (a URL, a wildcard) is answered here: in a request path it would
    // only meet "no such endpoint".
    let named = match &action {
        DomainAction::List { .. } => None,
        DomainAction::Add { name, .. }
        | DomainAction::Show { name }
        | DomainAction::Set { name, .. }
        | DomainAction::Check { name }
        | DomainAction::Share { name, .. }
        | DomainAction::Remove { name, .. } => Some(name),
    };
    if let Some(name) = named {
        crate::Domain::parse(name).map_err(|e| anyhow::anyhow!("{name:?}: {e}"))?;
    }
    let c = Client::new(config, client)?;
    // Whether an add registered the name (else it was there already).
    let mut created = true;
    let v = match &action {
        DomainAction::Add { name, fallback_url } => {
            let mut body = json!({ "name": name });
            if let Some(url) = fallback_url {
                body["fallback_url"] = url.as_str().into();
            }
            let (status, v) = c.send(Method::POST, "/v1/domains", Some(body)).await?;
            created = status == reqwest::StatusCode::CREATED;
            v
        }
        DomainAction::List { after, limit } => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if let Some(after) = after {
                query.append_pair("after", after);
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
            let path = match query.finish() {
                q if q.is_empty() => "/v1/domains".to_owned(),
                q => format!("/v1/domains?{q}"),
            };
            c.call(Method::GET, &path, None).await?
        }
        DomainAction::Show { name } => {
            c.call(Method::GET, &format!("/v1/domains/{name}"), None)
                .await?
        }
        DomainAction::Set {
            name, fallback_url, ..
        } => {
            let body = json!({ "fallback_url": fallback_url });
            c.call(Method::PATCH, &format!("/v1/domains/{name}"), Some(body))
                .await?
        }
        DomainAction::Check { name } => {
            let path = format!("/v1/domains/{name}/check");
            let call = c.call(Method::POST, &path, None);
            with_progress(
                &format!("checking {name}: DNS, CAA, HTTP, certificate"),
                call,
            )
            .await?
        }
        DomainAction::Share { name, ttl } => {
            let body = match ttl {
                Some(ttl) => json!({ "ttl": ttl }),
                None => json!({}),
            };
            c.call(
                Method::POST,
                &format!("/v1/domains/{name}/share"),
                Some(body),
            )
            .await?
        }
        DomainAction::Remove { name, yes } => {
            // Asked only about a name that is there.
            if let Err(e) = c
                .call(Method::GET, &format!("/v1/domains/{name}"), None)
                .await
            {
                if e.downcast_ref::<Refused>().is_some_and(|r| {
                    // Not found as a domain, not as a path (an --admin URL with a prefix).
                    r.status == reqwest::StatusCode::NOT_FOUND
                        && r.message.contains("is not registered")
                }) {
                    bail!(
                        "domain {} is not registered: there is nothing to remove (clickedge domain list shows the names that are)",
                        escape(name)
                    );
                }
                return Err(e);
            }
            confirm(
                *yes,
                &format!("remove domain {name} and delete its certificate"),
            )?;
            c.call(Method::DELETE, &format!("/v1/domains/{name}"), None)
                .await?
        }
    };
    if client.json {
        say!("{}", serde_json::to_string_pretty(&v)?);
        if let DomainAction::Check { name } = &action {
            return checks_verdict(name, &v);
        }
        return Ok(());
    }
    match action {
        DomainAction::Add { name: given, .. } => {
            let name = v["name"]
                .as_str()
                .map_or(Cow::Borrowed(given.as_str()), escape);
            // The name as stored, when it differs from the one typed (case, a trailing dot).
            let typed = match given.trim() {
                typed if typed != name && v["unicode"].as_str() != Some(typed) => {
                    format!(" (given as {})", escape(typed))
                }
                _ => String::new(),
            };
            if created {
                say!("added {name}{}{typed}", also_shown_as(&v));
            } else {
                say!(
                    "{name}{}{typed} was registered already (a wait after a failed certificate order, if any, is cleared)",
                    also_shown_as(&v)
                );
            }
            if let Some(warning) = v["warning"].as_str() {
                say!("warning:     {}", escape(warning));
            }
            // Only a check marked `blocking` holds back orders (others, failing, say what else
            // to fix); the warning says why the issuer never vouches for the name.
            let blocking: Vec<Cow<'_, str>> = v["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["blocking"] == true)
                .map(|c| shown(&c["id"]))
                .collect();
            match v["certificate"]["status"].as_str() {
                Some("valid") => say!("certificate: valid"),
                _ if v["warning"].is_string() => say!("certificate: none (see the warning)"),
                _ if !blocking.is_empty() => say!(
                    "certificate: none until {} {}; then issued at the first HTTPS request",
                    blocking.join(" and "),
                    if blocking.len() == 1 {
                        "passes"
                    } else {
                        "pass"
                    }
                ),
                _ => {
                    say!("certificate: issued at the first HTTPS request for this name")
                }
            }
            say!("fallback:    {}", fallback(&v));
            if v["checks"].as_array().is_some_and(|c| !c.is_empty()) {
                say!();
                print_checks(&v);
                if !blocking.is_empty() {
                    say!(
                        "\nno certificate until these are fixed; then run: clickedge domain check {name}"
                    );
                } else if count_status(&v, "fail") > 0 {
                    say!("\nonce these are fixed, run: clickedge domain check {name}");
                }
            }
        }
        DomainAction::Check { name } => {
            print_checks(&v);
            return checks_verdict(&name, &v);
        }
        DomainAction::List { after, limit } => {
            let rows = v.as_array().cloned().unwrap_or_default();
            if let (true, Some(after)) = (rows.is_empty(), &after) {
                say!("no domains after {}", escape(after));
            } else if rows.is_empty() {
                say!("no domains; add one with: clickedge domain add links.example.com");
            } else {
                say!("{:<40} {:<8} {:<21} FALLBACK", "NAME", "CERT", "EXPIRES");
                for d in &rows {
                    let cert = &d["certificate"];
                    let expires = cert["not_after"]
                        .as_str()
                        .map_or(Cow::Borrowed("-"), escape);
                    say!(
                        "{:<40} {:<8} {:<21} {}",
                        format!("{}{}", shown(&d["name"]), also_shown_as(d)),
                        shown(&cert["status"]),
                        expires,
                        d["fallback_url"]
                            .as_str()
                            .map_or(Cow::Borrowed("-"), escape)
                    );
                }
            }
            // A full page may have more after it; a shorter one is the last.
            let last = rows.last().and_then(|d| d["name"].as_str());
            if let (Some(limit), Some(last)) = (limit, last)
                && rows.len() == limit as usize
            {
                say!(
                    "\nmore may follow: run the same command with --after {}",
                    escape(last)
                );
            }
        }
        DomainAction::Show { .. } => print_domain(&v),
        DomainAction::Set { name, .. } => say!("{name}: fallback {}", fallback(&v)),
        DomainAction::Share { .. } => {
            say!("{}", answered(&v, "url")?);
            say!("expires {}", shown(&v["expires_at"]));
        }
        DomainAction::Remove { name, .. } => say!("removed {name}"),
    }
    Ok(())
}

/// ` (bücher.example)` when the domain's Unicode form differs from its name, else nothing.
fn also_shown_as(v: &Value) -> String {
    match (v["name"].as_str(), v["unicode"].as_str()) {
        (Some(name), Some(unicode)) if unicode != name => format!(" ({})", escape(unicode)),
        _ => String::new(),
    }
}

/// Where links that do not open go, in words.
fn fallback(v: &Value) -> Cow<'_, str> {
    v["fallback_url"].as_str().map_or(
        Cow::Borrowed("none (links that do not open show the edge's page)"),
        escape,
    )
}

fn print_domain(v: &Value) {
    let cert = &v["certificate"];
    fn field(x: &Value) -> Cow<'_, str> {
        x.as_str().map_or(Cow::Borrowed("-"), escape)
    }
    say!("name:        {}{}", field(&v["name"]), also_shown_as(v));
    say!("added:       {}", field(&v["created_at"]));
    say!("fallback:    {}", fallback(v));
    if let Some(warning) = v["warning"].as_str() {
        say!("warning:     {}", escape(warning));
    }
    say!("certificate: {}", field(&cert["status"]));
    say!("  issuer:    {}", field(&cert["issuer"]));
    say!(
        "  not_before:{}",
        format_args!(" {}", field(&cert["not_before"]))
    );
    say!("  not_after: {}", field(&cert["not_after"]));
    match cert["next_renewal"].as_str() {
        Some(at) => say!("  renewal:   checked next at {}", escape(at)),
        None => say!("  renewal:   -"),
    }
    if let Some(e) = cert["last_error"].as_str() {
        say!("  last_error: {}", escape(e));
        say!("  failures:  {}", cert["failures"]);
        if let Some(t) = cert["retry_at"].as_str() {
            say!(
                "  retry_at:  {} (after fixing the cause, `clickedge domain add` again retries now)",
                escape(t)
            );
        }
    }
    say!();
    print_checks(v);
}
