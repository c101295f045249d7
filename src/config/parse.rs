//! The mosquitto.conf-syntax parser: text (or a file and its `include_dir`s) -> [`Config`].
//!
//! The syntax is mosquitto's: one option per line, `OPTION VALUE...`, blank lines and lines
//! whose first non-blank character is `#` are ignored. A word starting with `#` after the values
//! of a non-text option starts a comment (mosquitto does this for `listener`; midge everywhere),
//! while text options (paths, formats) take the rest of the line verbatim, as mosquitto does.
//!
//! Semantics follow mosquitto 2 (src/conf.c), including the order rules:
//! - `listener` starts a listener block; listener options (`allow_anonymous` under
//!   `per_listener_settings true`, `socket_domain`, `protocol`, the TLS options `certfile`,
//!   `keyfile`, `cafile`, `capath`, `require_certificate`, `use_identity_as_username`,
//!   `use_subject_as_username`, `tls_version`, `ciphers`, `ciphers_tls1.3`, and the
//!   WebSocket listener's `http_dir`) apply to the current block.
//!   As in mosquitto, every file (the main one and each included one) starts outside any block.
//! - Listener options given outside a block, and the legacy `port`/`bind_address`, configure the
//!   *default listener*; it exists only if one of them was said (mosquitto creates it the same
//!   way), is bound to `bind_address` or to every interface, on `port` or 1883.
//! - `per_listener_settings true` must come before any `allow_anonymous`, and cannot be undone.
//!
//! Every error names `FILE:LINE`; the first one stops parsing.

use std::path::{Path, PathBuf};

use crate::reactor::IoBackend;

use super::ciphers::{tls12_cipher, tls13_cipher, TLS12_CIPHERS, TLS13_CIPHERS};
use super::{
    Config, Listener, LogDests, ProxyProtocol, TlsSettings, TlsVersion, WebSocketSettings,
};

/// Largest PUBLISH payload MQTT can carry (mosquitto's `MQTT_MAX_PAYLOAD`).
const MQTT_MAX_PAYLOAD: i64 = 268_435_455;
/// `include_dir` is only honoured in the main file, as in mosquitto: one level deep.
const MAX_INCLUDE_LEVEL: usize = 1;
/// Default port of the default listener.
const DEFAULT_PORT: u16 = 1883;

mod block;
pub mod bridge;
mod error;
mod files;
mod finish;
mod mosquitto;
mod plugin;
mod values;

use block::{Block, Domain, TlsBlock};
pub use error::ConfigError;
use files::{conf_files, read};
use values::{
    one, parse_address, parse_bool, parse_int, parse_port, parse_sync, text, to_usize, words, Pos,
};

pub(super) fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path)?;
    let mut parser = Parser::default();
    parser.parse(&text, &path.display().to_string(), 0)?;
    let mut config = parser.finish()?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

pub(super) fn parse_text(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    let mut parser = Parser::default();
    parser.parse(text, source_name, 0)?;
    parser.finish()
}

#[derive(Debug, Default)]
struct Parser {
    config: Config,
    /// The default listener (`port`, `bind_address`, listener options outside a block).
    default: Block,
    /// `listener` blocks in order.
    blocks: Vec<Block>,
    /// An `allow_anonymous` has been seen (for the `per_listener_settings` order rule).
    security_seen: bool,
    /// `log_dest` said at least once: replaces the default (stderr), as in mosquitto.
    log_dest: Option<LogDests>,
    /// `connection` blocks (bridges).
    bridges: bridge::Bridges,
    /// Plugin lines in file order, with the block they were said in.
    plugins: Vec<(crate::config::PluginSpec, plugin::Scope)>,
    /// The last `cluster_nats_*` credential or TLS line: where a mismatch among them is
    /// reported.
    cluster_auth_pos: Option<Pos>,
}

impl Parser {
    /// Parses one file's text. `level` is 0 for the main file, 1 for included files.
    fn parse(&mut self, text: &str, file: &str, level: usize) -> Result<(), ConfigError> {
        // The current listener block: per file, as in mosquitto (`cur_listener` is local to
        // the function that reads one file). `None` = the default listener.
        let mut current: Option<usize> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let pos = Pos {
                file: file.to_owned(),
                line: index + 1,
            };
            let (option, rest) = match line.split_once(char::is_whitespace) {
                Some((option, rest)) => (option, rest.trim()),
                None => (line, ""),
            };
            self.option(&pos, option, rest, level, &mut current)?;
        }
        Ok(())
    }

    fn block(&mut self, current: Option<usize>) -> &mut Block {
        match current {
            Some(i) => &mut self.blocks[i],
            None => &mut self.default,
        }
    }

    fn option(
        &mut self,
        pos: &Pos,
        option: &str,
        rest: &str,
        level: usize,
        current: &mut Option<usize>,
    ) -> Result<(), ConfigError> {
        if self.bridges.option(pos, option, rest)? {
            return Ok(());
        }
        match option {
            "listener" => {
                let words = words(rest);
                let (port, addr) = match words.as_slice() {
                    [] => return Err(pos.missing(option)),
                    [port] => (*port, None),
                    [port, addr] => (*port, Some(*addr)),
                    _ => return Err(pos.bad(option, &words.join(" "), "expected PORT [ADDRESS]")),
                };
                let port = parse_port(pos, option, port)?;
                let addrs = addr.map(|a| parse_address(pos, option, a)).transpose()?;
                self.blocks.push(Block {
                    pos: Some(pos.clone()),
                    port: Some(port),
                    addrs,
                    ..Block::default()
                });
                *current = Some(self.blocks.len() - 1);
            }
            "port" => {
                let value = one(pos, option, rest)?;
                let port = parse_port(pos, option, value)?;
                if self.default.port.is_some() {
                    pos.warn(
                        &mut self.config,
                        "'port' given more than once: the last one is used",
                    );
                }
                self.default.touch(pos);
                self.default.port = Some(port);
            }
            "bind_address" => {
                let value = one(pos, option, rest)?;
                let addrs = parse_address(pos, option, value)?;
                self.default.touch(pos);
                self.default.addrs = Some(addrs);
            }
            "allow_anonymous" => {
                let value = parse_bool(pos, option, one(pos, option, rest)?)?;
                self.security_seen = true;
                if self.config.per_listener_settings {
                    let block = self.block(*current);
                    block.touch(pos);
                    block.allow_anonymous = Some(value);
                } else {
                    self.config.allow_anonymous = Some(value);
                }
            }
            "per_listener_settings" => {
                let value = parse_bool(pos, option, one(pos, option, rest)?)?;
                // As mosquitto: once set it stays set, and it must precede security options.
                if self.config.per_listener_settings {
                    return Ok(());
                }
                if value && self.security_seen {
                    return Err(pos.invalid(
                        "per_listener_settings must be set before any other security settings",
                    ));
                }
                self.config.per_listener_settings = value;
            }
            "max_keepalive" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, 65535)?;
                self.config.max_keepalive = v as u16;
            }
            "max_inflight_messages" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, 65535)?;
                // mosquitto reads 65535 as "no limit" (its window counter is a u16).
                self.config.max_inflight_messages = if v == 65535 { 0 } else { v as u16 };
            }
            "max_queued_messages" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::MAX)?;
                self.config.max_queued_messages = to_usize(pos, option, rest, v)?;
            }
            "read_buffer_growth" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::MAX)?;
                self.config.read_buffer_growth = to_usize(pos, option, rest, v)?;
            }
            "shard_dormancy" => {
                self.config.shard_dormancy = parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "shard_handoff" => {
                self.config.shard_handoff = parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "io_backend" => {
                let v = one(pos, option, rest)?;
                self.config.io_backend = IoBackend::parse(v)
                    .ok_or_else(|| pos.bad(option, v, "expected epoll, io_uring or auto"))?;
            }
            "max_topic_levels" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 1, i64::MAX)?;
                self.config.max_topic_levels = to_usize(pos, option, rest, v)?;
            }
            "max_topic_length" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 1, 65535)?;
                self.config.max_topic_length = v as usize;
            }
            "max_subscriptions_per_client" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::MAX)?;
                self.config.max_subscriptions_per_client = to_usize(pos, option, rest, v)?;
            }
            "max_queued_bytes" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::MAX)?;
                self.config.max_queued_bytes = to_usize(pos, option, rest, v)?;
            }
            "memory_limit" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::MAX)?;
                self.config.memory_limit = to_usize(pos, option, rest, v)?;
            }
            "max_packet_size" => {
                // mosquitto refuses values under 20: no useful packet is smaller. 0 is the
                // protocol maximum (the default is 1 MiB, not unlimited).
                let value = one(pos, option, rest)?;
                let v = parse_int(pos, option, value, 0, u32::MAX.into())?;
                if v != 0 && v < 20 {
                    return Err(pos.bad(
                        option,
                        value,
                        "expected 0 (the protocol maximum) or at least 20",
                    ));
                }
                self.config.max_packet_size = v as u32;
            }
            "connect_timeout" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::from(u32::MAX))?;
                self.config.connect_timeout = v as u32;
            }
            "max_connections_per_ip" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::from(u32::MAX))?;
                self.config.max_connections_per_ip = v as u32;
            }
            "message_size_limit" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, MQTT_MAX_PAYLOAD)?;
                self.config.message_size_limit = v as u32;
            }
            "retain_available" => {
                self.config.retain_available = parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "max_qos" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, 2)?;
                self.config.max_qos = v as u8;
            }
            "response_information" => {
                self.config.response_information = Some(one(pos, option, rest)?.to_owned());
            }
            "server_reference" => {
                self.config.server_reference = Some(one(pos, option, rest)?.to_owned());
            }
            "topic_alias_to_clients" => {
                self.config.topic_alias_to_clients =
                    parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "max_topic_alias" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, 65535)?;
                self.config.max_topic_alias = v as u16;
            }
            "shards" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 1, 65535)?;
                self.config.shards = Some(v as usize);
            }
            "password_file" | "acl_file" => {
                let path = PathBuf::from(text(pos, option, rest)?);
                self.security_seen = true;
                // With per_listener_settings the file belongs to the current listener block,
                // as in mosquitto; otherwise it is global.
                let per_listener = self.config.per_listener_settings;
                let slot = if per_listener {
                    let block = self.block(*current);
                    block.touch(pos);
                    if option == "password_file" {
                        &mut block.password_file
                    } else {
                        &mut block.acl_file
                    }
                } else if option == "password_file" {
                    &mut self.config.password_file
                } else {
                    &mut self.config.acl_file
                };
                if slot.is_some() {
                    // As mosquitto: "Duplicate password_file value in configuration".
                    return Err(pos.invalid(format!("duplicate '{option}' value")));
                }
                *slot = Some(path);
            }
            "connection_rate_limit" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::from(u32::MAX))?;
                self.config.connection_rate_limit = v as u32;
            }
            "max_connections" => {
                let value = one(pos, option, rest)?;
                let v = parse_int(pos, option, value, -1, i64::MAX)?;
                self.config.max_connections = if v < 0 {
                    None
                } else {
                    Some(to_usize(pos, option, value, v)?)
                };
            }
            "log_type" => {
                let value = one(pos, option, rest)?;
                const TYPES: &[&str] = &[
                    "error",
                    "warning",
                    "notice",
                    "information",
                    "subscribe",
                    "unsubscribe",
                    "websockets",
                    "internal",
                    "debug",
                    "all",
                    "none",
                ];
                if !TYPES.contains(&value) {
                    return Err(pos.bad(
                        option,
                        value,
                        format!("expected one of {}", TYPES.join(", ")),
                    ));
                }
                self.config.log_types.push(value.to_owned());
            }
            "include_dir" => {
                let dir = text(pos, option, rest)?;
                if level >= MAX_INCLUDE_LEVEL {
                    pos.warn(
                        &mut self.config,
                        "include_dir in an included file is ignored (as mosquitto does)",
                    );
                    return Ok(());
                }
                for path in conf_files(Path::new(dir))? {
                    let text = read(&path)?;
                    self.parse(&text, &path.display().to_string(), level + 1)?;
                }
            }
            "socket_domain" => {
                let value = one(pos, option, rest)?;
                let domain = match value {
                    "ipv4" => Domain::V4,
                    "ipv6" => Domain::V6,
                    _ => return Err(pos.bad(option, value, "expected ipv4 or ipv6")),
                };
                let block = self.block(*current);
                block.touch(pos);
                block.domain = Some((domain, pos.clone()));
            }
            "protocol" => {
                let value = one(pos, option, rest)?;
                let websockets = match value {
                    "mqtt" => false,
                    "websockets" => true,
                    _ => return Err(pos.bad(option, value, "expected mqtt or websockets")),
                };
                let block = self.block(*current);
                block.touch(pos);
                block.websockets = websockets;
            }
            "http_dir" => {
                let dir = PathBuf::from(text(pos, option, rest)?);
                let block = self.block(*current);
                block.touch(pos);
                block.http_dir = Some((dir, pos.clone()));
            }
            "websockets_headers_size" => {
                let value = parse_int(pos, option, one(pos, option, rest)?, 0, 65535)?;
                self.config.websockets_headers_size = match value {
                    0 => super::DEFAULT_WEBSOCKETS_HEADERS_SIZE,
                    n => n as usize,
                };
            }
            "websockets_log_level" => {
                parse_int(pos, option, one(pos, option, rest)?, 0, i32::MAX.into())?;
                self.note(
                    pos,
                    option,
                    "midge logs WebSocket events through log_type websockets",
                );
            }
            "certfile"
            | "keyfile"
            | "cafile"
            | "capath"
            | "require_certificate"
            | "use_identity_as_username"
            | "use_subject_as_username"
            | "tls_version"
            | "ciphers"
            | "ciphers_tls1.3"
            | "crlfile" => self.tls_option(pos, option, rest, *current)?,
            "dhparamfile" => {
                text(pos, option, rest)?;
                pos.warn(
                    &mut self.config,
                    "'dhparamfile' is not needed: midge (rustls) uses ECDHE key exchange only",
                );
            }
            "tls_keyform" => {
                let value = one(pos, option, rest)?;
                if value != "pem" {
                    return Err(pos.bad(option, value, "midge reads PEM keys only"));
                }
            }
            "psk_hint" | "psk_file" | "tls_engine" | "tls_engine_kpass_sha1" => {
                return Err(pos.invalid(format!("'{option}' is not supported by midge yet")));
            }
            "persistence" => {
                self.config.persistence = parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "persistence_location" => {
                self.config.persistence_location = Some(PathBuf::from(text(pos, option, rest)?));
            }
            "persistence_sync" => {
                self.config.persistence_sync = parse_sync(pos, option, rest)?;
            }
            "metrics_listener" => {
                let (port, addr) = match words(rest).as_slice() {
                    [] => return Err(pos.missing(option)),
                    [port] => (*port, None),
                    [port, addr] => (*port, Some(*addr)),
                    more => {
                        return Err(pos.bad(option, &more.join(" "), "expected PORT [ADDRESS]"))
                    }
                };
                let port = parse_port(pos, option, port)?;
                // Loopback unless said otherwise: the endpoint has no authentication.
                let ip = match addr {
                    Some(a) => parse_address(pos, option, a)?[0],
                    None => std::net::Ipv4Addr::LOCALHOST.into(),
                };
                self.config.metrics_listener = Some(std::net::SocketAddr::new(ip, port));
            }
            "sys_interval" => {
                self.config.sys_interval =
                    parse_int(pos, option, one(pos, option, rest)?, 0, 65535)? as u16;
            }
            "cluster_name" | "cluster_node_id" => {
                let v = one(pos, option, rest)?;
                if !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(pos.bad(option, v, "use letters, digits, '-' and '_'"));
                }
                let slot = if option == "cluster_name" {
                    &mut self.config.cluster_name
                } else {
                    &mut self.config.cluster_node_id
                };
                *slot = Some(v.to_string());
            }
            "cluster_nats_user" | "cluster_nats_password" | "cluster_nats_token" => {
                let v = Some(one(pos, option, rest)?.to_string());
                self.cluster_auth_pos = Some(pos.clone());
                let auth = &mut self.config.cluster_nats_auth;
                match option {
                    "cluster_nats_user" => auth.user = v,
                    "cluster_nats_password" => auth.password = v,
                    _ => auth.token = v,
                }
            }
            "cluster_nats_credentials"
            | "cluster_nats_cafile"
            | "cluster_nats_certfile"
            | "cluster_nats_keyfile" => {
                let v = text(pos, option, rest)?;
                if let Err(e) = std::fs::metadata(v) {
                    return Err(pos.bad(option, v, format!("cannot read it: {e}")));
                }
                let v = Some(PathBuf::from(v));
                self.cluster_auth_pos = Some(pos.clone());
                let auth = &mut self.config.cluster_nats_auth;
                match option {
                    "cluster_nats_credentials" => auth.credentials = v,
                    "cluster_nats_cafile" => auth.cafile = v,
                    "cluster_nats_certfile" => auth.certfile = v,
                    _ => auth.keyfile = v,
                }
            }
            "cluster_node_timeout" => {
                self.config.cluster_node_timeout =
                    parse_int(pos, option, one(pos, option, rest)?, 2, 3600)? as u16;
            }
            "cluster_replicas" => {
                self.config.cluster_replicas =
                    parse_int(pos, option, one(pos, option, rest)?, 1, 5)? as u8;
            }
            "cluster_nats_url" => {
                let v = one(pos, option, rest)?;
                if v.parse::<async_nats::ServerAddr>().is_err() {
                    return Err(pos.bad(
                        option,
                        v,
                        "expected a NATS URL such as nats://127.0.0.1:4222",
                    ));
                }
                self.config.cluster_nats_urls.push(v.to_string());
            }
            _ => {
                if !self.plugin_option(pos, option, rest, *current)?
                    && !self.mosquitto_option(pos, option, rest, *current)?
                {
                    return Err(pos.unknown(option));
                }
            }
        }
        Ok(())
    }

    /// A listener TLS option, for the current block (or the default listener).
    fn tls_option(
        &mut self,
        pos: &Pos,
        option: &str,
        rest: &str,
        current: Option<usize>,
    ) -> Result<(), ConfigError> {
        let mut warning = None;
        let block = self.block(current);
        block.touch(pos);
        let tls = &mut block.tls;
        if tls.first.is_none() {
            tls.first = Some(pos.clone());
        }
        let s = &mut tls.settings;
        match option {
            "certfile" => {
                s.certfile = PathBuf::from(text(pos, option, rest)?);
                tls.certfile = Some(pos.clone());
            }
            "keyfile" => {
                s.keyfile = PathBuf::from(text(pos, option, rest)?);
                tls.keyfile = Some(pos.clone());
            }
            "cafile" => s.cafile = Some(PathBuf::from(text(pos, option, rest)?)),
            "crlfile" => s.crlfile = Some(PathBuf::from(text(pos, option, rest)?)),
            "capath" => s.capath = Some(PathBuf::from(text(pos, option, rest)?)),
            "require_certificate" => {
                s.require_certificate = parse_bool(pos, option, one(pos, option, rest)?)?;
                tls.require_certificate = s.require_certificate.then(|| pos.clone());
            }
            "use_identity_as_username" | "use_subject_as_username" => {
                let value = parse_bool(pos, option, one(pos, option, rest)?)?;
                if option == "use_identity_as_username" {
                    s.use_identity_as_username = value;
                } else {
                    s.use_subject_as_username = value;
                }
                if s.use_identity_as_username && s.use_subject_as_username {
                    return Err(pos.invalid(
                        "use_identity_as_username and use_subject_as_username cannot both be true",
                    ));
                }
                tls.identity = value.then(|| pos.clone()).or(tls.identity.take());
            }
            "tls_version" => {
                let value = one(pos, option, rest)?;
                s.min_version = match value {
                    "tlsv1.3" => TlsVersion::V13,
                    "tlsv1.2" => TlsVersion::V12,
                    "tlsv1.1" => {
                        warning = Some(
                            "TLS 1.1 is not supported (rustls): this listener accepts TLS 1.2 and 1.3",
                        );
                        TlsVersion::V12
                    }
                    _ => return Err(pos.bad(option, value, "expected tlsv1.2 or tlsv1.3")),
                };
            }
            "ciphers" | "ciphers_tls1.3" => {
                let value = one(pos, option, rest)?;
                let tls13 = option == "ciphers_tls1.3";
                let mut names = Vec::new();
                for name in value.split([':', ',']).filter(|n| !n.is_empty()) {
                    let found = if tls13 {
                        tls13_cipher(name)
                    } else {
                        tls12_cipher(name)
                    };
                    let Some(found) = found else {
                        let supported: Vec<&str> = if tls13 {
                            TLS13_CIPHERS.to_vec()
                        } else {
                            TLS12_CIPHERS.iter().map(|(_, openssl)| *openssl).collect()
                        };
                        let hint = if !tls13 && tls13_cipher(name).is_some() {
                            " (a TLS 1.3 suite: use ciphers_tls1.3)"
                        } else {
                            ""
                        };
                        return Err(pos.bad(
                            option,
                            value,
                            format!(
                                "unknown or unsupported cipher suite '{name}'{hint}; midge (rustls) \
                                 supports {}",
                                supported.join(":")
                            ),
                        ));
                    };
                    names.push(found.to_owned());
                }
                if names.is_empty() {
                    return Err(pos.missing(option));
                }
                if tls13 {
                    s.ciphers_tls13 = Some(names);
                } else {
                    s.ciphers = Some(names);
                }
            }
            _ => unreachable!("not a TLS option: {option}"),
        }
        if let Some(w) = warning {
            pos.warn(&mut self.config, w);
        }
        Ok(())
    }
}

#[cfg(test)]
mod option_tests;
#[cfg(test)]
mod tests;
