//! PostgreSQL's side of change propagation and of the cluster's records: the version scan, the
//! `LISTEN` connection that hints at new changes (outside the pool, for as long as it lives),
//! node heartbeats, leases and budgets as `cluster status` reads them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use super::super::changes::{LATEST_VERSION, PRUNED_THROUGH, changes_query, to_change};
use super::super::sqlite::cluster::{from_ms, ms, ms_in};
use super::{PgStore, db};
use crate::store::{
    BudgetRecord, Change, Changes, ClusterView, Fence, LeaseRecord, NodeRecord, StoreError,
};

/// The notification channel every versioned write signals on (in the schema's triggers).
const CHANNEL: &str = "clickedge_changes";

#[async_trait::async_trait]
impl Changes for PgStore {
    async fn changes_since(&self, version: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        let op = "listing changes";
        let since = i64::try_from(version).unwrap_or(i64::MAX);
        let rows = self
            .conn(op)
            .await?
            .query(
                &changes_query('$', ("FALSE", "TRUE")),
                &[&since, &i64::from(limit)],
            )
            .await
            .map_err(db(op))?;
        Ok(rows
            .iter()
            .map(|r| to_change(r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    async fn latest_version(&self) -> Result<u64, StoreError> {
        let op = "reading the latest version";
        let v: i64 = self
            .conn(op)
            .await?
            .query_one(LATEST_VERSION, &[])
            .await
            .map_err(db(op))?
            .get(0);
        Ok(u64::try_from(v).unwrap_or(0))
    }

    async fn prune_tombstones(
        &self,
        now: SystemTime,
        keep: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let op = "pruning tombstones";
        let mut conn = self.conn(op).await?;
        let tx = conn.transaction().await.map_err(db(op))?;
        // The row lock orders concurrent runs; the one that waited finds `marked_at` moved on.
        let due = tx
            .query_opt(
                &format!(
                    "UPDATE tombstone_prune SET pruned_through = GREATEST(pruned_through, mark),
                         mark = ({LATEST_VERSION}), marked_at = $1
                     WHERE marked_at <= $2 RETURNING pruned_through"
                ),
                &[&ms(now), &ms(now).saturating_sub(ms_in(keep))],
            )
            .await
            .map_err(db(op))?;
        let Some(row) = due else {
            return Ok(None);
        };
        let through: i64 = row.get(0);
        let n = tx
            .execute("DELETE FROM tombstones WHERE version <= $1", &[&through])
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(Some(n))
    }

    async fn pruned_through(&self) -> Result<u64, StoreError> {
        let op = "reading the pruned version";
        let v: i64 = self
            .conn(op)
            .await?
            .query_one(PRUNED_THROUGH, &[])
            .await
            .map_err(db(op))?
            .get(0);
        Ok(u64::try_from(v).unwrap_or(0))
    }

    async fn listen(&self, hint: Arc<Notify>) -> Result<(), StoreError> {
        let op = "listening for changes";
        self.queries.inc();
        let (client, mut connection) = self
            .listener
            .config
            .connect(self.listener.tls.clone())
            .await
            .map_err(db(op))?;
        let statement = format!("LISTEN {CHANNEL}");
        let listen = client.batch_execute(&statement);
        tokio::pin!(listen);
        let mut listening = false;
        loop {
            tokio::select! {
                done = &mut listen, if !listening => {
                    done.map_err(db(op))?;
                    listening = true;
                    // Whatever was written before the LISTEN took hold was not hinted at.
                    hint.notify_one();
                }
                message = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                    match message {
                        Some(Ok(AsyncMessage::Notification(_))) => hint.notify_one(),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(db(op)(e)),
                        None => return Ok(()),
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ClusterView for PgStore {
    async fn heartbeat(
        &self,
        node_id: &str,
        started_at: SystemTime,
        applied: u64,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let op = "recording a heartbeat";
        self.conn(op)
            .await?
            .execute(
                "INSERT INTO nodes (node_id, started_at, heartbeat_at, applied)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (node_id) DO UPDATE SET started_at = $2, heartbeat_at = $3,
                     applied = $4",
                &[
                    &node_id,
                    &ms(started_at),
                    &ms(now),
                    &i64::try_from(applied).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(db(op))?;
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let op = "listing nodes";
        let rows = self
            .conn(op)
            .await?
            .query(
                "SELECT node_id, started_at, heartbeat_at, applied FROM nodes
                 ORDER BY node_id COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db(op))?;
        Ok(rows
            .iter()
            .map(|r| NodeRecord {
                node_id: r.get(0),
                started_at: from_ms(r.get(1)),
                heartbeat_at: from_ms(r.get(2)),
                applied: u64::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            })
            .collect())
    }

    async fn forget_nodes(&self, before: SystemTime) -> Result<u64, StoreError> {
        let op = "forgetting silent nodes";
        self.conn(op)
            .await?
            .execute("DELETE FROM nodes WHERE heartbeat_at < $1", &[&ms(before)])
            .await
            .map_err(db(op))
    }

    async fn leases(&self, now: SystemTime) -> Result<Vec<LeaseRecord>, StoreError> {
        let op = "listing leases";
        let rows = self
            .conn(op)
            .await?
            .query(
                "SELECT name, holder, fence, expires_at, order_url FROM leases
                 WHERE expires_at > $1
                    OR (order_url IS NOT NULL AND name IN (SELECT name FROM domains))
                 ORDER BY name COLLATE \"C\"",
                &[&ms(now)],
            )
            .await
            .map_err(db(op))?;
        Ok(rows
            .iter()
            .map(|r| LeaseRecord {
                name: r.get(0),
                holder: r.get(1),
                fence: Fence(u64::try_from(r.get::<_, i64>(2)).unwrap_or(0)),
                expires_at: from_ms(r.get(3)),
                order_url: r.get(4),
            })
            .collect())
    }

    async fn order_budgets(&self) -> Result<Vec<BudgetRecord>, StoreError> {
        let op = "listing order budgets";
        let rows = self
            .conn(op)
            .await?
            .query(
                "SELECT name, tat, paused_until FROM order_budgets ORDER BY name COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db(op))?;
        Ok(rows
            .iter()
            .map(|r| BudgetRecord {
                name: r.get(0),
                tat: from_ms(r.get(1)),
                paused_until: from_ms(r.get(2)),
            })
            .collect())
    }
}
