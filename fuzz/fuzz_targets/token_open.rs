//! Opening arbitrary tokens never panics, and nothing but a token we sealed opens.
#![no_main]

use std::time::SystemTime;

use clickedge::links::{KeyId, KeyRing, LinkKey, open};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ring = KeyRing::new(vec![LinkKey::new(
        KeyId(1),
        [7; 32],
        SystemTime::UNIX_EPOCH,
    )])
    .expect("one key");
    if let Ok(token) = std::str::from_utf8(data) {
        // A forgery that opens would be a break of the AEAD: treat it as a crash.
        assert!(open(&ring, "links.example.com", token).is_err());
    }
});
