//! The files under `deploy/`, each checked by the tool that will read it in production: the
//! systemd unit by `systemd-analyze verify`, the alert rules by `promtool` (syntax and their
//! unit tests), the scrape config and rules by a real Prometheus scraping a running edge (one that
//! streams its clicks to a real `nats-server`, so that the shipping series exist too), the
//! Grafana dashboard's queries against that edge's `/metrics`, the Kubernetes manifests by
//! `kubernetes-validate` (its bundled schemas, strict), and the shipped edge configs by the
//! edge's own config loader. The container script is run by hand (README "Running in
//! production"); Vector has no Debian package, so its config is checked against the click files
//! the edge really writes, not by Vector. Prometheus's part is in `deploy/prometheus.rs`, the
//! Kubernetes manifests' in `deploy/kubernetes.rs`.

mod common;

#[path = "deploy/kubernetes.rs"]
mod kubernetes;
#[path = "deploy/prometheus.rs"]
mod prometheus;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Edge;
use common::nats::NatsServer;
use common::pebble::free_tcp_port;
use serde_json::{Value, json};

const DOMAIN: &str = "links.example.com";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Runs `program` with `args`, failing with the Debian package to install when it is missing.
fn run(program: &str, args: &[&str], cwd: &Path, package: &str) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} could not run ({e}): install the Debian package `{package}` (scripts/test does)")
        })
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `clickedge_…` metric name in `text`.
fn clickedge_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("clickedge_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// An edge that has issued a certificate, handshaken and redirected a click, so that every
/// metric it exports on demand (labelled series appear at their first event) is there; it
/// streams its clicks to a NATS JetStream server (returned with it, to keep it running): the
/// shipping metrics exist only with a stream.
async fn streaming_edge_with_a_click() -> (NatsServer, Edge) {
    let nats = NatsServer::start();
    let config = format!(
        "[clicks]\nstream = \"nats\"\nnats_url = \"{}\"\n",
        nats.url()
    );
    let edge = clicked(Edge::start_with(&config)).await;
    (nats, edge)
}

async fn clicked(edge: Edge) -> Edge {
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/a", json!({})).await;
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
    edge.wait_for_clicks(1);
    edge
}

/// The names a live edge exports.
async fn exported(edge: &Edge) -> BTreeSet<String> {
    edge.metrics()
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn systemd_unit_verifies() {
    // verify checks that ExecStart names an executable: point it at the binary under test.
    let unit = std::fs::read_to_string(deploy("systemd/clickedge.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/clickedge serve"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("clickedge.service"),
        unit.replace("/usr/local/bin/clickedge", common::bin()),
    )
    .expect("writing unit");
    let out = run(
        "systemd-analyze",
        &["verify", "./clickedge.service"],
        dir.path(),
        "systemd",
    );
    assert_ok("systemd-analyze verify", &out);
    assert!(
        out.stderr.is_empty(),
        "systemd-analyze verify warned:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unit's `Key=value` settings, comments aside.
fn unit_settings(unit: &str) -> Vec<(&str, &str)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect()
}

#[test]
fn systemd_unit_gives_the_click_log_a_directory_its_group_can_read() {
    // The state directory is the owner's alone, so a shipping agent in the clickedge group reads
    // the click log in the logs directory: writable under ProtectSystem=strict, and 0750 like the
    // directory clicks.group_read makes.
    let unit = std::fs::read_to_string(deploy("systemd/clickedge.service")).expect("unit");
    let settings = unit_settings(&unit);
    for setting in [
        ("StateDirectoryMode", "0700"),
        ("ProtectSystem", "strict"),
        ("LogsDirectory", "clickedge"),
        ("LogsDirectoryMode", "0750"),
    ] {
        assert!(settings.contains(&setting), "{setting:?} not in the unit");
    }
}

#[test]
fn systemd_unit_leaves_proc_stat_readable_for_the_process_start_time() {
    // ProcSubset=pid hides /proc/stat, whose boot time process_start_time_seconds is made from
    // (it would read 0); ProtectProc=invisible still hides other users' processes.
    let unit = std::fs::read_to_string(deploy("systemd/clickedge.service")).expect("unit");
    let settings = unit_settings(&unit);
    assert!(
        !settings.iter().any(|(k, _)| *k == "ProcSubset"),
        "ProcSubset= in the unit"
    );
    assert!(settings.contains(&("ProtectProc", "invisible")));
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = deploy("prometheus");
    for args in [
        ["check", "rules", "clickedge.rules.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "clickedge.rules.test.yml"],
    ] {
        let out = run("promtool", &args, &dir, "prometheus");
        assert_ok(&format!("promtool {}", args.join(" ")), &out);
    }
}

#[tokio::test]
async fn dashboard_queries_name_only_metrics_a_running_edge_exports() {
    let (_nats, edge) = streaming_edge_with_a_click().await;
    let live = exported(&edge).await;
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/clickedge.json")).unwrap())
            .expect("dashboard JSON");
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queried.extend(clickedge_names(target["expr"].as_str().expect("expr")));
        }
    }
    assert!(queried.len() >= 15, "the dashboard queries {queried:?}");
    let missing: Vec<_> = queried.difference(&live).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the edge does not export: {missing:?}"
    );
}

/// Gauges that count the store, not the node: every node sharing a PostgreSQL store reports the
/// same value (`src/certs/gauges.rs`).
const STORE_WIDE_GAUGES: &[&str] = &[
    "clickedge_certificates_held",
    "clickedge_certificates_expiring",
    "clickedge_certificates_expired",
];

#[test]
fn dashboard_does_not_add_up_store_wide_gauges_across_nodes() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/clickedge.json")).unwrap())
            .expect("dashboard JSON");
    let mut seen = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for gauge in STORE_WIDE_GAUGES {
                if clickedge_names(expr).contains(*gauge) {
                    seen += 1;
                    assert!(
                        expr.starts_with(&format!("max({gauge}{{")),
                        "{}: {expr} (the same count from every node: max, not sum)",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert_eq!(seen, STORE_WIDE_GAUGES.len());
}

/// Metrics the rules name that a local-CA edge does not export: ACME orders exist with
/// `tls.issuer = "acme"` only.
const RULE_METRICS_ELSEWHERE: &[&str] = &["clickedge_acme_orders_total"];

#[tokio::test]
async fn alert_rules_name_only_metrics_the_edge_exports() {
    let (_nats, edge) = streaming_edge_with_a_click().await;
    let live = exported(&edge).await;
    let rules = std::fs::read_to_string(deploy("prometheus/clickedge.rules.yml")).unwrap();
    let named = clickedge_names(
        &rules
            .lines()
            .filter(|l| l.trim_start().starts_with("expr:"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(named.len() >= 8, "the rules name {named:?}");
    let missing: Vec<_> = named
        .iter()
        .filter(|n| !live.contains(*n) && !RULE_METRICS_ELSEWHERE.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "rules name metrics the edge does not export: {missing:?}"
    );
}

#[test]
fn shipped_edge_configs_load() {
    for path in [
        "container/clickedge.toml",
        "kubernetes/overlays/single-node/clickedge.toml",
    ] {
        if let Err(e) = clickedge::config::Config::load(Some(&deploy(path))) {
            panic!("{path}: {e:#}");
        }
    }
}

#[test]
fn shipped_cluster_config_loads() {
    let path = deploy("kubernetes/overlays/cluster/clickedge.toml");
    if let Err(e) = clickedge::config::Config::load(Some(&path)) {
        panic!("{}: {e:#}", path.display());
    }
}

/// The `[clicks]` table shown in `text`'s comments (`#   [clicks]` and the `#   ` lines after it).
fn commented_clicks_table(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim_end() != "#   [clicks]")
        .map_while(|l| l.strip_prefix("#   "))
        .collect();
    assert!(!lines.is_empty(), "no commented [clicks] table");
    lines.join("\n")
}

#[tokio::test]
async fn vector_tails_the_click_files_the_edge_writes_with_checkpoints() {
    let text = std::fs::read_to_string(deploy("vector/vector.toml")).unwrap();
    let vector: toml::Table = toml::from_str(&text).expect("vector.toml");
    // The edge's config the comments of vector.toml and of the systemd unit show: the click log
    // in the unit's logs directory, readable by the group Vector is in.
    let unit = std::fs::read_to_string(deploy("systemd/clickedge.service")).unwrap();
    for shown in [commented_clicks_table(&text), commented_clicks_table(&unit)] {
        let config = clickedge::config::Config::parse(&shown, Path::new("<comment>"))
            .unwrap_or_else(|e| panic!("{shown}: {e:#}"));
        assert_eq!(
            config.clicks.dir.as_deref(),
            Some(Path::new("/var/log/clickedge"))
        );
        assert!(config.clicks.group_read, "{shown}");
    }
    // An edge writing such a log (in a directory of the test's own).
    let log = tempfile::tempdir().unwrap();
    let dir = log.path().join("clickedge");
    let edge = Edge::start_with(&format!(
        "[clicks]\ndir = \"{}\"\ngroup_read = true\n",
        dir.display()
    ));
    edge.add_domain(DOMAIN).await;
    let link = edge.mint(DOMAIN, "https://example.com/a", json!({})).await;
    assert_eq!(edge.click_status(DOMAIN, &link).await, 302);
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::read_clicks(&dir).is_empty() {
        assert!(Instant::now() < deadline, "no click in {}", dir.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        vector["data_dir"].as_str().is_some(),
        "checkpoints need data_dir"
    );
    let source = &vector["sources"]["clicks"];
    assert_eq!(source["type"].as_str(), Some("file"));
    let include: Vec<&str> = source["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    let matches = |name: &str| {
        include.iter().any(|glob| {
            let (dir, pattern) = glob.rsplit_once('/').unwrap();
            assert_eq!(
                dir, "/var/log/clickedge",
                "the systemd unit's logs directory"
            );
            let (prefix, suffix) = pattern.split_once('*').unwrap();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
    };
    // The directory and the files are the group's to read.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o750);
    // While the edge runs: the file being written is tailed.
    let names = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("clicks-"))
            .collect()
    };
    let open = names(&dir);
    assert!(open.iter().any(|n| n.ends_with(".jsonl.open")), "{open:?}");
    for name in &open {
        assert_eq!(mode(&dir.join(name)), 0o640, "{name}");
    }
    // Stopped: it is closed under its final name, tailed too; a quarantined tail is not.
    let mut edge = edge;
    assert!(edge.terminate().success());
    std::fs::write(dir.join("clicks-20251124T160000.000Z.jsonl.torn"), b"{").unwrap();
    let closed = names(&dir);
    assert!(closed.iter().any(|n| n.ends_with(".jsonl")), "{closed:?}");
    for name in open.iter().chain(&closed) {
        assert_eq!(
            matches(name),
            !name.ends_with(".torn"),
            "{name} against {include:?}"
        );
    }
    let sink = &vector["sinks"]["warehouse"];
    assert_eq!(
        sink["acknowledgements"]["enabled"].as_bool(),
        Some(true),
        "checkpoints must follow the sink's acknowledgements"
    );
}
