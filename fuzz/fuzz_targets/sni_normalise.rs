//! SNI normalisation is total, and its output is a fixed point.
#![no_main]

use clickedge::Domain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(d) = Domain::parse(&s) {
        assert_eq!(Domain::parse(d.as_str()), Ok(d.clone()));
        assert!(d.as_str().len() <= 253);
        assert!(!d.as_str().bytes().any(|b| b.is_ascii_uppercase()));
    }
});
