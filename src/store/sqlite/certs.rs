//! Stored certificates read a page at a time, in name order (keyset pagination on the primary
//! key), for a reader that copies every row without holding the whole table in memory.

use rusqlite::{Connection, params};

use super::rows::time;
use crate::Domain;
use crate::store::{CertPage, StoreError, StoredCert};

/// At most `limit` certificates whose domain sorts after `after` (from the first with none).
pub(super) fn page(
    c: &Connection,
    after: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<(String, StoredCert)>> {
    let mut st = c.prepare_cached(
        "SELECT domain, issuer, chain_pem, key_pem, not_before, not_after FROM certificates
         WHERE ?1 IS NULL OR domain > ?1 ORDER BY domain LIMIT ?2",
    )?;
    st.query_map(params![after, limit], |r| {
        Ok((
            r.get(0)?,
            StoredCert {
                issuer: r.get(1)?,
                chain_pem: r.get(2)?,
                key_pem: r.get(3)?,
                not_before: time(r.get(4)?),
                not_after: time(r.get(5)?),
            },
        ))
    })?
    .collect()
}

/// The rows of [`page`] with their names parsed (SQLite's keys are not sealed: each row is
/// usable).
pub(super) fn to_domains(rows: Vec<(String, StoredCert)>) -> Result<CertPage, StoreError> {
    rows.into_iter()
        .map(|(name, cert)| {
            Domain::parse(&name)
                .map(|d| (d, Ok(cert)))
                .map_err(|_| StoreError::Corrupt("certificates.domain"))
        })
        .collect()
}
