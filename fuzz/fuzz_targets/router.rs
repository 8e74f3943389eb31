//! Routing accepts any path without panicking, and routed tokens are slices of the path.
#![no_main]

use clickedge::http::router::{Route, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    match route(&path) {
        Route::Click(t) | Route::AcmeChallenge(t) => {
            assert!(!t.is_empty() && !t.contains('/') && path.ends_with(t));
        }
        _ => {}
    }
});
