//! How `clickedge domain check` (and `add`, `show`) present a domain's checks: `✓`, `!` or `✗`
//! with the id and the message, the fix under each failure, a spinner on a terminal while the
//! checks run, and the exit status (1 when a check fails). Plain text when piped.

use anyhow::bail;
use serde_json::Value;

/// Runs `call`, showing `what` with a spinner on stderr while it lasts if stderr is a terminal
/// (piped output stays plain).
pub(super) async fn with_progress<T>(what: &str, call: impl Future<Output = T>) -> T {
    use std::io::{IsTerminal as _, Write as _};
    if !std::io::stderr().is_terminal() {
        return call.await;
    }
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut call = std::pin::pin!(call);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut frame = 0;
    let out = loop {
        tokio::select! {
            out = &mut call => break out,
            _ = tick.tick() => {
                eprint!("\r{} {what}…", FRAMES[frame % FRAMES.len()]);
                let _ = std::io::stderr().flush();
                frame += 1;
            }
        }
    };
    // Clear the spinner line.
    eprint!("\r\x1b[2K");
    out
}

pub(super) fn count_status(v: &Value, status: &str) -> usize {
    v["checks"]
        .as_array()
        .map_or(0, |cs| cs.iter().filter(|c| c["status"] == status).count())
}

/// Exit status of `domain check`: an error (exit 1) when a check fails.
pub(super) fn checks_verdict(name: &str, v: &Value) -> anyhow::Result<()> {
    match count_status(v, "fail") {
        0 => Ok(()),
        1 => bail!(
            "1 check fails for {name}: apply its fix, then run `clickedge domain check {name}` again"
        ),
        n => bail!(
            "{n} checks fail for {name}: apply their fixes, then run `clickedge domain check {name}` again"
        ),
    }
}

/// Prints each check as `✓`, `!` or `✗`, its id and message, and the fix under it; colours only
/// on a terminal (and not with `NO_COLOR`).
pub(super) fn print_checks(v: &Value) {
    use std::io::IsTerminal as _;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let name = v["name"].as_str().unwrap_or("?");
    if checks.is_empty() {
        println!("{name}: not checked yet; run: clickedge domain check {name}");
        return;
    }
    let (fails, warns) = (count_status(v, "fail"), count_status(v, "warn"));
    // A certificate that is simply not issued yet is what a ready domain looks like.
    let waiting_for_certificate_only = checks.iter().all(|c| {
        c["status"] == "pass"
            || (c["id"] == "certificate"
                && c["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("none yet: it is issued")))
    });
    let verdict = match (fails, warns) {
        (0, 0) => "every check passes".to_owned(),
        (0, _) if waiting_for_certificate_only => "ready".to_owned(),
        (0, 1) => "nothing fails, 1 warning".to_owned(),
        (0, w) => format!("nothing fails, {w} warnings"),
        (1, _) => "1 check fails".to_owned(),
        (f, _) => format!("{f} checks fail"),
    };
    println!("{name}: {verdict}");
    let width = checks
        .iter()
        .filter_map(|c| c["id"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(0);
    for c in &checks {
        let (mark, code) = match c["status"].as_str() {
            Some("pass") => ("✓", "32"),
            Some("warn") => ("!", "33"),
            _ => ("✗", "31"),
        };
        println!(
            "{} {:<width$}  {}",
            paint(code, mark),
            c["id"].as_str().unwrap_or("?"),
            c["message"].as_str().unwrap_or("")
        );
        if c["status"] != "pass"
            && let Some(fix) = c["fix"].as_str()
        {
            for (i, line) in fix.lines().enumerate() {
                let lead = if i == 0 { "  fix: " } else { "       " };
                println!("  {lead}{line}");
            }
        }
    }
    if let Some(at) = v["checked_at"].as_str() {
        println!("checked at {at}");
    }
}
