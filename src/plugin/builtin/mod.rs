//! Plugins compiled into midge, named by `plugin builtin:NAME` (see `registry::BUILTINS`).
//!
//! Two built-ins are not named by a line: the password file ([`password`]) and the ACL file
//! ([`acl`]), the chain's last members whenever the configuration has them.

pub mod acl;
pub mod http;
pub mod jwt;
pub mod password;
