//! What an ACL check costs through the plugin chain, for callgrind: CHECKS read-ACL checks
//! (argument 2, default 100000) of one client on one topic through `ShardPlugins::acl_check`
//! with KIND (argument 1): `none` (no plugin: the bit test every delivery pays), `rust` (a
//! trivial Rust plugin) or the path of a C plugin `.so` (through the C ABI adapter).
//!
//! Instructions per check = (Ir with CHECKS=N - Ir with CHECKS=0) / N
//! (results/cabi-20261206/README.md has the commands and the numbers):
//! ```sh
//! cargo build --release --example cabi_instructions
//! gcc -O2 -shared -fPIC -I include -o target/acl_trivial.so tests/data/plugins/acl_trivial.c
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/cabi_instructions target/acl_trivial.so 100000
//! ```

use std::path::Path;
use std::sync::Arc;

use midge::auth::Access;
use midge::plugin::{ClientInfo, Decision, Plugin, PluginOptions, ShardPlugins};
use midge::protocol::ProtocolVersion;

#[path = "support/deny_one.rs"]
mod deny_one;

use deny_one::DenyOne as Trivial;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "none".into());
    let checks: usize = args.next().map_or(100_000, |a| a.parse().expect("CHECKS"));
    let plugins: Vec<Arc<dyn Plugin>> = match kind.as_str() {
        "none" => Vec::new(),
        "rust" => vec![Arc::new(Trivial)],
        path => vec![
            midge::plugin::cabi::load(Path::new(path), &PluginOptions::new())
                .unwrap_or_else(|e| panic!("{e}")),
        ],
    };
    let mut chain = ShardPlugins::new(&plugins, 0, 1);
    let client = ClientInfo {
        client_id: "bench-client",
        username: Some("user"),
        protocol: ProtocolVersion::V311,
        peer: std::env::var("NOPEER")
            .is_err()
            .then(|| "127.0.0.1:40000".parse().unwrap()),
        listener_port: 1883,
        certificate_identity: None,
    };
    let topic = String::from("site/7/device-42/telemetry");
    let mut passed = 0usize;
    for _ in 0..checks {
        let topic = std::hint::black_box(topic.as_str());
        if chain.acl_check(&client, topic, Access::Read) == Decision::Pass {
            passed += 1;
        }
    }
    println!("{kind}: {checks} checks, {passed} passed");
}
