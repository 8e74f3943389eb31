//! Sessions: they last twelve hours by the injected clock, end on the server at sign-out, are
//! only the ones this edge started, stay bounded; and cross-site posts are refused.

use super::*;
use crate::clock::from_unix_secs;

/// The request headers of a browser that got `set_cookie`.
impl Sessions {
    /// [`Sessions::start`], where the test expects a session to start.
    fn start_for_tests(&self, now: SystemTime, scope: Scope) -> String {
        self.start(now, scope).expect("a session started")
    }
}

fn sent(set_cookie: &str) -> HeaderMap {
    let pair = set_cookie.split(';').next().unwrap();
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, HeaderValue::from_str(pair).unwrap());
    h
}

#[test]
fn a_sign_in_lasts_twelve_hours_by_the_clock_it_was_given() {
    let sessions = Sessions::new(false);
    let start = from_unix_secs(1_000_000);
    let cookie = sessions.start_for_tests(start, Scope::Full);
    let h = sent(&cookie);
    assert!(sessions.is_live(&h, start + SESSION - Duration::from_secs(1)));
    assert!(!sessions.is_live(&h, start + SESSION));
    assert!(cookie.contains("Max-Age=43200"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[test]
fn sign_out_ends_the_session_on_the_server_so_a_copied_cookie_stops_working() {
    let sessions = Sessions::new(false);
    let now = from_unix_secs(1_000);
    let mine = sent(&sessions.start_for_tests(now, Scope::Full));
    let other = sent(&sessions.start_for_tests(now, Scope::Full));
    let copy = mine.clone();
    let cleared = sessions.end(&mine);
    assert!(cleared.contains("clickedge_ui=;") && cleared.contains("Max-Age=0"));
    assert!(!sessions.is_live(&copy, now), "the copy ended with it");
    assert!(sessions.is_live(&other, now), "other sign-ins stay");
}

#[test]
fn only_sessions_this_edge_started_are_accepted() {
    let sessions = Sessions::new(false);
    let now = from_unix_secs(1_000);
    let elsewhere = Sessions::new(false).start_for_tests(now, Scope::Full);
    assert!(!sessions.is_live(&sent(&elsewhere), now));
    for value in ["garbage", "", "zz", &"00".repeat(32), &"00".repeat(33)] {
        assert!(
            !sessions.is_live(&sent(&format!("clickedge_ui={value}")), now),
            "{value}"
        );
    }
}

#[test]
fn the_cookie_is_secure_when_the_page_is_reached_over_https() {
    let sessions = Sessions::new(true);
    let cookie = sessions.start_for_tests(from_unix_secs(1_000), Scope::Full);
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    assert!(sessions.end(&sent(&cookie)).ends_with("; Secure"));
}

#[test]
fn the_table_stays_bounded_and_drops_the_session_ending_soonest() {
    let sessions = Sessions::new(false);
    let t0 = from_unix_secs(1_000);
    let first = sent(&sessions.start_for_tests(t0, Scope::Full));
    for i in 1..=MAX_SESSIONS as u64 {
        sessions.start_for_tests(t0 + Duration::from_secs(i), Scope::Full);
    }
    assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    assert!(!sessions.is_live(&first, t0), "the oldest went");
    // Expired sessions are dropped before anything live.
    let later = t0 + SESSION + Duration::from_secs(2 * MAX_SESSIONS as u64);
    sessions.start_for_tests(later, Scope::Full);
    assert_eq!(sessions.lock().len(), 1);
}

/// A full table drops a read-only session first: signing in again and again with a read-only
/// token never signs out a holder of the admin token, nor does another one signing in.
#[test]
fn read_only_sign_ins_never_push_out_a_full_session() {
    let sessions = Sessions::new(false);
    let t0 = from_unix_secs(1_000);
    let full = sent(&sessions.start_for_tests(t0, Scope::Full));
    for i in 1..=2 * MAX_SESSIONS as u64 {
        sessions.start_for_tests(t0 + Duration::from_secs(i), Scope::Read);
    }
    assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    assert_eq!(sessions.scope(&full, t0), Some(Scope::Full));
    let later = t0 + Duration::from_secs(3 * MAX_SESSIONS as u64);
    let other = sent(&sessions.start_for_tests(later, Scope::Full));
    assert_eq!(sessions.scope(&full, t0), Some(Scope::Full));
    assert_eq!(sessions.scope(&other, later), Some(Scope::Full));
}

/// A table holding full sessions only: a read-only sign-in is refused rather than signing one
/// out; one with the admin token still gets in.
#[test]
fn a_read_only_sign_in_into_a_table_of_full_sessions_is_refused() {
    let sessions = Sessions::new(false);
    let t0 = from_unix_secs(1_000);
    let first = sent(&sessions.start_for_tests(t0, Scope::Full));
    for i in 1..MAX_SESSIONS as u64 {
        sessions.start_for_tests(t0 + Duration::from_secs(i), Scope::Full);
    }
    let later = t0 + Duration::from_secs(2 * MAX_SESSIONS as u64);
    assert_eq!(sessions.start(later, Scope::Read), None);
    assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    assert_eq!(sessions.scope(&first, later), Some(Scope::Full));
    assert!(sessions.start(later, Scope::Full).is_some());
    assert_eq!(
        sessions.scope(&first, later),
        None,
        "the oldest full one went"
    );
}

#[test]
fn cross_site_posts_are_refused() {
    let mut h = HeaderMap::new();
    assert!(
        same_origin(&h),
        "no browser hints: the cookie still has to be there"
    );
    h.insert("host", HeaderValue::from_static("127.0.0.1:9180"));
    h.insert("origin", HeaderValue::from_static("http://127.0.0.1:9180"));
    assert!(same_origin(&h));
    h.insert("origin", HeaderValue::from_static("http://evil.example"));
    assert!(!same_origin(&h));
    h.remove("origin");
    h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    assert!(!same_origin(&h));
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    h.insert("origin", HeaderValue::from_static("null"));
    assert!(same_origin(&h));
}

#[test]
fn a_session_keeps_the_scope_of_the_token_that_started_it() {
    let sessions = Sessions::new(false);
    let now = from_unix_secs(1_000);
    let read = sent(&sessions.start_for_tests(now, Scope::Read));
    let full = sent(&sessions.start_for_tests(now, Scope::Full));
    assert_eq!(sessions.scope(&read, now), Some(Scope::Read));
    assert_eq!(sessions.scope(&full, now), Some(Scope::Full));
    assert_eq!(sessions.scope(&read, now + SESSION), None);
}
