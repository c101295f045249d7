//! Version probing: asks a broker binary (or its installed package) for its version.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use super::table::{aedes_modules, ejabberd_lib};
use super::Flavor;

/// The broker's version as it reports it.
pub(super) fn version_of(flavor: Flavor, binary: &Path) -> String {
    let arg = match flavor {
        Flavor::Mosquitto => "-h",
        // `erl --version` would start a shell: the version is in the application's name.
        Flavor::Ejabberd => {
            return ejabberd_lib()
                .and_then(|l| l.file_name()?.to_str().map(|n| n.replacen('-', " ", 1)))
                .unwrap_or_else(|| "unknown".into())
        }
        // `rabbitmq-server --version` would start a node: the version is in the server
        // application's directory name.
        Flavor::RabbitMq => {
            let lib = binary
                .parent()
                .and_then(Path::parent)
                .map(|d| d.join("lib"));
            let mut found: Vec<String> = lib
                .and_then(|d| fs::read_dir(d).ok())
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| n.strip_prefix("rabbitmq_server-").map(str::to_string))
                .collect();
            found.sort();
            return found
                .pop()
                .map(|v| format!("RabbitMQ {v}"))
                .unwrap_or_else(|| "unknown".into());
        }
        Flavor::Aedes => {
            let pkg = aedes_modules()
                .and_then(|d| fs::read_to_string(d.join("aedes/package.json")).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["version"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            let node = Command::new(binary)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            return format!("aedes {pkg} (node {node})");
        }
        _ => "--version",
    };
    let Ok(out) = Command::new(binary).arg(arg).stdin(Stdio::null()).output() else {
        return "unknown".into();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| {
            l.to_lowercase().contains("version")
                || l.starts_with(binary.file_name().and_then(|f| f.to_str()).unwrap_or("?"))
        })
        .or_else(|| text.lines().next())
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
