//! ACL files: any text parses or fails with `FILE:LINE`; a parsed ACL answers any client and
//! topic. Input: the ACL text, then NUL-separated client id, user name (absent = anonymous) and
//! topics to check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge::auth::{Access, Acl};
use midge::protocol::topic::{validate_topic_filter, validate_topic_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let acl_text = parts.next().unwrap_or("");
    let client_id = parts.next().unwrap_or("client");
    let username = parts.next();
    let acl = match Acl::parse(acl_text, "fuzz.acl") {
        Ok(acl) => acl,
        Err(e) => {
            assert!(e.to_string().contains("fuzz.acl:"), "{e}");
            return;
        }
    };
    let client = acl.for_client(client_id, username);
    for topic in parts.take(64) {
        if validate_topic_name(topic).is_ok() {
            for access in [Access::Read, Access::Write] {
                let a = client.allowed(topic, access);
                assert_eq!(a, acl.allowed(client_id, username, topic, access));
            }
        }
        if validate_topic_filter(topic).is_ok() {
            let _ = client.allowed(topic, Access::Subscribe);
        }
    }
});
