//! What a well-formed config must also satisfy to be usable: non-zero intervals, CAA identities
//! that are domain names, settings that only work in pairs. Each refusal names the key and says
//! what to write instead.

use std::path::Path;
use std::time::Duration;

use super::{Config, ConfigError};

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
            return Err(invalid(
                "clicks.rotate_interval must be at least 1s (e.g. \"1h\")".into(),
            ));
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
        if self.tls.on_demand_timeout.is_zero() || self.tls.handshake_timeout.is_zero() {
            return Err(invalid(
                "tls.on_demand_timeout and tls.handshake_timeout must be greater than zero".into(),
            ));
        }
        if let Some(message) = self.listen.invalid() {
            return Err(invalid(message));
        }
        if let Some(message) = self.store.invalid() {
            return Err(invalid(message));
        }
        if let Some(message) = self.limits.invalid() {
            return Err(invalid(message.into()));
        }
        if self.onboarding.caa_identities.is_empty()
            || self.onboarding.caa_identities.iter().any(|i| {
                i.is_empty()
                    || !i
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            })
        {
            return Err(invalid(
                "onboarding.caa_identities must list the CA's CAA domains, e.g. [\"letsencrypt.org\"]"
                    .into(),
            ));
        }
        if self.onboarding.recheck_interval < Duration::from_secs(10) {
            return Err(invalid(
                "onboarding.recheck_interval must be at least 10s (e.g. \"5m\")".into(),
            ));
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
        if self.acme.order_window.is_zero() || self.acme.order_timeout.is_zero() {
            return Err(invalid(
                "acme.order_window and acme.order_timeout must be greater than zero".into(),
            ));
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
        if self.admin.token.is_some() && self.admin.token_file.is_some() {
            return Err(invalid(
                "admin.token and admin.token_file are both set: keep one".into(),
            ));
        }
        Ok(self)
    }
}
