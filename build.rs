//! Exports the functions a C plugin calls back (`midge_callback_register`, ...; see
//! src/plugin/cabi/exports.rs) from every linked midge binary (the broker, tests, examples),
//! so the dynamic linker resolves them when the plugin is loaded. `-u` makes the linker pull
//! them in even where nothing in the binary calls them; `--export-dynamic-symbol` puts them
//! in the dynamic symbol table (what `-rdynamic` would do for every symbol).

/// Keep in step with `midge::plugin::cabi::EXPORTED` (a test compares them).
const EXPORTED: &[&str] = &[
    "midge_callback_register",
    "midge_callback_unregister",
    "midge_message_set_topic",
    "midge_message_set_payload",
    "midge_complete_basic_auth",
    "midge_complete_extended_auth",
    "midge_log",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    for name in EXPORTED {
        println!("cargo:rustc-link-arg=-Wl,-u,{name}");
        println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol={name}");
    }
}
