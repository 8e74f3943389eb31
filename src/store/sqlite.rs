//! The embedded SQLite store: one file under the data dir, mode 0600 (it holds private keys).
//!
//! SQLite calls are blocking, so each runs on tokio's blocking pool behind one connection mutex;
//! nothing here is on the request path.
//!
//! This file is the [`Store`] trait over the connection and the domain rows; the other concerns
//! have files of their own: `certs` (certificate pages), `keys` (link keys), `values` (kv and
//! challenges), `cluster` (leases, fenced writes and the order budget), `changes` (propagation
//! and nodes), `schema` (migrations), `conn` (the connection and its blocking calls) and `rows`
//! (conversions).

mod certs;
mod changes;
pub(super) mod cluster;
mod conn;
mod keys;
pub(super) mod rows;
mod schema;
mod values;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension as _, params};

use super::{
    CertInfo, CertLifetime, CertPage, CertSummary, DomainRecord, Fence, IssueStatus, KeyChange,
    Lease, OrderRate, OrderTurn, StatusChange, Store, StoreError, StoredCert, StoredLinkKey,
};
use crate::Domain;
use crate::config::ChallengeKind;
use rows::{
    DOMAIN_COLUMNS, listing_query, row_domain, secs, time, to_link_key, to_listed, to_record,
};

/// SQLite-backed [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    queries: prometheus::IntCounter,
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn queries(&self) -> prometheus::IntCounter {
        self.queries.clone()
    }

    async fn domains(&self) -> Result<Vec<DomainRecord>, StoreError> {
        // SQLite compares names byte by byte: its own order is the sorted one.
        self.domains_after(None, u32::MAX).await
    }

    async fn domains_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<Vec<DomainRecord>, StoreError> {
        // Every name sorts after the empty string: one query that walks the primary key.
        let after = after.map_or_else(String::new, |d| d.as_str().to_owned());
        let rows = self
            .with("listing domains", move |c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {DOMAIN_COLUMNS} FROM domains WHERE name > ?1 ORDER BY name LIMIT ?2"
                ))?;
                st.query_map(params![after, limit], row_domain)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter().map(to_record).collect()
    }

    async fn listing_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(DomainRecord, Option<CertInfo>)>, StoreError> {
        let after = after.to_owned();
        let rows = self
            .with("listing domains", move |c| {
                let mut st = c.prepare_cached(&listing_query("domains.name", "?1", "?2"))?;
                st.query_map(params![after, limit], |r| {
                    Ok((row_domain(r)?, (r.get(8)?, r.get(9)?, r.get(10)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(domain, cert)| to_listed(domain, cert))
            .collect()
    }

    async fn domain(&self, name: &Domain) -> Result<Option<DomainRecord>, StoreError> {
        let name = name.clone();
        self.with("reading domain", move |c| read_domain(c, &name))
            .await?
            .map(to_record)
            .transpose()
    }

    async fn add_domain(&self, name: &Domain, created_at: SystemTime) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with("adding domain", move |c| {
            // New or not is whether the insert happened; an operator's add then takes over a
            // name ask approved.
            let tx = c.unchecked_transaction()?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO domains (name, created_at, origin) VALUES (?1, ?2, 'admin')",
                params![name.as_str(), secs(created_at)],
            )?;
            tx.execute(
                "UPDATE domains SET origin = 'admin' WHERE name = ?1 AND origin != 'admin'",
                [name.as_str()],
            )?;
            tx.commit()?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn add_approved_domain(
        &self,
        name: &Domain,
        created_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with("adding approved domain", move |c| {
            c.execute(
                "INSERT OR IGNORE INTO domains (name, created_at, origin) VALUES (?1, ?2, 'ask')",
                params![name.as_str(), secs(created_at)],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn set_fallback_url(&self, name: &Domain, url: Option<&str>) -> Result<bool, StoreError> {
        let (name, url) = (name.clone(), url.map(str::to_owned));
        self.with("setting domain fallback", move |c| {
            c.execute(
                "UPDATE domains SET fallback_url = ?2 WHERE name = ?1",
                params![name.as_str(), url],
            )
            .map(|n| n == 1)
        })
        .await
    }

    async fn remove_domain(&self, name: &Domain) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with("removing domain", move |c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM certificates WHERE domain = ?1",
                [name.as_str()],
            )?;
            let n = tx.execute("DELETE FROM domains WHERE name = ?1", [name.as_str()])?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_status(&self, name: &Domain, status: &IssueStatus) -> Result<(), StoreError> {
        let name = name.clone();
        let status = status.clone();
        self.with("recording domain status", move |c| {
            write_status(c, &name, &status).map(drop)
        })
        .await
    }

    async fn update_status(
        &self,
        name: &Domain,
        change: StatusChange,
    ) -> Result<Option<IssueStatus>, StoreError> {
        let name = name.clone();
        // One call holds the one connection: nothing else writes between the read and the write.
        self.with("updating domain status", move |c| {
            let Some(row) = read_domain(c, &name)? else {
                return Ok(Ok(None));
            };
            let current = match to_record(row) {
                Ok(record) => IssueStatus::of(&record),
                Err(e) => return Ok(Err(e)),
            };
            let Some(status) = change(&current) else {
                return Ok(Ok(None));
            };
            write_status(c, &name, &status)?;
            Ok(Ok(Some(status)))
        })
        .await?
    }

    async fn certificate(&self, name: &Domain) -> Result<Option<StoredCert>, StoreError> {
        let name = name.clone();
        self.with("reading certificate", move |c| {
            c.query_row(
                "SELECT issuer, chain_pem, key_pem, not_before, not_after FROM certificates WHERE domain = ?1",
                [name.as_str()],
                |r| {
                    Ok(StoredCert {
                        issuer: r.get(0)?,
                        chain_pem: r.get(1)?,
                        key_pem: r.get(2)?,
                        not_before: time(r.get(3)?),
                        not_after: time(r.get(4)?),
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn certificate_info(&self, name: &Domain) -> Result<Option<CertInfo>, StoreError> {
        let name = name.clone();
        self.with("reading certificate", move |c| {
            c.query_row(
                "SELECT issuer, not_before, not_after FROM certificates WHERE domain = ?1",
                [name.as_str()],
                |r| {
                    Ok(CertInfo {
                        issuer: r.get(0)?,
                        not_before: time(r.get(1)?),
                        not_after: time(r.get(2)?),
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn put_certificate(&self, name: &Domain, cert: &StoredCert) -> Result<(), StoreError> {
        let name = name.clone();
        let cert = cert.clone();
        self.with("storing certificate", move |c| {
            c.execute(
                "INSERT INTO certificates (domain, issuer, chain_pem, key_pem, not_before, not_after)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(domain) DO UPDATE SET issuer = ?2, chain_pem = ?3, key_pem = ?4,
                     not_before = ?5, not_after = ?6",
                params![
                    name.as_str(),
                    cert.issuer,
                    cert.chain_pem,
                    cert.key_pem,
                    secs(cert.not_before),
                    secs(cert.not_after)
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn put_certificate_fenced(
        &self,
        name: &Domain,
        cert: &StoredCert,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        let (name, cert) = (name.clone(), cert.clone());
        self.with("storing certificate", move |c| {
            cluster::put_fenced(c, name.as_str(), &cert, fence)
        })
        .await
    }

    async fn cert_summary(
        &self,
        now: SystemTime,
        expiring_before: SystemTime,
    ) -> Result<CertSummary, StoreError> {
        // Four queries, each answered from the `not_after` index alone (a count of its
        // entries, its first entry past a point, ranges): a single aggregate over the table read
        // every row's certificate and key, ~100 ms at 100 000 certificates, after every issuance.
        self.with("summarising certificates", move |c| {
            let count: i64 = c.query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))?;
            let soonest: Option<i64> = c.query_row(
                "SELECT MIN(not_after) FROM certificates WHERE not_after >= ?1",
                [secs(now)],
                |r| r.get(0),
            )?;
            let expiring: i64 = c.query_row(
                "SELECT COUNT(*) FROM certificates WHERE not_after >= ?1 AND not_after < ?2",
                [secs(now), secs(expiring_before)],
                |r| r.get(0),
            )?;
            let expired: i64 = c.query_row(
                "SELECT COUNT(*) FROM certificates WHERE not_after < ?1",
                [secs(now)],
                |r| r.get(0),
            )?;
            Ok(CertSummary {
                count: count.max(0) as u64,
                soonest_expiry: soonest.map(time),
                expiring: expiring.max(0) as u64,
                expired: expired.max(0) as u64,
            })
        })
        .await
    }

    async fn cert_lifetimes(&self) -> Result<Vec<CertLifetime>, StoreError> {
        let rows = self
            .with("listing certificate lifetimes", |c| {
                let mut st = c.prepare_cached(
                    "SELECT domain, not_before, not_after FROM certificates ORDER BY domain",
                )?;
                st.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(name, nb, na)| {
                Ok(CertLifetime {
                    domain: Domain::parse(&name)
                        .map_err(|_| StoreError::Corrupt("certificates.domain"))?,
                    not_before: time(nb),
                    not_after: time(na),
                })
            })
            .collect()
    }

    async fn certificates_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<CertPage, StoreError> {
        let after = after.map(|d| d.as_str().to_owned());
        let rows = self
            .with("listing certificates", move |c| {
                certs::page(c, after.as_deref(), limit)
            })
            .await?;
        certs::to_domains(rows)
    }

    async fn kv(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.with("reading kv", move |c| values::kv(c, &key)).await
    }

    async fn put_kv(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.with("writing kv", move |c| values::put_kv(c, &key, &value))
            .await
    }

    async fn add_kv(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.with("adding kv", move |c| values::add_kv(c, &key, &value))
            .await
    }

    async fn put_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        value: &str,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.with("publishing challenge", move |c| {
            values::put_challenge(c, kind, &name, &value, expires_at)
        })
        .await
    }

    async fn challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        let name = name.to_owned();
        self.with("reading challenge", move |c| {
            values::challenge(c, kind, &name, now)
        })
        .await
    }

    async fn remove_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.with("removing challenge", move |c| {
            values::remove_challenge(c, kind, &name, now)
        })
        .await
    }

    async fn acquire_lease(
        &self,
        name: &Domain,
        holder: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let (name, holder) = (name.clone(), holder.to_owned());
        self.with("acquiring lease", move |c| {
            cluster::acquire(c, name.as_str(), &holder, now, ttl)
        })
        .await
    }

    async fn extend_lease(
        &self,
        name: &Domain,
        fence: Fence,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with("extending lease", move |c| {
            cluster::extend(c, name.as_str(), fence, now, ttl)
        })
        .await
    }

    async fn set_lease_order(
        &self,
        name: &Domain,
        fence: Fence,
        order_url: Option<&str>,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let (name, url) = (name.clone(), order_url.map(str::to_owned));
        self.with("keeping order with lease", move |c| {
            cluster::set_order(c, name.as_str(), fence, url.as_deref(), now)
        })
        .await
    }

    async fn release_lease(&self, name: &Domain, fence: Fence) -> Result<bool, StoreError> {
        let name = name.clone();
        self.with("releasing lease", move |c| {
            cluster::release(c, name.as_str(), fence)
        })
        .await
    }

    async fn take_order(
        &self,
        budget: &str,
        rate: OrderRate,
        now: SystemTime,
    ) -> Result<OrderTurn, StoreError> {
        let budget = budget.to_owned();
        self.with("taking from the order budget", move |c| {
            cluster::take_order(c, &budget, rate, now)
        })
        .await
    }

    async fn pause_orders(&self, budget: &str, until: SystemTime) -> Result<(), StoreError> {
        let budget = budget.to_owned();
        self.with("pausing orders", move |c| cluster::pause(c, &budget, until))
            .await
    }

    async fn link_keys(&self) -> Result<Vec<StoredLinkKey>, StoreError> {
        let rows = self.with("reading link keys", keys::all).await?;
        rows.into_iter()
            .map(|(id, secret, created_at, retired_at)| {
                to_link_key(id, secret, created_at, retired_at)
            })
            .collect()
    }

    async fn add_link_key(
        &self,
        secret: [u8; 32],
        created_at: SystemTime,
    ) -> Result<u16, StoreError> {
        let id = self
            .with("adding link key", move |c| {
                keys::insert(c, &secret, created_at)
            })
            .await?;
        u16::try_from(id)
            .map_err(|_| StoreError::Corrupt("link_keys.id (more than 65535 rotations)"))
    }

    async fn remove_link_key(&self, id: u16) -> Result<KeyChange, StoreError> {
        self.with("removing link key", move |c| keys::remove(c, id))
            .await
    }

    async fn retire_link_key(&self, id: u16, at: SystemTime) -> Result<KeyChange, StoreError> {
        self.with("retiring link key", move |c| keys::retire(c, id, at))
            .await
    }

    async fn domain_checks(&self) -> Result<Vec<(Domain, String)>, StoreError> {
        let rows = self
            .with("reading domain checks", |c| {
                let mut st = c.prepare_cached(
                    "SELECT name, checks FROM domains WHERE checks IS NOT NULL ORDER BY name",
                )?;
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter()
            .map(|(name, json)| {
                Ok((
                    Domain::parse(&name).map_err(|_| StoreError::Corrupt("domains.name"))?,
                    json,
                ))
            })
            .collect()
    }

    async fn domain_checks_of(&self, name: &Domain) -> Result<Option<String>, StoreError> {
        let name = name.clone();
        self.with("reading domain checks", move |c| {
            c.prepare_cached("SELECT checks FROM domains WHERE name = ?1")?
                .query_row([name.as_str()], |r| r.get::<_, Option<String>>(0))
                .optional()
                .map(Option::flatten)
        })
        .await
    }

    async fn put_domain_checks(&self, name: &Domain, json: &str) -> Result<bool, StoreError> {
        let (name, json) = (name.clone(), json.to_owned());
        self.with("recording domain checks", move |c| {
            c.execute(
                "UPDATE domains SET checks = ?2 WHERE name = ?1",
                params![name.as_str(), json],
            )
            .map(|n| n == 1)
        })
        .await
    }
}

/// The row of `name`, if it is registered.
fn read_domain(c: &Connection, name: &Domain) -> rusqlite::Result<Option<rows::DomainRow>> {
    c.query_row(
        &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = ?1"),
        [name.as_str()],
        row_domain,
    )
    .optional()
}

/// Writes the issuance status of `name`; the number of rows changed (0 if it is not registered).
fn write_status(c: &Connection, name: &Domain, status: &IssueStatus) -> rusqlite::Result<usize> {
    let (detail, kind) = match &status.last_error {
        Some(f) => (Some(f.detail.as_str()), Some(f.kind.code())),
        None => (None, None),
    };
    c.execute(
        "UPDATE domains SET last_error = ?2, error_kind = ?3, failures = ?4, retry_at = ?5
         WHERE name = ?1",
        params![
            name.as_str(),
            detail,
            kind,
            i64::from(status.failures),
            status.retry_at.map_or(0, secs)
        ],
    )
}

#[cfg(test)]
mod tests;
