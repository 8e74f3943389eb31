//! The onboarding web page on the admin listener, at `/ui/`: every domain at a glance (checks,
//! certificate status and expiry), a form to add one, and a page per domain with its checks,
//! the fix under each failure and a "check again" button.
//!
//! Server-rendered HTML, one stylesheet and a few lines of script served from here (no external
//! assets). Protected by the admin token, typed into the sign-in form and never accepted in the
//! address (where history and logs would keep it): signing in starts a server-side session
//! ([`session`]) whose cookie is not the token, and signing out ends it on the server. Forms
//! only post to this origin; a POST from another site (Origin or Sec-Fetch-Site says so) is
//! refused, on top of what SameSite does. Every value shown is HTML-escaped: DNS answers are
//! customer-controlled.

mod render;
mod session;

/// Domains the list shows per page; a full page links to the next.
const UI_PAGE: u32 = 500;

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};

use super::Shared;
use super::api::listing_cursor;
use super::error::{ApiError, Segment, parse_name, parse_new_name};
use super::views::DomainView;
use render::{asset, error_page, forbidden, html, login_page, see_other, set_cookie};
use session::same_origin;

use super::Scope;

pub use session::Sessions;

const STYLE: &str = concat!(
    include_str!("ui/style.css"),
    include_str!("../html/records.css")
);
const SCRIPT: &str = concat!(include_str!("ui/app.js"), include_str!("../html/copy.js"));

/// The `/ui/` routes.
pub(super) fn router() -> Router<Shared> {
    Router::new()
        .route("/ui", get(|| async { see_other("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/domains", post(add_domain))
        .route("/ui/domains/{name}", get(domain))
        .route("/ui/domains/{name}/check", post(check_domain))
        .route("/ui/domains/{name}/share", post(share_domain))
        .route("/ui/style.css", get(|| async { asset("text/css", STYLE) }))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
}

fn form(body: &Bytes) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

async fn index(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // NOTE: a token in the address is refused, right or wrong: the address bar, history,
    // proxies and logs would keep it.
    let token_in_address = query
        .as_deref()
        .is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "token"));
    if token_in_address {
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some(
                "The token is not accepted in the address, where history and logs keep it: type it here.",
            ),
        );
    }
    let Some(scope) = signed_in(&state, &headers) else {
        return login_page(StatusCode::UNAUTHORIZED, None);
    };
    // `?after=NAME`: the page of domains after that name (the "next" link's).
    let after = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find_map(|(k, v)| (k == "after").then_some(v))
    });
    let after = match after.as_deref().map(listing_cursor).transpose() {
        Ok(after) => after.unwrap_or_default(),
        Err(e) => return error_page(e),
    };
    index_page(&state, scope, StatusCode::OK, None, "", &after).await
}

async fn login(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        return forbidden();
    }
    match form(&body)
        .get("token")
        .and_then(|t| state.tokens.scope_of(t.trim()))
    {
        Some(scope) => {
            // The session the browser held until now ends on the edge too: sign-out ends only
            // the new one, and a copy of the old cookie must not outlive it.
            state.sessions.end(&headers);
            let Some(cookie) = state.sessions.start(state.clock.now(), scope) else {
                return login_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(
                        "Every session the page can hold is one signed in with the admin token, \
                         and a read-only sign-in never signs one out: try again once some have \
                         signed out or ended (after 12 hours).",
                    ),
                );
            };
            let mut res = see_other("/ui/");
            set_cookie(&mut res, &cookie);
            res
        }
        None => login_page(StatusCode::UNAUTHORIZED, Some("That token is not right.")),
    }
}

/// Ends the session on the server (a copy of the cookie stops working too) and in the browser.
async fn logout(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return forbidden();
    }
    let mut res = see_other("/ui/");
    set_cookie(&mut res, &state.sessions.end(&headers));
    res
}

async fn add_domain(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refusal_to_change(&state, &headers) {
        return refused;
    }
    let input = form(&body).remove("name").unwrap_or_default();
    let name = match parse_new_name(input.trim()) {
        Ok(name) => name,
        Err(e) => {
            return index_page(
                &state,
                Scope::Full,
                e.status,
                Some(&e.message),
                input.trim(),
                "",
            )
            .await;
        }
    };
    match state.domains.add(name.clone(), None).await {
        Ok(_) => see_other(&format!("/ui/domains/{name}")),
        Err(e) => {
            let e = ApiError::from(e);
            index_page(
                &state,
                Scope::Full,
                e.status,
                Some(&e.message),
                name.as_str(),
                "",
            )
            .await
        }
    }
}

async fn domain(
    State(state): State<Shared>,
    headers: HeaderMap,
    name: Result<Segment, ApiError>,
) -> Response {
    if !logged_in(&state, &headers) {
        return login_page(StatusCode::UNAUTHORIZED, None);
    }
    let found = async {
        let name = parse_name(&name?.0)?;
        Ok::<_, ApiError>(DomainView::from(state.domains.show(&name).await?))
    };
    match found.await {
        Ok(v) => {
            let can_share = can_share(&state, &headers);
            html(
                StatusCode::OK,
                v.name.as_str(),
                &render::domain_body(&v, can_share, None),
            )
        }
        Err(e) => error_page(e),
    }
}

async fn check_domain(
    State(state): State<Shared>,
    headers: HeaderMap,
    name: Result<Segment, ApiError>,
) -> Response {
    if !same_origin(&headers) {
        return forbidden();
    }
    let Some(scope) = signed_in(&state, &headers) else {
        return login_page(StatusCode::UNAUTHORIZED, None);
    };
    let checked = async {
        let name = parse_name(&name?.0)?;
        state.check(&name, scope).await?;
        Ok::<_, ApiError>(name)
    };
    match checked.await {
        Ok(name) => see_other(&format!("/ui/domains/{name}")),
        Err(e) => error_page(e),
    }
}

/// "Share with customer": the domain's page with a status page address for its customer.
async fn share_domain(
    State(state): State<Shared>,
    headers: HeaderMap,
    name: Result<Segment, ApiError>,
) -> Response {
    if let Some(refused) = refusal_to_change(&state, &headers) {
        return refused;
    }
    let shared = async {
        let name = parse_name(&name?.0)?;
        let shared = super::share::share(&state, &name, None).await?;
        Ok::<_, ApiError>((DomainView::from(state.domains.show(&name).await?), shared))
    };
    match shared.await {
        Ok((v, shared)) => html(
            StatusCode::OK,
            v.name.as_str(),
            &render::domain_body(&v, true, Some(&shared)),
        ),
        Err(e) => error_page(e),
    }
}

/// The answer to a form that changes something unless it was sent from this page in a live
/// session of the full scope; none when it may go ahead.
fn refusal_to_change(state: &Shared, headers: &HeaderMap) -> Option<Response> {
    if !same_origin(headers) {
        return Some(forbidden());
    }
    match signed_in(state, headers) {
        None => Some(login_page(StatusCode::UNAUTHORIZED, None)),
        Some(Scope::Full) => None,
        Some(_) => Some(error_page(super::scope::read_only())),
    }
}

/// True if the page may offer "share with customer": status pages are on and the session may
/// change things.
fn can_share(state: &Shared, headers: &HeaderMap) -> bool {
    state.public_url.is_some() && signed_in(state, headers) == Some(Scope::Full)
}

/// The domain list, a page of [`UI_PAGE`] domains after `after` (from the first with `""`).
async fn index_page(
    state: &Shared,
    scope: Scope,
    status: StatusCode,
    error: Option<&str>,
    typed: &str,
    after: &str,
) -> Response {
    let views: Vec<DomainView> = match state.domains.page(after, UI_PAGE).await {
        Ok(list) => list.into_iter().map(DomainView::from).collect(),
        Err(e) => return error_page(e.into()),
    };
    let page = render::Page {
        after,
        more: views.len() == UI_PAGE as usize,
    };
    render::index(
        &views,
        &page,
        state.domains.check_settings(),
        scope,
        status,
        error,
        typed,
    )
}

/// True if the request carries a live session.
fn logged_in(state: &Shared, headers: &HeaderMap) -> bool {
    signed_in(state, headers).is_some()
}

/// The scope of the request's live session, if it carries one.
fn signed_in(state: &Shared, headers: &HeaderMap) -> Option<Scope> {
    state.sessions.scope(headers, state.clock.now())
}
