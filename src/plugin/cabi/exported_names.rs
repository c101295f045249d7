// The functions midge exports to the C plugins it loads: one list, read by the library
// (`cabi::EXPORTED`, `cabi::mosq::EXPORTED`) and by build.rs (which `include!`s this file
// to pass `-u` and `--export-dynamic-symbol` for each), so the two cannot drift apart.

/// midge's own C ABI (src/plugin/cabi/exports.rs).
pub const MIDGE_EXPORTED: &[&str] = &[
    "midge_callback_register",
    "midge_callback_unregister",
    "midge_message_set_topic",
    "midge_message_set_payload",
    "midge_complete_basic_auth",
    "midge_complete_extended_auth",
    "midge_log",
];

/// What mosquitto 2.0 plugins call (`nm -D --undefined-only`; src/plugin/cabi/mosq.rs).
pub const MOSQUITTO_EXPORTED: &[&str] = &[
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
