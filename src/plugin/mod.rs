//! Plugins: the hooks a plugin may watch or decide, and the chain that asks them.
//!
//! - [`api`]: the contract a plugin implements ([`Plugin`], [`ShardPlugin`]) and the types
//!   the broker hands it.
//! - [`chain`]: [`ShardPlugins`], one shard's plugins asked in order, panics caught.
//! - [`registry`]: the plugins a configuration names, loaded and configured.
//! - [`builtin`]: the plugins compiled into midge (`plugin builtin:NAME`).

pub mod api;

pub use api::{
    AuthStep, ClientInfo, Credentials, Decision, Events, ExtendedAuth, Later, MessageIn,
    MessageOut, Plugin, PluginOptions, SessionEnd, ShardPlugin, Verdict,
};

pub mod chain;

pub use chain::ShardPlugins;

pub mod builtin;
pub mod registry;
mod scoped;
