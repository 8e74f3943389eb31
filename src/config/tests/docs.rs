//! The configuration as documented: the contract's full example, README's block, and the
//! keys `serve --help` names, all parsed by the code that reads a real file.

use super::*;

#[test]
fn full_contract_example_parses() {
    let c = parse(
        r#"
data_dir = "/var/lib/clickedge"
[listen]
https = "0.0.0.0:443"
http  = "0.0.0.0:80"
admin = "127.0.0.1:9180"
[tls]
issuer = "acme"
on_demand_timeout = "5s"
session_resumption = false
[acme]
directory = "https://acme.example/dir"
contact = ["mailto:ops@example.com"]
challenges = ["http-01", "tls-alpn-01"]
ca_root = "/etc/clickedge/root.pem"
[clicks]
sink = "file"
dir = "/var/log/clicks"
durability = "buffered"
flush_interval = "50ms"
[onboarding]
cname_target = "edge.example.net"
addresses = ["203.0.113.10"]
dns_servers = ["127.0.0.1:53"]
caa_identities = ["letsencrypt.org"]
[admin]
token = "0123456789abcdef0123"
"#,
    )
    .unwrap();
    assert_eq!(c.tls.issuer, IssuerKind::Acme);
    assert_eq!(
        c.acme.challenges,
        vec![ChallengeKind::Http01, ChallengeKind::TlsAlpn01]
    );
    assert_eq!(c.tls.on_demand_timeout, Duration::from_secs(5));
    assert!(!c.tls.session_resumption);
    assert_eq!(c.clicks.flush_interval, Duration::from_millis(50));
    assert_eq!(c.clicks_dir(), PathBuf::from("/var/log/clicks"));
}

/// The first TOML block under README's "## Configuration".
fn readme_config_block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    readme
        .split_once("\n## Configuration\n")
        .and_then(|(_, s)| s.split_once("```toml\n"))
        .and_then(|(_, s)| s.split_once("\n```"))
        .expect("a toml block under README's \"## Configuration\"")
        .0
        .to_owned()
}

/// README's "Configuration" block is the reference users copy: it must parse as it stands (a key
/// written twice there once made TOML refuse the whole file). Keys whose value depends on the
/// machine (a path under the data dir, a file that must exist) are shown commented out.
#[test]
fn readme_configuration_block_parses_as_it_stands() {
    if let Err(e) = parse(&readme_config_block()) {
        panic!("README's configuration block does not parse: {e}");
    }
}

/// The `(table, key)` pairs a config listing names: a `[table]` line opens a table, and a line
/// whose first word (after an optional `# `) is followed by `=` names keys (`a, b =` two).
fn keys_named(listing: &str) -> std::collections::BTreeSet<(String, String)> {
    let mut table = String::new();
    let mut keys = std::collections::BTreeSet::new();
    for line in listing.lines().map(str::trim) {
        let line = line.strip_prefix("# ").unwrap_or(line);
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split_once(']')) {
            table = name.0.to_owned();
        } else if let Some((names, _)) = line.split_once(" =") {
            for name in names.split(", ").map(str::trim) {
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    keys.insert((table.clone(), name.to_owned()));
                }
            }
        }
    }
    keys
}

/// README's "Configuration" block and `clickedge serve --help` name the same keys, each under
/// the same table.
#[test]
fn serve_help_and_readme_name_the_same_config_keys() {
    let readme = keys_named(&readme_config_block());
    let help = keys_named(crate::cli::CONFIG_REFERENCE);
    assert!(readme.len() > 50, "README's block read: {readme:?}");
    let only = |a: &std::collections::BTreeSet<_>, b: &std::collections::BTreeSet<_>| {
        a.difference(b).cloned().collect::<Vec<(String, String)>>()
    };
    assert_eq!(only(&readme, &help), [], "in README, not in serve --help");
    assert_eq!(only(&help, &readme), [], "in serve --help, not in README");
}
