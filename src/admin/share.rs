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
/// The shortest an address may open: its expiry is kept in whole seconds, and a shorter one
/// could round down to an address that never opens.
const MIN_TTL: Duration = Duration::from_secs(1);
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
    let ttl = parse_ttl(ttl)?;
    // As the store has it (a domain another node registered a moment ago is not served here
    // yet; one removed is a 404).
    let registered = state.domains.show(name).await?.record.created_at;
    let expires_at = state.clock.now() + ttl;
    let token = state
        .keys
        .seal_share(name, unix_secs(registered), unix_secs(expires_at));
    Ok(SharedPage {
        url: format!("{}{}{token}", public.base(), crate::status::PREFIX),
        domain: name.clone(),
        expires_at: rfc3339(expires_at),
    })
}

/// How long an address opens: `ttl` as given (`30d`), [`MIN_TTL`] to [`MAX_TTL`], or
/// [`DEFAULT_TTL`] without one.
fn parse_ttl(ttl: Option<&str>) -> Result<Duration, ApiError> {
    let Some(t) = ttl else {
        return Ok(DEFAULT_TTL);
    };
    humantime::parse_duration(t.trim())
        .ok()
        .filter(|d| (MIN_TTL..=MAX_TTL).contains(d))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "ttl {t:?} must be a duration from 1s to 366d, e.g. \"30d\""
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_under_a_second_or_over_366_days_is_refused_naming_it() {
        for bad in ["500ms", "999ms", "0s", "367d", "soon"] {
            let err = parse_ttl(Some(bad)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(err.message.contains(&format!("{bad:?}")), "{}", err.message);
            assert!(err.message.contains("from 1s to 366d"), "{}", err.message);
        }
        assert_eq!(parse_ttl(None).unwrap(), DEFAULT_TTL);
        assert_eq!(parse_ttl(Some("366d")).unwrap(), MAX_TTL);
        assert_eq!(parse_ttl(Some(" 1s ")).unwrap(), MIN_TTL);
    }
}
