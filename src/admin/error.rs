//! Errors as the admin listener answers them: the one place a service error gets its HTTP status
//! (and a store failure its log line), for the API and the page alike.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Domain;
use crate::domains::DomainError;
use crate::errors::chain as error_chain;
use crate::keys::{KeyError, MintError};
use crate::store::StoreError;

/// An error answer: a status and a message for the caller.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    /// Seconds for a `Retry-After` header (a `429`).
    retry_after: Option<u64>,
    /// The database was not reached: an API read says so in its own words ([`reads_unavailable`]).
    unavailable: bool,
}

/// What an API read (`GET`, `HEAD`) answers when the database is unreachable: the write's words
/// say a change was not made, which a read never asked for.
const READ_UNAVAILABLE: &str = "the database is unreachable, so this cannot be read now; links and \
     known domains are still served from memory; ask again once the database is back";

/// The mark on an answer made for an unreachable database.
#[derive(Clone, Copy)]
struct StoreUnavailable;

/// The API's reads answer an unreachable database with [`READ_UNAVAILABLE`].
pub(super) async fn reads_unavailable(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let res = next.run(req).await;
    match read && res.extensions().get::<StoreUnavailable>().is_some() {
        true => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, READ_UNAVAILABLE).into_response(),
        false => res,
    }
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            unavailable: false,
        }
    }

    /// `429 Too Many Requests`, to be tried again in `wait` (said in `Retry-After`, whole
    /// seconds rounded up).
    pub(super) fn too_many(message: impl Into<String>, wait: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// Adds the error's `Retry-After`, if it has one, to `res` (its JSON answer, or the page's).
    pub(super) fn add_retry_after(&self, res: &mut Response) {
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
    }

    /// 503 when the database is unreachable (the edge keeps serving from memory; the write can
    /// be retried once it is back), else 500; the cause in the edge's log rather than in the
    /// answer.
    fn internal(e: &StoreError) -> ApiError {
        if e.is_unavailable() {
            tracing::warn!(error = %error_chain(e), "admin request failed: the database is unreachable");
            return ApiError {
                unavailable: true,
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unreachable: the change was not made, or not all of it (a \
                     domain added may be stored without its checks); links and known domains \
                     are still served from memory; retry once the database is back (adding or \
                     removing a domain again is harmless)",
                )
            };
        }
        tracing::error!(error = %error_chain(e), "admin request failed in the store");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal storage error; see the edge's log",
        )
    }
}

/// A name from a path or a form, or 400 saying what is wrong with it.
pub(super) fn parse_name(name: &str) -> Result<Domain, ApiError> {
    Domain::parse(name)
        .map_err(|e| ApiError::bad_request(format!("invalid domain name {name:?}: {e}")))
}

/// [`parse_name`] for a name being added (`Domain::parse_new`: its A-labels checked too).
pub(super) fn parse_new_name(name: &str) -> Result<Domain, ApiError> {
    Domain::parse_new(name)
        .map_err(|e| ApiError::bad_request(format!("invalid domain name {name:?}: {e}")))
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        let status = match &e {
            DomainError::NotRegistered(_) | DomainError::NothingToRemove(_) => {
                StatusCode::NOT_FOUND
            }
            DomainError::RemovedConcurrently(_) | DomainError::StatusHost(_) => {
                StatusCode::CONFLICT
            }
            DomainError::BadFallback(_) | DomainError::FallbackIsEdgeLink(_) => {
                return ApiError::bad_request(error_chain(&e));
            }
            DomainError::Store(e) => return ApiError::internal(e),
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> ApiError {
        let status = match &e {
            KeyError::Sealing(_)
            | KeyError::LastSealing(_)
            | KeyError::NextNotReady { .. }
            | KeyError::RecentlyRetired { .. } => StatusCode::CONFLICT,
            KeyError::NoSuchKey(_) => StatusCode::NOT_FOUND,
            KeyError::Store(e) => return ApiError::internal(e),
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<MintError> for ApiError {
    fn from(e: MintError) -> ApiError {
        match e {
            MintError::NotRegistered(_)
            | MintError::Link(_)
            | MintError::EdgeLink(_)
            | MintError::TooLong { .. } => ApiError::bad_request(crate::errors::chain(&e)),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(&e)
    }
}

/// An admin error answer made outside the routes (by the listener itself): `status` and
/// `{"error": message}`, as every admin error reads.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError::new(status, message).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(json!({ "error": &self.message }))).into_response();
        self.add_retry_after(&mut res);
        if self.unavailable {
            res.extensions_mut().insert(StoreUnavailable);
        }
        res
    }
}

/// The one segment a route takes from its path (a domain name, a key id), percent-decoded; one
/// that does not decode to UTF-8 is a JSON 400 like any other bad input (axum's own rejection
/// is plain text).
pub(super) struct Segment(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Segment, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(segment)| Segment(segment))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{} does not name a domain or key: percent-decoded, its last part is not UTF-8",
                        parts.uri.path()
                    ),
                )
            })
    }
}
