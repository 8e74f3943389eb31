//! SQLite's side of change propagation and of the cluster's records: the version scan (the same
//! one as PostgreSQL's, so one code path applies changes on both stores), and the one node's
//! heartbeat, its leases and budgets. Only this process writes the file, so there is nothing
//! to listen for.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::{OptionalExtension as _, params};
use tokio::sync::Notify;

use super::SqliteStore;
use super::cluster::{from_ms, ms, ms_in};
use crate::store::changes::{LATEST_VERSION, PRUNED_THROUGH, changes_query, to_change};
use crate::store::{
    BudgetRecord, Change, Changes, ClusterView, Fence, LeaseRecord, NodeRecord, StoreError,
};

#[async_trait::async_trait]
impl Changes for SqliteStore {
    async fn changes_since(&self, version: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let since = i64::try_from(version).unwrap_or(i64::MAX);
        let rows = self
            .with("listing changes", move |c| {
                let mut st = c.prepare_cached(&changes_query('?', ("0", "1")))?;
                st.query_map(params![since, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(rows
            .iter()
            .map(|(v, kind, key, removed)| to_change(*v, kind, key, *removed))
            .collect())
    }

    async fn latest_version(&self) -> Result<u64, StoreError> {
        let v: i64 = self
            .with("reading the latest version", |c| {
                c.query_row(LATEST_VERSION, [], |r| r.get(0))
            })
            .await?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    async fn prune_tombstones(
        &self,
        now: SystemTime,
        keep: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let (now, due) = (ms(now), ms(now).saturating_sub(ms_in(keep)));
        self.with("pruning tombstones", move |c| {
            let tx = c.unchecked_transaction()?;
            let through: Option<i64> = tx
                .query_row(
                    &format!(
                        "UPDATE tombstone_prune SET pruned_through = MAX(pruned_through, mark),
                             mark = ({LATEST_VERSION}), marked_at = ?1
                         WHERE marked_at <= ?2 RETURNING pruned_through"
                    ),
                    params![now, due],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(through) = through else {
                return Ok(None);
            };
            let n = tx.execute("DELETE FROM tombstones WHERE version <= ?1", [through])?;
            tx.commit()?;
            Ok(Some(n as u64))
        })
        .await
    }

    async fn pruned_through(&self) -> Result<u64, StoreError> {
        let v: i64 = self
            .with("reading the pruned version", |c| {
                c.query_row(PRUNED_THROUGH, [], |r| r.get(0))
            })
            .await?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    async fn listen(&self, _hint: Arc<Notify>) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

#[async_trait::async_trait]
impl ClusterView for SqliteStore {
    async fn heartbeat(
        &self,
        node_id: &str,
        started_at: SystemTime,
        applied: u64,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let node_id = node_id.to_owned();
        let applied = i64::try_from(applied).unwrap_or(i64::MAX);
        self.with("recording a heartbeat", move |c| {
            c.execute(
                "INSERT INTO nodes (node_id, started_at, heartbeat_at, applied)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (node_id) DO UPDATE SET started_at = ?2, heartbeat_at = ?3,
                     applied = ?4",
                params![node_id, ms(started_at), ms(now), applied],
            )
        })
        .await
        .map(drop)
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.with("listing nodes", |c| {
            let mut st = c.prepare_cached(
                "SELECT node_id, started_at, heartbeat_at, applied FROM nodes ORDER BY node_id",
            )?;
            st.query_map([], |r| {
                Ok(NodeRecord {
                    node_id: r.get(0)?,
                    started_at: from_ms(r.get(1)?),
                    heartbeat_at: from_ms(r.get(2)?),
                    applied: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                })
            })?
            .collect()
        })
        .await
    }

    async fn forget_nodes(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.with("forgetting silent nodes", move |c| {
            c.execute(
                "DELETE FROM nodes WHERE heartbeat_at < ?1",
                params![ms(before)],
            )
        })
        .await
        .map(|n| n as u64)
    }

    async fn leases(&self, now: SystemTime) -> Result<Vec<LeaseRecord>, StoreError> {
        self.with("listing leases", move |c| {
            let mut st = c.prepare_cached(
                "SELECT name, holder, fence, expires_at, order_url FROM leases
                 WHERE expires_at > ?1
                    OR (order_url IS NOT NULL AND name IN (SELECT name FROM domains))
                 ORDER BY name",
            )?;
            st.query_map([ms(now)], |r| {
                Ok(LeaseRecord {
                    name: r.get(0)?,
                    holder: r.get(1)?,
                    fence: Fence(u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0)),
                    expires_at: from_ms(r.get(3)?),
                    order_url: r.get(4)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn order_budgets(&self) -> Result<Vec<BudgetRecord>, StoreError> {
        self.with("listing order budgets", |c| {
            let mut st = c.prepare_cached(
                "SELECT name, tat, paused_until FROM order_budgets ORDER BY name",
            )?;
            st.query_map([], |r| {
                Ok(BudgetRecord {
                    name: r.get(0)?,
                    tat: from_ms(r.get(1)?),
                    paused_until: from_ms(r.get(2)?),
                })
            })?
            .collect()
        })
        .await
    }
}
