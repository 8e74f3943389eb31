//! The admin API's tokens at start: the full one (`admin.token`, `admin.token_file`, else
//! generated once into `<data_dir>/admin-token`) and the read-only ones (`admin.read_tokens`,
//! `admin.read_tokens_file`). Tokens are never logged.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;

use anyhow::{Context as _, bail};

use super::ADMIN_TOKEN_FILE;
use crate::admin::Tokens;
use crate::config::{Config, NOT_TOKEN_TEXT, is_token_text};

/// Shortest token accepted from configuration.
const MIN_LEN: usize = 16;

/// The full token and the read-only ones.
pub(super) fn admin_tokens(config: &Config) -> anyhow::Result<Tokens> {
    let full = admin_token(config)?;
    let whence = if config.admin.token.is_some() {
        "admin.token in the edge's config"
    } else if config.admin.token_file.is_some() {
        "in the file admin.token_file names"
    } else {
        "in <data_dir>/admin-token"
    };
    let mut read: Vec<String> = config
        .admin
        .read_tokens
        .iter()
        .map(|t| t.trim().to_owned())
        .collect();
    if let Some(path) = &config.admin.read_tokens_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading admin.read_tokens_file {}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() {
                continue;
            }
            if !is_token_text(token) {
                bail!(
                    "admin.read_tokens_file {} line {} {NOT_TOKEN_TEXT}",
                    path.display(),
                    n + 1
                );
            }
            read.push(token.to_owned());
        }
    }
    for (n, t) in read.iter().enumerate() {
        if t.len() < MIN_LEN {
            bail!(
                "read-only admin token {} (admin.read_tokens, then admin.read_tokens_file) has fewer than {MIN_LEN} characters: use a longer one (e.g. 64 hex digits)",
                n + 1
            );
        }
        if *t == full {
            bail!(
                "read-only admin token {} (admin.read_tokens, then admin.read_tokens_file) is the admin token: a read-only token must differ from it",
                n + 1
            );
        }
    }
    Ok(Tokens::new(full, whence, read))
}

/// The configured admin token, or the one in `<data_dir>/admin-token`, generated on first use.
fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Some(t) = &config.admin.token {
        return Ok(t.trim().to_owned());
    }
    if let Some(path) = &config.admin.token_file {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading admin.token_file {}", path.display()))?;
        if t.trim().len() < MIN_LEN {
            bail!(
                "admin.token_file {} holds fewer than {MIN_LEN} characters: write a longer token (e.g. 64 hex digits)",
                path.display()
            );
        }
        if !is_token_text(t.trim()) {
            bail!("admin.token_file {} {NOT_TOKEN_TEXT}", path.display());
        }
        return Ok(t.trim().to_owned());
    }
    if !config.listen.admin.ip().is_loopback() {
        bail!(
            "listen.admin = \"{}\" is not a loopback address: set admin.token or admin.token_file explicitly to expose the admin API",
            config.listen.admin
        );
    }
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !is_token_text(t.trim()) => bail!(
            "{} {NOT_TOKEN_TEXT}; or delete it to have a new token generated",
            path.display()
        ),
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => bail!(
            "{} is empty: delete it to have a new token generated",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}
