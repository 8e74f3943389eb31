//! From `store.url` to a pool of connections: the driver's config (password from the URL, else
//! `PGPASSWORD`), TLS through rustls with the platform's roots when the URL asks for it
//! (`sslmode=require`), and bounded waits so that an unreachable database fails the start with
//! its (redacted) URL instead of hanging.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls_platform_verifier::BuilderVerifierExt as _;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::StoreUrl;
use crate::store::StoreError;

/// Environment variable with the database password when the URL carries none (as libpq reads it).
pub const PASSWORD_ENV: &str = "PGPASSWORD";

/// Connections kept open at most: the store is off the request path, so a few suffice.
const MAX_CONNECTIONS: usize = 8;

/// Longest wait for a new connection (TCP, TLS and authentication), or for a free one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool for `url`; `password` (from `PGPASSWORD`) is used only if the URL carries none. No
/// connection is made yet.
pub(super) fn pool(url: &StoreUrl, password: Option<&str>) -> Result<Pool, StoreError> {
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
    let manager = Manager::from_config(
        pg,
        tls(url)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(MAX_CONNECTIONS)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|source| StoreError::Url {
            url: url.redacted(),
            source: Box::new(source),
        })
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
