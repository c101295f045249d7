//! The ACL file (`acl_file`) as the chain's last member.
//!
//! Every ACL decision (publish, subscribe, receive) asks the plugins first; when every one
//! passes, the ACL file decides, as mosquitto's own ACL check runs after its plugins. The ACL
//! file is not called through the `dyn ShardPlugin` list like the others: its rules are
//! compiled per client at CONNECT into the session's [`ClientAcl`] (the `%c`/`%u` patterns
//! already substituted), and only the shard holds the session. So the shard calls
//! [`decide`] directly after the chain (`handle::hooks`, `Shard::offer`): with no other ACL
//! plugin loaded the delivery path is the compiled check alone, exactly as before plugins
//! existed (results/plugins-20261206).

use crate::auth::{Access, ClientAcl};
use crate::plugin::api::Decision;

/// The ACL file's decision for a client whose compiled ACL is `acl`: `Allow` or `Deny`
/// (without an ACL file `acl` allows everything, the chain's default).
#[inline]
pub fn decide(acl: &ClientAcl, topic: &str, access: Access) -> Decision {
    if acl.allowed(topic, access) {
        Decision::Allow
    } else {
        Decision::Deny
    }
}

/// The whole ACL decision: the chain's answer `chain` (from `ShardPlugins::acl_check`), and
/// when it passed, the ACL file's.
#[inline]
pub fn after_chain(chain: Decision, acl: &ClientAcl, topic: &str, access: Access) -> bool {
    match chain {
        Decision::Allow => true,
        Decision::Pass => acl.allowed(topic, access),
        Decision::Deny | Decision::Later => false,
    }
}
