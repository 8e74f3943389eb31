//! PostgreSQL's link key rows: the ring read with each secret opened, a new key under the next id
//! (two nodes rotating at once take turns), and a key removed.

use std::time::SystemTime;

use super::rows::link_key_binding;
use super::schema::take_write_lock;
use super::{PgStore, db};
use crate::store::sqlite::rows::{secs, to_link_key};
use crate::store::{KeyChange, StoreError, StoredLinkKey};

impl PgStore {
    pub(super) async fn stored_link_keys(&self) -> Result<Vec<StoredLinkKey>, StoreError> {
        let op = "reading link keys";
        let rows = self
            .conn(op)
            .await?
            .query(
                "SELECT id, secret_sealed, created_at, retired_at FROM link_keys ORDER BY id",
                &[],
            )
            .await
            .map_err(db(op))?;
        rows.iter()
            .map(|r| {
                let id: i32 = r.get(0);
                let secret = self.open(&link_key_binding(id), r.get(1))?;
                to_link_key(id.into(), secret, r.get(2), r.get(3))
            })
            .collect()
    }

    pub(super) async fn insert_link_key(
        &self,
        secret: [u8; 32],
        created_at: SystemTime,
    ) -> Result<u16, StoreError> {
        let op = "adding link key";
        let mut conn = self.conn(op).await?;
        let tx = conn.transaction().await.map_err(db(op))?;
        // Two nodes rotating at once take turns, each getting the next id; the write lock
        // before the table's, as every writer takes it (see [`take_write_lock`]).
        take_write_lock(&tx).await.map_err(db(op))?;
        tx.batch_execute("LOCK TABLE link_keys IN SHARE ROW EXCLUSIVE MODE")
            .await
            .map_err(db(op))?;
        // One above every id handed out before, removed keys' included.
        let id: i32 = tx
            .query_one(
                "UPDATE link_key_ids \
                 SET last = GREATEST(last, (SELECT COALESCE(MAX(id), 0) FROM link_keys)) + 1 \
                 RETURNING last",
                &[],
            )
            .await
            .map_err(db(op))?
            .get(0);
        let id16 = u16::try_from(id)
            .map_err(|_| StoreError::Corrupt("link_keys.id (more than 65535 rotations)"))?;
        let sealed = self.seal(&link_key_binding(id), &secret)?;
        tx.execute(
            "INSERT INTO link_keys (id, secret_sealed, created_at) VALUES ($1, $2, $3)",
            &[&id, &sealed, &secs(created_at)],
        )
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(id16)
    }

    pub(super) async fn delete_link_key(&self, id: u16) -> Result<KeyChange, StoreError> {
        self.change_key(
            "removing link key",
            id,
            "DELETE FROM link_keys WHERE id = $1",
            None,
        )
        .await
    }

    pub(super) async fn retire_key(
        &self,
        id: u16,
        at: SystemTime,
    ) -> Result<KeyChange, StoreError> {
        self.change_key(
            "retiring link key",
            id,
            "UPDATE link_keys SET retired_at = COALESCE(retired_at, $2), \
             version = nextval('row_version') WHERE id = $1",
            Some(secs(at)),
        )
        .await
    }

    /// Runs `sql` on key `id` (`$1`, and `at` as `$2`) in one transaction with the check that
    /// another key not retired is left. The keys not retired and the key changed are locked
    /// first (after the write lock, as every writer takes it: see [`WRITE_LOCK`]): of two nodes
    /// changing keys at once, the second sees the first's change.
    async fn change_key(
        &self,
        op: &'static str,
        id: u16,
        sql: &str,
        at: Option<i64>,
    ) -> Result<KeyChange, StoreError> {
        let id = i32::from(id);
        let mut conn = self.conn(op).await?;
        let tx = conn.transaction().await.map_err(db(op))?;
        take_write_lock(&tx).await.map_err(db(op))?;
        let rows = tx
            .query(
                "SELECT id, retired_at IS NOT NULL FROM link_keys \
                 WHERE retired_at IS NULL OR id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(db(op))?;
        let retired = rows
            .iter()
            .find(|r| r.get::<_, i32>(0) == id)
            .map(|r| r.get::<_, bool>(1));
        let others = rows
            .iter()
            .any(|r| r.get::<_, i32>(0) != id && !r.get::<_, bool>(1));
        let outcome = KeyChange::of(retired, others);
        if outcome == KeyChange::Done {
            match at {
                Some(at) => tx.execute(sql, &[&id, &at]).await,
                None => tx.execute(sql, &[&id]).await,
            }
            .map_err(db(op))?;
            tx.commit().await.map_err(db(op))?;
        }
        Ok(outcome)
    }
}
