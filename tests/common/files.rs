//! Reading what the edge and its commands wrote: the click files, a replay's output, a file
//! polled until it holds a line.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn read_clicks(dir: &Path) -> Vec<Value> {
    read_click_lines(dir)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("click line is JSON"))
        .collect()
}

/// Every click line in `dir` as written (without its newline), files in time order.
pub fn read_click_lines(dir: &Path) -> Vec<String> {
    read_click_files(dir)
        .iter()
        .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// The text of every click file in `dir` in time order: the closed ones (`clicks-….jsonl`) and
/// the one being written (`clicks-….jsonl.open`, renamed to its closed name when closed).
pub fn read_click_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut closed: Vec<String> = entries
        .map(|e| {
            e.expect("entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .filter_map(|n| {
            let n = n.strip_suffix(".open").unwrap_or(&n);
            (n.starts_with("clicks-") && n.ends_with(".jsonl")).then(|| n.to_owned())
        })
        .collect();
    closed.sort();
    closed.dedup();
    closed
        .iter()
        .map(|name| {
            // Under its open name, else closed since the directory was read.
            let open = dir.join(format!("{name}.open"));
            std::fs::read_to_string(&open)
                .or_else(|_| std::fs::read_to_string(dir.join(name)))
                .expect("click file")
        })
        .collect()
}

/// `clickedge classify --replay FILE` without a config file: its whole output, succeeded or not.
pub fn replay(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clickedge"))
        .args(["classify", "--replay"])
        .arg(file)
        .env_remove("CLICKEDGE_CONFIG")
        .output()
        .expect("running clickedge classify")
}

/// The click log `clickedge classify --replay FILE` writes, which must succeed.
pub fn replayed(file: &Path) -> String {
    let out = replay(file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the click log is UTF-8")
}

/// Polls the file at `path` until `find` finds what is `wanted` in it (at most 20 s); what it
/// found. Fails showing the file.
pub fn poll_file<T>(path: &Path, wanted: &str, find: impl Fn(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(found) = find(&text) {
            return found;
        }
        assert!(Instant::now() < deadline, "not {wanted}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
