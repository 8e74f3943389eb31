//! From `store.url` to a pool of connections: the driver's config (password from the URL, else
//! `PGPASSWORD`), TLS through rustls with the platform's roots when the URL asks for it
//! (`sslmode=require`), and bounded waits so that an unreachable database fails the start with
//! its (redacted) URL instead of hanging; and the store's way to a connection and its seal key.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use rustls_platform_verifier::BuilderVerifierExt as _;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{PgStore, schema};
use crate::config::StoreUrl;
use crate::seal::SealKey;
use crate::store::StoreError;

/// Environment variable with the database password when the URL carries none (as libpq reads it).
pub const PASSWORD_ENV: &str = "PGPASSWORD";

/// Connections kept open at most: the store is off the request path, so a few suffice.
const MAX_CONNECTIONS: usize = 8;

/// Longest wait for a new connection (TCP, TLS and authentication), or for a free one: short,
/// so that with the database down an admin write answers 503 at once rather than hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server bounds on every session (set on each new connection; a setting the URL's
/// own `options` name is left as the URL says): a statement waiting on a lock (the cluster's
/// write lock, held by a node that stopped mid-transaction), a statement running, and a
/// transaction left open on a node that stopped, are each ended instead of holding every other
/// node's writes. Migrations, which may wait for another node's, lift the first two for
/// themselves; reading every domain's check report at start lifts the second.
const SESSION_BOUNDS: [(&str, &str); 3] = [
    ("lock_timeout", "10s"),
    ("statement_timeout", "60s"),
    ("idle_in_transaction_session_timeout", "60s"),
];

/// The `SET` statements of [`SESSION_BOUNDS`] but those `url_options` set.
fn session_bounds(url_options: Option<&str>) -> String {
    let set = url_options.map(settings_named).unwrap_or_default();
    SESSION_BOUNDS
        .iter()
        .filter(|(name, _)| !set.iter().any(|s| s.eq_ignore_ascii_case(name)))
        .map(|(name, value)| format!("SET {name} = '{value}';"))
        .collect()
}

/// The settings a libpq `options` string sets (`-c name=value`, `-cname=value`,
/// `--name=value`), by name: `deadlock_timeout` is not `lock_timeout`.
fn settings_named(options: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let setting = match word {
            "-c" => words.next(),
            w => w.strip_prefix("--").or_else(|| w.strip_prefix("-c")),
        };
        if let Some(name) = setting.and_then(|s| s.split('=').next()) {
            names.push(name);
        }
    }
    names
}

/// A connection whose peer vanished (a failover, a black-holed route) is found dead within about
/// a minute instead of the kernel's quarter of an hour of retransmissions. Two settings, since
/// each covers what the other does not: TCP keepalive finds a silent peer while nothing is sent,
/// and the user timeout (`TCP_USER_TIMEOUT`, Linux) one that stops acknowledging what was sent,
/// a query waiting for its answer, when the kernel sends no keepalive probes at all and only
/// retransmits (`tcp_retries2`). A `tcp_user_timeout` in the URL (seconds) is left as it says.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
pub(super) const USER_TIMEOUT: Duration = Duration::from_secs(60);

/// A pool for `url`; `password` (from `PGPASSWORD`) is used only if the URL carries none. No
/// connection is made yet.
pub(super) fn pool(
    url: &StoreUrl,
    password: Option<&str>,
) -> Result<(Pool, Listener, String), StoreError> {
    let mut pg =
        tokio_postgres::Config::from_str(url.secret()).map_err(|source| StoreError::Url {
            url: url.redacted(),
            source: Box::new(source),
        })?;
    if !url.has_password()
        && let Some(password) = password
    {
        pg.password(password);
    }
    pg.connect_timeout(CONNECT_TIMEOUT);
    pg.application_name("clickedge");
    let bounds = session_bounds(pg.get_options());
    pg.keepalives_idle(KEEPALIVE_IDLE);
    pg.keepalives_interval(KEEPALIVE_INTERVAL);
    pg.keepalives_retries(KEEPALIVE_RETRIES);
    if pg.get_tcp_user_timeout().is_none() {
        pg.tcp_user_timeout(USER_TIMEOUT);
    }
    let tls = tls(url)?;
    let listener = Listener {
        config: pg.clone(),
        tls: tls.clone(),
    };
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let set_bounds = bounds.clone();
    let pool = Pool::builder(manager)
        .post_create(Hook::async_fn(move |client, _| {
            let sql = set_bounds.clone();
            Box::pin(async move { client.batch_execute(&sql).await.map_err(HookError::Backend) })
        }))
        .max_size(MAX_CONNECTIONS)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|source| StoreError::Url {
            url: url.redacted(),
            source: Box::new(source),
        })?;
    Ok((pool, listener, bounds))
}

/// What the listening connection is made from: the pool's driver config and TLS, outside the
/// pool (a `LISTEN` belongs to one connection for as long as it lives).
#[derive(Clone)]
pub(super) struct Listener {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: MakeRustlsConnect,
}

/// TLS as the URL's `sslmode` asks: the server's certificate is verified against the platform's
/// roots (`prefer`, the default, still talks plain TCP to a server without TLS).
fn tls(url: &StoreUrl) -> Result<MakeRustlsConnect, StoreError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|source| StoreError::Url {
            url: url.redacted(),
            source: Box::new(source),
        })?
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

impl PgStore {
    /// Connects to `url` (the password from the URL, else `password`, the value of
    /// `PGPASSWORD`), applies the migrations the database has not seen, and seals secrets with
    /// `seal`. An unreachable database is an error naming the URL, its password redacted.
    pub async fn connect(
        url: &StoreUrl,
        password: Option<&str>,
        seal: SealKey,
    ) -> Result<PgStore, StoreError> {
        let (pool, listener, bounds) = pool(url, password)?;
        let mut conn = pool.get().await.map_err(|source| StoreError::Unreachable {
            url: url.redacted(),
            source: Box::new(source),
        })?;
        let ran = schema::migrate(&mut conn)
            .await
            .map_err(db("migrating schema"))?;
        // The migration lifted the bounds for itself; the connection goes back to the pool
        // bounded again: RESET to what the URL's `options` set, then the edge's own bounds for
        // the settings those leave alone.
        conn.batch_execute(&format!(
            "RESET lock_timeout; RESET statement_timeout; {bounds}"
        ))
        .await
        .map_err(db("bounding the session"))?;
        if ran > 0 {
            tracing::info!(migrations = ran, store = %url, "store schema migrated");
        }
        drop(conn);
        Ok(PgStore {
            pool,
            listener,
            seal: Arc::new(seal),
            queries: crate::store::query_counter(),
        })
    }

    /// A pooled connection for one operation, counted as a store query. A database that cannot
    /// be reached is [`StoreError::Unavailable`].
    pub(super) async fn conn(&self, op: &'static str) -> Result<Object, StoreError> {
        self.queries.inc();
        self.pool
            .get()
            .await
            .map_err(|source| StoreError::Unavailable {
                op,
                source: Box::new(source),
            })
    }

    pub(super) fn seal(&self, binding: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.seal.seal(binding, plain).map_err(StoreError::Seal)
    }

    pub(super) fn open(&self, binding: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.seal.open(binding, sealed).map_err(StoreError::Seal)
    }
}

/// Maps a database error of the operation `op`: a lost connection, or an error that says the
/// database is away or busy (below), is [`StoreError::Unavailable`]; anything else the server
/// said is [`StoreError::Db`].
pub(super) fn db(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        // What says the database is away or busy, not that the request is wrong, so that
        // trying again later may succeed: the session bounds (a lock held elsewhere, 55P03; a
        // statement too slow, 57014), an operator's intervention (a restart or failover,
        // class 57), a connection exception (08), a serialization failure or deadlock (40),
        // insufficient resources (53).
        let transient = e.code().is_some_and(|c| {
            *c == SqlState::LOCK_NOT_AVAILABLE
                || ["08", "40", "53", "57"].contains(&c.code().get(..2).unwrap_or_default())
        });
        if e.is_closed() || io || transient {
            StoreError::Unavailable {
                op,
                source: Box::new(e),
            }
        } else {
            StoreError::Db {
                op,
                source: Box::new(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A setting the URL's options make is left to them, named exactly: `deadlock_timeout` kept
    /// the 10 s `lock_timeout` out.
    #[test]
    fn the_urls_options_replace_only_the_bounds_they_name() {
        let all = session_bounds(None);
        assert_eq!(all.matches("SET ").count(), 3, "{all}");
        for (options, left_out) in [
            ("-c lock_timeout=1s", "lock_timeout"),
            ("-clock_timeout=1s", "lock_timeout"),
            ("--statement_timeout=0", "statement_timeout"),
        ] {
            let bounds = session_bounds(Some(options));
            assert!(
                !bounds.contains(&format!("SET {left_out} ")),
                "{options}: {bounds}"
            );
            assert_eq!(bounds.matches("SET ").count(), 2, "{options}: {bounds}");
        }
        let bounds = session_bounds(Some("-c deadlock_timeout=1s"));
        assert_eq!(bounds, all);
    }
}
