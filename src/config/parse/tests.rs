//! Unit tests of the mosquitto.conf parser: one per option, one per error text, defaults and
//! include_dir.

use super::super::{Config, Listener, LogDests, WebSocketSettings};
use std::net::SocketAddr;
use std::path::PathBuf;

fn parse(text: &str) -> Config {
    Config::parse_str(text, "t.conf").unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    match Config::parse_str(text, "t.conf") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn addrs(config: &Config) -> Vec<SocketAddr> {
    config.listeners.iter().map(|l| l.addr).collect()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn empty_file_gives_the_defaults() {
    let c = parse("");
    assert_eq!(c, Config::default());
    assert!(c.listeners.is_empty());
    assert_eq!(c.max_keepalive, 65535);
    assert_eq!(c.max_inflight_messages, 20);
    assert_eq!(c.max_queued_messages, 1000);
    assert_eq!(c.max_queued_bytes, 0);
    assert_eq!(c.max_packet_size, 1024 * 1024);
    assert_eq!(c.connect_timeout, 10);
    assert_eq!(c.max_connections_per_ip, 0);
    assert_eq!(c.message_size_limit, 0);
    assert!(c.retain_available);
    assert_eq!(c.log_dest, LogDests::STDERR);
    assert!(c.log_types.is_empty());
    assert_eq!(c.shards, None);
    assert_eq!(c.allow_anonymous, None);
    assert_eq!(c.max_connections, None);
    assert!(!c.per_listener_settings);
    assert!(c.warnings.is_empty());
    assert_eq!(c.source, None);
}

#[test]
fn comments_blank_lines_and_whitespace_are_ignored() {
    let c = parse("# a comment\n\n   \n\t# indented comment\n  max_keepalive   60  \r\n");
    assert_eq!(c.max_keepalive, 60);
}

#[test]
fn listener_without_address_binds_every_interface() {
    let c = parse("listener 1883");
    assert_eq!(addrs(&c), vec![sa("0.0.0.0:1883"), sa("[::]:1883")]);
}

#[test]
fn listener_with_addresses() {
    let c = parse("listener 1883 127.0.0.1\nlistener 1884 ::1\nlistener 1885 [fe80::1]\nlistener 1886 localhost");
    assert_eq!(
        addrs(&c),
        vec![
            sa("127.0.0.1:1883"),
            sa("[::1]:1884"),
            sa("[fe80::1]:1885"),
            sa("127.0.0.1:1886"),
            sa("[::1]:1886")
        ]
    );
}

#[test]
fn listener_trailing_comment_is_ignored() {
    let c = parse("listener 1883 127.0.0.1 # local only");
    assert_eq!(addrs(&c), vec![sa("127.0.0.1:1883")]);
}

#[test]
fn listener_errors() {
    assert_eq!(error("listener"), "t.conf:1: missing value for 'listener'");
    assert_eq!(
        error("listener 70000"),
        "t.conf:1: bad value '70000' for 'listener': expected a whole number from 0 to 65535"
    );
    assert_eq!(
        error("\nlistener 1883 example.com"),
        "t.conf:2: bad value 'example.com' for 'listener': expected an IPv4 or IPv6 address or \
         localhost (host names are not supported yet)"
    );
    assert_eq!(
        error("listener 1 2 3"),
        "t.conf:1: bad value '1 2 3' for 'listener': expected PORT [ADDRESS]"
    );
}

#[test]
fn duplicate_listener_is_an_error() {
    assert_eq!(
        error("listener 1883\nlistener 1883 ::"),
        "t.conf:2: listener [::]:1883 is already defined at t.conf:1"
    );
}

#[test]
fn legacy_port_and_bind_address_make_the_default_listener() {
    assert_eq!(
        addrs(&parse("port 1884")),
        vec![sa("0.0.0.0:1884"), sa("[::]:1884")]
    );
    assert_eq!(
        addrs(&parse("bind_address 127.0.0.1")),
        vec![sa("127.0.0.1:1883")]
    );
    assert_eq!(
        addrs(&parse("bind_address ::1\nport 2000")),
        vec![sa("[::1]:2000")]
    );
    // The default listener comes after the listener blocks, as in mosquitto.
    assert_eq!(
        addrs(&parse("port 1884\nlistener 1885 127.0.0.1")),
        vec![sa("127.0.0.1:1885"), sa("0.0.0.0:1884"), sa("[::]:1884")]
    );
    assert_eq!(
        error("port x"),
        "t.conf:1: bad value 'x' for 'port': expected a whole number from 0 to 65535"
    );
    assert_eq!(
        error("bind_address nowhere"),
        "t.conf:1: bad value 'nowhere' for 'bind_address': expected an IPv4 or IPv6 address or \
         localhost (host names are not supported yet)"
    );
}

#[test]
fn port_twice_warns_and_keeps_the_last() {
    let c = parse("port 1\nport 2");
    assert_eq!(addrs(&c), vec![sa("0.0.0.0:2"), sa("[::]:2")]);
    assert_eq!(
        c.warnings,
        vec!["t.conf:2: 'port' given more than once: the last one is used"]
    );
}

#[test]
fn allow_anonymous_global() {
    let c = parse("allow_anonymous true\nlistener 1883");
    assert_eq!(c.allow_anonymous, Some(true));
    assert!(c.listeners.iter().all(|l| l.allow_anonymous.is_none()));
    // Without per_listener_settings, the last value anywhere wins (mosquitto).
    let c = parse("allow_anonymous true\nlistener 1883\nallow_anonymous false");
    assert_eq!(c.allow_anonymous, Some(false));
    assert_eq!(
        error("allow_anonymous yes"),
        "t.conf:1: bad value 'yes' for 'allow_anonymous': expected true or false"
    );
    assert_eq!(
        error("allow_anonymous"),
        "t.conf:1: missing value for 'allow_anonymous'"
    );
}

#[test]
fn allow_anonymous_per_listener() {
    let c = parse(
        "per_listener_settings true\nlistener 1883 127.0.0.1\nallow_anonymous true\n\
         listener 1884 127.0.0.1\nlistener 1885 127.0.0.1\nallow_anonymous false",
    );
    assert!(c.per_listener_settings);
    assert_eq!(c.allow_anonymous, None);
    let anon: Vec<_> = c.listeners.iter().map(|l| l.allow_anonymous).collect();
    assert_eq!(anon, vec![Some(true), None, Some(false)]);
}

#[test]
fn allow_anonymous_per_listener_before_any_listener_sets_the_default_listener() {
    // As mosquitto: this creates the default listener (port 1883, every interface).
    let c = parse("per_listener_settings true\nallow_anonymous true\nbind_address 127.0.0.1");
    assert_eq!(
        c.listeners,
        vec![Listener {
            addr: sa("127.0.0.1:1883"),
            allow_anonymous: Some(true),
            tls: None,
            password_file: None,
            acl_file: None,
            websockets: None,
            bind_interface: None,
            proxy_protocol: None,
            mount_point: None,
        }]
    );
}

#[test]
fn per_listener_settings_must_come_first() {
    assert_eq!(
        error("allow_anonymous true\nper_listener_settings true"),
        "t.conf:2: per_listener_settings must be set before any other security settings"
    );
    // Once set it stays set.
    assert!(parse("per_listener_settings true\nper_listener_settings false").per_listener_settings);
    assert!(!parse("per_listener_settings false").per_listener_settings);
    assert_eq!(
        error("per_listener_settings maybe"),
        "t.conf:1: bad value 'maybe' for 'per_listener_settings': expected true or false"
    );
}

#[test]
fn max_keepalive() {
    assert_eq!(parse("max_keepalive 0").max_keepalive, 0);
    assert_eq!(parse("max_keepalive 65535").max_keepalive, 65535);
    assert_eq!(
        error("max_keepalive 65536"),
        "t.conf:1: bad value '65536' for 'max_keepalive': expected a whole number from 0 to 65535"
    );
    assert_eq!(
        error("max_keepalive -1"),
        "t.conf:1: bad value '-1' for 'max_keepalive': expected a whole number from 0 to 65535"
    );
}

#[test]
fn max_inflight_messages() {
    assert_eq!(
        parse("max_inflight_messages 100").max_inflight_messages,
        100
    );
    assert_eq!(parse("max_inflight_messages 0").max_inflight_messages, 0);
    assert_eq!(
        parse("max_inflight_messages 65535").max_inflight_messages,
        0
    );
    assert_eq!(
        error("max_inflight_messages 65536"),
        "t.conf:1: bad value '65536' for 'max_inflight_messages': expected a whole number from 0 to 65535"
    );
}

#[test]
fn max_queued_messages_and_bytes() {
    let c = parse("max_queued_messages 5\nmax_queued_bytes 1048576");
    assert_eq!(c.max_queued_messages, 5);
    assert_eq!(c.max_queued_bytes, 1048576);
    assert_eq!(
        error("max_queued_messages -5"),
        "t.conf:1: bad value '-5' for 'max_queued_messages': expected a whole number of at least 0"
    );
    assert_eq!(
        error("max_queued_bytes 1k"),
        "t.conf:1: bad value '1k' for 'max_queued_bytes': expected a whole number of at least 0"
    );
}

#[test]
fn memory_limit() {
    assert_eq!(parse("").memory_limit, 0);
    assert_eq!(parse("memory_limit 67108864").memory_limit, 67108864);
    assert_eq!(
        error("memory_limit 64M"),
        "t.conf:1: bad value '64M' for 'memory_limit': expected a whole number of at least 0"
    );
}

#[test]
fn io_backend() {
    use crate::reactor::IoBackend;
    assert_eq!(parse("").io_backend, IoBackend::Epoll);
    assert_eq!(parse("io_backend io_uring").io_backend, IoBackend::IoUring);
    assert_eq!(parse("io_backend auto").io_backend, IoBackend::Auto);
    assert_eq!(parse("io_backend epoll").io_backend, IoBackend::Epoll);
    assert_eq!(
        error("io_backend kqueue"),
        "t.conf:1: bad value 'kqueue' for 'io_backend': expected epoll, io_uring or auto"
    );
}

#[test]
fn shard_handoff() {
    assert!(parse("").shard_handoff);
    assert!(!parse("shard_handoff false").shard_handoff);
    assert_eq!(
        error("shard_handoff maybe"),
        "t.conf:1: bad value 'maybe' for 'shard_handoff': expected true or false"
    );
}

#[test]
fn read_buffer_growth() {
    assert_eq!(parse("").read_buffer_growth, 8 * 1024 * 1024);
    assert_eq!(parse("read_buffer_growth 0").read_buffer_growth, 0);
    assert_eq!(
        parse("read_buffer_growth 1048576").read_buffer_growth,
        1048576
    );
    assert_eq!(
        error("read_buffer_growth -1"),
        "t.conf:1: bad value '-1' for 'read_buffer_growth': expected a whole number of at least 0"
    );
}

#[test]
fn max_packet_size() {
    assert_eq!(parse("max_packet_size 20").max_packet_size, 20);
    assert_eq!(
        parse("max_packet_size 268435460").max_packet_size,
        268435460
    );
    assert_eq!(
        parse("max_packet_size 0").max_packet_size,
        0,
        "protocol maximum"
    );
    assert_eq!(
        error("max_packet_size 19"),
        "t.conf:1: bad value '19' for 'max_packet_size': expected 0 (the protocol maximum) or at least 20"
    );
    assert_eq!(
        error("max_packet_size -1"),
        "t.conf:1: bad value '-1' for 'max_packet_size': expected a whole number from 0 to 4294967295"
    );
}

#[test]
fn connect_timeout_and_max_connections_per_ip() {
    let c = parse("connect_timeout 3\nmax_connections_per_ip 16");
    assert_eq!((c.connect_timeout, c.max_connections_per_ip), (3, 16));
    assert_eq!(parse("connect_timeout 0").connect_timeout, 0, "no limit");
    assert_eq!(
        error("connect_timeout soon"),
        "t.conf:1: bad value 'soon' for 'connect_timeout': expected a whole number from 0 to 4294967295"
    );
    assert_eq!(
        error("max_connections_per_ip -2"),
        "t.conf:1: bad value '-2' for 'max_connections_per_ip': expected a whole number from 0 to 4294967295"
    );
}

#[test]
fn message_size_limit() {
    assert_eq!(parse("message_size_limit 1000").message_size_limit, 1000);
    assert_eq!(
        error("message_size_limit 268435456"),
        "t.conf:1: bad value '268435456' for 'message_size_limit': expected a whole number from 0 to 268435455"
    );
}

#[test]
fn retain_available() {
    assert!(!parse("retain_available false").retain_available);
    assert!(parse("retain_available 1").retain_available);
    assert_eq!(
        error("retain_available no"),
        "t.conf:1: bad value 'no' for 'retain_available': expected true or false"
    );
}

#[test]
fn shards() {
    assert_eq!(parse("shards 4").shards, Some(4));
    assert_eq!(
        error("shards 0"),
        "t.conf:1: bad value '0' for 'shards': expected a whole number from 1 to 65535"
    );
}

#[test]
fn max_connections() {
    assert_eq!(parse("max_connections 100").max_connections, Some(100));
    assert_eq!(parse("max_connections -1").max_connections, None);
    assert!(parse("max_connections 10").warnings.is_empty());
    assert_eq!(
        error("max_connections -2"),
        "t.conf:1: bad value '-2' for 'max_connections': expected a whole number of at least -1"
    );
}

#[test]
fn log_dest() {
    assert_eq!(parse("log_dest stdout").log_dest, LogDests::STDOUT);
    assert_eq!(parse("log_dest stderr").log_dest, LogDests::STDERR);
    assert_eq!(parse("log_dest none").log_dest, LogDests::NONE);
    assert_eq!(
        parse("log_dest stdout\nlog_dest stdout").log_dest,
        LogDests::STDOUT
    );
    assert_eq!(
        parse("log_dest syslog\nlog_dest none\nlog_dest stdout").log_dest,
        LogDests::STDOUT
    );
    // Destinations add up, as in mosquitto; a file path is the rest of the line.
    assert_eq!(
        parse(
            "log_dest stdout\nlog_dest stderr\nlog_dest syslog\nlog_dest topic\n\
               log_dest file /var/log/my logs/m.log"
        )
        .log_dest,
        LogDests {
            stdout: true,
            stderr: true,
            syslog: true,
            topic: true,
            file: Some("/var/log/my logs/m.log".into()),
        }
    );
    assert_eq!(
        error("log_dest file"),
        "t.conf:1: bad value 'file' for 'log_dest': 'log_dest file' needs a path"
    );
    assert_eq!(
        error("log_dest printer"),
        "t.conf:1: bad value 'printer' for 'log_dest': expected stdout, stderr, syslog, topic, none or file PATH"
    );
    assert_eq!(
        error("log_dest stdout stderr"),
        "t.conf:1: bad value 'stdout stderr' for 'log_dest': expected one value"
    );
    assert_eq!(error("log_dest"), "t.conf:1: missing value for 'log_dest'");
}

#[test]
fn log_type_is_repeatable() {
    let c = parse("log_type error\nlog_type warning\nlog_type subscribe\nlog_type all\nlog_type none\nlog_type debug");
    assert_eq!(
        c.log_types,
        vec!["error", "warning", "subscribe", "all", "none", "debug"]
    );
    assert_eq!(
        error("log_type loud"),
        "t.conf:1: bad value 'loud' for 'log_type': expected one of error, warning, notice, \
         information, subscribe, unsubscribe, websockets, internal, debug, all, none"
    );
}

#[test]
fn socket_domain_restricts_the_listener() {
    assert_eq!(
        addrs(&parse("listener 1883\nsocket_domain ipv4")),
        vec![sa("0.0.0.0:1883")]
    );
    assert_eq!(
        addrs(&parse("listener 1883\nsocket_domain ipv6")),
        vec![sa("[::]:1883")]
    );
    assert_eq!(
        addrs(&parse("port 1883\nsocket_domain ipv6")),
        vec![sa("[::]:1883")]
    );
    assert_eq!(
        error("listener 1883 ::1\nsocket_domain ipv4"),
        "t.conf:2: bad value 'ipv4' for 'socket_domain': the listener's address is not of this family"
    );
    assert_eq!(
        error("socket_domain ipv5"),
        "t.conf:1: bad value 'ipv5' for 'socket_domain': expected ipv4 or ipv6"
    );
}

#[test]
fn proxy_protocol_and_forwarded_for_are_listener_options() {
    use crate::config::ProxyProtocol;
    let c = parse(
        "listener 1883\nproxy_protocol true\nlistener 1884\nenable_proxy_protocol 1\n\
         listener 1885\nenable_proxy_protocol 2\nproxy_protocol_v2_require_tls true\n\
         listener 1886\nlistener 9001\nprotocol websockets\nwebsockets_trust_x_forwarded_for true\n\
         listener 9002\nprotocol websockets\nproxy_protocol false",
    );
    let proxy: Vec<_> = c.listeners.iter().map(|l| l.proxy_protocol).collect();
    let v1 = ProxyProtocol {
        v2: false,
        ..ProxyProtocol::ANY
    };
    let v2_tls = ProxyProtocol {
        v1: false,
        v2: true,
        require_tls: true,
    };
    // Each listener's two sockets (0.0.0.0 and ::) share its options.
    let expected = [
        Some(ProxyProtocol::ANY),
        Some(v1),
        Some(v2_tls),
        None,
        None,
        None,
    ];
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(proxy[2 * i], *want, "listener {i}");
        assert_eq!(proxy[2 * i + 1], *want, "listener {i}");
    }
    let trust: Vec<_> = c
        .listeners
        .iter()
        .map(|l| l.websockets.as_ref().map(|w| w.trust_x_forwarded_for))
        .collect();
    assert_eq!(trust[8], Some(true));
    assert_eq!(trust[10], Some(false));
    assert_eq!(
        error("listener 1883\nenable_proxy_protocol 3"),
        "t.conf:2: bad value '3' for 'enable_proxy_protocol': expected a whole number from 1 to 2"
    );
    assert!(
        error("listener 1883\nenable_proxy_protocol 1\nproxy_protocol_v2_require_tls true")
            .contains("proxy_protocol_v2_require_tls needs")
    );
    let c = parse("listener 1883\nwebsockets_trust_x_forwarded_for true");
    assert!(c.warnings[0].contains("only applies to a 'protocol websockets'"));
}

#[test]
fn websocket_listeners() {
    let c = parse(
        "websockets_headers_size 8192\nlistener 1883\nlistener 9001 127.0.0.1\n\
         protocol websockets\nhttp_dir /srv/www\nlistener 9443 127.0.0.1\nprotocol websockets\n\
         certfile s.crt\nkeyfile s.key",
    );
    assert_eq!(c.websockets_headers_size, 8192);
    let ws: Vec<_> = c.listeners.iter().map(|l| l.websockets.clone()).collect();
    assert_eq!(ws[0], None);
    assert_eq!(ws[1], None);
    let dir = Some(PathBuf::from("/srv/www"));
    assert_eq!(
        ws[2],
        Some(WebSocketSettings {
            http_dir: dir,
            trust_x_forwarded_for: false
        })
    );
    assert_eq!(ws[3], Some(WebSocketSettings::default()));
    assert!(
        c.listeners[3].tls.is_some(),
        "TLS options on a websockets listener: wss"
    );
    assert_eq!(
        parse("websockets_headers_size 0").websockets_headers_size,
        crate::config::DEFAULT_WEBSOCKETS_HEADERS_SIZE
    );
    let c = parse("listener 1883\nhttp_dir /srv/www");
    assert_eq!(c.listeners[0].websockets, None);
    assert!(
        c.warnings[0].contains("'http_dir' only applies"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn protocol() {
    assert_eq!(
        addrs(&parse("listener 1883 ::1\nprotocol mqtt")),
        vec![sa("[::1]:1883")]
    );
    assert_eq!(
        error("protocol http"),
        "t.conf:1: bad value 'http' for 'protocol': expected mqtt or websockets"
    );
}

#[test]
fn options_without_effect_warn_once_saying_what_midge_does() {
    let text = "persistence_file mosquitto.db\nautosave_interval 1800\nautosave_on_changes false\n\
                allow_duplicate_messages false";
    let c = parse(text);
    assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
    for (i, (w, o)) in c
        .warnings
        .iter()
        .zip([
            "persistence_file",
            "autosave_interval",
            "autosave_on_changes",
            "allow_duplicate_messages",
        ])
        .enumerate()
    {
        assert!(
            w.starts_with(&format!("t.conf:{}: '{o}' has no effect in midge: ", i + 1)),
            "{w}"
        );
    }
    assert_eq!(
        c,
        Config {
            warnings: c.warnings.clone(),
            ..Config::default()
        }
    );
}

#[test]
fn ignored_options_still_check_their_values() {
    assert_eq!(
        error("persistence maybe"),
        "t.conf:1: bad value 'maybe' for 'persistence': expected true or false"
    );
    assert_eq!(
        error("sys_interval 70000"),
        "t.conf:1: bad value '70000' for 'sys_interval': expected a whole number from 0 to 65535"
    );
    assert_eq!(error("pid_file"), "t.conf:1: missing value for 'pid_file'");
    // Text options take the rest of the line, spaces included.
    let c = parse("log_timestamp_format %Y-%m-%d %H:%M:%S");
    assert_eq!(
        c.host.log_timestamp_format.as_deref(),
        Some("%Y-%m-%d %H:%M:%S")
    );
}

#[test]
fn unknown_option_is_an_error() {
    assert_eq!(
        error("\n\nfrobnicate 1"),
        "t.conf:3: unknown option 'frobnicate'"
    );
    assert_eq!(error("Port 1883"), "t.conf:1: unknown option 'Port'");
}

#[test]
fn extra_values_are_an_error() {
    assert_eq!(
        error("max_keepalive 60 120"),
        "t.conf:1: bad value '60 120' for 'max_keepalive': expected one value"
    );
    // ...but an end-of-line comment is not a value.
    assert_eq!(parse("max_keepalive 60 # a minute").max_keepalive, 60);
}

#[test]
fn missing_file_is_an_error() {
    let err = Config::from_file("/nonexistent/midge.conf")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/nonexistent/midge.conf: cannot read: No such file or directory"),
        "{err}"
    );
}

#[test]
fn from_file_records_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.conf");
    std::fs::write(&path, "listener 1883 127.0.0.1\nbogus\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert_eq!(err, format!("{}:2: unknown option 'bogus'", path.display()));
    std::fs::write(&path, "listener 1883 127.0.0.1\n").unwrap();
    let c = Config::from_file(&path).unwrap();
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    assert_eq!(addrs(&c), vec![sa("127.0.0.1:1883")]);
}

#[test]
fn include_dir_reads_conf_files_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let inc = dir.path().join("conf.d");
    std::fs::create_dir(&inc).unwrap();
    std::fs::write(inc.join("b.conf"), "listener 1884 127.0.0.1\n").unwrap();
    std::fs::write(
        inc.join("A.conf"),
        "listener 1883 127.0.0.1\nmax_keepalive 10\n",
    )
    .unwrap();
    std::fs::write(inc.join("c.conf"), "max_keepalive 30\n").unwrap();
    std::fs::write(inc.join("ignored.txt"), "garbage\n").unwrap();
    std::fs::write(inc.join(".conf"), "garbage\n").unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(
        &main,
        format!(
            "max_keepalive 5\ninclude_dir {}\nlistener 1885 ::1\n",
            inc.display()
        ),
    )
    .unwrap();
    let c = Config::from_file(&main).unwrap();
    assert_eq!(c.max_keepalive, 30);
    assert_eq!(
        addrs(&c),
        vec![sa("127.0.0.1:1883"), sa("127.0.0.1:1884"), sa("[::1]:1885")]
    );
}

#[test]
fn include_dir_errors_name_the_included_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.conf"), "\nmax_keepalive nope\n").unwrap();
    let err = error(&format!("include_dir {}", dir.path().display()));
    assert_eq!(
        err,
        format!(
            "{}:2: bad value 'nope' for 'max_keepalive': expected a whole number from 0 to 65535",
            dir.path().join("x.conf").display()
        )
    );
    let missing = dir.path().join("missing");
    let err = error(&format!("include_dir {}", missing.display()));
    assert!(
        err.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{err}"
    );
    assert_eq!(
        error("include_dir"),
        "t.conf:1: missing value for 'include_dir'"
    );
}

#[test]
fn each_file_starts_outside_any_listener_block() {
    // As mosquitto: an included file's listener options before its own `listener` line apply to
    // the default listener, not to the includer's current block.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.conf"), "socket_domain ipv4\n").unwrap();
    let c = parse(&format!(
        "listener 1884\ninclude_dir {}",
        dir.path().display()
    ));
    assert_eq!(
        addrs(&c),
        vec![sa("0.0.0.0:1884"), sa("[::]:1884"), sa("0.0.0.0:1883")]
    );
}

#[test]
fn nested_include_dir_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.conf");
    std::fs::write(&x, format!("include_dir {}\n", dir.path().display())).unwrap();
    let c = parse(&format!("include_dir {}", dir.path().display()));
    assert_eq!(
        c.warnings,
        vec![format!(
            "{}:1: include_dir in an included file is ignored (as mosquitto does)",
            x.display()
        )]
    );
}

#[test]
fn override_port_replaces_every_listener_port() {
    let mut c = parse("listener 1883\nlistener 1884 127.0.0.1\nlistener 1885 127.0.0.1");
    c.override_port(2000);
    assert_eq!(
        addrs(&c),
        vec![sa("0.0.0.0:2000"), sa("[::]:2000"), sa("127.0.0.1:2000")]
    );
    let mut c = Config::default();
    c.override_port(2001);
    assert_eq!(addrs(&c), vec![sa("127.0.0.1:2001"), sa("[::1]:2001")]);
}

#[test]
fn a_typical_mosquitto_conf_loads() {
    let c = parse(
        "# Place your local configuration in /etc/mosquitto/conf.d/\n\
         pid_file /run/mosquitto/mosquitto.pid\n\
         persistence true\n\
         persistence_location /var/lib/mosquitto/\n\
         log_dest stdout\n\
         log_type error\n\
         log_type warning\n\
         listener 1883 0.0.0.0\n\
         allow_anonymous true\n\
         max_inflight_messages 40\n",
    );
    assert_eq!(addrs(&c), vec![sa("0.0.0.0:1883")]);
    assert_eq!(c.allow_anonymous, Some(true));
    assert_eq!(c.log_dest, LogDests::STDOUT);
    assert_eq!(c.log_types, vec!["error", "warning"]);
    assert_eq!(c.max_inflight_messages, 40);
    assert!(c.persistence);
    assert_eq!(
        c.persistence_dir(),
        Some(std::path::PathBuf::from("/var/lib/mosquitto/"))
    );
    assert_eq!(
        c.host.pid_file.as_deref(),
        Some(std::path::Path::new("/run/mosquitto/mosquitto.pid"))
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

// ---------------------------------------------------------------- TLS listener options

#[test]
fn tls_options_apply_to_their_listener_block() {
    use super::super::{TlsSettings, TlsVersion};
    let c = parse(
        "listener 1883 127.0.0.1\n\
         listener 8883 127.0.0.1\n\
         certfile /etc/midge/server.pem\n\
         keyfile /etc/midge/server key.pem\n\
         cafile /etc/midge/ca.pem\n\
         capath /etc/ssl/certs\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         tls_version tlsv1.3\n\
         ciphers ECDHE-RSA-AES128-GCM-SHA256:TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384\n\
         ciphers_tls1.3 TLS_AES_128_GCM_SHA256\n",
    );
    assert_eq!(c.listeners[0].tls, None);
    let tls = c.listeners[1].tls.clone().expect("TLS listener");
    assert_eq!(
        tls,
        TlsSettings {
            certfile: "/etc/midge/server.pem".into(),
            // Paths take the rest of the line, spaces included, as in mosquitto.
            keyfile: "/etc/midge/server key.pem".into(),
            cafile: Some("/etc/midge/ca.pem".into()),
            capath: Some("/etc/ssl/certs".into()),
            require_certificate: true,
            use_identity_as_username: true,
            use_subject_as_username: false,
            min_version: TlsVersion::V13,
            ciphers: Some(vec![
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into(),
            ]),
            ciphers_tls13: Some(vec!["TLS_AES_128_GCM_SHA256".into()]),
            crlfile: None,
        }
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn tls_options_outside_a_block_configure_the_default_listener() {
    let c = parse("certfile /s.pem\nkeyfile /s.key\n");
    assert_eq!(c.listeners.len(), 2, "0.0.0.0 and :: on 1883");
    assert!(c.listeners.iter().all(|l| l.tls.is_some()));
}

#[test]
fn tls_option_errors() {
    assert_eq!(
        error("listener 8883\ncertfile /s.pem\n"),
        "t.conf:2: a TLS listener needs both certfile and keyfile (TLS options were given without them)"
    );
    assert_eq!(
        error("listener 8883\ncafile /ca.pem\nkeyfile /s.key\n"),
        "t.conf:2: a TLS listener needs both certfile and keyfile (TLS options were given without them)"
    );
    assert_eq!(
        error("listener 8883\ncertfile /s.pem\nkeyfile /s.key\nrequire_certificate true\n"),
        "t.conf:4: require_certificate true needs cafile or capath"
    );
    assert_eq!(
        error("listener 8883\nuse_identity_as_username true\nuse_subject_as_username true\n"),
        "t.conf:3: use_identity_as_username and use_subject_as_username cannot both be true"
    );
    assert_eq!(
        error("listener 8883\ntls_version tlsv1.0\n"),
        "t.conf:2: bad value 'tlsv1.0' for 'tls_version': expected tlsv1.2 or tlsv1.3"
    );
    assert_eq!(
        error("listener 8883\ncertfile\n"),
        "t.conf:2: missing value for 'certfile'"
    );
    assert_eq!(
        error("listener 8883\nrequire_certificate maybe\n"),
        "t.conf:2: bad value 'maybe' for 'require_certificate': expected true or false"
    );
    let e = error("listener 8883\nciphers ECDHE-RSA-AES128-GCM-SHA256:RC4-MD5\n");
    assert!(
        e.starts_with(
            "t.conf:2: bad value 'ECDHE-RSA-AES128-GCM-SHA256:RC4-MD5' for 'ciphers': \
             unknown or unsupported cipher suite 'RC4-MD5'; midge (rustls) supports "
        ),
        "{e}"
    );
    let e = error("listener 8883\nciphers TLS_AES_128_GCM_SHA256\n");
    assert!(e.contains("(a TLS 1.3 suite: use ciphers_tls1.3)"), "{e}");
    let e = error("listener 8883\nciphers_tls1.3 ECDHE-RSA-AES128-GCM-SHA256\n");
    assert!(e.contains("unknown or unsupported cipher suite"), "{e}");
    assert_eq!(
        error("listener 8883\npsk_hint hint\n"),
        "t.conf:2: 'psk_hint' is not supported by midge yet"
    );
}

#[test]
fn tls_warnings() {
    let c = parse(
        "listener 8883\ncertfile /s.pem\nkeyfile /s.key\ntls_version tlsv1.1\n\
         use_identity_as_username true\n",
    );
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("t.conf:4: TLS 1.1 is not supported"));
    assert!(c.warnings[1].starts_with("t.conf:5: without 'require_certificate true'"));
}

#[test]
fn persistence_options() {
    use crate::store::SyncPolicy;
    use std::time::Duration;
    let c = parse("");
    assert!(!c.persistence);
    assert_eq!(c.persistence_dir(), None);
    assert_eq!(c.persistence_sync, SyncPolicy::EveryBatch);
    let c = parse("persistence true");
    assert_eq!(c.persistence_dir(), Some(std::path::PathBuf::from(".")));
    assert!(c.warnings.is_empty());
    let c = parse("persistence 1\npersistence_location /var/lib/midge\npersistence_sync os");
    assert_eq!(c.persistence_location, Some("/var/lib/midge".into()));
    assert_eq!(c.persistence_sync, SyncPolicy::Os);
    let c = parse("persistence_sync interval 250 # a comment");
    assert_eq!(
        c.persistence_sync,
        SyncPolicy::Interval(Duration::from_millis(250))
    );
    assert_eq!(
        parse("persistence_sync every-batch").persistence_sync,
        SyncPolicy::EveryBatch
    );
    assert_eq!(
        error("persistence_sync sometimes"),
        "t.conf:1: bad value 'sometimes' for 'persistence_sync': expected every-batch, os or \
         interval MS"
    );
    assert_eq!(
        error("persistence_sync interval 0"),
        "t.conf:1: bad value '0' for 'persistence_sync': expected a whole number from 1 to 3600000"
    );
    assert!(error("persistence_sync interval").contains("needs milliseconds"));
    assert!(error("persistence_sync").contains("persistence_sync"));
    assert!(error("persistence_location").contains("persistence_location"));
}

#[test]
fn topic_limits_and_subscriptions_per_client() {
    let c = parse("");
    assert_eq!(c.max_topic_levels, 200);
    assert_eq!(c.max_topic_length, 65535);
    assert_eq!(c.max_subscriptions_per_client, 10000);
    let c = parse("max_topic_levels 5000\nmax_topic_length 100\nmax_subscriptions_per_client 0");
    assert_eq!(c.max_topic_levels, 5000);
    assert_eq!(c.max_topic_length, 100);
    assert_eq!(c.max_subscriptions_per_client, 0);
    assert_eq!(
        error("max_topic_levels 0"),
        "t.conf:1: bad value '0' for 'max_topic_levels': expected a whole number of at least 1"
    );
    assert!(error("max_topic_length 65536").starts_with("t.conf:1: bad value '65536'"));
    assert!(error("max_subscriptions_per_client -1").starts_with("t.conf:1: bad value '-1'"));
}

#[test]
fn cluster_options_are_read_and_checked_together() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let c = parse(&format!(
        "cluster_nats_url nats://127.0.0.1:4222\ncluster_replicas 3\ncluster_node_timeout 5\n\
         cluster_nats_user u\ncluster_nats_password p\ncluster_nats_cafile {}\n",
        ca.display()
    ));
    assert_eq!(c.cluster_replicas, 3);
    assert_eq!(c.cluster_node_timeout, 5);
    let auth = &c.cluster_nats_auth;
    assert_eq!(
        (auth.user.as_deref(), auth.password.as_deref()),
        (Some("u"), Some("p"))
    );
    assert_eq!(auth.cafile.as_deref(), Some(ca.as_path()));
    assert_eq!(
        error("cluster_nats_user u\n"),
        "t.conf:1: cluster_nats_user and cluster_nats_password go together"
    );
    let e = error("cluster_nats_credentials /nonexistent/x.creds\n");
    assert!(
        e.starts_with("t.conf:1: ") && e.contains("cannot read it"),
        "{e}"
    );
    assert!(error("cluster_replicas 7\n").starts_with("t.conf:1: "));
    assert!(error("cluster_node_timeout 1\n").starts_with("t.conf:1: "));
}
