//! The plugin lines of the configuration: `plugin`, `global_plugin`, `plugin_opt_KEY VALUE`
//! (and mosquitto 1.x's `auth_plugin` / `auth_opt_KEY VALUE`), as parsed. The plugins
//! themselves are loaded by `plugin::registry`.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// `plugin_opt_KEY VALUE` lines, prefix stripped (the same type as
/// `plugin::PluginOptions`, named here so that `config` does not depend on `plugin`).
pub type PluginOptions = BTreeMap<String, String>;

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A shared library implementing the C ABI (`plugin /path/to/lib.so`).
    Path(PathBuf),
    /// A plugin compiled into midge (`plugin builtin:NAME`).
    Builtin(String),
}

/// One `plugin` / `global_plugin` / `auth_plugin` line with its `plugin_opt_*` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    pub source: PluginSource,
    /// The `plugin_opt_KEY VALUE` lines that followed it, prefix stripped.
    pub options: PluginOptions,
    /// `Some(port)`: a `plugin` line inside a listener block under `per_listener_settings
    /// true` (mosquitto 2.0): the plugin decides only for clients of that listener.
    pub listener: Option<u16>,
    /// Where the line is, for messages (`FILE:LINE: plugin NAME: ...`).
    pub file: String,
    pub line: usize,
}

impl PluginSpec {
    /// The name used in messages: `builtin:NAME` or the path.
    pub fn name(&self) -> String {
        match &self.source {
            PluginSource::Path(p) => p.display().to_string(),
            PluginSource::Builtin(n) => format!("builtin:{n}"),
        }
    }

    /// `FILE:LINE`, the start of every message about this plugin.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}
