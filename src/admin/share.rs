//! Sharing a domain's status page with its customer (`POST /v1/domains/<name>/share`, and the
//! "share with customer" button of `/ui/`): the address `<public_url>/s/<token>` with a share
//! token sealed by the key that seals links now, and when it stops opening.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Serialize;

use super::Shared;
use super::error::ApiError;
use crate::Domain;
use crate::clock::{rfc3339, unix_secs};

/// How long an address opens unless the request says.
pub(super) const DEFAULT_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The longest an address may open.
const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);

/// A shared status page address.
#[derive(Debug, Serialize)]
pub(super) struct SharedPage {
    /// `<public_url>/s/<token>`.
    pub(super) url: String,
    /// The domain it shows.
    pub(super) domain: Domain,
    /// When it stops opening (RFC 3339).
    pub(super) expires_at: String,
}

/// The status page address of the registered `name`, opening for `ttl` (`30d`; default
/// [`DEFAULT_TTL`]).
pub(super) async fn share(
    state: &Shared,
    name: &Domain,
    ttl: Option<&str>,
) -> Result<SharedPage, ApiError> {
    let Some(public) = &state.public_url else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "status pages are off: set [onboarding] public_url in the edge's config",
        ));
    };
    let ttl = match ttl {
        None => DEFAULT_TTL,
        Some(t) => humantime::parse_duration(t.trim())
            .ok()
            .filter(|d| !d.is_zero() && *d <= MAX_TTL)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "ttl {t:?} must be a duration from 1s to 366d, e.g. \"30d\""
                ))
            })?,
    };
    state.domains.show(name).await?;
    let expires_at = state.clock.now() + ttl;
    let token = state.keys.seal_share(name, unix_secs(expires_at))?;
    Ok(SharedPage {
        url: format!("{}{}{token}", public.base(), crate::status::PREFIX),
        domain: name.clone(),
        expires_at: rfc3339(expires_at),
    })
}
