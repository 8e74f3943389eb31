//! What an admin token may do: the full token (`admin.token`) everything, a read-only token
//! (`admin.read_tokens`, `admin.read_tokens_file`) reading and checking but changing nothing.
//!
//! Every presented token is compared with every configured one in constant time (no early
//! exit on a match), and tokens are never logged or shown.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read and change everything.
    Full,
    /// List and show domains and keys' ids, run a domain's checks, read metrics; no change.
    Read,
}

/// The configured tokens.
pub struct Tokens {
    full: String,
    read: Vec<String>,
    /// Where an operator finds the full token, for the 401's words.
    whence: &'static str,
}

impl Tokens {
    /// The full token, found where `whence` says (for the 401: `admin.token`, the file
    /// `admin.token_file` names, `<data_dir>/admin-token`), and the read-only ones.
    pub fn new(full: String, whence: &'static str, read: Vec<String>) -> Tokens {
        Tokens { full, read, whence }
    }

    /// Where an operator finds the full token, in words (never the token).
    pub fn whence(&self) -> &'static str {
        self.whence
    }

    /// The scope of a presented token, or `None` when it matches none.
    pub fn scope_of(&self, presented: &str) -> Option<Scope> {
        // Digests of equal length, so the time says nothing of a token's length either.
        let presented = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, presented.as_bytes());
        let eq = |t: &str| {
            let t = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
            aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_ref(), t.as_ref())
                .is_ok()
        };
        // NOTE: every token is compared (fold, not any), so the time does not say which matched.
        let read = self.read.iter().fold(false, |acc, t| eq(t) | acc);
        if eq(&self.full) {
            Some(Scope::Full)
        } else if read {
            Some(Scope::Read)
        } else {
            None
        }
    }
}

/// The refusal of a change asked with a read-only token.
pub(super) fn read_only() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "this token has scope read (admin.read_tokens): it can list and check but not change; use the admin token",
    )
}

/// Route layer of the routes that change something: refuses unless the request's token (put in
/// the request's extensions by the token check) has the full scope.
pub(super) async fn require_full(req: Request, next: Next) -> Response {
    match req.extensions().get::<Scope>() {
        Some(Scope::Full) => next.run(req).await,
        _ => read_only().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_token() {
        let t = Tokens::new(
            "f".repeat(32),
            "admin.token",
            vec!["r".repeat(32), "s".repeat(20)],
        );
        assert_eq!(t.scope_of(&"f".repeat(32)), Some(Scope::Full));
        assert_eq!(t.scope_of(&"r".repeat(32)), Some(Scope::Read));
        assert_eq!(t.scope_of(&"s".repeat(20)), Some(Scope::Read));
        assert_eq!(t.scope_of(&"f".repeat(31)), None);
        assert_eq!(t.scope_of(""), None);
    }
}
