//! Plugins compiled into midge, named by `plugin builtin:NAME` (see `registry::BUILTINS`).
//!
//! Two built-ins are not named by a line: the password file ([`password`]) and the ACL file
//! ([`acl`]), the chain's last members whenever the configuration has them. [`scram`]
//! (`builtin:scram`, MQTT 5 SCRAM-SHA-256/-512) may be named, and runs without a line
//! whenever a password file is configured.

pub mod acl;
pub mod http;
pub mod jwt;
pub mod password;
pub mod scram;
