//! Password files (`password_file`, and what `midge passwd` reads back): every line splits as
//! `user:hash` or is refused with a reason; a hash that parses prints back to itself; the
//! whole file loads (as mosquitto's, a bad line or a second definition of a user is skipped
//! and named `FILE:LINE`), with exactly the users whose first good line the lines show.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use midge::auth::{PasswordFile, PasswordHash};
use midge::fuzzing::password_split_line;

/// Above this PBKDF2 iteration count the file is not parsed whole: parsing hashes a decoy at the
/// file's highest count (by design, so unknown users cost what known ones do), and a fuzzer
/// would only measure PBKDF2.
const MAX_ITERATIONS: u32 = 200;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut users = HashSet::new();
    let mut all_ok = true;
    for line in text.lines() {
        match password_split_line(line) {
            Ok(None) => {}
            Err(reason) => {
                assert!(!reason.is_empty());
                all_ok = false;
            }
            Ok(Some((user, hash))) => {
                assert!(!user.is_empty() && !hash.is_empty());
                match PasswordHash::parse(hash) {
                    Ok(h) => {
                        // PBKDF2 ($7$) and SCRAM verifiers alike.
                        if h.algorithm().iterations() > MAX_ITERATIONS {
                            return;
                        }
                        let printed = h.to_string();
                        let back = PasswordHash::parse(&printed)
                            .unwrap_or_else(|e| panic!("{printed:?} does not parse back: {e}"));
                        assert!(back == h, "{hash:?} printed as {printed:?} changed");
                        if !users.insert(user.to_owned()) {
                            all_ok = false;
                        }
                    }
                    Err(reason) => {
                        assert!(!reason.is_empty());
                        all_ok = false;
                    }
                }
            }
        }
    }
    let file = PasswordFile::parse(text, "fuzz.passwd")
        .unwrap_or_else(|e| panic!("a password file never fails to load: {e}"));
    assert_eq!(
        file.skipped().is_empty(),
        all_ok,
        "skipped lines {:?} disagree with the lines",
        file.skipped()
    );
    for skipped in file.skipped() {
        assert!(skipped.starts_with("fuzz.passwd:") && skipped.ends_with("; line skipped"));
    }
    assert_eq!(file.len(), users.len());
    for u in &users {
        assert!(file.contains(u));
    }
});
