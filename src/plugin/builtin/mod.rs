//! Plugins built into midge, loaded with `plugin builtin:NAME`.

pub mod http;
pub mod jwt;
