//! Parsing any config text gives a config or an error naming the file, never a panic.
#![no_main]

use std::path::Path;

use clickedge::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = Config::parse(&text, Path::new("fuzz.toml")) {
        assert!(e.to_string().contains("fuzz.toml"));
    }
});
