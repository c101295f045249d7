//! `plugin PATH|builtin:NAME`, `global_plugin ...`, `plugin_opt_KEY VALUE`, and mosquitto
//! 1.x's `auth_plugin PATH` / `auth_opt_KEY VALUE` (the same lines under their old names).
//!
//! As in mosquitto 2.0: under `per_listener_settings true` a `plugin` line belongs to the
//! current listener block; `global_plugin` (and every plugin line without
//! `per_listener_settings`) is global. An option line attaches to the most recent plugin
//! line of the file set; one before any plugin line is an error.

use std::path::PathBuf;

use super::values::{text, Pos};
use super::{ConfigError, Parser};
use crate::config::{PluginSource, PluginSpec};

/// Where a parsed plugin line belongs until the listeners are built.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope {
    Global,
    /// A listener block (`None`: the default listener).
    Listener(Option<usize>),
}

impl Parser {
    /// Parses `option` if it is a plugin line; `Ok(false)` = not one.
    pub(super) fn plugin_option(
        &mut self,
        pos: &Pos,
        option: &str,
        rest: &str,
        current: Option<usize>,
    ) -> Result<bool, ConfigError> {
        match option {
            "plugin" | "global_plugin" | "auth_plugin" => {
                let value = text(pos, option, rest)?;
                let source = match value.strip_prefix("builtin:") {
                    Some("") => return Err(pos.bad(option, value, "expected builtin:NAME")),
                    Some(name) => PluginSource::Builtin(name.to_owned()),
                    None => PluginSource::Path(PathBuf::from(value)),
                };
                self.security_seen = true;
                let scope = if option != "global_plugin" && self.config.per_listener_settings {
                    let block = self.block(current);
                    block.touch(pos);
                    Scope::Listener(current)
                } else {
                    Scope::Global
                };
                let spec = PluginSpec {
                    source,
                    options: Default::default(),
                    listener: None,
                    file: pos.file.clone(),
                    line: pos.line,
                };
                self.plugins.push((spec, scope));
            }
            o if o.starts_with("plugin_opt_") || o.starts_with("auth_opt_") => {
                let key = o
                    .strip_prefix("plugin_opt_")
                    .or_else(|| o.strip_prefix("auth_opt_"))
                    .unwrap_or_default();
                if key.is_empty() {
                    return Err(pos.invalid(format!("'{option}': the option has no name")));
                }
                let value = rest.trim();
                let Some((spec, _)) = self.plugins.last_mut() else {
                    return Err(pos.invalid(format!(
                        "'{option}' before any plugin line: plugin options follow the \
                         'plugin' (or 'global_plugin', 'auth_plugin') line they are for"
                    )));
                };
                spec.options.insert(key.to_owned(), value.to_owned());
            }
            "auth_plugin_deny_special_chars" => {
                text(pos, option, rest)?;
                self.note(
                    pos,
                    option,
                    "midge hands user names and client ids to plugins unchanged",
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The plugin lines with their listener blocks resolved to ports (`ports[i]` is block
    /// `i`'s, `default_port` the default listener's).
    pub(super) fn finish_plugins(
        plugins: Vec<(PluginSpec, Scope)>,
        ports: &[u16],
        default_port: u16,
    ) -> Vec<PluginSpec> {
        plugins
            .into_iter()
            .map(|(mut spec, scope)| {
                spec.listener = match scope {
                    Scope::Global => None,
                    Scope::Listener(Some(i)) => ports.get(i).copied(),
                    Scope::Listener(None) => Some(default_port),
                };
                spec
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, PluginSource};

    #[test]
    fn plugin_lines_with_their_options() {
        let c = Config::parse_str(
            "plugin builtin:jwt\nplugin_opt_key secret value\nplugin_opt_aud a\n\
             global_plugin /usr/lib/x.so\nplugin_opt_k v\nauth_plugin /old.so\nauth_opt_db d\n",
            "t.conf",
        )
        .unwrap();
        assert_eq!(c.plugins.len(), 3);
        let p = &c.plugins[0];
        assert_eq!(p.source, PluginSource::Builtin("jwt".into()));
        assert_eq!(p.options["key"], "secret value");
        assert_eq!(p.options["aud"], "a");
        assert_eq!((p.file.as_str(), p.line, p.listener), ("t.conf", 1, None));
        assert_eq!(
            c.plugins[1].source,
            PluginSource::Path("/usr/lib/x.so".into())
        );
        assert_eq!(c.plugins[1].options.len(), 1);
        assert_eq!(c.plugins[2].options["db"], "d");
        assert_eq!(c.plugins[2].at(), "t.conf:6");
    }

    #[test]
    fn per_listener_plugins_belong_to_their_listener() {
        let c = Config::parse_str(
            "per_listener_settings true\nlistener 1884\nplugin builtin:a\n\
             global_plugin builtin:b\nlistener 1885\nplugin builtin:c\n",
            "t.conf",
        )
        .unwrap();
        let scopes: Vec<_> = c.plugins.iter().map(|p| p.listener).collect();
        assert_eq!(scopes, vec![Some(1884), None, Some(1885)]);
        // Without per_listener_settings every plugin is global.
        let c = Config::parse_str("listener 1884\nplugin builtin:a\n", "t.conf").unwrap();
        assert_eq!(c.plugins[0].listener, None);
    }

    #[test]
    fn option_lines_need_a_plugin_before_them() {
        let e = Config::parse_str("\nplugin_opt_x 1\n", "t.conf").unwrap_err();
        assert!(e.to_string().starts_with("t.conf:2: "), "{e}");
        assert!(e.to_string().contains("before any plugin line"), "{e}");
        let e = Config::parse_str("plugin builtin:\n", "t.conf").unwrap_err();
        assert!(e.to_string().starts_with("t.conf:1: "), "{e}");
        let e = Config::parse_str("plugin\n", "t.conf").unwrap_err();
        assert!(e.to_string().starts_with("t.conf:1: "), "{e}");
    }
}
