//! Confirmation of destructive client commands (`domain remove`, `keys remove`): `--yes`, or a
//! `y` typed on a terminal. Without a terminal on standard input (a script, a pipe, cron) and
//! without `--yes`, the command refuses rather than guess.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};

/// Goes ahead when `yes` (`--yes` given) or when the user answers `y`/`yes` to `question` on a
/// terminal; errors otherwise, naming the command as run with `--yes` (what skips the question).
pub(super) fn confirm(yes: bool, question: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    // The command as it was run (its --config and --admin too), to paste with `--yes`.
    let command = std::env::args()
        .map(|a| super::shell_word(&a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "{question}: not confirmed (standard input is not a terminal); run `{command} --yes`"
        );
    }
    let mut err = io::stderr().lock();
    write!(err, "{question}? [y/N] ")
        .and_then(|()| err.flush())
        .context("asking for confirmation")?;
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    if is_yes(&answer) {
        Ok(())
    } else {
        bail!("{question}: not confirmed; nothing changed (`{command} --yes` skips the question)")
    }
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_y_or_yes_confirms() {
        for a in ["y\n", "Y", " yes \n", "YES"] {
            assert!(is_yes(a), "{a:?}");
        }
        for a in ["", "\n", "n", "no", "yess", "y y"] {
            assert!(!is_yes(a), "{a:?}");
        }
    }
}
