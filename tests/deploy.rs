//! The files under `deploy/`, each checked by the tool that will read it in production: the
//! systemd unit by `systemd-analyze verify`, the alert rules by `promtool` (syntax and their
//! unit tests), the scrape config and rules by a real Prometheus scraping a running edge (one that
//! streams its clicks to a real `nats-server`, so that the shipping series exist too), the
//! Grafana dashboard's queries against that edge's `/metrics`, the Kubernetes manifests by
//! `kubernetes-validate` (its bundled schemas, strict), and the shipped edge configs by the
//! edge's own config loader. The container script is run by hand (README "Running in
//! production"); Vector has no Debian package, so its config is checked against the click files
//! the edge really writes, not by Vector.

mod common;

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

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus with the shipped config and rules, its one target `edge`'s admin
    /// listener instead of the example's.
    fn scraping(edge: &Edge) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let shipped = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
        assert!(shipped.contains("- 127.0.0.1:9180"));
        let config = shipped
            .replace("- 127.0.0.1:9180", &format!("- {}", edge.admin))
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
            .replace("scrape_timeout: 5s", "scrape_timeout: 1s");
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        std::fs::copy(
            deploy("prometheus/clickedge.rules.yml"),
            dir.path().join("clickedge.rules.yml"),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_tcp_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus could not run ({e}): install the Debian package `prometheus` (scripts/test does)")
            });
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    async fn api(&self, path: &str) -> Option<Value> {
        let res = reqwest::get(format!("http://{}/api/v1/{path}", self.addr))
            .await
            .ok()?;
        res.json().await.ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_edge_with_the_shipped_config_and_evaluates_every_rule() {
    // With a stream, so that the shipping rule is evaluated over the edge's real series too.
    let (_nats, edge) = streaming_edge_with_a_click().await;
    let prometheus = Prometheus::scraping(&edge);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every rule of every group evaluated at least once, with the edge's target up and scraped.
    let (targets, rules) = loop {
        let targets = prometheus.api("targets").await;
        let rules = prometheus.api("rules").await;
        let done = |t: &Option<Value>, r: &Option<Value>| -> Option<(Value, Value)> {
            let (t, r) = (t.as_ref()?, r.as_ref()?);
            let up = t["data"]["activeTargets"]
                .as_array()?
                .iter()
                .any(|t| t["health"] == "up");
            let groups = r["data"]["groups"].as_array()?;
            let evaluated = !groups.is_empty()
                && groups.iter().all(|g| {
                    g["rules"].as_array().is_some_and(|rs| {
                        rs.iter().all(|r| {
                            r["lastEvaluation"]
                                .as_str()
                                .is_some_and(|t| !t.starts_with("0001"))
                        })
                    })
                });
            (up && evaluated).then(|| (t.clone(), r.clone()))
        };
        if let Some(both) = done(&targets, &rules) {
            break both;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the edge and evaluate the rules in 60 s:\ntargets {targets:?}\nrules {rules:?}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["labels"]["job"], "clickedge", "{target}");
    assert_eq!(target["lastError"], "", "{target}");
    let mut count = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            count += 1;
            assert_eq!(rule["health"], "ok", "rule evaluated with an error: {rule}");
            // A healthy edge fires nothing.
            assert_eq!(rule["state"], "inactive", "{rule}");
        }
    }
    // Every rule of the file is loaded and evaluated.
    let in_file = std::fs::read_to_string(deploy("prometheus/clickedge.rules.yml"))
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(in_file >= 12, "{in_file} rules in the file");
    assert_eq!(count, in_file, "{rules}");
    // The scrape carried the edge's own series.
    let query = prometheus
        .api("query?query=clickedge_requests_total%7Boutcome%3D%22redirect%22%7D")
        .await
        .expect("query");
    assert_eq!(
        query["data"]["result"][0]["value"][1], "1",
        "one redirect scraped: {query}"
    );
    // And the series the shipping rule watches.
    let query = prometheus
        .api("query?query=clickedge_click_unshipped_oldest_age_seconds")
        .await
        .expect("query");
    assert_eq!(
        query["data"]["result"].as_array().map(Vec::len),
        Some(1),
        "the shipping age scraped: {query}"
    );
}

/// The program `kubernetes-validate`: from `KUBERNETES_VALIDATE`, else the virtualenv that
/// scripts/test makes under target/.
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("KUBERNETES_VALIDATE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deploy-venv/bin/kubernetes-validate"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: scripts/test installs it (python3 -m venv target/deploy-venv && \
         target/deploy-venv/bin/pip install kubernetes-validate; Debian package `python3-venv`)",
        path.display()
    );
    path
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml")
            && path.file_name().is_some_and(|n| n != "kustomization.yaml")
        {
            out.push(path);
        }
    }
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let validate = kubernetes_validate();
    let mut files = Vec::new();
    yaml_files(&deploy("kubernetes"), &mut files);
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    let out = Command::new(&validate)
        .arg("--strict")
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    assert_ok("kubernetes-validate --strict", &out);
    let report = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "statefulset/clickedge",
        "service/clickedge",
        "poddisruptionbudget/clickedge",
    ] {
        assert!(report.contains(kind), "{kind} not validated:\n{report}");
    }
    // Every file a kustomization lists exists (kustomize itself is not a Debian package).
    for overlay in ["base", "overlays/single-node", "overlays/cluster"] {
        let dir = deploy("kubernetes").join(overlay);
        let k = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
        for entry in k
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .filter(|e| e.ends_with(".yaml") || e.ends_with(".toml") || e.starts_with(".."))
        {
            assert!(dir.join(entry).exists(), "{overlay} lists missing {entry}");
        }
    }
}

#[test]
fn kubernetes_pods_outlast_shutdown_delay_and_grace() {
    for overlay in ["single-node", "cluster"] {
        let dir = deploy("kubernetes/overlays").join(overlay);
        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("clickedge.toml")).unwrap()).unwrap();
        let secs = |key: &str| -> u64 {
            let v = config[key].as_str().expect(key);
            v.strip_suffix('s').unwrap().parse().unwrap()
        };
        let workload = std::fs::read_to_string(dir.join("statefulset.yaml")).unwrap();
        let period: u64 = workload
            .lines()
            .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
            .expect("terminationGracePeriodSeconds")
            .parse()
            .unwrap();
        assert!(
            period >= secs("shutdown_delay") + secs("shutdown_grace") + 10,
            "{overlay}: terminationGracePeriodSeconds {period} leaves no room to write the clicks"
        );
        assert!(workload.contains("path: /readyz") && workload.contains("path: /healthz"));
    }
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

#[test]
fn cluster_pods_take_the_seal_key_from_the_environment_not_a_secret_volume() {
    let dir = deploy("kubernetes/overlays/cluster");
    let config = clickedge::config::Config::load(Some(&dir.join("clickedge.toml"))).unwrap();
    // The edge refuses both a key file and CLICKEDGE_SEAL_KEY.
    assert_eq!(config.cluster.seal_key_file, None);
    let workload = std::fs::read_to_string(dir.join("statefulset.yaml")).unwrap();
    let env = format!(
        "- name: {}\n              valueFrom:\n                secretKeyRef:\n                  name: clickedge-seal\n                  key: seal.key\n",
        clickedge::seal::SEAL_KEY_ENV
    );
    assert!(workload.contains(&env), "no {env} in the StatefulSet");
    // With fsGroup the kubelet makes a Secret volume's files 0440: a key file there is refused.
    assert!(workload.contains("fsGroup: 10001"));
    assert!(
        !workload.contains("secretName: clickedge-seal"),
        "the seal key mounted from a Secret volume"
    );
    // The Secret as the kustomization makes it: the file `clickedge cluster keygen` writes, under
    // the key seal.key; its text (newline included) is the value the pods get.
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    assert!(kustomization.contains(
        "clickedge cluster keygen seal.key && kubectl -n clickedge create secret generic clickedge-seal --from-file=seal.key"
    ));
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("seal.key");
    let out = run(
        common::bin(),
        &["cluster", "keygen", key.to_str().unwrap()],
        tmp.path(),
        "clickedge",
    );
    assert_ok("clickedge cluster keygen", &out);
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.trim_end().len(), 64, "{text:?}");
    assert!(
        clickedge::seal::SealKey::load(None, Some(&text))
            .unwrap()
            .is_some()
    );
    // What the same file would be on a Secret volume under fsGroup: refused.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
    assert!(clickedge::seal::SealKey::load(Some(&key), None).is_err());
}

#[test]
fn cluster_store_url_names_the_database_host_not_a_kubernetes_alias() {
    // sslmode=require verifies the server's certificate against the URL's host: a Service name
    // (an ExternalName alias) is not the name a managed database's certificate carries.
    let dir = deploy("kubernetes/overlays/cluster");
    let text = std::fs::read_to_string(dir.join("clickedge.toml")).unwrap();
    let config: toml::Table = toml::from_str(&text).unwrap();
    let url = url::Url::parse(config["store"]["url"].as_str().expect("store.url")).unwrap();
    assert!(
        url.query().is_some_and(|q| q.contains("sslmode=require")),
        "{url}"
    );
    let host = url.host_str().unwrap();
    assert!(
        !host.ends_with(".svc") && !host.contains(".svc."),
        "store.url names the Service {host}"
    );
    let services = std::fs::read_to_string(dir.join("external-services.yaml")).unwrap();
    assert!(!services.contains("name: postgres"), "{services}");
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
