//! README's DuckDB queries ("Counting with DuckDB": human clicks per link, unique human clickers
//! per message, machine share by reason), run by a real DuckDB over the click log that
//! `clickedge classify --replay` writes for the labelled corpus, and held against the same
//! counts taken here from the lines themselves. The SQL is read from README, so the queries a
//! reader copies are the ones tested.
//!
//! DuckDB comes from PyPI into the virtualenv scripts/test makes under `target/deploy-venv`
//! (Debian package `python3-venv`), or from `CLICKEDGE_PYTHON`: a Python with `duckdb`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/verdict-corpus.jsonl"
);

/// Runs every statement of `sql` in one DuckDB connection and prints the rows of each query
/// as one JSON array per line.
const RUNNER: &str = r#"
import json, sys, duckdb
con = duckdb.connect()
for stmt in [s for s in sys.stdin.read().split(";") if s.strip()]:
    body = "\n".join(l for l in stmt.splitlines() if not l.lstrip().startswith("--"))
    cur = con.execute(body)
    if body.lstrip().upper().startswith("SELECT"):
        print(json.dumps([list(r) for r in cur.fetchall()]))
"#;

#[test]
fn readme_duckdb_queries_count_what_the_click_lines_say() {
    let dir = tempfile::tempdir().unwrap();
    let log = common::replayed(Path::new(CORPUS));
    std::fs::write(dir.path().join("replay.jsonl"), &log).unwrap();

    let sql = readme_sql();
    let mut python = Command::new(python());
    python
        .args(["-c", RUNNER])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = python.spawn().expect("starting python");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), sql.as_bytes()).unwrap();
    let ran = child.wait_with_output().unwrap();
    assert!(
        ran.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let results: Vec<Vec<Vec<Value>>> = String::from_utf8(ran.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 3, "README's three queries");

    let clicks = final_clicks(&log);
    assert!(clicks.len() > 100, "{} clicks replayed", clicks.len());
    let human = |c: &&Click| c.verdict == "human";

    // Human clicks per link: the five with most human clicks, then by URL.
    let mut per_url: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for c in &clicks {
        let e = per_url.entry(&c.url).or_default();
        e.0 += u64::from(human(&c));
        e.1 += 1;
    }
    let mut by_url: Vec<_> = per_url.into_iter().collect();
    by_url.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    let want: Vec<Vec<Value>> = by_url
        .iter()
        .take(5)
        .map(|(url, (h, n))| vec![(*url).into(), (*h).into(), (*n).into()])
        .collect();
    assert_eq!(results[0], want, "human clicks per link");

    // Unique human clickers per message: the four messages with most clicks, then by id.
    let mut per_message: BTreeMap<&str, (BTreeSet<&str>, u64)> = BTreeMap::new();
    for c in clicks.iter().filter(|c| c.message.is_some()) {
        let e = per_message
            .entry(c.message.as_deref().unwrap())
            .or_default();
        if human(&c) {
            e.0.insert(&c.ip);
        }
        e.1 += 1;
    }
    let mut by_message: Vec<_> = per_message.into_iter().collect();
    by_message.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(b.0)));
    let want: Vec<Vec<Value>> = by_message
        .iter()
        .take(4)
        .map(|(m, (ips, n))| vec![(*m).into(), ips.len().into(), (*n).into()])
        .collect();
    assert_eq!(results[1], want, "unique human clickers per message");

    // Machine share by reason: every reason of the machine clicks, counted once per click.
    let mut per_reason: HashMap<&str, u64> = HashMap::new();
    for c in clicks.iter().filter(|c| c.verdict == "machine") {
        for r in &c.reasons {
            *per_reason.entry(r).or_default() += 1;
        }
    }
    let got: HashMap<String, (u64, f64)> = results[2]
        .iter()
        .map(|row| {
            let pct = row[2].as_f64().unwrap();
            (
                row[0].as_str().unwrap().to_owned(),
                (row[1].as_u64().unwrap(), pct),
            )
        })
        .collect();
    assert_eq!(got.len(), per_reason.len(), "reasons: {got:?}");
    for (reason, n) in &per_reason {
        let (count, pct) = got[*reason];
        assert_eq!(count, *n, "machine clicks with {reason}");
        let share = (1000.0 * *n as f64 / clicks.len() as f64).round() / 10.0;
        assert!(
            (pct - share).abs() < 0.051,
            "{reason}: {pct} against {share}"
        );
    }
}

/// A click as the view in README sees it: its latest revision's verdict, else its own, and
/// the reasons of both.
struct Click {
    url: String,
    ip: String,
    message: Option<String>,
    verdict: String,
    reasons: BTreeSet<String>,
}

fn final_clicks(log: &str) -> Vec<Click> {
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    };
    let mut revised: HashMap<&str, (&str, &str, BTreeSet<String>)> = HashMap::new();
    for v in lines.iter().filter(|v| v["kind"] == "verdict") {
        let e = revised
            .entry(v["click_id"].as_str().unwrap())
            .or_insert_with(|| ("", "", BTreeSet::new()));
        let ts = v["ts"].as_str().unwrap();
        if ts >= e.0 {
            e.0 = ts;
            e.1 = v["verdict"].as_str().unwrap();
        }
        e.2.extend(strings(&v["reasons"]));
    }
    lines
        .iter()
        .filter(|v| v["kind"] == "click")
        .map(|v| {
            let mut reasons = strings(&v["reasons"]);
            let mut verdict = v["verdict"].as_str().unwrap().to_owned();
            if let Some((_, later, more)) = revised.get(v["click_id"].as_str().unwrap()) {
                verdict = (*later).to_owned();
                reasons.extend(more.iter().cloned());
            }
            Click {
                url: v["url"].as_str().unwrap().to_owned(),
                ip: v["ip"].as_str().unwrap().to_owned(),
                message: v["message"]["id"].as_str().map(str::to_owned),
                verdict,
                reasons,
            }
        })
        .collect()
}

/// The SQL block of README's "Counting with DuckDB".
fn readme_sql() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split_once("#### Counting with DuckDB")
        .expect("README has \"Counting with DuckDB\"")
        .1;
    let block = section.split_once("```sql\n").expect("an SQL block").1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_owned()
}

/// A Python with `duckdb`: `CLICKEDGE_PYTHON`, else the virtualenv scripts/test makes.
fn python() -> PathBuf {
    let path = std::env::var_os("CLICKEDGE_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deploy-venv/bin/python"),
        PathBuf::from,
    );
    let has_duckdb = Command::new(&path)
        .args(["-c", "import duckdb"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_duckdb,
        "{} with duckdb is missing: scripts/test installs it (python3 -m venv target/deploy-venv \
         && target/deploy-venv/bin/pip install duckdb; Debian package `python3-venv`)",
        path.display()
    );
    path
}
