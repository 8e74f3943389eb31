//! A failed order as the backoff records it: the failure, its retry time, and when a renewal
//! is tried again.

use std::time::SystemTime;

use super::IssueOutcome;
use crate::Domain;
use crate::certs::Certs;
use crate::certs::error::LoadError;
use crate::clock::rfc3339;
use crate::errors::chain as error_chain;
use crate::issuer::IssueError;
use crate::store::{FailureKind, IssueFailure, RateLimitScope, StoredCert};

impl Certs {
    /// Records a renewal whose certificate could not be used or stored as a failure and backs
    /// off, serving `current` meanwhile: checked again in minutes, each check would order (and
    /// get) another certificate, into the CA's limit on duplicates.
    pub(in crate::certs) async fn renewal_unusable(
        &self,
        name: &Domain,
        e: &LoadError,
        current: &StoredCert,
    ) -> String {
        let now = self.clock.now();
        let not_before = self
            .backoff
            .failed(name, unusable(e), now, Some(current.not_after), None)
            .await;
        self.schedule_at(name, not_before.until);
        not_before.cause.detail
    }

    /// Records a failed order and backs off; a failing renewal is tried again at the retry time.
    pub(super) async fn failed(
        &self,
        name: &Domain,
        e: &IssueError,
        serving_until: Option<SystemTime>,
    ) -> IssueOutcome {
        let failure = e.failure();
        let now = self.clock.now();
        // The account's order budget spent, or a rate limit of the whole account: every name
        // waits, and this one has not failed.
        let waits = matches!(e, IssueError::OrderBudget { .. })
            || matches!(e, IssueError::RateLimited { limit, until: Some(_), .. }
                if limit.scope() == RateLimitScope::Account);
        let not_before = match e {
            IssueError::OrderBudget { next, .. } => {
                self.backoff.waits_for_budget(name, failure, *next).await
            }
            // Every name waits for the CA (the client paused the order budget): not a failure
            // of this one.
            IssueError::RateLimited {
                limit,
                until: Some(until),
                ..
            } if limit.scope() == RateLimitScope::Account => {
                self.backoff.waits_for_budget(name, failure, *until).await
            }
            // This name alone waits, for at least as long as the CA said.
            IssueError::RateLimited { limit, until, .. }
                if limit.scope() == RateLimitScope::Name =>
            {
                self.backoff
                    .failed(name, failure, now, serving_until, *until)
                    .await
            }
            _ => {
                self.backoff
                    .failed(name, failure, now, serving_until, None)
                    .await
            }
        };
        let what = match e {
            IssueError::RateLimited { limit, .. } if limit.scope() == RateLimitScope::Name => {
                "the CA rate-limits this name: its orders are paused until retry_at; other names keep issuing"
            }
            IssueError::RateLimited { until: Some(_), .. } => {
                "the CA rate-limits the whole account: all issuance is paused until retry_at"
            }
            _ => "certificate issuance failed",
        };
        match e {
            // A renewal has time: the certificate it replaces keeps serving meanwhile, unless
            // it has expired.
            IssueError::OrderBudget { .. } if serving_until.is_some() => {
                tracing::info!(domain = %name, retry_at = %rfc3339(not_before.until), "renewal waits for the account's order budget (acme.max_orders per acme.order_window); {}", serving(serving_until, now));
            }
            _ => {
                tracing::warn!(domain = %name, error = %not_before.cause, failures = not_before.failures, retry_at = %rfc3339(not_before.until), "{what}");
            }
        }
        if serving_until.is_some() {
            self.schedule_at(name, not_before.until);
            self.wake.notify_one();
        }
        if waits {
            IssueOutcome::Waits(not_before)
        } else {
            IssueOutcome::Failed(not_before)
        }
    }
}

/// What a certificate the CA issued that could not be used or stored (`e`) is to the backoff.
pub(super) fn unusable(e: &LoadError) -> IssueFailure {
    IssueFailure {
        kind: FailureKind::Local,
        detail: format!(
            "the certificate the CA issued could not be used or stored: {}",
            error_chain(e)
        ),
    }
}

/// What a renewal that did not replace a certificate valid until `until` leaves serving.
pub(in crate::certs) fn serving(until: Option<SystemTime>, now: SystemTime) -> &'static str {
    match until {
        Some(until) if until > now => "the current certificate keeps serving",
        _ => "the certificate has expired: handshakes for the name fail until it is renewed",
    }
}
