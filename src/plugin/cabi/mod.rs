//! The C ABI for plugins (`include/midge_plugin.h`), shaped like mosquitto's version 5 plugin
//! interface: a `.so` exports `midge_plugin_version` / `_init` / `_cleanup` (and optionally
//! `_shard_init` / `_shard_cleanup`), registers callbacks per event with
//! `midge_callback_register`, which midge exports, and answers with integer codes (ALLOW,
//! DENY, DEFER = ask the next plugin, LATER = answered from another thread).
//!
//! - [`abi`]: the `#[repr(C)]` mirror of the header.
//! - `loader`: dlopen, version negotiation, init, [`CPlugin`] (a [`Plugin`]).
//! - `shard`: the per-shard adapter, a [`crate::plugin::ShardPlugin`] calling the callbacks.
//! - `exports`: the functions the plugin calls back (exported from the midge binary).
//! - [`mosq`]: mosquitto 2.0 plugins loaded unchanged (the `mosquitto_*` exports).
//!
//! Why exported symbols rather than a function table handed to init: it is mosquitto's shape
//! (a mosquitto plugin ports by renaming), the header reads as plain C declarations, and the
//! same mechanism is what a later shim exporting `mosquitto_*` needs to load mosquitto's own
//! plugins unchanged. The cost is a link flag (build.rs), checked by a test.

pub mod abi;
mod exported_names;
mod exports;
mod loader;
pub mod mosq;
mod mosq_exports;
mod shard;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use exports::EXPORTED;
pub use loader::CPlugin;

use super::api::{Plugin, PluginOptions};

/// Loads the C plugin at `path` with its `plugin_opt_*` options. An `Err` names the file and
/// what went wrong (cannot load, not a midge plugin, unsupported version, init failed); the
/// caller stops start-up with it.
pub fn load(path: &Path, options: &PluginOptions) -> Result<Arc<dyn Plugin>, String> {
    loader::load(path, options)
}
