//! mosquitto's process and client options (logging, pid file, user, client ids, ...) and the
//! mosquitto options midge accepts with a note or refuses by design. The main option table in
//! `parse.rs` hands every option it does not know to [`Parser::mosquitto_option`].

use std::path::PathBuf;

use super::values::{one, parse_bool, parse_int, text, to_usize, words, Pos};
use super::{ConfigError, Parser};
use crate::config::mosquitto_options::parse_expiration;
use crate::config::ProxyProtocol;

impl Parser {
    /// Parses `option` if it is one of this module's; `Ok(false)` = not one of them.
    pub(super) fn mosquitto_option(
        &mut self,
        pos: &Pos,
        option: &str,
        rest: &str,
        current: Option<usize>,
    ) -> Result<bool, ConfigError> {
        match option {
            "bind_interface" => {
                let name = one(pos, option, rest)?;
                // IFNAMSIZ is 16 with the NUL; a name has no '/' and no spaces.
                if name.len() > 15 || name.contains('/') {
                    return Err(pos.bad(
                        option,
                        name,
                        "expected a network interface name (at most 15 characters)",
                    ));
                }
                let block = self.block(current);
                block.touch(pos);
                block.bind_interface = Some(name.to_owned());
            }
            "proxy_protocol" | "enable_proxy_protocol" => {
                let value = one(pos, option, rest)?;
                let proxy = if option == "proxy_protocol" {
                    parse_bool(pos, option, value)?.then_some(ProxyProtocol::ANY)
                } else {
                    // mosquitto's spelling: one version, 1 or 2.
                    let v = parse_int(pos, option, value, 1, 2)?;
                    Some(ProxyProtocol {
                        v1: v == 1,
                        v2: v == 2,
                        require_tls: false,
                    })
                };
                let block = self.block(current);
                block.touch(pos);
                block.proxy_protocol = proxy.map(|p| (p, pos.clone()));
            }
            "proxy_protocol_v2_require_tls" => {
                let value = parse_bool(pos, option, one(pos, option, rest)?)?;
                let block = self.block(current);
                block.touch(pos);
                block.proxy_require_tls = value.then(|| pos.clone());
            }
            "websockets_trust_x_forwarded_for" => {
                let value = parse_bool(pos, option, one(pos, option, rest)?)?;
                let block = self.block(current);
                block.touch(pos);
                block.trust_x_forwarded_for = value.then(|| pos.clone());
            }
            "mount_point" => {
                let mount = one(pos, option, rest)?;
                // As mosquitto: any valid topic name (no wildcards); it is put before each
                // topic as it is, so it usually ends with '/'.
                if let Err(e) = crate::protocol::topic::validate_topic_name(mount) {
                    return Err(pos.bad(option, mount, format!("not a valid topic prefix: {e}")));
                }
                let block = self.block(current);
                block.touch(pos);
                block.mount_point = Some(mount.to_owned());
            }
            "check_retain_source" => {
                self.config.clients.check_retain_source =
                    parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "log_dest" => self.log_dest(pos, option, rest)?,
            "log_facility" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, 7)?;
                self.config.host.log_facility = Some(v as u8);
            }
            "log_timestamp" => {
                self.config.host.log_timestamp = parse_bool(pos, option, one(pos, option, rest)?)?
            }
            "log_timestamp_format" => {
                let format = text(pos, option, rest)?;
                if format.contains('\0') {
                    return Err(pos.bad(option, format, "a strftime(3) format without NUL"));
                }
                self.config.host.log_timestamp_format = Some(format.to_owned());
            }
            "connection_messages" => {
                self.config.host.connection_messages =
                    parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "pid_file" => self.config.host.pid_file = Some(PathBuf::from(text(pos, option, rest)?)),
            "user" => {
                let user = one(pos, option, rest)?;
                self.config.host.user = Some(user.to_owned());
            }
            "allow_zero_length_clientid" => {
                self.config.clients.allow_zero_length_clientid =
                    parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "auto_id_prefix" => {
                let prefix = one(pos, option, rest)?;
                // mosquitto: at most 50 characters, and an id must stay within 65535 bytes.
                if prefix.len() > 50 {
                    return Err(pos.bad(option, prefix, "at most 50 characters"));
                }
                self.config.clients.auto_id_prefix = prefix.to_owned();
            }
            "clientid_prefixes" => {
                self.config.clients.clientid_prefixes = Some(one(pos, option, rest)?.to_owned());
            }
            "use_username_as_clientid" => {
                self.config.clients.use_username_as_clientid =
                    parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "persistent_client_expiration" => {
                let value = one(pos, option, rest)?;
                let secs = parse_expiration(value).ok_or_else(|| {
                    pos.bad(
                        option,
                        value,
                        "expected a number and a unit: h, d, w, m or y (e.g. 14d)",
                    )
                })?;
                self.config.clients.persistent_client_expiration = Some(secs);
            }
            "upgrade_outgoing_qos" => {
                self.config.clients.upgrade_outgoing_qos =
                    parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "max_inflight_bytes" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, i64::MAX)?;
                self.config.clients.max_inflight_bytes = to_usize(pos, option, rest, v)?;
            }
            "set_tcp_nodelay" => {
                self.config.clients.set_tcp_nodelay =
                    parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "maximum_qos" => {
                // mosquitto 2's spelling of max_qos in some documentation.
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, 2)?;
                self.config.max_qos = v as u8;
            }
            "autosave_interval" => {
                parse_int(pos, option, one(pos, option, rest)?, 0, i32::MAX.into())?;
                self.note(pos, option, "midge's store writes each change as it happens (see persistence_sync), so there is nothing to save periodically");
            }
            "autosave_on_changes" => {
                parse_bool(pos, option, one(pos, option, rest)?)?;
                self.note(
                    pos,
                    option,
                    "midge's store writes each change as it happens (see persistence_sync)",
                );
            }
            "persistence_file" => {
                let name = text(pos, option, rest)?;
                if name.contains('/') {
                    return Err(pos.bad(
                        option,
                        name,
                        "a file name, not a path (use persistence_location)",
                    ));
                }
                self.note(pos, option, "midge keeps its store in its own files (*.mlog) in persistence_location, never in mosquitto's database file");
            }
            "allow_duplicate_messages" => {
                parse_bool(pos, option, one(pos, option, rest)?)?;
                self.note(pos, option, "deprecated in mosquitto 2 and without effect there too: a client subscribed through overlapping filters gets one copy");
            }
            "queue_qos0_messages" => {
                if parse_bool(pos, option, one(pos, option, rest)?)? {
                    self.note(pos, option, "midge does not queue QoS 0 messages for disconnected clients: they are dropped, as with mosquitto's default");
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// One warning for an option accepted without effect, saying what midge does instead.
    pub(super) fn note(&mut self, pos: &Pos, option: &str, instead: &str) {
        pos.warn(
            &mut self.config,
            format_args!("'{option}' has no effect in midge: {instead}"),
        );
    }

    /// `log_dest stdout|stderr|syslog|topic|none|file PATH`: destinations add up, `none`
    /// clears them, as in mosquitto.
    fn log_dest(&mut self, pos: &Pos, option: &str, rest: &str) -> Result<(), ConfigError> {
        let value = words(rest)
            .first()
            .copied()
            .ok_or_else(|| pos.missing(option))?;
        let dests = self.log_dest.get_or_insert(crate::config::LogDests::NONE);
        if value == "file" {
            // The path is the rest of the line, as mosquitto reads it.
            let path = rest["file".len()..].trim();
            if path.is_empty() {
                return Err(pos.bad(option, rest, "'log_dest file' needs a path"));
            }
            dests.file = Some(PathBuf::from(path));
            return Ok(());
        }
        if words(rest).len() > 1 {
            return Err(pos.bad(option, rest, "expected one value"));
        }
        match value {
            "stdout" => dests.stdout = true,
            "stderr" => dests.stderr = true,
            "syslog" => dests.syslog = true,
            "topic" => dests.topic = true,
            "none" => *dests = crate::config::LogDests::NONE,
            "dlt" => {
                return Err(pos.bad(
                    option,
                    value,
                    "midge has no DLT (automotive diagnostic log) output; use syslog or file",
                ))
            }
            _ => {
                return Err(pos.bad(
                    option,
                    value,
                    "expected stdout, stderr, syslog, topic, none or file PATH",
                ))
            }
        }
        Ok(())
    }
}
