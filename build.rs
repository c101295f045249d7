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
    // src/plugin/cabi/mosq.rs: what mosquitto 2.0 plugins call (`nm -D --undefined-only`).
    "mosquitto_callback_register",
    "mosquitto_callback_unregister",
    "mosquitto_log_printf",
    "mosquitto_malloc",
    "mosquitto_calloc",
    "mosquitto_free",
    "mosquitto_strdup",
    "mosquitto_client_id",
    "mosquitto_client_username",
    "mosquitto_broker_publish",
    "mosquitto_kick_client_by_username",
    "mosquitto_sub_topic_check",
    "mosquitto_topic_matches_sub",
    "mosquitto_validate_utf8",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/plugin/cabi/mosq_log.c");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    // mosquitto_log_printf is variadic, which stable Rust cannot define: a few lines of C.
    cc::Build::new()
        .file("src/plugin/cabi/mosq_log.c")
        .warnings(true)
        .compile("midge_mosq_log");
    for name in EXPORTED {
        println!("cargo:rustc-link-arg=-Wl,-u,{name}");
        println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol={name}");
    }
}
