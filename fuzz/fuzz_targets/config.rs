//! The mosquitto.conf parser: any text gives a Config or a `FILE:LINE: problem` error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // include_dir reads directories of this machine: not the parser's input.
    if text.contains("include_dir") {
        return;
    }
    match Config::parse_str(text, "fuzz.conf") {
        Ok(_) => {}
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
        }
    }
});
