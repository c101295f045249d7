//! Plugins: the hooks a plugin may watch or decide, and the chain that asks them.
//!
//! - [`api`]: the contract a plugin implements ([`Plugin`], [`ShardPlugin`]) and the types
//!   the broker hands it.

pub mod api;

pub use api::{
    AuthStep, ClientInfo, Credentials, Decision, Events, ExtendedAuth, Later, MessageIn,
    MessageOut, Plugin, PluginOptions, SessionEnd, ShardPlugin, Verdict,
};
