//! The scrape config and the alert rules by a real Prometheus scraping a running edge.

use super::*;

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
    // Every rule of every group evaluated since the edge's target was first scraped up (an
    // evaluation before it sees no `up` series at all, which ClickedgeNotScraped is about).
    let time = |v: &Value| v.as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
    // The first scrape seen up, kept: the latest moves every second.
    let mut first_up = None;
    let (targets, rules) = loop {
        let targets = prometheus.api("targets").await;
        let rules = prometheus.api("rules").await;
        if first_up.is_none() {
            first_up = targets.as_ref().and_then(|t| {
                t["data"]["activeTargets"]
                    .as_array()?
                    .iter()
                    .find(|t| t["health"] == "up")
                    .and_then(|t| time(&t["lastScrape"]))
            });
        }
        let done = |t: &Option<Value>, r: &Option<Value>| -> Option<(Value, Value)> {
            let (t, r) = (t.as_ref()?, r.as_ref()?);
            let scraped = first_up?;
            let groups = r["data"]["groups"].as_array()?;
            let evaluated = !groups.is_empty()
                && groups.iter().all(|g| {
                    g["rules"].as_array().is_some_and(|rs| {
                        rs.iter()
                            .all(|r| time(&r["lastEvaluation"]).is_some_and(|at| at > scraped))
                    })
                });
            evaluated.then(|| (t.clone(), r.clone()))
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
