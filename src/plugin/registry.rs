//! Loading the plugins a configuration names: `plugin builtin:NAME` from the table of plugins
//! compiled into midge ([`BUILTINS`]), `plugin PATH` through the C ABI ([`load_c`]). Each is
//! configured with its `plugin_opt_*` lines before the shards start; any error stops start-up
//! with `FILE:LINE: plugin NAME: message`.

use std::path::Path;
use std::sync::Arc;

use super::api::{Plugin, PluginOptions};
use super::scoped::Scoped;
use crate::config::{PluginSource, PluginSpec};

/// Makes a built-in plugin from its options (checked again by [`Plugin::configure`]).
pub type Constructor = fn(&PluginOptions) -> Result<Arc<dyn Plugin>, String>;

/// The plugins compiled into midge, by the name `plugin builtin:NAME` uses. Other parts add
/// their row here (one line each: `("http", super::builtin::http::new)`).
pub const BUILTINS: &[(&str, Constructor)] = &[
    ("http", super::builtin::http::new),
    ("jwt", super::builtin::jwt::new),
    ("scram", super::builtin::scram::new),
];

/// The plugins a broker runs, in the order the chain asks them: the in-process plugins a
/// program gave `Broker::start_with_plugins`, then the configured ones (file order).
#[derive(Default)]
pub struct Loaded {
    /// Added by the program (no configuration line, not reconfigured at reload).
    pub in_process: Vec<Arc<dyn Plugin>>,
    /// One per plugin line, with the line (reload configures them with its new options).
    pub configured: Vec<(PluginSpec, Arc<dyn Plugin>)>,
    /// Built-ins that run without a line, last in the chain: `builtin:scram` whenever a
    /// password file is configured (see `builtin::scram::by_default`).
    pub implicit: Vec<Arc<dyn Plugin>>,
    /// The password file as a plugin, last (set by the broker, which owns the files).
    pub password: Option<Arc<super::builtin::password::PasswordPlugin>>,
}

impl Loaded {
    /// Loads the plugins of `specs` behind `in_process`.
    pub fn load(in_process: Vec<Arc<dyn Plugin>>, specs: &[PluginSpec]) -> Result<Loaded, String> {
        let plugins = load_all(specs)?;
        Ok(Loaded {
            in_process,
            configured: specs.iter().cloned().zip(plugins).collect(),
            implicit: Vec::new(),
            password: None,
        })
    }

    /// Some plugin was promised that its per-shard hooks run on their shard's thread: a C
    /// ABI plugin, or one a program gave (midge's own built-ins do not depend on it). Shards
    /// then never run each other's turns (`shard::handoff`).
    pub fn thread_bound(&self) -> bool {
        !self.in_process.is_empty()
            || self
                .configured
                .iter()
                .any(|(spec, _)| matches!(spec.source, PluginSource::Path(_)))
    }

    /// Every plugin in chain order: in-process, configured, the implicit built-ins
    /// (`builtin:scram`), then the built-in password file (the ACL file follows them all,
    /// called directly: `builtin::acl`).
    pub fn all(&self) -> Vec<Arc<dyn Plugin>> {
        let configured = self.configured.iter().map(|(_, p)| p.clone());
        let implicit = self.implicit.iter().cloned();
        let password = self.password.iter().map(|p| p.clone() as Arc<dyn Plugin>);
        self.in_process
            .iter()
            .cloned()
            .chain(configured)
            .chain(implicit)
            .chain(password)
            .collect()
    }

    /// SIGHUP: each configured plugin gets its line's new options. The plugin lines
    /// themselves (which plugins, in which order) change only with a restart: if they
    /// differ, nothing is reconfigured and the error says so. A plugin's own refusal is
    /// logged and its old options stay.
    pub fn reconfigure(&self, specs: &[PluginSpec]) -> Result<Vec<String>, String> {
        let same = specs.len() == self.configured.len()
            && specs
                .iter()
                .zip(&self.configured)
                .all(|(new, (old, _))| new.source == old.source && new.listener == old.listener);
        if !same {
            return Err(
                "plugin lines changed: plugins are loaded only at start (restart to change them)"
                    .into(),
            );
        }
        let mut changes = Vec::new();
        for (new, (old, plugin)) in specs.iter().zip(&self.configured) {
            if new.options == old.options {
                continue;
            }
            match configure(new, &**plugin) {
                Ok(()) => changes.push(format!("plugin {}: new options", new.name())),
                Err(e) => log::error!("Reload: {e}; its previous options stay in force."),
            }
        }
        Ok(changes)
    }
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.all_names().collect();
        f.debug_struct("Loaded").field("plugins", &names).finish()
    }
}

impl Loaded {
    fn all_names(&self) -> impl Iterator<Item = &str> {
        let configured = self.configured.iter().map(|(_, p)| p.name());
        self.in_process.iter().map(|p| p.name()).chain(configured)
    }
}

/// The plugin of one configuration line, made and configured (not yet scoped to a listener).
pub fn load(spec: &PluginSpec) -> Result<Arc<dyn Plugin>, String> {
    let plugin = match &spec.source {
        PluginSource::Builtin(name) => {
            let Some((_, make)) = BUILTINS.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "{}: plugin builtin:{name}: no built-in plugin of that name (built in: {})",
                    spec.at(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            };
            make(&spec.options)
                .map_err(|e| format!("{}: plugin {}: {e}", spec.at(), spec.name()))?
        }
        PluginSource::Path(path) => load_c(spec, path)?,
    };
    configure(spec, &*plugin)?;
    Ok(plugin)
}

/// Every plugin of `specs`, in order, each behind its listener scope if it has one.
pub fn load_all(specs: &[PluginSpec]) -> Result<Vec<Arc<dyn Plugin>>, String> {
    specs
        .iter()
        .map(|spec| {
            let plugin = load(spec)?;
            Ok(match spec.listener {
                Some(port) => Arc::new(Scoped::new(port, plugin)) as Arc<dyn Plugin>,
                None => plugin,
            })
        })
        .collect()
}

/// [`Plugin::configure`] with the line's options; an error names the line and the plugin.
pub fn configure(spec: &PluginSpec, plugin: &dyn Plugin) -> Result<(), String> {
    plugin
        .configure(&spec.options)
        .map_err(|e| format!("{}: plugin {}: {e}", spec.at(), spec.name()))
}

/// `plugin PATH`: a shared library through the C ABI (src/plugin/cabi, include/midge_plugin.h).
fn load_c(spec: &PluginSpec, path: &Path) -> Result<Arc<dyn Plugin>, String> {
    crate::plugin::cabi::load(path, &spec.options).map_err(|e| format!("{}: {e}", spec.at()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(line: &str) -> PluginSpec {
        crate::config::Config::parse_str(line, "t.conf")
            .unwrap()
            .plugins
            .remove(0)
    }

    #[test]
    fn an_unknown_builtin_is_a_clear_error() {
        let e = load(&spec("plugin builtin:nope\n")).err().unwrap();
        assert!(e.starts_with("t.conf:1: plugin builtin:nope: "), "{e}");
        assert!(e.contains("no built-in plugin"), "{e}");
    }

    #[test]
    fn reload_reconfigures_with_new_options_and_refuses_new_lines() {
        struct Opts(std::sync::Mutex<Vec<PluginOptions>>);
        impl Plugin for Opts {
            fn name(&self) -> &str {
                "opts"
            }
            fn configure(&self, o: &PluginOptions) -> Result<(), String> {
                self.0.lock().unwrap().push(o.clone());
                match o.get("bad") {
                    Some(_) => Err("bad option".into()),
                    None => Ok(()),
                }
            }
            fn shard(&self, _: usize, _: usize) -> Box<dyn crate::plugin::ShardPlugin> {
                unreachable!()
            }
        }
        let plugin = Arc::new(Opts(Default::default()));
        let loaded = Loaded {
            in_process: Vec::new(),
            configured: vec![(spec("plugin builtin:x\nplugin_opt_a 1\n"), plugin.clone())],
            implicit: Vec::new(),
            password: None,
        };
        let new = |text: &str| {
            crate::config::Config::parse_str(text, "t.conf")
                .unwrap()
                .plugins
        };
        assert_eq!(
            loaded
                .reconfigure(&new("plugin builtin:x\nplugin_opt_a 1\n"))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(
            loaded
                .reconfigure(&new("plugin builtin:x\nplugin_opt_a 2\n"))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(plugin.0.lock().unwrap().last().unwrap()["a"], "2");
        // A refusal is logged, not an error of the reload.
        assert!(loaded
            .reconfigure(&new("plugin builtin:x\nplugin_opt_bad 1\n"))
            .is_ok());
        assert!(loaded.reconfigure(&new("plugin builtin:y\n")).is_err());
        assert!(loaded.reconfigure(&[]).is_err());
    }

    #[test]
    fn a_c_plugin_without_the_c_abi_names_its_line() {
        let e = load(&spec("\nplugin /x.so\n")).err().unwrap();
        assert!(e.starts_with("t.conf:2: "), "{e}");
    }
}
