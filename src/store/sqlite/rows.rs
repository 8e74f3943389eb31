//! Values as the SQLite schema stores them: times as whole Unix seconds (0 for none), and a
//! domain row read back into a [`DomainRecord`], its codes (origin, failure kind) parsed. The
//! PostgreSQL schema stores them alike and reads its rows back through the same functions.

use std::time::SystemTime;

use crate::Domain;
use crate::clock::{from_unix_secs, unix_secs};
use crate::store::{
    CertInfo, DomainRecord, FailureKind, IssueFailure, Origin, StoreError, StoredLinkKey,
};

/// A time as the schema stores it: whole seconds since the Unix epoch.
pub(in crate::store) fn secs(t: SystemTime) -> i64 {
    i64::try_from(unix_secs(t)).unwrap_or(i64::MAX)
}

/// A stored time (negative values, from manual edits, read as the epoch).
pub(in crate::store) fn time(secs: i64) -> SystemTime {
    from_unix_secs(u64::try_from(secs).unwrap_or(0))
}

/// A stored time where 0 means none.
fn time_or_none(secs: i64) -> Option<SystemTime> {
    (secs > 0).then(|| time(secs))
}

pub(in crate::store) type DomainRow = (
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<String>,
);

pub(in crate::store) const DOMAIN_COLUMNS: &str =
    "name, origin, created_at, last_error, error_kind, failures, retry_at, fallback_url";

pub(super) fn row_domain(row: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

pub(in crate::store) fn to_record(
    (name, origin, created_at, last_error, error_kind, failures, retry_at, fallback_url): DomainRow,
) -> Result<DomainRecord, StoreError> {
    Ok(DomainRecord {
        name: Domain::parse(&name).map_err(|_| StoreError::Corrupt("domains.name"))?,
        // An origin this version does not know (a newer node's, in a rolling upgrade) only says
        // why the name is there: it is served all the same, shown as an operator's. Refusing the
        // row stopped every node of the old version from starting.
        origin: Origin::from_code(&origin).unwrap_or(Origin::Admin),
        created_at: time(created_at),
        last_error: last_error.map(|detail| IssueFailure {
            kind: error_kind
                .as_deref()
                .map_or(FailureKind::Unknown, FailureKind::from_code),
            detail,
        }),
        failures: u32::try_from(failures).unwrap_or(0),
        retry_at: time_or_none(retry_at),
        fallback_url,
    })
}

/// The columns of a stored certificate a listing reads (issuer, validity), each null for a
/// domain without one (the outer join of [`listing_query`]).
pub(in crate::store) type CertInfoRow = (Option<String>, Option<i64>, Option<i64>);

/// The query of a listing page ([`Store::listing_after`]): domain rows whose `name` (the name
/// column as the store compares it, byte by byte) is after the one `after` binds, at most
/// `limit` of them in that order, each with its certificate's issuer and validity (no chain, no
/// key). `after` and `limit` are the placeholders in the store's syntax.
///
/// [`Store::listing_after`]: crate::store::Store::listing_after
pub(in crate::store) fn listing_query(name: &str, after: &str, limit: &str) -> String {
    format!(
        "SELECT {DOMAIN_COLUMNS}, certificates.issuer, certificates.not_before, \
         certificates.not_after FROM domains LEFT JOIN certificates \
         ON certificates.domain = domains.name WHERE {name} > {after} \
         ORDER BY {name} LIMIT {limit}"
    )
}

/// A row of [`listing_query`] read back.
pub(in crate::store) fn to_listed(
    domain: DomainRow,
    (issuer, not_before, not_after): CertInfoRow,
) -> Result<(DomainRecord, Option<CertInfo>), StoreError> {
    let cert = match (issuer, not_before, not_after) {
        (Some(issuer), Some(not_before), Some(not_after)) => Some(CertInfo {
            issuer,
            not_before: time(not_before),
            not_after: time(not_after),
        }),
        _ => None,
    };
    Ok((to_record(domain)?, cert))
}

/// A link key row read back: its id, its 32-byte secret (opened, where the store seals it), its
/// creation time and when it was retired, if it was.
pub(in crate::store) fn to_link_key(
    id: i64,
    secret: Vec<u8>,
    created_at: i64,
    retired_at: Option<i64>,
) -> Result<StoredLinkKey, StoreError> {
    Ok(StoredLinkKey {
        id: u16::try_from(id).map_err(|_| StoreError::Corrupt("link_keys.id"))?,
        secret: secret
            .try_into()
            .map_err(|_| StoreError::Corrupt("link_keys.secret"))?,
        created_at: time(created_at),
        retired_at: retired_at.map(time),
    })
}
