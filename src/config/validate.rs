//! What a well-formed config must also satisfy to be usable: non-zero intervals, CAA identities
//! that are domain names, settings that only work in pairs. Each refusal names the key and says
//! what to write instead.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Acme, Config, ConfigError, NOT_TOKEN_TEXT, is_token_text};

/// The shortest `acme.lease_ttl`: its holder renews it every third, at least once a second.
const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

impl Config {
    pub(super) fn validated(self, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if let Some(log) = &self.log
            && let Err(e) = tracing_subscriber::EnvFilter::builder().parse(log)
        {
            return Err(invalid(format!(
                "log = \"{log}\" is not a log filter ({e}); write a level such as \"info\" or \
                 \"warn\", optionally with per-module levels: \"info,clickedge=debug\""
            )));
        }
        if self.clicks.flush_interval.is_zero() {
            return Err(invalid(
                "clicks.flush_interval must be greater than zero (e.g. \"100ms\")".into(),
            ));
        }
        if self.clicks.rotate_interval < Duration::from_secs(1) {
            return Err(invalid(format!(
                "clicks.rotate_interval = \"{}\" is under 1s; use at least 1s, for example \"1h\"",
                shown(self.clicks.rotate_interval)
            )));
        }
        let min_total = self.clicks.max_file_bytes.get().saturating_mul(2);
        if self.clicks.max_total_bytes != 0 && self.clicks.max_total_bytes < min_total {
            return Err(invalid(format!(
                "clicks.max_total_bytes must be 0 (no cap) or at least twice clicks.max_file_bytes \
                 ({min_total}), so a whole file is kept while the oldest is deleted"
            )));
        }
        if let Some(message) = self.clicks.invalid() {
            return Err(invalid(message));
        }
        if let Some(message) = self.clicks.subject_invalid_for(&self.cluster.node_id()) {
            return Err(invalid(message));
        }
        for (key, value) in [
            ("tls.on_demand_timeout", self.tls.on_demand_timeout),
            ("tls.handshake_timeout", self.tls.handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(format!(
                    "{key} = \"0s\" must be greater than zero, for example \"10s\""
                )));
            }
        }
        if let Some(message) = self.listen.invalid() {
            return Err(invalid(message));
        }
        if let Some(message) = self.store.invalid() {
            return Err(invalid(message));
        }
        if let Some(message) = self.limits.invalid() {
            return Err(invalid(message));
        }
        if self.onboarding.caa_identities.is_empty() {
            return Err(invalid(
                "onboarding.caa_identities is empty; list the CA's CAA domains, for example \
                 [\"letsencrypt.org\"]"
                    .into(),
            ));
        }
        if let Some(bad) = self.onboarding.caa_identities.iter().find(|i| {
            i.is_empty()
                || !i
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }) {
            return Err(invalid(format!(
                "onboarding.caa_identities has {bad:?}, which is not a CA's CAA domain (letters, \
                 digits, '.' and '-'); list the CA's CAA domains, for example [\"letsencrypt.org\"]"
            )));
        }
        if self.onboarding.recheck_interval < Duration::from_secs(10) {
            return Err(invalid(format!(
                "onboarding.recheck_interval = \"{}\" is under 10s; use at least 10s, for \
                 example \"5m\"",
                shown(self.onboarding.recheck_interval)
            )));
        }
        if self.acme.challenges.is_empty() {
            return Err(invalid(
                "acme.challenges is empty; use [\"http-01\", \"tls-alpn-01\"] or one of them"
                    .into(),
            ));
        }
        if self.acme.eab_kid.is_some() != self.acme.eab_hmac_key.is_some() {
            return Err(invalid(
                "acme.eab_kid and acme.eab_hmac_key go together: set both or neither".into(),
            ));
        }
        if let Some(message) = self.acme_invalid() {
            return Err(invalid(message));
        }
        for (key, value, example) in [
            ("acme.order_window", self.acme.order_window, "3h"),
            ("acme.order_timeout", self.acme.order_timeout, "90s"),
        ] {
            if value.is_zero() {
                return Err(invalid(format!(
                    "{key} = \"0s\" must be greater than zero, for example \"{example}\""
                )));
            }
        }
        if self.cluster.scan_interval < Duration::from_secs(1) {
            return Err(invalid(format!(
                "cluster.scan_interval is {}; use at least 1s, for example \"30s\"",
                humantime::format_duration(self.cluster.scan_interval)
            )));
        }
        if self.acme.lease_ttl < MIN_LEASE_TTL {
            return Err(invalid(format!(
                "acme.lease_ttl is {}; use at least 3s (the lease is renewed every third of it), \
                 for example \"60s\"",
                humantime::format_duration(self.acme.lease_ttl)
            )));
        }
        if self
            .tls
            .ask
            .as_ref()
            .is_some_and(|u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(invalid("tls.ask must be an http:// or https:// URL".into()));
        }
        if self
            .admin
            .token
            .as_deref()
            .is_some_and(|t| t.trim().len() < 16)
        {
            return Err(invalid(
                "admin.token must be at least 16 characters; or remove it to have one generated"
                    .into(),
            ));
        }
        if self
            .admin
            .token
            .as_deref()
            .is_some_and(|t| !is_token_text(t.trim()))
        {
            return Err(invalid(format!("admin.token {NOT_TOKEN_TEXT}")));
        }
        if let Some(n) = self
            .admin
            .read_tokens
            .iter()
            .position(|t| !is_token_text(t.trim()))
        {
            return Err(invalid(format!(
                "admin.read_tokens entry {} {NOT_TOKEN_TEXT}",
                n + 1
            )));
        }
        if self.admin.token.is_some() && self.admin.token_file.is_some() {
            return Err(invalid(
                "admin.token and admin.token_file are both set: keep one".into(),
            ));
        }
        Ok(self)
    }

    /// What is wrong with `[acme]`'s account settings, if anything: said at start rather than
    /// at the first order, which would fail on them after a customer's first handshake.
    fn acme_invalid(&self) -> Option<String> {
        let acme = &self.acme;
        // The ACME client connects only over HTTPS (its connector is HTTPS-only).
        let directory = url::Url::parse(&acme.directory);
        if !directory
            .as_ref()
            .is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty()))
        {
            return Some(format!(
                "acme.directory = {:?} is not an https:// URL, and the ACME client speaks only \
                 HTTPS: write the CA's directory URL, e.g. \"{}\"",
                acme.directory,
                Acme::default().directory
            ));
        }
        if let Some(contact) = acme.contact.iter().find(|c| !is_mailto(c)) {
            let instead = if contact.contains('@') && !contact.contains(':') {
                format!("write it as \"mailto:{}\"", contact.trim())
            } else {
                "write an e-mail address as a mailto: URL, e.g. \"mailto:ops@example.com\""
                    .to_owned()
            };
            return Some(format!(
                "acme.contact entry {contact:?} is not a mailto: URL, the only contact CAs take: \
                 {instead}"
            ));
        }
        // Decoded as the ACME client decodes it when it creates the account: base64url, padding
        // ignored. The key is a secret, so the message does not show it.
        if let Some(key) = &acme.eab_hmac_key
            && URL_SAFE_NO_PAD.decode(key.trim_end_matches('=')).is_err()
        {
            return Some(
                "acme.eab_hmac_key is not base64url (letters, digits, '-' and '_', as the CA \
                 hands it out): copy the HMAC key again from the CA's account page"
                    .into(),
            );
        }
        None
    }
}

/// `mailto:` and an address: something, `@`, something, no spaces.
fn is_mailto(contact: &str) -> bool {
    contact
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("mailto:"))
        && contact[7..]
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !contact.contains(char::is_whitespace)
}

/// `d` as a config value is written (`"1h 30m"`, `"500ms"`).
fn shown(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
