//! Backoff after failed orders, held in one place.
//!
//! The domain row in the store is the source of truth: failures in a row, the time before which
//! no new order is placed, and why the last attempt failed ([`IssueStatus`]). It survives a
//! restart, so a crash loop does not become an order loop, and the admin API reads it. [`Backoff`]
//! is the only writer of those columns, and keeps in memory a copy of the rows that say "not
//! before", written through on every change and loaded at start. A change built on what is
//! recorded (one more failure, a hold, its release) is one step of the store
//! ([`Store::update_status`]), so what another node or flight recorded meanwhile is neither lost
//! nor overwritten. Backing off holds back orders,
//! not the certificate a failed renewal keeps serving: a handshake for a name that backs off
//! looks in the store once (it may be a renewal that failed, with a valid certificate stored),
//! and once nothing is found there it fails fast without a store query. Nothing else keeps
//! backoff state.
//!
//! A held-back order (a blocking onboarding check fails) is recorded and logged once per
//! [`HELD_NOTICE_INTERVAL`] per name and reason, not once per handshake: a client retrying a
//! held name in a loop costs a memory lookup, not a store write and a log line each.
//!
//! When to retry is [`super::schedule::retry_at`]'s to say; this module only records.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;

use super::schedule;
use crate::Domain;
use crate::clock::unix_secs;
use crate::errors::chain as error_chain;
use crate::store::{DomainRecord, FailureKind, IssueFailure, IssueStatus, Store, StoreError};

/// The same held-back reason of a name is written and logged again at most this often.
pub(super) const HELD_NOTICE_INTERVAL: Duration = Duration::from_secs(60);

/// No new order for a name before `until`, because of `cause`.
#[derive(Debug, Clone)]
pub(super) struct NotBefore {
    /// The earliest time of the next order.
    pub(super) until: SystemTime,
    /// Why the last attempt failed.
    pub(super) cause: IssueFailure,
    /// Failed attempts in a row.
    pub(super) failures: u32,
    /// True once this node found no unexpired certificate of the name in the store while it
    /// backs off: its handshakes then fail from memory. Until then they look (one store read
    /// per flight), since a failed renewal leaves the current certificate serving.
    pub(super) nothing_stored: bool,
}

impl NotBefore {
    /// The backoff `status` records: its retry time and why, if it has both (nothing found of
    /// the store yet).
    fn of(status: IssueStatus) -> Option<NotBefore> {
        let (Some(until), Some(cause)) = (status.retry_at, status.last_error) else {
            return None;
        };
        Some(NotBefore {
            until,
            cause,
            failures: status.failures,
            nothing_stored: false,
        })
    }

    /// The status that records this backoff.
    fn status(&self) -> IssueStatus {
        IssueStatus {
            last_error: Some(self.cause.clone()),
            failures: self.failures,
            retry_at: Some(self.until),
        }
    }
}

/// The issuance status of every domain: recorded in the store, with an in-memory copy of the
/// retry times for the handshake path.
pub(super) struct Backoff {
    store: Arc<dyn Store>,
    /// The `retry_at` and `last_error` of every row that has both, as last written or loaded.
    not_before: DashMap<Domain, NotBefore>,
    /// The held-back reason last recorded for a name, and when.
    held: DashMap<Domain, (FailureKind, SystemTime)>,
}

impl Backoff {
    pub(super) fn new(store: Arc<dyn Store>) -> Backoff {
        Backoff {
            store,
            not_before: DashMap::new(),
            held: DashMap::new(),
        }
    }

    /// Loads the retry times still ahead of `now` (at start).
    pub(super) fn restore(&self, domains: &[DomainRecord], now: SystemTime) {
        for d in domains {
            self.apply(d, now);
        }
    }

    /// Takes the status recorded in `d` as the in-memory copy (at start, and when another node
    /// recorded it): a retry time ahead of `now` is kept, anything else clears the copy.
    pub(super) fn apply(&self, d: &DomainRecord, now: SystemTime) {
        // A hold released elsewhere is not one to remember here.
        if !IssueStatus::of(d).held_back() {
            self.held.remove(&d.name);
        }
        match NotBefore::of(IssueStatus::of(d)).filter(|n| n.until > now) {
            Some(mut not_before) => {
                // Any change of the row arrives here (a check's results too, and on one node its
                // own writes): what was found of the store holds while the status is the same.
                // The row keeps whole seconds, the copy written here may not.
                not_before.nothing_stored = self.not_before.get(&d.name).is_some_and(|n| {
                    n.nothing_stored
                        && unix_secs(n.until) == unix_secs(not_before.until)
                        && n.failures == not_before.failures
                });
                self.not_before.insert(d.name.clone(), not_before);
            }
            None => {
                self.not_before.remove(&d.name);
            }
        }
    }

    /// The retry time of `name` and its cause, if it is later than `now`. From memory only.
    pub(super) fn pending(&self, name: &Domain, now: SystemTime) -> Option<NotBefore> {
        self.not_before
            .get(name)
            .filter(|n| n.until > now)
            .map(|n| n.clone())
    }

    /// The retry time of `name` and its cause, if it is later than `now`: from memory, or else
    /// from the store's row, which another node sharing the store may have written (then kept
    /// in memory). Asked before ordering only, never on a handshake's way to a cached name.
    pub(super) async fn recheck(&self, name: &Domain, now: SystemTime) -> Option<NotBefore> {
        if let Some(pending) = self.pending(name, now) {
            return Some(pending);
        }
        let record = match self.store.domain(name).await {
            Ok(record) => record?,
            Err(e) => {
                tracing::warn!(domain = %name, error = %error_chain(&e), "reading the recorded backoff");
                return None;
            }
        };
        let not_before = NotBefore::of(IssueStatus::of(&record)).filter(|n| n.until > now)?;
        self.not_before.insert(name.clone(), not_before.clone());
        Some(not_before)
    }

    /// Records a failed order at `now`: one more failure in a row, and no new order before the
    /// time [`schedule::retry_at`] says (never later than half-way to `serving_until`, the expiry
    /// of a certificate still serving), nor before `ca_until`, the time the CA named for this
    /// name's rate limit (asking earlier would only be refused again).
    pub(super) async fn failed(
        &self,
        name: &Domain,
        cause: IssueFailure,
        now: SystemTime,
        serving_until: Option<SystemTime>,
        ca_until: Option<SystemTime>,
    ) -> NotBefore {
        let until = move |failures| {
            schedule::retry_at(now, failures, serving_until).max(ca_until.unwrap_or(now))
        };
        let last_error = Some(cause.clone());
        let recorded = self
            .update_or_warn(name, move |current| {
                let failures = current.failures.saturating_add(1);
                Some(IssueStatus {
                    last_error: last_error.clone(),
                    failures,
                    retry_at: Some(until(failures)),
                })
            })
            .await;
        // None: the name is not registered (any more), and its first failure is the answer.
        let failures = recorded.map_or(1, |status| status.failures);
        if serving_until.is_none() {
            self.nothing_stored(name);
        }
        NotBefore {
            until: until(failures),
            cause,
            failures,
            nothing_stored: serving_until.is_none(),
        }
    }

    /// Backs `name` off in memory at once after a flight that ordered for it panicked, as one
    /// more failure in a row: its next handshakes fail from memory rather than each ordering
    /// (and panicking) again. The caller then records it with [`Backoff::failed`], which the
    /// store's count of failures corrects.
    pub(super) fn panicked(&self, name: &Domain, cause: IssueFailure, now: SystemTime) {
        let failures = self
            .not_before
            .get(name)
            .map_or(0, |n| n.failures)
            .saturating_add(1);
        let not_before = NotBefore {
            until: schedule::retry_at(now, failures, None),
            cause,
            failures,
            nothing_stored: true,
        };
        self.not_before.insert(name.clone(), not_before);
    }

    /// Records that an order for `name` could not be placed before `until` (the account's order
    /// budget is spent, or the CA paused all issuance): no new order before then, and, as the
    /// name itself did not fail, the failures in a row stay as they were (the backoff does not
    /// grow for it).
    pub(super) async fn waits_for_budget(
        &self,
        name: &Domain,
        cause: IssueFailure,
        until: SystemTime,
    ) -> NotBefore {
        let last_error = Some(cause.clone());
        let recorded = self
            .update_or_warn(name, move |current| {
                Some(IssueStatus {
                    last_error: last_error.clone(),
                    retry_at: Some(until),
                    ..current.clone()
                })
            })
            .await;
        NotBefore {
            until,
            cause,
            failures: recorded.map_or(0, |status| status.failures),
            nothing_stored: false,
        }
    }

    /// Notes that the store holds no unexpired certificate of `name`, which backs off: its
    /// handshakes fail from memory until its status changes (a new failure, a success, a
    /// reset, another node's record).
    pub(super) fn nothing_stored(&self, name: &Domain) {
        if let Some(mut n) = self.not_before.get_mut(name) {
            n.nothing_stored = true;
        }
    }

    /// Records why an order was held back, keeping the failures and retry time a CA error set
    /// (asking again costs nothing, so holding back does not back off). A CA failure whose retry
    /// time is still ahead of `now` is left as it is: its words say why the name waits, and a
    /// hold recorded over it would take its backoff along when released.
    ///
    /// Returns false, recording nothing, when the same reason was recorded for `name` less than
    /// [`HELD_NOTICE_INTERVAL`] before `now`, or a CA failure still backs it off; the caller then
    /// does not log either.
    pub(super) async fn held_back(
        &self,
        name: &Domain,
        cause: IssueFailure,
        now: SystemTime,
    ) -> bool {
        let recent = self.held.get(name).is_some_and(|held| {
            let (kind, at) = &*held;
            *kind == cause.kind && now < *at + HELD_NOTICE_INTERVAL
        });
        if recent {
            return false;
        }
        let kind = cause.kind.clone();
        let recorded = self
            .update_or_warn(name, move |current| {
                let ca_backoff = current.retry_at.is_some_and(|until| until > now)
                    && current
                        .last_error
                        .as_ref()
                        // The edge's own waits (its order budget, its store) say less than the
                        // check.
                        .is_some_and(|f| {
                            !matches!(f.kind, FailureKind::HeldBack { .. } | FailureKind::Local)
                        });
                (!ca_backoff).then(|| IssueStatus {
                    last_error: Some(cause.clone()),
                    ..current.clone()
                })
            })
            .await;
        if recorded.is_none() {
            return false;
        }
        self.held.insert(name.clone(), (kind, now));
        true
    }

    /// Whether a hold of `name` recorded here ([`Backoff::held_back`]) is still remembered.
    pub(super) fn held_here(&self, name: &Domain) -> bool {
        self.held.contains_key(name)
    }

    /// Records a success: no failure, no retry time.
    pub(super) async fn succeeded(&self, name: &Domain) {
        self.record_or_warn(name, &IssueStatus::default()).await;
    }

    /// Clears the backoff of `name` so the next handshake may order again. Its failures in a
    /// row are kept until one succeeds: a failure after the reset waits as the next one would
    /// (from the third, at least [`schedule::FAILING_FLOOR`]); counted afresh, every reset
    /// handed out two retries a minute or ten apart, into the CA's limit of failed
    /// validations per name an hour.
    pub(super) async fn reset(&self, name: &Domain) -> Result<(), StoreError> {
        self.update(name, |current| {
            Some(IssueStatus {
                last_error: None,
                retry_at: None,
                failures: current.failures,
            })
        })
        .await
        .map(drop)
        .map_err(|(e, _)| e)
    }

    /// Clears a held-back reason once the checks pass, keeping any backoff a CA error set.
    pub(super) async fn release_hold(&self, name: &Domain) -> Result<(), StoreError> {
        self.update(name, |current| {
            current.held_back().then(|| IssueStatus {
                last_error: None,
                ..current.clone()
            })
        })
        .await
        // Released now, or by another node before: either way no hold is left to remember.
        .map(|_| drop(self.held.remove(name)))
        .map_err(|(e, _)| e)
    }

    /// Forgets the in-memory copy for `name` (after it was unregistered; the store dropped the
    /// row).
    pub(super) fn forget(&self, name: &Domain) {
        self.not_before.remove(name);
        self.held.remove(name);
    }

    async fn record_or_warn(&self, name: &Domain, status: &IssueStatus) {
        if let Err(e) = self.record(name, status).await {
            tracing::warn!(domain = %name, error = %error_chain(&e), "recording certificate status");
        }
    }

    /// Writes `status` to the store, whatever it holds, then the in-memory copy, which follows
    /// even when the store fails: a failing store must not turn every handshake into an order.
    async fn record(&self, name: &Domain, status: &IssueStatus) -> Result<(), StoreError> {
        let written = self.store.set_status(name, status).await;
        self.remember(name, status);
        written
    }

    async fn update_or_warn(
        &self,
        name: &Domain,
        change: impl Fn(&IssueStatus) -> Option<IssueStatus> + Clone + Send + 'static,
    ) -> Option<IssueStatus> {
        self.update(name, change).await.unwrap_or_else(|(e, status)| {
            tracing::warn!(domain = %name, error = %error_chain(&e), "recording certificate status");
            status
        })
    }

    /// Changes the recorded status of `name` with `change` in one step of the store (a change
    /// built on what another node or flight recorded meanwhile is never lost), then the
    /// in-memory copy. The status recorded; `None` if nothing was (`change` left it, or the
    /// name is not registered).
    ///
    /// When the store fails, the copy follows `change` applied to what it holds (a failing
    /// store must not turn every handshake into an order), and that status comes with the error.
    async fn update(
        &self,
        name: &Domain,
        change: impl Fn(&IssueStatus) -> Option<IssueStatus> + Clone + Send + 'static,
    ) -> Result<Option<IssueStatus>, (StoreError, Option<IssueStatus>)> {
        let updated = self
            .store
            .update_status(name, Box::new(change.clone()))
            .await;
        let (status, failed) = match updated {
            Ok(status) => (status, None),
            Err(e) => (change(&self.remembered(name)), Some(e)),
        };
        if let Some(status) = &status {
            self.remember(name, status);
        }
        match failed {
            None => Ok(status),
            Some(e) => Err((e, status)),
        }
    }

    /// The status the in-memory copy holds of `name`: its backoff, if any.
    fn remembered(&self, name: &Domain) -> IssueStatus {
        self.not_before
            .get(name)
            .map(|n| n.status())
            .unwrap_or_default()
    }

    /// Takes `status` as the in-memory copy of `name`'s.
    fn remember(&self, name: &Domain, status: &IssueStatus) {
        if !status.held_back() {
            self.held.remove(name);
        }
        match NotBefore::of(status.clone()) {
            Some(not_before) => {
                self.not_before.insert(name.clone(), not_before);
            }
            None => {
                self.not_before.remove(name);
            }
        }
    }
}
