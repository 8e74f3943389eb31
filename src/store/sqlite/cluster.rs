//! SQLite's side of cluster-wide certificate work: the per-name lease with its fencing token, the
//! fenced certificate write, and the shared order budget. Each runs under the store's one
//! connection, in one statement or one transaction, so it is atomic among every caller of the
//! file. Times of this part are whole milliseconds since the Unix epoch: leases and the budget
//! need finer steps than the seconds of the rest of the schema (the PostgreSQL schema stores
//! them alike, through the same conversions).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension as _, params};

use super::rows::secs;
use crate::store::{Fence, Lease, OrderRate, OrderTurn, StoredCert};

/// A time as this part stores it: milliseconds since the Unix epoch (0 before it).
pub(in crate::store) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in whole milliseconds.
pub(in crate::store) fn ms_in(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration in milliseconds, at least 1 (a zero interval would make a bucket bottomless).
pub(in crate::store) fn ms_of(d: Duration) -> i64 {
    ms_in(d).max(1)
}

/// A stored millisecond time (negative values read as the epoch).
pub(in crate::store) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(in crate::store) fn fence_param(fence: Fence) -> i64 {
    i64::try_from(fence.0).unwrap_or(i64::MAX)
}

pub(super) fn acquire(
    c: &Connection,
    name: &str,
    holder: &str,
    now: SystemTime,
    ttl: Duration,
) -> rusqlite::Result<Option<Lease>> {
    // The counter is the sequence: bumped in the same transaction as the upsert, wasted (as a
    // PostgreSQL sequence value would be) when the lease is held.
    let tx = c.unchecked_transaction()?;
    let fence: i64 = tx.query_row(
        "UPDATE lease_fence SET last = last + 1 WHERE id = 1 RETURNING last",
        [],
        |r| r.get(0),
    )?;
    let lease = tx
        .query_row(
            "INSERT INTO leases (name, holder, fence, expires_at) VALUES (?1, ?2, ?3, ?4 + ?5)
             ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, fence = excluded.fence,
                 expires_at = excluded.expires_at
             WHERE leases.expires_at <= ?4
             RETURNING fence, order_url",
            params![name, holder, fence, ms(now), ms_of(ttl)],
            |r| {
                Ok(Lease {
                    fence: Fence(u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0)),
                    order_url: r.get(1)?,
                })
            },
        )
        .optional()?;
    tx.commit()?;
    Ok(lease)
}

pub(super) fn extend(
    c: &Connection,
    name: &str,
    fence: Fence,
    now: SystemTime,
    ttl: Duration,
) -> rusqlite::Result<bool> {
    c.execute(
        "UPDATE leases SET expires_at = ?3 + ?4 WHERE name = ?1 AND fence = ?2 AND expires_at > ?3",
        params![name, fence_param(fence), ms(now), ms_of(ttl)],
    )
    .map(|n| n == 1)
}

pub(super) fn set_order(
    c: &Connection,
    name: &str,
    fence: Fence,
    order_url: Option<&str>,
    now: SystemTime,
) -> rusqlite::Result<bool> {
    c.execute(
        "UPDATE leases SET order_url = ?3 WHERE name = ?1 AND fence = ?2 AND expires_at > ?4",
        params![name, fence_param(fence), order_url, ms(now)],
    )
    .map(|n| n == 1)
}

pub(super) fn release(c: &Connection, name: &str, fence: Fence) -> rusqlite::Result<bool> {
    // Expired, not deleted: the row keeps the order URL, and a name's fences only ever grow.
    c.execute(
        "UPDATE leases SET expires_at = 0 WHERE name = ?1 AND fence = ?2",
        params![name, fence_param(fence)],
    )
    .map(|n| n == 1)
}

pub(super) fn put_fenced(
    c: &Connection,
    name: &str,
    cert: &StoredCert,
    fence: Fence,
) -> rusqlite::Result<bool> {
    c.execute(
        "INSERT INTO certificates (domain, issuer, chain_pem, key_pem, not_before, not_after, fence)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM domains WHERE name = ?1)
         ON CONFLICT(domain) DO UPDATE SET issuer = excluded.issuer,
             chain_pem = excluded.chain_pem, key_pem = excluded.key_pem,
             not_before = excluded.not_before, not_after = excluded.not_after,
             fence = excluded.fence
         WHERE certificates.not_before <= excluded.not_before
             AND certificates.fence <= excluded.fence",
        params![
            name,
            cert.issuer,
            cert.chain_pem,
            cert.key_pem,
            secs(cert.not_before),
            secs(cert.not_after),
            fence_param(fence)
        ],
    )
    .map(|n| n == 1)
}

pub(super) fn take_order(
    c: &Connection,
    budget: &str,
    rate: OrderRate,
    now: SystemTime,
) -> rusqlite::Result<OrderTurn> {
    let (now, interval, tolerance) = (ms(now), ms_of(rate.interval), ms_in(rate.tolerance()));
    // GCRA in one statement: the bucket's theoretical arrival time moves one interval past
    // max(tat, now), if that stays within the tolerance ahead of now (as `rate::Gcra::step`).
    let taken = c
        .query_row(
            "INSERT INTO order_budgets (name, tat, paused_until) VALUES (?1, ?2 + ?3, 0)
             ON CONFLICT(name) DO UPDATE SET tat = MAX(order_budgets.tat, ?2) + ?3
             WHERE MAX(order_budgets.tat, ?2) - ?2 <= ?4 AND order_budgets.paused_until <= ?2
             RETURNING tat",
            params![budget, now, interval, tolerance],
            |r| r.get::<_, i64>(0),
        )
        .optional()?;
    if taken.is_some() {
        return Ok(OrderTurn::Taken);
    }
    let (tat, paused_until): (i64, i64) = c.query_row(
        "SELECT tat, paused_until FROM order_budgets WHERE name = ?1",
        [budget],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let next_token = tat.saturating_sub(tolerance);
    Ok(OrderTurn::Wait(from_ms(
        next_token.max(paused_until).max(now),
    )))
}

pub(super) fn pause(c: &Connection, budget: &str, until: SystemTime) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO order_budgets (name, tat, paused_until) VALUES (?1, 0, ?2)
         ON CONFLICT(name) DO UPDATE SET paused_until = MAX(order_budgets.paused_until, ?2)",
        params![budget, ms(until)],
    )
    .map(drop)
}
