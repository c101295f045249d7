//! The mosquitto.conf parser: any text gives a Config or a `FILE:LINE: problem` error whose
//! line is one of the text's lines.
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
            let rest = msg
                .strip_prefix("fuzz.conf:")
                .unwrap_or_else(|| panic!("the error does not name the file: {msg}"));
            let line: usize = rest
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("the error does not name the line: {msg}"));
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&line),
                "line {line} of a {lines}-line text: {msg}"
            );
        }
    }
});
