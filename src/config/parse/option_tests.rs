//! Every option of mosquitto.conf(5) and of mosquitto's example file, one at a time: a valid
//! value is accepted, an invalid one is refused with `FILE:LINE: problem`; options midge
//! refuses by design (plugins, PSK, engines) are refused with an error that says so. Bridge
//! options (`connection` blocks) are their own work and are listed apart.

use super::super::Config;

/// (option, a valid value, an invalid value). Lines before the option (`CONTEXT`) make
/// options that need a listener block or a TLS listener valid on their own.
const OPTIONS: &[(&str, &str, &str)] = &[
    ("acl_file", "/etc/mosquitto/acl", ""),
    ("allow_anonymous", "true", "maybe"),
    ("allow_duplicate_messages", "false", "maybe"),
    ("allow_zero_length_clientid", "false", "maybe"),
    (
        "auto_id_prefix",
        "dev-",
        "a-prefix-of-more-than-fifty-characters-is-refused-here",
    ),
    ("auth_plugin", "/usr/lib/auth.so", ""),
    ("autosave_interval", "1800", "soon"),
    ("autosave_on_changes", "false", "maybe"),
    ("bind_address", "127.0.0.1", "not-an-address"),
    ("bind_interface", "lo", "a/b"),
    ("cafile", "/etc/mosquitto/ca.crt", ""),
    ("capath", "/etc/mosquitto/ca_certificates", ""),
    ("certfile", "/etc/mosquitto/server.crt", ""),
    ("check_retain_source", "true", "maybe"),
    ("ciphers", "ECDHE-RSA-AES128-GCM-SHA256", "NOPE"),
    ("ciphers_tls1.3", "TLS_AES_128_GCM_SHA256", "NOPE"),
    ("clientid_prefixes", "dev-", ""),
    ("connection_messages", "false", "maybe"),
    ("crlfile", "/etc/mosquitto/crl.pem", ""),
    ("dhparamfile", "/etc/mosquitto/dh.pem", ""),
    ("enable_proxy_protocol", "2", "3"),
    ("http_dir", "/var/www", ""),
    ("keyfile", "/etc/mosquitto/server.key", ""),
    ("listener", "1884", "70000"),
    ("log_dest", "syslog", "printer"),
    ("log_facility", "5", "8"),
    ("log_timestamp", "false", "maybe"),
    ("log_timestamp_format", "%Y-%m-%dT%H:%M:%S", ""),
    ("log_type", "all", "verbose"),
    ("max_connections", "10", "-2"),
    ("max_inflight_bytes", "100000", "-1"),
    ("max_inflight_messages", "40", "70000"),
    ("max_keepalive", "60", "70000"),
    ("max_packet_size", "1000", "10"),
    ("max_qos", "1", "3"),
    ("maximum_qos", "1", "3"),
    ("max_queued_bytes", "100000", "-1"),
    ("max_queued_messages", "100", "-1"),
    ("max_topic_alias", "10", "70000"),
    ("memory_limit", "1000000", "-1"),
    ("message_size_limit", "1000", "-1"),
    ("mount_point", "site/a/", "site/#"),
    ("password_file", "/etc/mosquitto/passwd", ""),
    ("per_listener_settings", "true", "maybe"),
    ("persistence", "true", "maybe"),
    ("persistence_file", "mosquitto.db", "a/b.db"),
    ("persistence_location", "/var/lib/mosquitto/", ""),
    ("persistent_client_expiration", "14d", "14x"),
    ("pid_file", "/run/mosquitto/mosquitto.pid", ""),
    ("port", "1884", "70000"),
    ("protocol", "mqtt", "http"),
    ("proxy_protocol", "true", "maybe"),
    ("proxy_protocol_v2_require_tls", "true", "maybe"),
    ("queue_qos0_messages", "false", "maybe"),
    ("require_certificate", "false", "maybe"),
    ("retain_available", "false", "maybe"),
    ("set_tcp_nodelay", "true", "maybe"),
    ("socket_domain", "ipv4", "ipv5"),
    ("sys_interval", "10", "-1"),
    ("tls_keyform", "pem", "engine"),
    ("tls_version", "tlsv1.2", "tlsv1.0"),
    ("upgrade_outgoing_qos", "true", "maybe"),
    ("use_identity_as_username", "false", "maybe"),
    ("use_subject_as_username", "false", "maybe"),
    ("use_username_as_clientid", "true", "maybe"),
    ("user", "mosquitto", ""),
    ("websockets_headers_size", "4096", "-1"),
    ("websockets_log_level", "0", "x"),
    ("websockets_trust_x_forwarded_for", "true", "maybe"),
];

/// Options midge refuses with a clear error whatever their value, and a word the error has.
const REFUSED: &[(&str, &str)] = &[
    ("psk_file", "not supported"),
    ("psk_hint", "not supported"),
    ("tls_engine", "not supported"),
    ("tls_engine_kpass_sha1", "not supported"),
];

/// Bridge options: a `connection` block's, done by the bridge work (not here).
const BRIDGE: &[&str] = &[
    "address",
    "addresses",
    "cleansession",
    "connection",
    "idle_timeout",
    "keepalive_interval",
    "local_cleansession",
    "local_clientid",
    "local_password",
    "local_username",
    "notification_topic",
    "notifications",
    "notifications_local_only",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "restart_timeout",
    "round_robin",
    "start_type",
    "threshold",
    "topic",
    "try_private",
];

/// What must come first for `option` to be valid alone (a TLS listener for TLS options).
fn context(option: &str) -> &'static str {
    match option {
        "cafile"
        | "capath"
        | "crlfile"
        | "ciphers"
        | "ciphers_tls1.3"
        | "tls_version"
        | "dhparamfile"
        | "use_identity_as_username"
        | "use_subject_as_username"
        | "require_certificate"
        | "tls_keyform" => "listener 8883\ncertfile /c.pem\nkeyfile /k.pem\n",
        "certfile" => "listener 8883\nkeyfile /k.pem\n",
        "keyfile" => "listener 8883\ncertfile /c.pem\n",
        "bind_interface"
        | "socket_domain"
        | "protocol"
        | "mount_point"
        | "proxy_protocol"
        | "enable_proxy_protocol" => "listener 8883\n",
        "proxy_protocol_v2_require_tls" => "listener 8883\nenable_proxy_protocol 2\n",
        "websockets_trust_x_forwarded_for" => "listener 8883\nprotocol websockets\n",
        _ => "",
    }
}

#[test]
fn every_option_takes_a_valid_value_and_refuses_an_invalid_one() {
    for (option, valid, invalid) in OPTIONS {
        let ctx = context(option);
        let line = ctx.lines().count() + 1;
        let text = format!("{ctx}{option} {valid}\n");
        if let Err(e) = Config::parse_str(&text, "t.conf") {
            panic!("'{option} {valid}' refused: {e}");
        }
        let text = format!("{ctx}{option} {invalid}\n");
        match Config::parse_str(&text, "t.conf") {
            Ok(c) => panic!("'{option} {invalid}' accepted: {c:?}"),
            Err(e) => {
                let e = e.to_string();
                let (at, problem) = e.split_at(e.find(": ").expect("FILE:LINE: problem"));
                assert_eq!(at, format!("t.conf:{line}"), "{e}");
                assert!(problem.len() > 4, "{e}");
            }
        }
    }
}

#[test]
fn options_midge_does_not_have_are_refused_saying_why() {
    for (option, word) in REFUSED {
        let e = Config::parse_str(&format!("{option} x\n"), "t.conf")
            .expect_err(option)
            .to_string();
        assert!(e.starts_with("t.conf:1: ") && e.contains(word), "{e}");
    }
}

/// Every option named in mosquitto's example file and its man page is in one of the lists
/// above (when those files are installed: Debian's mosquitto package).
#[test]
fn the_lists_cover_mosquittos_documentation() {
    let mut names = Vec::new();
    if let Ok(example) = std::fs::read_to_string("/usr/share/doc/mosquitto/examples/mosquitto.conf")
    {
        // An option is commented out as `#name value` or `#name`: no space after the `#`.
        for line in example.lines() {
            let Some(rest) = line.strip_prefix('#') else {
                continue;
            };
            let word = rest.split(' ').next().unwrap_or("");
            let is_name =
                |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.".contains(c);
            if !word.is_empty()
                && word.starts_with(|c: char| c.is_ascii_lowercase())
                && word.chars().all(is_name)
            {
                names.push(word.to_owned());
            }
        }
        assert!(names.len() > 80, "{names:?}");
    }
    let known = |n: &str| {
        OPTIONS.iter().any(|(o, _, _)| *o == n)
            || REFUSED.iter().any(|(o, _)| *o == n)
            || BRIDGE.contains(&n)
            || n.starts_with("bridge_")
            || n == "include_dir"
    };
    let missing: Vec<&String> = names.iter().filter(|n| !known(n)).collect();
    assert!(missing.is_empty(), "options not covered: {missing:?}");
}
