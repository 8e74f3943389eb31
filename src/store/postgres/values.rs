//! PostgreSQL's small values and challenges: `kv` rows sealed to their key (the ACME account
//! and its key), and the challenge answers any node serves while an order is validated.

use std::time::SystemTime;

use super::rows::{kv_binding, utf8};
use super::{PgStore, db};
use crate::config::ChallengeKind;
use crate::store::StoreError;
use crate::store::sqlite::rows::secs;

impl PgStore {
    pub(super) async fn read_kv(&self, key: &str) -> Result<Option<String>, StoreError> {
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

    pub(super) async fn write_kv(&self, key: &str, value: &str) -> Result<(), StoreError> {
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

    /// [`Store::add_kv`](crate::store::Store::add_kv): the row is locked by the write that
    /// finds it there, so the value read back is the one stored first.
    pub(super) async fn insert_kv(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let op = "adding kv";
        let sealed = self.seal(&kv_binding(key), value.as_bytes())?;
        let stored: Vec<u8> = self
            .conn(op)
            .await?
            .query_one(
                "INSERT INTO kv (key, value_sealed) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value_sealed = kv.value_sealed
                 RETURNING value_sealed",
                &[&key, &sealed],
            )
            .await
            .map_err(db(op))?
            .get(0);
        let stored = self.open(&kv_binding(key), &stored)?;
        utf8(stored, "kv.value_sealed")
    }

    pub(super) async fn insert_challenge(
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

    pub(super) async fn read_challenge(
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

    pub(super) async fn delete_challenge(
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
}
