//! How `clickedge domain check` (and `add`, `show`) present a domain's checks: `✓`, `!` or `✗`
//! with the id and the message, the fix under each failure, a spinner on a terminal while the
//! checks run, and the exit status (1 when a check fails). Plain text when piped. Text from the
//! API is printed with its control characters escaped ([`shown`]): it carries what customers'
//! DNS and the CA said, and must not drive the terminal.

use std::borrow::Cow;

use anyhow::bail;
use serde_json::Value;

use super::out;
use crate::onboarding::escape::escape;

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
    out::text(&render_checks(v, colour));
}

/// A string of the API's answer for a terminal: control characters escaped (messages and fixes
/// carry text from customers' DNS and from the CA), `?` when absent.
pub(super) fn shown(v: &Value) -> Cow<'_, str> {
    v.as_str().map_or(Cow::Borrowed("?"), escape)
}

/// The text [`print_checks`] prints: one line per check, the fix indented under a failure, then
/// when the checks ran. Every string from the API is escaped; line breaks come only from here.
fn render_checks(v: &Value, colour: bool) -> String {
    let paint = |code: &str, s: &str| {
        if colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    };
    let mut out = String::new();
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let name = shown(&v["name"]);
    if checks.is_empty() {
        out.push_str(&format!(
            "{name}: not checked yet; run: clickedge domain check {name}\n"
        ));
        return out;
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
    out.push_str(&format!("{name}: {verdict}\n"));
    let width = checks
        .iter()
        .map(|c| shown(&c["id"]).chars().count())
        .max()
        .unwrap_or(0);
    for c in &checks {
        let (mark, code) = match c["status"].as_str() {
            Some("pass") => ("✓", "32"),
            Some("warn") => ("!", "33"),
            _ => ("✗", "31"),
        };
        let message = c["message"].as_str().map_or(Cow::Borrowed(""), escape);
        out.push_str(&format!(
            "{} {:<width$}  {message}\n",
            paint(code, mark),
            shown(&c["id"]),
        ));
        if c["status"] != "pass"
            && let Some(fix) = c["fix"].as_str()
        {
            for (i, line) in fix.lines().enumerate() {
                let lead = if i == 0 { "  fix: " } else { "       " };
                out.push_str(&format!("  {lead}{}\n", escape(line)));
            }
        }
    }
    if v["checked_at"].is_string() {
        out.push_str(&format!("checked at {}\n", shown(&v["checked_at"])));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::onboarding::escape::is_unsafe;

    #[test]
    fn text_from_the_api_reaches_the_terminal_escaped() {
        let hostile = "ca.example\u{1b}]0;owned\u{7}\r\u{9b}2J\u{85}\u{2028}\u{202e}";
        let v = json!({
            "name": "links.example.com",
            "checked_at": "2026-11-25T10:24:30Z",
            "checks": [{
                "id": "caa",
                "status": "fail",
                "message": format!("CAA allows only {hostile}\nforged line"),
                "fix": format!("Replace:\nexample.com. IN CAA 0 issue \"{hostile}\""),
                "blocking": true,
            }],
        });
        let out = render_checks(&v, false);
        assert!(!out.chars().any(|c| c != '\n' && is_unsafe(c)), "{out:?}");
        assert_eq!(out.lines().count(), 5, "{out}");
        assert!(
            out.contains("✗ caa  CAA allows only ca.example\\u{1b}]0;owned\\u{7}\\u{d}"),
            "{out}"
        );
        assert!(out.contains("\\u{a}forged line"), "{out}");
        assert!(
            out.contains("         example.com. IN CAA 0 issue \"ca.example\\u{1b}"),
            "{out}"
        );
        // On a terminal, the only escape sequences are the edge's own colours.
        let coloured = render_checks(&v, true);
        assert_eq!(coloured.matches('\x1b').count(), 2, "{coloured:?}");
    }
}
