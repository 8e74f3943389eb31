//! The PostgreSQL store: one database shared by the nodes of a cluster (`store.url`), behind the
//! same [`Store`] trait and conformance suite as SQLite.
//!
//! Secrets never reach the database in the clear: certificate private keys, small values (the
//! ACME account and its key) and link key secrets are sealed with the cluster's [`SealKey`],
//! each bound to its row (`cert-key:<domain>`, `kv:<key>`, `link-key:<id>`). A database dump
//! alone mints no link and impersonates no domain. Issuance leases and the shared order budget
//! are in `cluster`.
//!
//! Nothing here is on the request path; every call takes a pooled connection.

mod changes;
mod cluster;
mod connect;
mod keys;
mod rows;
mod schema;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;

use super::sqlite::rows::{DOMAIN_COLUMNS, secs, time, to_record};
use super::{
    CertLifetime, CertSummary, DomainRecord, Fence, IssueStatus, Lease, OrderRate, OrderTurn,
    Store, StoreError, StoredCert, StoredLinkKey,
};
use crate::Domain;
use crate::config::ChallengeKind;
use crate::seal::SealKey;
pub use connect::PASSWORD_ENV;
use connect::db;
use rows::{cert_binding, domain_row, kv_binding, parse_domain, utf8};

/// PostgreSQL-backed [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    listener: connect::Listener,
    seal: Arc<SealKey>,
    queries: prometheus::IntCounter,
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn queries(&self) -> prometheus::IntCounter {
        self.queries.clone()
    }

    async fn domains(&self) -> Result<Vec<DomainRecord>, StoreError> {
        let op = "listing domains";
        let rows = self
            .conn(op)
            .await?
            .query(
                &format!("SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY name COLLATE \"C\""),
                &[],
            )
            .await
            .map_err(db(op))?;
        rows.iter().map(|r| to_record(domain_row(r))).collect()
    }

    async fn domain(&self, name: &Domain) -> Result<Option<DomainRecord>, StoreError> {
        let op = "reading domain";
        self.conn(op)
            .await?
            .query_opt(
                &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1"),
                &[&name.as_str()],
            )
            .await
            .map_err(db(op))?
            .map(|r| to_record(domain_row(&r)))
            .transpose()
    }

    async fn add_domain(&self, name: &Domain, created_at: SystemTime) -> Result<bool, StoreError> {
        let op = "adding domain";
        let mut conn = self.conn(op).await?;
        let tx = conn.transaction().await.map_err(db(op))?;
        // New or not is whether the insert happened; an operator's add then takes over a name
        // ask approved.
        let inserted = tx
            .execute(
                "INSERT INTO domains (name, created_at, origin) VALUES ($1, $2, 'admin')
                 ON CONFLICT (name) DO NOTHING",
                &[&name.as_str(), &secs(created_at)],
            )
            .await
            .map_err(db(op))?;
        tx.execute(
            "UPDATE domains SET origin = 'admin', version = nextval('row_version')
             WHERE name = $1 AND origin <> 'admin'",
            &[&name.as_str()],
        )
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(inserted == 1)
    }

    async fn add_approved_domain(
        &self,
        name: &Domain,
        created_at: SystemTime,
    ) -> Result<bool, StoreError> {
        let op = "adding approved domain";
        let n = self
            .conn(op)
            .await?
            .execute(
                "INSERT INTO domains (name, created_at, origin) VALUES ($1, $2, 'ask')
                 ON CONFLICT (name) DO NOTHING",
                &[&name.as_str(), &secs(created_at)],
            )
            .await
            .map_err(db(op))?;
        Ok(n == 1)
    }

    async fn set_fallback_url(&self, name: &Domain, url: Option<&str>) -> Result<bool, StoreError> {
        let op = "setting domain fallback";
        let n = self
            .conn(op)
            .await?
            .execute(
                "UPDATE domains SET fallback_url = $2 WHERE name = $1",
                &[&name.as_str(), &url],
            )
            .await
            .map_err(db(op))?;
        Ok(n == 1)
    }

    async fn remove_domain(&self, name: &Domain) -> Result<bool, StoreError> {
        let op = "removing domain";
        let mut conn = self.conn(op).await?;
        let tx = conn.transaction().await.map_err(db(op))?;
        tx.execute(
            "DELETE FROM certificates WHERE domain = $1",
            &[&name.as_str()],
        )
        .await
        .map_err(db(op))?;
        let n = tx
            .execute("DELETE FROM domains WHERE name = $1", &[&name.as_str()])
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(n == 1)
    }

    async fn set_status(&self, name: &Domain, status: &IssueStatus) -> Result<(), StoreError> {
        let op = "recording domain status";
        let (detail, kind) = match &status.last_error {
            Some(f) => (Some(f.detail.as_str()), Some(f.kind.code())),
            None => (None, None),
        };
        self.conn(op)
            .await?
            .execute(
                "UPDATE domains SET last_error = $2, error_kind = $3, failures = $4,
                     retry_at = $5, version = nextval('row_version')
                 WHERE name = $1",
                &[
                    &name.as_str(),
                    &detail,
                    &kind.as_deref(),
                    &i64::from(status.failures),
                    &status.retry_at.map_or(0, secs),
                ],
            )
            .await
            .map_err(db(op))?;
        Ok(())
    }

    async fn certificate(&self, name: &Domain) -> Result<Option<StoredCert>, StoreError> {
        let op = "reading certificate";
        let Some(r) = self
            .conn(op)
            .await?
            .query_opt(
                "SELECT issuer, chain_pem, key_sealed, not_before, not_after
                 FROM certificates WHERE domain = $1",
                &[&name.as_str()],
            )
            .await
            .map_err(db(op))?
        else {
            return Ok(None);
        };
        let key = self.open(&cert_binding(name.as_str()), r.get(2))?;
        Ok(Some(StoredCert {
            issuer: r.get(0),
            chain_pem: r.get(1),
            key_pem: utf8(key, "certificates.key_sealed")?,
            not_before: time(r.get(3)),
            not_after: time(r.get(4)),
        }))
    }

    async fn put_certificate(&self, name: &Domain, cert: &StoredCert) -> Result<(), StoreError> {
        let op = "storing certificate";
        let key = self.seal(&cert_binding(name.as_str()), cert.key_pem.as_bytes())?;
        self.conn(op)
            .await?
            .execute(
                "INSERT INTO certificates (domain, issuer, chain_pem, key_sealed, not_before, not_after)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (domain) DO UPDATE SET issuer = $2, chain_pem = $3, key_sealed = $4,
                     not_before = $5, not_after = $6, version = nextval('row_version')",
                &[
                    &name.as_str(),
                    &cert.issuer,
                    &cert.chain_pem,
                    &key,
                    &secs(cert.not_before),
                    &secs(cert.not_after),
                ],
            )
            .await
            .map_err(db(op))?;
        Ok(())
    }

    async fn put_certificate_fenced(
        &self,
        name: &Domain,
        cert: &StoredCert,
        fence: Fence,
    ) -> Result<bool, StoreError> {
        let op = "storing certificate";
        let key = self.seal(&cert_binding(name.as_str()), cert.key_pem.as_bytes())?;
        cluster::put_fenced(&*self.conn(op).await?, name.as_str(), cert, &key, fence)
            .await
            .map_err(db(op))
    }

    async fn cert_summary(&self, expiring_before: SystemTime) -> Result<CertSummary, StoreError> {
        let op = "summarising certificates";
        let r = self
            .conn(op)
            .await?
            .query_one(
                "SELECT COUNT(*), MIN(not_after), COUNT(*) FILTER (WHERE not_after < $1)
                 FROM certificates",
                &[&secs(expiring_before)],
            )
            .await
            .map_err(db(op))?;
        Ok(CertSummary {
            count: r.get::<_, i64>(0).max(0) as u64,
            soonest_expiry: r.get::<_, Option<i64>>(1).map(time),
            expiring: r.get::<_, i64>(2).max(0) as u64,
        })
    }

    async fn cert_lifetimes(&self) -> Result<Vec<CertLifetime>, StoreError> {
        let op = "listing certificate lifetimes";
        let rows = self
            .conn(op)
            .await?
            .query(
                "SELECT domain, not_before, not_after FROM certificates
                 ORDER BY domain COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db(op))?;
        rows.iter()
            .map(|r| {
                Ok(CertLifetime {
                    domain: parse_domain(r.get(0), "certificates.domain")?,
                    not_before: time(r.get(1)),
                    not_after: time(r.get(2)),
                })
            })
            .collect()
    }

    async fn kv(&self, key: &str) -> Result<Option<String>, StoreError> {
        let op = "reading kv";
        let Some(r) = self
            .conn(op)
            .await?
            .query_opt("SELECT value_sealed FROM kv WHERE key = $1", &[&key])
            .await
            .map_err(db(op))?
        else {
            return Ok(None);
        };
        let value = self.open(&kv_binding(key), r.get(0))?;
        utf8(value, "kv.value_sealed").map(Some)
    }

    async fn put_kv(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let op = "writing kv";
        let sealed = self.seal(&kv_binding(key), value.as_bytes())?;
        self.conn(op)
            .await?
            .execute(
                "INSERT INTO kv (key, value_sealed) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value_sealed = $2,
                     version = nextval('row_version')",
                &[&key, &sealed],
            )
            .await
            .map_err(db(op))?;
        Ok(())
    }

    async fn put_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        value: &str,
        expires_at: SystemTime,
    ) -> Result<(), StoreError> {
        let op = "publishing challenge";
        self.conn(op)
            .await?
            .execute(
                "INSERT INTO challenges (kind, name, value, expires_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, name) DO UPDATE SET value = $3, expires_at = $4",
                &[&kind.as_str(), &name, &value, &secs(expires_at)],
            )
            .await
            .map_err(db(op))?;
        Ok(())
    }

    async fn challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<Option<String>, StoreError> {
        let op = "reading challenge";
        Ok(self
            .conn(op)
            .await?
            .query_opt(
                "SELECT value FROM challenges WHERE kind = $1 AND name = $2 AND expires_at > $3",
                &[&kind.as_str(), &name, &secs(now)],
            )
            .await
            .map_err(db(op))?
            .map(|r| r.get(0)))
    }

    async fn remove_challenge(
        &self,
        kind: ChallengeKind,
        name: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let op = "removing challenge";
        self.conn(op)
            .await?
            .execute(
                "DELETE FROM challenges WHERE (kind = $1 AND name = $2) OR expires_at <= $3",
                &[&kind.as_str(), &name, &secs(now)],
            )
            .await
            .map_err(db(op))?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        name: &Domain,
        holder: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let op = "acquiring lease";
        cluster::acquire(&*self.conn(op).await?, name.as_str(), holder, now, ttl)
            .await
            .map_err(db(op))
    }

    async fn extend_lease(
        &self,
        name: &Domain,
        fence: Fence,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let op = "extending lease";
        cluster::extend(&*self.conn(op).await?, name.as_str(), fence, now, ttl)
            .await
            .map_err(db(op))
    }

    async fn set_lease_order(
        &self,
        name: &Domain,
        fence: Fence,
        order_url: Option<&str>,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let op = "keeping order with lease";
        cluster::set_order(&*self.conn(op).await?, name.as_str(), fence, order_url, now)
            .await
            .map_err(db(op))
    }

    async fn release_lease(&self, name: &Domain, fence: Fence) -> Result<bool, StoreError> {
        let op = "releasing lease";
        cluster::release(&*self.conn(op).await?, name.as_str(), fence)
            .await
            .map_err(db(op))
    }

    async fn take_order(
        &self,
        budget: &str,
        rate: OrderRate,
        now: SystemTime,
    ) -> Result<OrderTurn, StoreError> {
        let op = "taking from the order budget";
        cluster::take_order(&*self.conn(op).await?, budget, rate, now)
            .await
            .map_err(db(op))
    }

    async fn pause_orders(&self, budget: &str, until: SystemTime) -> Result<(), StoreError> {
        let op = "pausing orders";
        cluster::pause(&*self.conn(op).await?, budget, until)
            .await
            .map_err(db(op))
    }

    async fn link_keys(&self) -> Result<Vec<StoredLinkKey>, StoreError> {
        self.stored_link_keys().await
    }

    async fn add_link_key(
        &self,
        secret: [u8; 32],
        created_at: SystemTime,
    ) -> Result<u16, StoreError> {
        self.insert_link_key(secret, created_at).await
    }

    async fn remove_link_key(&self, id: u16) -> Result<bool, StoreError> {
        self.delete_link_key(id).await
    }

    async fn retire_link_key(&self, id: u16, at: SystemTime) -> Result<bool, StoreError> {
        let op = "retiring link key";
        let n = self
            .conn(op)
            .await?
            .execute(
                "UPDATE link_keys SET retired_at = COALESCE(retired_at, $2), \
                 version = nextval('row_version') WHERE id = $1",
                &[&i32::from(id), &secs(at)],
            )
            .await
            .map_err(db(op))?;
        Ok(n == 1)
    }

    async fn domain_checks(&self) -> Result<Vec<(Domain, String)>, StoreError> {
        let op = "reading domain checks";
        let rows = self
            .conn(op)
            .await?
            .query(
                "SELECT name, checks FROM domains WHERE checks IS NOT NULL
                 ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db(op))?;
        rows.iter()
            .map(|r| Ok((parse_domain(r.get(0), "domains.name")?, r.get(1))))
            .collect()
    }

    async fn put_domain_checks(&self, name: &Domain, json: &str) -> Result<(), StoreError> {
        let op = "recording domain checks";
        self.conn(op)
            .await?
            .execute(
                "UPDATE domains SET checks = $2, version = nextval('row_version') WHERE name = $1",
                &[&name.as_str(), &json],
            )
            .await
            .map_err(db(op))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
