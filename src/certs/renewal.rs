//! The renewal driver: a queue of renewal times, and the maintenance loop that starts a renewal
//! flight for each name that comes due. When to renew is [`super::schedule`]'s to say.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::claim::Holder;
use super::error::LoadError;
use super::flight::{Flight, IssueOutcome};
use super::key::Entry;
use super::{CertError, Certs, lock, schedule};
use crate::Domain;
use crate::clock::rfc3339;
use crate::errors::chain as error_chain;
use crate::store::{CertLifetime, StoredCert};

/// The maintenance loop wakes at least this often (gauges, and newly due renewals).
const MAINTENANCE_TICK: Duration = Duration::from_secs(60);
/// Stored certificates with an ARI-capable issuer are first checked within this spread after
/// start (whole seconds), so a restart does not ask the CA about every certificate at once.
const FIRST_CHECK_SPREAD_SECS: u64 = 6 * 3600;
/// Renewal information is asked for again no sooner than this.
const MIN_ARI_CHECK: Duration = Duration::from_secs(60);
/// A certificate just issued, or whose renewal information could not be had, is checked again
/// within this (whole seconds, the second half of it at random), unless the lifetime rule says
/// sooner: a CA may move the window forward, before a revocation say (RFC 9773 §4.3), and such
/// a certificate is otherwise not asked about until a third of its lifetime is left.
const ARI_POLL_SECS: u64 = 6 * 3600;
/// A renewal check that could not be made (the store failed, or storing the new certificate
/// did) is made again this much later.
const CHECK_AGAIN: Duration = Duration::from_secs(5 * 60);

/// Renewal times by name, and names by time.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    pub(super) by_time: BTreeSet<(SystemTime, Domain)>,
    pub(super) by_name: HashMap<Domain, SystemTime>,
}

impl Schedule {
    /// Schedules `name` at `at`, replacing its earlier time (and the copy of the name kept with
    /// it, so both sides hold `name`'s allocation).
    pub(super) fn set(&mut self, name: &Domain, at: SystemTime) {
        if let Some((old_name, old)) = self.by_name.remove_entry(name) {
            self.by_time.remove(&(old, old_name));
        }
        self.by_name.insert(name.clone(), at);
        self.by_time.insert((at, name.clone()));
    }

    pub(super) fn remove(&mut self, name: &Domain) {
        if let Some(old) = self.by_name.remove(name) {
            self.by_time.remove(&(old, name.clone()));
        }
    }

    pub(super) fn pop_due(&mut self, now: SystemTime) -> Vec<Domain> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            if let Some((_, name)) = self.by_time.pop_first() {
                self.by_name.remove(&name);
                due.push(name);
            }
        }
        due
    }

    pub(super) fn next(&self) -> Option<SystemTime> {
        self.by_time.first().map(|(at, _)| *at)
    }
}

impl Certs {
    /// `name` as the policy holds it, to key the schedule with: one allocation per name however
    /// many tables hold it (48 bytes a name, 4.6 MiB with 100 000 certificates; BENCHMARKS.md).
    /// `name` itself if it is not registered.
    pub(super) fn shared(&self, name: &Domain) -> Domain {
        self.policy
            .registered_name(name.as_str())
            .unwrap_or_else(|| name.clone())
    }

    /// Checks `name` next at `at` (replacing the time it had), keyed by the policy's copy of
    /// the name ([`Certs::shared`]); a name the policy no longer registers (removed while its
    /// certificate was read, issued or checked) is not scheduled.
    pub(super) fn schedule_at(&self, name: &Domain, at: SystemTime) {
        let mut schedule = lock(&self.schedule);
        if let Some(name) = self.still_registered(&schedule, name) {
            schedule.set(&name, at);
        }
    }

    /// [`Certs::schedule_at`], unless `name` is scheduled already.
    pub(super) fn schedule_unscheduled(&self, name: &Domain, at: SystemTime) {
        let mut schedule = lock(&self.schedule);
        if schedule.by_name.contains_key(name) {
            return;
        }
        if let Some(name) = self.still_registered(&schedule, name) {
            schedule.set(&name, at);
        }
    }

    /// The policy's copy of `name` if it still registers it; asked with the schedule's lock held
    /// (`_schedule`), under which [`Certs::forget`] unschedules a name after the policy dropped
    /// it: either the name is found gone here, or `forget` removes what is scheduled now.
    fn still_registered(&self, _schedule: &Schedule, name: &Domain) -> Option<Domain> {
        self.policy.registered_name(name.as_str())
    }

    /// Checks `name` next when the lifetime rule says for `cert`.
    pub(super) fn schedule_by_lifetime(&self, name: &Domain, cert: &StoredCert) {
        let at = schedule::default_renew_at(cert.not_before, cert.not_after, rand::random());
        self.schedule_at(name, at);
    }

    /// [`Certs::schedule_by_lifetime`], or within [`ARI_POLL_SECS`] if that is sooner: for a
    /// certificate just issued, or one whose renewal information could not be had.
    pub(super) fn schedule_polling(&self, name: &Domain, cert: &StoredCert) {
        self.schedule_at(name, self.polling_at(cert));
    }

    /// [`Certs::schedule_polling`], unless `name` is scheduled already.
    pub(super) fn schedule_polling_unscheduled(&self, name: &Domain, cert: &StoredCert) {
        self.schedule_unscheduled(name, self.polling_at(cert));
    }

    /// When a check of `cert`, just stored, polls its renewal information (within hours), or
    /// the lifetime rule says to renew it if that comes first.
    fn polling_at(&self, cert: &StoredCert) -> SystemTime {
        let poll = self.clock.now()
            + Duration::from_secs(rand::random_range(ARI_POLL_SECS / 2..ARI_POLL_SECS));
        let at = schedule::default_renew_at(cert.not_before, cert.not_after, rand::random());
        at.min(poll)
    }

    /// Schedules the first check of every stored certificate (at start): when the lifetime rule
    /// says, or sooner, within [`FIRST_CHECK_SPREAD_SECS`], so an ARI-capable CA is asked early.
    pub(super) fn schedule_stored(&self, lifetimes: &[CertLifetime], now: SystemTime) {
        let names: Vec<Domain> = lifetimes.iter().map(|c| self.shared(&c.domain)).collect();
        let mut schedule = lock(&self.schedule);
        for (c, name) in lifetimes.iter().zip(&names) {
            let spread = Duration::from_secs(rand::random_range(0..FIRST_CHECK_SPREAD_SECS));
            let due = schedule::default_renew_at(c.not_before, c.not_after, rand::random())
                .min(now + spread);
            schedule.set(name, due);
        }
    }

    /// Renews certificates when the schedule says so, until `stop` turns true. The certificate
    /// gauges are read again at most once per [`MAINTENANCE_TICK`] here (for the time that
    /// passed, and other nodes' certificates): an issuance reads them itself, and after a start
    /// with many certificates, their first checks spread over hours wake this loop every few
    /// hundred milliseconds.
    pub async fn run_maintenance(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut gauges_due = tokio::time::Instant::now();
        loop {
            self.start_due_renewals();
            if tokio::time::Instant::now() >= gauges_due {
                gauges_due = tokio::time::Instant::now() + MAINTENANCE_TICK;
                if let Err(e) = self.refresh_gauges().await {
                    tracing::warn!(error = %error_chain(&e), "refreshing certificate gauges");
                }
            }
            let next = lock(&self.schedule).next();
            let sleep = next.map_or(MAINTENANCE_TICK, |at| {
                let until = at.duration_since(self.clock.now()).unwrap_or_default();
                until.min(MAINTENANCE_TICK)
            });
            // Awake again when the gauges are due, not up to a tick after.
            let sleep =
                sleep.min(gauges_due.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep(sleep.max(Duration::from_millis(200))) => {}
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Starts a renewal flight for each name the schedule says is due, and takes it off the
    /// schedule (the flight schedules what comes next).
    pub(super) fn start_due_renewals(self: &Arc<Self>) {
        let due = lock(&self.schedule).pop_due(self.clock.now());
        for name in due {
            // The flight runs on its own; nobody waits for it here.
            drop(self.fly(&name, Flight::Renew));
        }
    }

    /// The renewal check of `name`, which the schedule no longer holds: one that fails before
    /// it could decide (the store failed) is counted and made again [`CHECK_AGAIN`] later, so a
    /// store's outage does not leave the name unscheduled to expire.
    pub(super) async fn renewal_check(&self, name: &Domain) -> Result<Entry, CertError> {
        let result = self.renew(name).await;
        if let Err(e) = &result {
            let nothing_to_renew = matches!(e, CertError::Unavailable { source, .. }
                if matches!(**source, LoadError::NothingToRenew));
            if !matches!(e, CertError::NotServed(_)) && !nothing_to_renew {
                self.metrics.renewals.with_label_values(&["failed"]).inc();
                self.renewal_failing(name, true);
                tracing::warn!(domain = %name, error = %error_chain(e), "renewal check failed; checking again in 5 minutes");
                self.check_again(name);
            }
        }
        result
    }

    /// Counts `name` among the names whose last renewal attempt here failed, or no longer
    /// (`clickedge_certificate_renewals_failing`): a failure is retried on a schedule that soon
    /// spaces out to a day, so a counter's increase over a window cannot say it still fails.
    pub(super) fn renewal_failing(&self, name: &Domain, failing: bool) {
        let changed = if failing {
            self.renewals_failing.insert(name.clone())
        } else {
            self.renewals_failing.remove(name).is_some()
        };
        if changed {
            self.metrics
                .renewals_failing
                .set(i64::try_from(self.renewals_failing.len()).unwrap_or(i64::MAX));
        }
    }

    /// Schedules `name` [`CHECK_AGAIN`] from now unless it is scheduled already.
    pub(super) fn check_again(&self, name: &Domain) {
        self.schedule_unscheduled(name, self.clock.now() + CHECK_AGAIN);
    }

    pub(super) async fn renew(&self, name: &Domain) -> Result<Entry, CertError> {
        if !self.policy.is_registered(name.as_str()) {
            return Err(CertError::NotServed(name.clone()));
        }
        let current = self
            .store
            .certificate(name)
            .await
            .map_err(|e| CertError::unavailable(name, e))?
            .ok_or_else(|| CertError::unavailable(name, LoadError::NothingToRenew))?;
        let now = self.clock.now();
        let info = self.issuer.renewal_window(name, &current).await;
        if info.is_ok() && self.ari_failing.remove(name).is_some() {
            tracing::info!(domain = %name, "renewal information available again");
        }
        match info {
            Ok(Some(w)) => {
                let frac = schedule::cert_fraction(&current.chain_pem);
                // Never in the certificate's last tenth, whatever the window says (a CA or proxy
                // that answers one ending after expiry).
                let last_tenth = current
                    .not_after
                    .duration_since(current.not_before)
                    .unwrap_or_default()
                    / 10;
                let at = schedule::ari_renew_at(w.start, w.end, frac)
                    .min(current.not_after - last_tenth);
                if at > now {
                    let check = now + w.check_after.max(MIN_ARI_CHECK);
                    self.schedule_at(name, at.min(check));
                    return self.not_due(name, &current);
                }
                tracing::info!(domain = %name, window_start = %rfc3339(w.start), "renewal window open: renewing");
            }
            // Without renewal information (the CA offers none, or could not be asked), the
            // lifetime rule decides: this check may come early (every certificate gets one within
            // hours of a start), and renewing on it would reissue every certificate after every
            // restart.
            info => {
                // Renew once the earliest point the rule can pick has passed; a fresh random
                // point here could defer a check that came on time.
                let (nb, na) = (current.not_before, current.not_after);
                let due = now >= schedule::default_renew_at(nb, na, 1.0);
                match info {
                    Err(e) => {
                        if self.ari_failing.insert(name.clone()) {
                            tracing::warn!(domain = %name, error = %error_chain(&e), "renewal information unavailable; asked again within hours (said again only once it was had)");
                        } else {
                            tracing::debug!(domain = %name, error = %error_chain(&e), "renewal information still unavailable");
                        }
                        if !due {
                            // Asked again within hours, not when the lifetime rule says.
                            self.schedule_polling(name, &current);
                            return self.not_due(name, &current);
                        }
                    }
                    Ok(_) if !due => {
                        self.schedule_by_lifetime(name, &current);
                        return self.not_due(name, &current);
                    }
                    Ok(_) => {}
                }
            }
        }
        // Once per cluster: a failure another node recorded holds this node back too, and only
        // the lease holder renews.
        if let Some(not_before) = self.backoff.recheck(name, now).await {
            self.schedule_at(name, not_before.until);
            return self.serving(name, &current);
        }
        let Some(claim) = self.claim(name).await? else {
            let holder = Holder::read(&self.store, name, &self.claims, &self.clock).await;
            let lease_holder = match &holder {
                Holder::ThisNode => self.claims.holder.as_str(),
                Holder::Other(id) => id.as_str(),
                Holder::Unknown => "unknown",
            };
            tracing::info!(domain = %name, lease_holder = %lease_holder, "{}", holder.renewal_waits());
            self.schedule_at(name, now + self.claims.ttl);
            return self.serving(name, &current);
        };
        // Re-read under the lease: another node may have renewed since this check began.
        let latest = self
            .store
            .certificate(name)
            .await
            .map_err(|e| CertError::unavailable(name, e))?;
        if let Some(latest) = latest.filter(|l| l.not_before > current.not_before) {
            claim.release(false).await;
            self.renewal_failing(name, false);
            tracing::info!(domain = %name, not_after = %rfc3339(latest.not_after), "already renewed by another node");
            self.schedule_polling(name, &latest);
            return self.serving(name, &latest);
        }
        // Or its renewal failed since the check above: recorded before the lease was freed.
        if let Some(not_before) = self.backoff.recheck(name, self.clock.now()).await {
            claim.release(false).await;
            self.schedule_at(name, not_before.until);
            return self.serving(name, &current);
        }
        let message = match self.issue(name, Some(&current), claim).await {
            Ok(entry) => {
                self.metrics.renewals.with_label_values(&["ok"]).inc();
                self.renewal_failing(name, false);
                return Ok(entry);
            }
            Err(IssueOutcome::Superseded) if !self.policy.is_registered(name.as_str()) => {
                return Err(CertError::NotServed(name.clone()));
            }
            Err(IssueOutcome::Superseded) => {
                // The node that took over stores the renewal; look again after its lease.
                self.schedule_at(name, now + self.claims.ttl);
                return self.serving(name, &current);
            }
            // Scheduled by `issue`, at the time the account may order again: not a failure.
            Err(IssueOutcome::Waits(_)) => return self.serving(name, &current),
            // Scheduled by `issue`, at the retry time.
            Err(IssueOutcome::Failed(not_before)) => not_before.cause.detail,
            // Issued but not usable or not stored: backed off like a failed order.
            Err(IssueOutcome::Unusable(e)) => self.renewal_unusable(name, &e, &current).await,
        };
        self.metrics.renewals.with_label_values(&["failed"]).inc();
        self.renewal_failing(name, true);
        // The current certificate keeps serving, unless it has expired.
        let left = super::flight::serving(Some(current.not_after), self.clock.now());
        tracing::warn!(domain = %name, error = %message, "renewal failed; {left}");
        self.serving(name, &current)
    }

    /// `cert`, which a check found not yet due: nothing to renew is nothing failing (a check
    /// that failed on the store before deciding, or a renewal another node made since this one
    /// failed, would otherwise stay counted until the next renewal, months away).
    fn not_due(&self, name: &Domain, cert: &StoredCert) -> Result<Entry, CertError> {
        self.renewal_failing(name, false);
        self.serving(name, cert)
    }

    /// `cert`, which keeps serving `name`, as a cache entry.
    fn serving(&self, name: &Domain, cert: &StoredCert) -> Result<Entry, CertError> {
        self.entry(cert)
            .map_err(|e| CertError::unavailable(name, e))
    }
}
