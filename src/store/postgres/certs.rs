//! PostgreSQL's certificate rows: each private key sealed to its domain, writes plain (a single
//! node's, an import) or fenced by the lease they were issued under, and the summaries the
//! gauges and the renewal schedule read.

use std::time::SystemTime;

use super::rows::{cert_binding, parse_domain, utf8};
use super::{PgStore, cluster, db};
use crate::Domain;
use crate::store::sqlite::rows::{secs, time};
use crate::store::{CertInfo, CertLifetime, CertPage, CertSummary, Fence, StoreError, StoredCert};

impl PgStore {
    pub(super) async fn read_certificate(
        &self,
        name: &Domain,
    ) -> Result<Option<StoredCert>, StoreError> {
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

    pub(super) async fn read_certificate_info(
        &self,
        name: &Domain,
    ) -> Result<Option<CertInfo>, StoreError> {
        let op = "reading certificate";
        let row = self
            .conn(op)
            .await?
            .query_opt(
                "SELECT issuer, not_before, not_after FROM certificates WHERE domain = $1",
                &[&name.as_str()],
            )
            .await
            .map_err(db(op))?;
        Ok(row.map(|r| CertInfo {
            issuer: r.get(0),
            not_before: time(r.get(1)),
            not_after: time(r.get(2)),
        }))
    }

    pub(super) async fn write_certificate(
        &self,
        name: &Domain,
        cert: &StoredCert,
    ) -> Result<(), StoreError> {
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

    pub(super) async fn write_certificate_fenced(
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

    pub(super) async fn summarise_certificates(
        &self,
        now: SystemTime,
        expiring_before: SystemTime,
    ) -> Result<CertSummary, StoreError> {
        let op = "summarising certificates";
        let r = self
            .conn(op)
            .await?
            .query_one(
                "SELECT COUNT(*),
                        MIN(not_after) FILTER (WHERE not_after >= $1),
                        COUNT(*) FILTER (WHERE not_after >= $1 AND not_after < $2),
                        COUNT(*) FILTER (WHERE not_after < $1)
                 FROM certificates",
                &[&secs(now), &secs(expiring_before)],
            )
            .await
            .map_err(db(op))?;
        Ok(CertSummary {
            count: r.get::<_, i64>(0).max(0) as u64,
            soonest_expiry: r.get::<_, Option<i64>>(1).map(time),
            expiring: r.get::<_, i64>(2).max(0) as u64,
            expired: r.get::<_, i64>(3).max(0) as u64,
        })
    }

    /// One page of certificates by name (the table's own collation, so the primary key's
    /// index serves both the `>` and the order), each key opened (or the row's error).
    pub(super) async fn read_certificates_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<CertPage, StoreError> {
        let op = "listing certificates";
        let rows = self
            .conn(op)
            .await?
            .query(
                "SELECT domain, issuer, chain_pem, key_sealed, not_before, not_after
                 FROM certificates WHERE $1::TEXT IS NULL OR domain > $1
                 ORDER BY domain LIMIT $2",
                &[&after.map(Domain::as_str), &i64::from(limit)],
            )
            .await
            .map_err(db(op))?;
        rows.iter()
            .map(|r| {
                let name = parse_domain(r.get(0), "certificates.domain")?;
                let cert = self
                    .open(&cert_binding(name.as_str()), r.get(3))
                    .and_then(|key| utf8(key, "certificates.key_sealed"))
                    .map(|key_pem| StoredCert {
                        issuer: r.get(1),
                        chain_pem: r.get(2),
                        key_pem,
                        not_before: time(r.get(4)),
                        not_after: time(r.get(5)),
                    });
                Ok((name, cert))
            })
            .collect()
    }

    pub(super) async fn read_cert_lifetimes(&self) -> Result<Vec<CertLifetime>, StoreError> {
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
}
