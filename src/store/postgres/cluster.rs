//! PostgreSQL's side of cluster-wide certificate work: the per-name lease with its fencing token,
//! the fenced certificate write, and the shared order budget. Each is one statement (the budget's
//! refusal adds a read saying when to come back), so it is atomic among every node: concurrent
//! upserts of one row wait for each other, and each then evaluates its guard on the row the
//! other left. Times are the caller's, in milliseconds, as in the SQLite schema.

use std::time::{Duration, SystemTime};

use tokio_postgres::{Client, Error};

use super::super::sqlite::cluster::{fence_param, from_ms, ms, ms_in, ms_of};
use super::super::sqlite::rows::secs;
use crate::store::{Fence, Lease, OrderRate, OrderTurn, StoredCert};

pub(super) async fn acquire(
    c: &Client,
    name: &str,
    holder: &str,
    now: SystemTime,
    ttl: Duration,
) -> Result<Option<Lease>, Error> {
    // NOTE: a conflict that fails the guard still consumes a sequence value: fences only need
    // to grow, not to be dense.
    let row = c
        .query_opt(
            "INSERT INTO leases (name, holder, fence, expires_at)
             VALUES ($1, $2, nextval('lease_fence'), $3::BIGINT + $4::BIGINT)
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, fence = EXCLUDED.fence,
                 expires_at = EXCLUDED.expires_at
             WHERE leases.expires_at <= $3::BIGINT
             RETURNING fence, order_url",
            &[&name, &holder, &ms(now), &ms_of(ttl)],
        )
        .await?;
    Ok(row.map(|r| Lease {
        fence: Fence(u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)),
        order_url: r.get(1),
    }))
}

pub(super) async fn extend(
    c: &Client,
    name: &str,
    fence: Fence,
    now: SystemTime,
    ttl: Duration,
) -> Result<bool, Error> {
    c.execute(
        "UPDATE leases SET expires_at = $3::BIGINT + $4::BIGINT
         WHERE name = $1 AND fence = $2 AND expires_at > $3::BIGINT",
        &[&name, &fence_param(fence), &ms(now), &ms_of(ttl)],
    )
    .await
    .map(|n| n == 1)
}

pub(super) async fn set_order(
    c: &Client,
    name: &str,
    fence: Fence,
    order_url: Option<&str>,
    now: SystemTime,
) -> Result<bool, Error> {
    c.execute(
        "UPDATE leases SET order_url = $3 WHERE name = $1 AND fence = $2 AND expires_at > $4",
        &[&name, &fence_param(fence), &order_url, &ms(now)],
    )
    .await
    .map(|n| n == 1)
}

pub(super) async fn release(c: &Client, name: &str, fence: Fence) -> Result<bool, Error> {
    // Expired, not deleted: the row keeps the order URL, and a name's fences only ever grow.
    c.execute(
        "UPDATE leases SET expires_at = 0 WHERE name = $1 AND fence = $2",
        &[&name, &fence_param(fence)],
    )
    .await
    .map(|n| n == 1)
}

/// The fenced write of a certificate whose private key is already sealed (`key_sealed`). Only
/// for a registered name: the domain's row is locked (`FOR SHARE`), so a removal committing
/// meanwhile is waited for and the write then finds no row, where a plain `EXISTS` would read
/// the row as it was before the removal and store an orphan.
pub(super) async fn put_fenced(
    c: &Client,
    name: &str,
    cert: &StoredCert,
    key_sealed: &[u8],
    fence: Fence,
) -> Result<bool, Error> {
    c.execute(
        "INSERT INTO certificates
             (domain, issuer, chain_pem, key_sealed, not_before, not_after, fence)
         SELECT $1, $2, $3, $4, $5, $6, $7 FROM domains WHERE name = $1 FOR SHARE
         ON CONFLICT (domain) DO UPDATE SET issuer = EXCLUDED.issuer,
             chain_pem = EXCLUDED.chain_pem, key_sealed = EXCLUDED.key_sealed,
             not_before = EXCLUDED.not_before, not_after = EXCLUDED.not_after,
             fence = EXCLUDED.fence, version = nextval('row_version')
         WHERE certificates.not_before <= EXCLUDED.not_before
             AND certificates.fence <= EXCLUDED.fence",
        &[
            &name,
            &cert.issuer,
            &cert.chain_pem,
            &key_sealed,
            &secs(cert.not_before),
            &secs(cert.not_after),
            &fence_param(fence),
        ],
    )
    .await
    .map(|n| n == 1)
}

pub(super) async fn take_order(
    c: &Client,
    budget: &str,
    rate: OrderRate,
    now: SystemTime,
) -> Result<OrderTurn, Error> {
    let (now, interval, tolerance) = (ms(now), ms_of(rate.interval), ms_in(rate.tolerance()));
    // GCRA in one statement: the bucket's theoretical arrival time moves one interval past
    // max(tat, now), if that stays within the tolerance ahead of now (as `rate::Gcra::step`).
    let taken = c
        .query_opt(
            "INSERT INTO order_budgets (name, tat, paused_until)
             VALUES ($1, $2::BIGINT + $3::BIGINT, 0)
             ON CONFLICT (name) DO UPDATE
                 SET tat = GREATEST(order_budgets.tat, $2::BIGINT) + $3::BIGINT
             WHERE GREATEST(order_budgets.tat, $2::BIGINT) - $2::BIGINT <= $4::BIGINT
                 AND order_budgets.paused_until <= $2::BIGINT
             RETURNING tat",
            &[&budget, &now, &interval, &tolerance],
        )
        .await?;
    if taken.is_some() {
        return Ok(OrderTurn::Taken);
    }
    let r = c
        .query_one(
            "SELECT tat, paused_until FROM order_budgets WHERE name = $1",
            &[&budget],
        )
        .await?;
    let (tat, paused_until): (i64, i64) = (r.get(0), r.get(1));
    let next_token = tat.saturating_sub(tolerance);
    Ok(OrderTurn::Wait(from_ms(
        next_token.max(paused_until).max(now),
    )))
}

pub(super) async fn pause(c: &Client, budget: &str, until: SystemTime) -> Result<(), Error> {
    c.execute(
        "INSERT INTO order_budgets (name, tat, paused_until) VALUES ($1, 0, $2)
         ON CONFLICT (name) DO UPDATE
             SET paused_until = GREATEST(order_budgets.paused_until, $2)",
        &[&budget, &ms(until)],
    )
    .await
    .map(drop)
}
