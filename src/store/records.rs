//! What the store holds, as the rest of the edge reads it: domains and how their issuance went,
//! certificates, link keys, and a walk over every domain a page at a time.

use std::fmt;
use std::time::SystemTime;

use super::{FailureKind, IssueFailure, Store, StoreError};
use crate::Domain;

/// A registered domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRecord {
    /// The name.
    pub name: Domain,
    /// Who registered it.
    pub origin: Origin,
    /// When it was added.
    pub created_at: SystemTime,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<IssueFailure>,
    /// Failed issuance attempts in a row.
    pub failures: u32,
    /// No new order before this time; none when no retry is pending.
    pub retry_at: Option<SystemTime>,
    /// Where a link of this domain that does not open sends the recipient (the operator's
    /// choice, checked like a link destination); none: a page saying the link is not valid.
    pub fallback_url: Option<String>,
}

/// Who registered a domain. Either way it is served, issued for, backed off, renewed and removed
/// alike; the origin says why it is there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Origin {
    /// An operator added it (admin API, CLI or page).
    #[default]
    Admin,
    /// The `tls.ask` endpoint approved it at a handshake.
    Ask,
}

impl Origin {
    /// The origin as the admin API shows it and the store keeps it: `admin` or `ask`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Admin => "admin",
            Origin::Ask => "ask",
        }
    }

    /// The origin `code` names ([`Origin::as_str`]); none for anything else (a store reads that
    /// as [`Origin::Admin`]).
    pub fn from_code(code: &str) -> Option<Origin> {
        match code {
            "admin" => Some(Origin::Admin),
            "ask" => Some(Origin::Ask),
            _ => None,
        }
    }
}

/// The outcome of the last issuance attempt for a domain, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssueStatus {
    /// Why it failed; none after a success.
    pub last_error: Option<IssueFailure>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// No new order before this time; none when no retry is pending.
    pub retry_at: Option<SystemTime>,
}

impl IssueStatus {
    /// The status recorded in `record`.
    pub fn of(record: &DomainRecord) -> IssueStatus {
        IssueStatus {
            last_error: record.last_error.clone(),
            failures: record.failures,
            retry_at: record.retry_at,
        }
    }

    /// Whether the last attempt was an order a failing onboarding check held back.
    pub fn held_back(&self) -> bool {
        self.last_error
            .as_ref()
            .is_some_and(|f| matches!(f.kind, FailureKind::HeldBack { .. }))
    }
}

/// A change of a domain's recorded [`IssueStatus`], given the one recorded ([`Store::update_status`]):
/// the status to record, or `None` to leave it.
///
/// [`Store::update_status`]: super::Store::update_status
pub type StatusChange = Box<dyn FnOnce(&IssueStatus) -> Option<IssueStatus> + Send>;

/// A certificate's validity, for renewal scheduling (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertLifetime {
    /// The name.
    pub domain: Domain,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
}

/// What a listing shows of a domain's stored certificate: who issued it and its validity, read
/// without the chain or the key ([`Store::listing_after`]).
///
/// [`Store::listing_after`]: super::Store::listing_after
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Which issuer made it (`local`, `acme`).
    pub issuer: String,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
}

impl From<&StoredCert> for CertInfo {
    fn from(cert: &StoredCert) -> CertInfo {
        CertInfo {
            issuer: cert.issuer.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
        }
    }
}

/// A certificate chain and its private key, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCert {
    /// Which issuer made it (`local`, `acme`).
    pub issuer: String,
    /// PEM chain, leaf first.
    pub chain_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: String,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
}

impl fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // NOTE: the private key is deliberately not printed.
        f.debug_struct("StoredCert")
            .field("issuer", &self.issuer)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What a link key's retirement or removal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// Done (or there already: a retired key retired again keeps its first time).
    Done,
    /// No key has that id.
    NoSuchKey,
    /// Refused: no other key would be left that is not retired, none to seal with.
    LastNotRetired,
}

impl KeyChange {
    /// What changing a key does: `retired`, none when there is no such key; `others`, whether
    /// another key not retired is left. A retired key may always change: the keys that seal stay
    /// as they were.
    pub(crate) fn of(retired: Option<bool>, others: bool) -> KeyChange {
        match retired {
            None => KeyChange::NoSuchKey,
            Some(false) if !others => KeyChange::LastNotRetired,
            Some(_) => KeyChange::Done,
        }
    }
}

/// A stored link key: id, 32 secret bytes, creation time.
#[derive(Clone)]
pub struct StoredLinkKey {
    /// Key id.
    pub id: u16,
    /// The secret.
    pub secret: [u8; 32],
    /// Creation time.
    pub created_at: SystemTime,
    /// When it was retired (it stops sealing, keeps opening); `None` while it may seal.
    pub retired_at: Option<SystemTime>,
}

/// Domains read per query by [`DomainPages`].
const DOMAIN_PAGE: u32 = 10_000;

/// Every registered domain, a page at a time ([`Store::domains_after`]): whoever walks a large
/// cluster's domains (the start-up, the onboarding rechecks, a node comparing its names after
/// missed deletes) holds one page, not the table.
pub struct DomainPages<'a> {
    store: &'a dyn Store,
    after: Option<Domain>,
    limit: u32,
    done: bool,
}

impl<'a> DomainPages<'a> {
    /// Pages of 10 000 domains.
    pub fn new(store: &'a dyn Store) -> DomainPages<'a> {
        DomainPages::with_limit(store, DOMAIN_PAGE)
    }

    /// Pages of at most `limit` domains.
    pub fn with_limit(store: &'a dyn Store, limit: u32) -> DomainPages<'a> {
        DomainPages {
            store,
            after: None,
            limit,
            done: false,
        }
    }

    /// The next page; `None` once every domain has been read. A domain added or removed during
    /// the walk may be missed or read: callers that must not miss one read the store's changes
    /// from a version taken before (as the start-up does).
    pub async fn next(&mut self) -> Result<Option<Vec<DomainRecord>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .store
            .domains_after(self.after.as_ref(), self.limit)
            .await?;
        self.done = page.len() < usize::try_from(self.limit).unwrap_or(usize::MAX);
        self.after = page.last().map(|r| r.name.clone());
        Ok((!page.is_empty()).then_some(page))
    }
}

/// A page of [`Store::certificates_after`]: each name with its certificate, or why the row is
/// not usable.
pub type CertPage = Vec<(Domain, Result<StoredCert, StoreError>)>;

/// Count and soonest expiry of stored certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CertSummary {
    /// Certificates held.
    pub count: u64,
    /// Soonest `not_after` of a certificate still valid.
    pub soonest_expiry: Option<SystemTime>,
    /// Certificates still valid whose `not_after` is before the time asked about.
    pub expiring: u64,
    /// Certificates expired, and not replaced (their domain's renewal keeps failing).
    pub expired: u64,
}
