//! Exports the functions a C plugin calls back (`midge_callback_register`, ...; see
//! src/plugin/cabi/exports.rs) from every linked midge binary (the broker, tests, examples),
//! so the dynamic linker resolves them when the plugin is loaded. `-u` makes the linker pull
//! them in even where nothing in the binary calls them; `--export-dynamic-symbol` puts them
//! in the dynamic symbol table (what `-rdynamic` would do for every symbol).

// MIDGE_EXPORTED and MOSQUITTO_EXPORTED, the lists the library uses too.
include!("src/plugin/cabi/exported_names.rs");

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
    for name in MIDGE_EXPORTED.iter().chain(MOSQUITTO_EXPORTED) {
        println!("cargo:rustc-link-arg=-Wl,-u,{name}");
        println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol={name}");
    }
}
