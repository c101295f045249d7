//! midge with one trivial ACL plugin given through the Rust trait (`Broker::start_with_plugins`),
//! for measuring what a plugin costs a running broker (loadgen's hotpath suite against an
//! external broker, results/plugins-20261206):
//!
//! ```text
//! cargo build --release --example plugin_broker
//! target/release/examples/plugin_broker midge.conf &      # until SIGTERM or SIGINT
//! loadgen suite loadgen/suites/hotpath.toml --brokers mosquitto --broker trait=127.0.0.1:PORT,pid=$!
//! ```
//! The plugin is the one of `examples/route_instructions.rs`: it refuses reading `forbidden`
//! and passes on everything else, so every delivery asks it once.

use std::sync::Arc;

use midge::config::Config;

#[path = "support/deny_one.rs"]
mod deny_one;

use deny_one::DenyOne;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: plugin_broker CONFIG");
    let config = Config::from_file(std::path::Path::new(&path)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let broker =
        midge::Broker::start_with_plugins(config, vec![Arc::new(DenyOne)]).unwrap_or_else(|e| {
            eprintln!("cannot start: {e}");
            std::process::exit(1)
        });
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .expect("signals");
    signals.forever().next();
    let _ = broker.shutdown();
}
