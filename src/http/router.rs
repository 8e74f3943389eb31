//! Routing on the request path, on `&str`, without allocation.

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/c/<token>`: a link.
    Click(&'a str),
    /// `/o/<token>`: a message's open pixel.
    Open(&'a str),
    /// `/.well-known/acme-challenge/<token>`: an HTTP-01 challenge (plain HTTP listener).
    AcmeChallenge(&'a str),
    /// `/.well-known/clickedge-check/<nonce>`: the onboarding reachability check (plain HTTP).
    OnboardingCheck(&'a str),
    /// Anything else.
    NotFound,
}

/// Routes a request path (without the query).
pub fn route(path: &str) -> Route<'_> {
    if let Some(token) = path.strip_prefix("/c/") {
        if !token.is_empty() && !token.contains('/') {
            return Route::Click(token);
        }
    } else if let Some(token) = path.strip_prefix("/o/") {
        if !token.is_empty() && !token.contains('/') {
            return Route::Open(token);
        }
    } else if let Some(token) = path.strip_prefix("/.well-known/acme-challenge/")
        && !token.is_empty()
        && !token.contains('/')
    {
        return Route::AcmeChallenge(token);
    } else if let Some(nonce) = path.strip_prefix("/.well-known/clickedge-check/")
        && !nonce.is_empty()
        && !nonce.contains('/')
    {
        return Route::OnboardingCheck(nonce);
    }
    Route::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn routes() {
        assert_eq!(route("/c/abc"), Route::Click("abc"));
        assert_eq!(route("/c/"), Route::NotFound);
        assert_eq!(route("/c/a/b"), Route::NotFound);
        assert_eq!(route("/c"), Route::NotFound);
        assert_eq!(route("/o/abc"), Route::Open("abc"));
        assert_eq!(route("/o/"), Route::NotFound);
        assert_eq!(route("/o/a/b"), Route::NotFound);
        assert_eq!(route("/"), Route::NotFound);
        assert_eq!(
            route("/.well-known/acme-challenge/tok"),
            Route::AcmeChallenge("tok")
        );
        assert_eq!(route("/.well-known/acme-challenge/"), Route::NotFound);
        assert_eq!(
            route("/.well-known/clickedge-check/n1"),
            Route::OnboardingCheck("n1")
        );
        assert_eq!(route("/.well-known/clickedge-check/"), Route::NotFound);
    }

    proptest! {
        #[test]
        fn route_is_total(path in ".*") {
            match route(&path) {
                Route::Click(t)
                | Route::Open(t)
                | Route::AcmeChallenge(t)
                | Route::OnboardingCheck(t) => {
                    prop_assert!(!t.is_empty());
                    prop_assert!(path.ends_with(t));
                }
                Route::NotFound => {}
            }
        }
    }
}
