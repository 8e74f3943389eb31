//! Tests of the PostgreSQL store against a real server: the conformance suite every store
//! passes, then what is PostgreSQL's own (migrations under concurrent starts, an unreachable
//! database, secrets sealed at rest).

#[path = "../../../tests/common/postgres.rs"]
mod harness;

use super::*;

async fn fresh() -> PgStore {
    let url = StoreUrl::parse(&harness::shared().fresh_database()).expect("harness URL");
    PgStore::connect(&url, None, SealKey::generate())
        .await
        .unwrap_or_else(|e| panic!("{}", crate::errors::chain(&e)))
}

crate::store_conformance_tests!(fresh());
