//! The table of known brokers: the built-in names, where their binaries and runtime files are
//! found, and external (`name=host:port[,pid=PID]`) broker specs.

use std::fs;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use super::{BrokerDef, Flavor};

/// Where `npm install --prefix /opt/aedes aedes` puts the aedes module.
pub const AEDES_MODULES: &str = "/opt/aedes/node_modules";

/// The `node_modules` directory holding aedes: an entry of `NODE_PATH`, else [`AEDES_MODULES`].
pub fn aedes_modules() -> Option<PathBuf> {
    let node_path = std::env::var_os("NODE_PATH").unwrap_or_default();
    std::env::split_paths(&node_path)
        .chain([PathBuf::from(AEDES_MODULES)])
        .find(|d| d.join("aedes/package.json").is_file())
}

/// Where Debian's ejabberd package puts its Erlang applications (its `ERL_LIBS`).
pub const ERL_LIBS_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// ejabberd's application directory (`ERL_LIBS_DIR/ejabberd-VERSION`), if installed.
pub fn ejabberd_lib() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(ERL_LIBS_DIR)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ejabberd-"))
                && p.join("ebin/ejabberd.app").is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

/// Finds `prog` on PATH (or as given, if it contains a slash).
pub fn which(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// The workspace root (where `target/release/midge` is built).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Names of the brokers in the built-in table. `midge-<N>shard` / `midge-<N>shards` (e.g.
/// `midge-1shard`, `midge-2shards`) are midge too, with `shards N` in its config: the same
/// suite compares one event loop with several.
pub const KNOWN: &[&str] = &[
    "midge",
    "mosquitto",
    "rumqttd",
    "aedes",
    "ejabberd",
    "nats",
    "rabbitmq",
    "flashmq",
    "nanomq",
];

/// Debian's RabbitMQ server script, run directly: `/usr/sbin/rabbitmq-server` would switch
/// to the `rabbitmq` user and its system-wide node.
pub const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Where to find brokers that are not installed system-wide (command-line overrides).
#[derive(Debug, Clone, Default)]
pub struct Binaries {
    /// midge's binary (default: `release/midge` under `CARGO_TARGET_DIR` when that is set,
    /// as cargo builds it there, else `target/release/midge` of the workspace).
    pub midge: Option<PathBuf>,
    /// rumqttd's binary (default: `rumqttd` on PATH, else `~/.cargo/bin/rumqttd`, where a
    /// plain `cargo install rumqttd` puts it).
    pub rumqttd: Option<PathBuf>,
    /// FlashMQ's binary (default: `flashmq` on PATH).
    pub flashmq: Option<PathBuf>,
    /// NanoMQ's binary (default: `nanomq` on PATH).
    pub nanomq: Option<PathBuf>,
}

/// The workspace's midge binary as built: release if there is one, else debug (what
/// `cargo test --workspace` builds; loadgen's own tests use it where no release build exists).
pub fn built_midge() -> Option<PathBuf> {
    let target = workspace_root().join("target");
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("midge"))
        .find(|p| p.is_file())
}

/// The shard count a `midge-<N>shard(s)` broker name asks for.
pub fn midge_shards(name: &str) -> Option<u16> {
    let n = name.strip_prefix("midge-")?;
    let n = n
        .strip_suffix("shards")
        .or_else(|| n.strip_suffix("shard"))?;
    n.parse().ok().filter(|&n| n > 0)
}

/// Looks a broker up in the built-in table. `midge_bin` overrides where midge is.
pub fn known(name: &str, midge_bin: Option<&Path>) -> Option<BrokerDef> {
    known_in(
        name,
        &Binaries {
            midge: midge_bin.map(Path::to_path_buf),
            ..Binaries::default()
        },
    )
}

/// Looks a broker up in the built-in table, with `bins` overriding where binaries are.
pub fn known_in(name: &str, bins: &Binaries) -> Option<BrokerDef> {
    let (flavor, binary) = match name {
        n if n == "midge" || midge_shards(n).is_some() => {
            let bin = bins.midge.clone().unwrap_or_else(|| {
                std::env::var_os("CARGO_TARGET_DIR")
                    .filter(|d| !d.is_empty())
                    .map(|d| workspace_root().join(d).join("release/midge"))
                    .unwrap_or_else(|| workspace_root().join("target/release/midge"))
            });
            (Flavor::Midge, bin)
        }
        "mosquitto" => (
            Flavor::Mosquitto,
            which("mosquitto").unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto")),
        ),
        "rumqttd" => (
            Flavor::Rumqttd,
            bins.rumqttd
                .clone()
                .or_else(|| which("rumqttd"))
                .or_else(|| {
                    let home = std::env::var_os("HOME")?;
                    let p = Path::new(&home).join(".cargo/bin/rumqttd");
                    p.is_file().then_some(p)
                })
                .unwrap_or_else(|| PathBuf::from("rumqttd")),
        ),
        "aedes" => (
            Flavor::Aedes,
            which("node").unwrap_or_else(|| PathBuf::from("/usr/bin/node")),
        ),
        "ejabberd" => (
            Flavor::Ejabberd,
            which("erl").unwrap_or_else(|| PathBuf::from("/usr/bin/erl")),
        ),
        "nats" => (
            Flavor::Nats,
            which("nats-server").unwrap_or_else(|| PathBuf::from("nats-server")),
        ),
        "rabbitmq" => (Flavor::RabbitMq, PathBuf::from(RABBITMQ_SERVER)),
        "flashmq" => (
            Flavor::FlashMq,
            bins.flashmq
                .clone()
                .or_else(|| which("flashmq"))
                .unwrap_or_else(|| PathBuf::from("flashmq")),
        ),
        "nanomq" => (
            Flavor::NanoMq,
            bins.nanomq
                .clone()
                .or_else(|| which("nanomq"))
                .unwrap_or_else(|| PathBuf::from("nanomq")),
        ),
        _ => return None,
    };
    Some(BrokerDef::Managed {
        name: name.to_string(),
        flavor,
        binary,
    })
}

/// Parses `name=host:port[,pid=PID]`.
pub fn parse_external(s: &str) -> Result<BrokerDef, String> {
    let (name, rest) = s.split_once('=').ok_or_else(|| {
        format!("--broker {s:?}: expected name=host:port[,pid=PID][,sub=host:port]")
    })?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!(
            "--broker {s:?}: the name may use letters, digits, '-', '_' and '.'"
        ));
    }
    let mut parts = rest.split(',');
    let hostport = parts.next().unwrap_or_default();
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("--broker {s:?}: address {hostport:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--broker {s:?}: {hostport:?} resolves to nothing"))?;
    let mut pid = None;
    let mut sub = None;
    for p in parts {
        match p.split_once('=') {
            Some(("pid", v)) => {
                pid = Some(
                    v.parse()
                        .map_err(|_| format!("--broker {s:?}: pid {v:?} is not a number"))?,
                )
            }
            Some(("sub", v)) => {
                sub = Some(
                    v.to_socket_addrs()
                        .map_err(|e| format!("--broker {s:?}: sub address {v:?}: {e}"))?
                        .next()
                        .ok_or_else(|| format!("--broker {s:?}: {v:?} resolves to nothing"))?,
                )
            }
            _ => {
                return Err(format!(
                    "--broker {s:?}: unknown option {p:?} (pid=PID or sub=host:port)"
                ))
            }
        }
    }
    Ok(BrokerDef::External {
        name: name.to_string(),
        addr,
        pid,
        sub,
    })
}
