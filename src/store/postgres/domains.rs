//! PostgreSQL's domain rows: the registered set, an operator's add (taking over a name `ask`
//! approved) and an approval's, its fallback URL, removal with the name's certificate, the
//! issuance status and the latest onboarding checks.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;

use super::rows::{domain_row, parse_domain};
use super::schema::take_write_lock;
use super::{PgStore, db};
use crate::Domain;
use crate::store::sqlite::rows::{DOMAIN_COLUMNS, listing_query, secs, to_listed, to_record};
use crate::store::{CertInfo, DomainRecord, IssueStatus, StatusChange, StoreError};

impl PgStore {
    pub(super) async fn read_domains(&self) -> Result<Vec<DomainRecord>, StoreError> {
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

    /// In the database's collation, the primary key's order: each page is a range of its index.
    pub(super) async fn read_domains_after(
        &self,
        after: Option<&Domain>,
        limit: u32,
    ) -> Result<Vec<DomainRecord>, StoreError> {
        let op = "listing domains";
        // Every name sorts after the empty string, in any collation.
        let after = after.map_or("", Domain::as_str);
        let rows = self
            .conn(op)
            .await?
            .query(
                &format!(
                    "SELECT {DOMAIN_COLUMNS} FROM domains WHERE name > $1 ORDER BY name LIMIT $2"
                ),
                &[&after, &i64::from(limit)],
            )
            .await
            .map_err(db(op))?;
        rows.iter().map(|r| to_record(domain_row(r))).collect()
    }

    /// A listing page, in byte order (`COLLATE "C"`, as [`PgStore::read_domains`] sorts), each
    /// page a range of the index `domains_name_bytes`.
    pub(super) async fn read_listing_after(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(DomainRecord, Option<CertInfo>)>, StoreError> {
        let op = "listing domains";
        let rows = self
            .conn(op)
            .await?
            .query(
                &listing_query(r#"domains.name COLLATE "C""#, "$1", "$2"),
                &[&after, &i64::from(limit)],
            )
            .await
            .map_err(db(op))?;
        rows.iter()
            .map(|r| to_listed(domain_row(r), (r.get(8), r.get(9), r.get(10))))
            .collect()
    }

    pub(super) async fn read_domain(
        &self,
        name: &Domain,
    ) -> Result<Option<DomainRecord>, StoreError> {
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

    pub(super) async fn insert_domain(
        &self,
        name: &Domain,
        created_at: SystemTime,
    ) -> Result<bool, StoreError> {
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

    pub(super) async fn insert_approved_domain(
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

    pub(super) async fn delete_domain(&self, name: &Domain) -> Result<bool, StoreError> {
        let op = "removing domain";
        let mut conn = self.conn(op).await?;
        let tx = conn.transaction().await.map_err(db(op))?;
        // The write lock before the first statement, whose snapshot is taken when it starts:
        // waiting for the lock inside it (its trigger) would leave a certificate's first write,
        // committed meanwhile, unseen and undeleted.
        take_write_lock(&tx).await.map_err(db(op))?;
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

    pub(super) async fn write_status(
        &self,
        name: &Domain,
        status: &IssueStatus,
    ) -> Result<(), StoreError> {
        let op = "recording domain status";
        let conn = self.conn(op).await?;
        status_update(&conn, name, status).await.map_err(db(op))?;
        Ok(())
    }

    /// The row is locked from the read to the commit: another writer's status waits for it.
    /// The write lock first, as every writer takes it (see [`take_write_lock`]).
    pub(super) async fn change_status(
        &self,
        name: &Domain,
        change: StatusChange,
    ) -> Result<Option<IssueStatus>, StoreError> {
        let op = "updating domain status";
        let mut conn = self.conn(op).await?;
        let tx = conn.transaction().await.map_err(db(op))?;
        take_write_lock(&tx).await.map_err(db(op))?;
        let row = tx
            .query_opt(
                &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = $1 FOR UPDATE"),
                &[&name.as_str()],
            )
            .await
            .map_err(db(op))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let current = IssueStatus::of(&to_record(domain_row(&row))?);
        let Some(status) = change(&current) else {
            return Ok(None);
        };
        status_update(&tx, name, &status).await.map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(Some(status))
    }

    pub(super) async fn read_domain_checks(&self) -> Result<Vec<(Domain, String)>, StoreError> {
        let op = "reading domain checks";
        let mut conn = self.conn(op).await?;
        // Every domain's report at once, at start: with a large cluster, longer than the
        // session's statement bound allows, which is lifted for this read alone.
        let tx = conn.transaction().await.map_err(db(op))?;
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(db(op))?;
        let rows = tx
            .query(
                "SELECT name, checks FROM domains WHERE checks IS NOT NULL
                 ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        rows.iter()
            .map(|r| Ok((parse_domain(r.get(0), "domains.name")?, r.get(1))))
            .collect()
    }

    pub(super) async fn read_domain_checks_of(
        &self,
        name: &Domain,
    ) -> Result<Option<String>, StoreError> {
        let op = "reading domain checks";
        let row = self
            .conn(op)
            .await?
            .query_opt(
                "SELECT checks FROM domains WHERE name = $1",
                &[&name.as_str()],
            )
            .await
            .map_err(db(op))?;
        Ok(row.and_then(|r| r.get(0)))
    }

    pub(super) async fn write_domain_checks(
        &self,
        name: &Domain,
        json: &str,
    ) -> Result<bool, StoreError> {
        let op = "recording domain checks";
        let n = self
            .conn(op)
            .await?
            .execute(
                "UPDATE domains SET checks = $2, version = nextval('row_version') WHERE name = $1",
                &[&name.as_str(), &json],
            )
            .await
            .map_err(db(op))?;
        Ok(n == 1)
    }

    pub(super) async fn write_fallback_url(
        &self,
        name: &Domain,
        url: Option<&str>,
    ) -> Result<bool, StoreError> {
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
}

/// Writes the issuance status of `name`, a change of its row; the number of rows changed.
async fn status_update(
    client: &impl GenericClient,
    name: &Domain,
    status: &IssueStatus,
) -> Result<u64, tokio_postgres::Error> {
    let (detail, kind) = match &status.last_error {
        Some(f) => (Some(f.detail.as_str()), Some(f.kind.code())),
        None => (None, None),
    };
    client
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
}
