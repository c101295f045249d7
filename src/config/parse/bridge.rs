//! mosquitto's `connection NAME` blocks: one bridge each, until the next `connection`.
//!
//! Every bridge option of mosquitto 2.0 is known here ([`OPTIONS`]); those midge does not act
//! on yet are refused with their `FILE:LINE` rather than silently ignored (a bridge that
//! quietly behaves differently from its configuration is worse than none). As in mosquitto,
//! a bridge option outside a `connection` block is an error, and a `connection` block runs
//! to the next `connection` (other options in between are global ones).

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::values::{one, parse_bool, parse_int, text, words, Pos};
use super::ConfigError;
use crate::config::bridge::{
    BridgeAddress, BridgeConfig, BridgeTls, BridgeTopic, Direction, StartType,
};
use crate::protocol::topic::{validate_topic_filter, validate_topic_name};
use crate::protocol::{ProtocolVersion, QoS};

/// Every bridge option mosquitto 2.0 knows (`connection` itself included): the one list the
/// parser's hook consults.
pub(super) const OPTIONS: &[&str] = &[
    "connection",
    "address",
    "addresses",
    "round_robin",
    "topic",
    "bridge_protocol_version",
    "cleansession",
    "local_cleansession",
    "remote_clientid",
    "clientid",
    "local_clientid",
    "remote_username",
    "username",
    "remote_password",
    "password",
    "local_username",
    "local_password",
    "notifications",
    "notifications_local_only",
    "notification_topic",
    "try_private",
    "keepalive_interval",
    "restart_timeout",
    "start_type",
    "threshold",
    "idle_timeout",
    "bridge_attempt_unsubscribe",
    "bridge_outgoing_retain",
    "bridge_max_packet_size",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_keyfile",
    "bridge_insecure",
    "bridge_tls_version",
    "bridge_alpn",
    "bridge_identity",
    "bridge_psk",
    "bridge_require_ocsp",
];

/// Bridge options midge refuses, and why.
fn refused(option: &str, value: &str) -> Option<&'static str> {
    match (option, value) {
        ("bridge_identity" | "bridge_psk", _) => Some("(TLS-PSK) is not supported by midge"),
        ("bridge_require_ocsp", _) => Some("is not supported by midge"),
        ("bridge_insecure", "true" | "1") => Some(
            "true is not supported by midge: the remote's certificate is always checked against its name",
        ),
        _ => None,
    }
}

/// The `connection` blocks while the file is read.
#[derive(Debug, Default)]
pub(super) struct Bridges {
    done: Vec<(Pos, Draft)>,
}

/// A block being read: the config and where its options were said, for whole-block checks.
#[derive(Debug)]
struct Draft {
    cfg: BridgeConfig,
    remote_clientid: Option<String>,
    local_clientid: Option<String>,
    local_clean_session: Option<bool>,
    notification_topic: Option<String>,
    certfile: Option<Pos>,
    keyfile: Option<Pos>,
    tls_without_ca: Option<Pos>,
}

impl Bridges {
    /// Handles `option` if it is a bridge option (returns false otherwise).
    pub(super) fn option(
        &mut self,
        pos: &Pos,
        option: &str,
        rest: &str,
    ) -> Result<bool, ConfigError> {
        if !OPTIONS.contains(&option) {
            return Ok(false);
        }
        if option == "connection" {
            let name = one(pos, option, rest)?;
            if self.done.iter().any(|(_, d)| d.cfg.name == name) {
                return Err(pos.invalid(format!("duplicate bridge name '{name}'")));
            }
            self.done.push((pos.clone(), Draft::new(name, pos)));
            return Ok(true);
        }
        let Some((_, draft)) = self.done.last_mut() else {
            return Err(pos.invalid(format!(
                "'{option}' is a bridge option: it must follow a 'connection NAME' line"
            )));
        };
        if let Some(why) = refused(option, words(rest).first().copied().unwrap_or("")) {
            return Err(pos.invalid(format!("'{option}' {why}")));
        }
        draft.option(pos, option, rest)?;
        Ok(true)
    }

    /// The blocks, checked as wholes.
    pub(super) fn finish(self) -> Result<Vec<BridgeConfig>, ConfigError> {
        self.done
            .into_iter()
            .map(|(pos, draft)| draft.finish(&pos))
            .collect()
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    match ok {
        true if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "midge".to_owned(),
    }
}

impl Draft {
    fn new(name: &str, pos: &Pos) -> Draft {
        Draft {
            cfg: BridgeConfig {
                name: name.to_owned(),
                source: format!("{}:{}", pos.file, pos.line),
                addresses: Vec::new(),
                round_robin: false,
                topics: Vec::new(),
                protocol: ProtocolVersion::V311,
                clean_session: false,
                local_clean_session: false,
                remote_clientid: String::new(),
                local_clientid: String::new(),
                remote_username: None,
                remote_password: None,
                local_username: None,
                keepalive: 60,
                restart_base: 5,
                restart_cap: Some(30),
                try_private: true,
                notifications: true,
                notifications_local_only: false,
                notification_topic: String::new(),
                outgoing_retain: true,
                start_type: StartType::Automatic,
                threshold: 10,
                idle_timeout: 60,
                max_packet_size: 0,
                attempt_unsubscribe: true,
                bind_address: None,
                tls: None,
            },
            remote_clientid: None,
            local_clientid: None,
            local_clean_session: None,
            notification_topic: None,
            certfile: None,
            keyfile: None,
            tls_without_ca: None,
        }
    }

    fn tls(&mut self, pos: &Pos) -> &mut BridgeTls {
        if self.cfg.tls.is_none() && self.tls_without_ca.is_none() {
            self.tls_without_ca = Some(pos.clone());
        }
        self.cfg.tls.get_or_insert_with(BridgeTls::default)
    }

    fn option(&mut self, pos: &Pos, option: &str, rest: &str) -> Result<(), ConfigError> {
        let c = &mut self.cfg;
        match option {
            "address" | "addresses" => {
                let list = words(rest);
                if list.is_empty() {
                    return Err(pos.missing(option));
                }
                for a in list {
                    c.addresses.push(parse_remote(pos, option, a)?);
                }
            }
            "round_robin" => c.round_robin = parse_bool(pos, option, one(pos, option, rest)?)?,
            "topic" => c.topics.push(parse_topic(pos, option, rest)?),
            "bridge_protocol_version" => {
                let v = one(pos, option, rest)?;
                c.protocol = match v {
                    "mqttv31" => ProtocolVersion::V31,
                    "mqttv311" => ProtocolVersion::V311,
                    "mqttv50" => ProtocolVersion::V5,
                    _ => return Err(pos.bad(option, v, "expected mqttv31, mqttv311 or mqttv50")),
                };
            }
            "cleansession" => c.clean_session = parse_bool(pos, option, one(pos, option, rest)?)?,
            "local_cleansession" => {
                self.local_clean_session = Some(parse_bool(pos, option, one(pos, option, rest)?)?)
            }
            "remote_clientid" | "clientid" => {
                self.remote_clientid = Some(one(pos, option, rest)?.to_owned())
            }
            "local_clientid" => self.local_clientid = Some(one(pos, option, rest)?.to_owned()),
            "remote_username" | "username" => {
                c.remote_username = Some(one(pos, option, rest)?.to_owned())
            }
            "remote_password" | "password" => {
                c.remote_password = Some(one(pos, option, rest)?.to_owned())
            }
            "local_username" => c.local_username = Some(one(pos, option, rest)?.to_owned()),
            "local_password" => {
                one(pos, option, rest)?;
            }
            "notifications" => c.notifications = parse_bool(pos, option, one(pos, option, rest)?)?,
            "notifications_local_only" => {
                c.notifications_local_only = parse_bool(pos, option, one(pos, option, rest)?)?
            }
            "notification_topic" => {
                let t = one(pos, option, rest)?;
                validate_topic_name(t)
                    .map_err(|e| pos.bad(option, t, format!("not a topic name: {e:?}")))?;
                self.notification_topic = Some(t.to_owned());
            }
            "try_private" => c.try_private = parse_bool(pos, option, one(pos, option, rest)?)?,
            "keepalive_interval" => {
                // mosquitto refuses under 5 s: a shorter keep-alive only makes noise.
                c.keepalive = parse_int(pos, option, one(pos, option, rest)?, 5, 65535)? as u16;
            }
            "restart_timeout" => match words(rest).as_slice() {
                [base] => {
                    c.restart_base = parse_int(pos, option, base, 1, 86_400)? as u32;
                    c.restart_cap = None;
                }
                [base, cap] => {
                    c.restart_base = parse_int(pos, option, base, 1, 86_400)? as u32;
                    let cap = parse_int(pos, option, cap, 1, 86_400)? as u32;
                    if cap < c.restart_base {
                        return Err(pos.bad(option, rest, "the cap is below the base"));
                    }
                    c.restart_cap = Some(cap);
                }
                [] => return Err(pos.missing(option)),
                _ => return Err(pos.bad(option, rest, "expected BASE [CAP] in seconds")),
            },
            "start_type" => {
                let v = one(pos, option, rest)?;
                c.start_type = match v {
                    "automatic" => StartType::Automatic,
                    "once" => StartType::Once,
                    "lazy" => StartType::Lazy,
                    _ => return Err(pos.bad(option, v, "expected automatic, lazy or once")),
                };
            }
            "threshold" => {
                c.threshold =
                    parse_int(pos, option, one(pos, option, rest)?, 1, i64::from(u32::MAX))? as u32;
            }
            "idle_timeout" => {
                c.idle_timeout =
                    parse_int(pos, option, one(pos, option, rest)?, 1, i64::from(u32::MAX))? as u32;
            }
            "bridge_attempt_unsubscribe" => {
                c.attempt_unsubscribe = parse_bool(pos, option, one(pos, option, rest)?)?
            }
            "bridge_outgoing_retain" => {
                c.outgoing_retain = parse_bool(pos, option, one(pos, option, rest)?)?
            }
            "bridge_max_packet_size" => {
                let v = parse_int(pos, option, one(pos, option, rest)?, 0, u32::MAX.into())?;
                c.max_packet_size = v as u32;
            }
            "bridge_bind_address" => {
                let v = one(pos, option, rest)?;
                let ip = v
                    .parse::<IpAddr>()
                    .map_err(|_| pos.bad(option, v, "expected an IPv4 or IPv6 address"))?;
                c.bind_address = Some(ip);
            }
            "bridge_capath" => {
                let path = PathBuf::from(text(pos, option, rest)?);
                self.tls(pos).capath = Some(path);
            }
            "bridge_cafile" => {
                let path = PathBuf::from(text(pos, option, rest)?);
                self.tls(pos).cafile = Some(path);
            }
            "bridge_certfile" => {
                let path = PathBuf::from(text(pos, option, rest)?);
                self.tls(pos).certfile = Some(path);
                self.certfile = Some(pos.clone());
            }
            "bridge_keyfile" => {
                let path = PathBuf::from(text(pos, option, rest)?);
                self.tls(pos).keyfile = Some(path);
                self.keyfile = Some(pos.clone());
            }
            "bridge_insecure" => {
                parse_bool(pos, option, one(pos, option, rest)?)?;
            }
            "bridge_tls_version" => {
                let v = one(pos, option, rest)?;
                let tls13_only = match v {
                    "tlsv1.3" => true,
                    "tlsv1.2" => false,
                    _ => return Err(pos.bad(option, v, "expected tlsv1.2 or tlsv1.3 (rustls)")),
                };
                self.tls(pos).tls13_only = tls13_only;
            }
            "bridge_alpn" => {
                let v = one(pos, option, rest)?;
                self.tls(pos).alpn = v.split(',').map(str::to_owned).collect();
            }
            other => unreachable!("bridge option without a parser: {other}"),
        }
        Ok(())
    }

    fn finish(mut self, pos: &Pos) -> Result<BridgeConfig, ConfigError> {
        let name = self.cfg.name.clone();
        if self.cfg.addresses.is_empty() {
            return Err(pos.invalid(format!("bridge '{name}' has no address")));
        }
        if self.cfg.topics.is_empty() {
            return Err(pos.invalid(format!("bridge '{name}' has no topic")));
        }
        if self.certfile.is_some() != self.keyfile.is_some() {
            let at = self
                .certfile
                .as_ref()
                .or(self.keyfile.as_ref())
                .unwrap_or(pos);
            return Err(at.invalid("bridge_certfile and bridge_keyfile go together"));
        }
        if let Some(tls) = &self.cfg.tls {
            if tls.cafile.is_none() && tls.capath.is_none() {
                let at = self.tls_without_ca.as_ref().unwrap_or(pos);
                return Err(at.invalid(format!(
                    "bridge '{name}' has TLS options but no bridge_cafile or bridge_capath (midge bridges verify the remote)"
                )));
            }
        }
        let remote = self
            .remote_clientid
            .unwrap_or_else(|| format!("{}.{}", host_name(), name));
        self.cfg.local_clientid = self
            .local_clientid
            .unwrap_or_else(|| format!("local.{remote}"));
        self.cfg.notification_topic = self
            .notification_topic
            .unwrap_or_else(|| format!("$SYS/broker/connection/{remote}/state"));
        self.cfg.remote_clientid = remote;
        self.cfg.local_clean_session = self.local_clean_session.unwrap_or(self.cfg.clean_session);
        Ok(self.cfg)
    }
}

/// `HOST[:PORT]` (port 1883 by default; an IPv6 literal in brackets): resolved now, once.
fn parse_remote(pos: &Pos, option: &str, value: &str) -> Result<BridgeAddress, ConfigError> {
    let (host, port) = if let Some(v6) = value.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, "1883"),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, p),
                None => return Err(pos.bad(option, value, "expected [ADDRESS]:PORT")),
            },
            None => return Err(pos.bad(option, value, "unclosed '['")),
        }
    } else {
        match value.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => (value, "1883"),
            Some((h, p)) => (h, p),
            None => (value, "1883"),
        }
    };
    let port = parse_int(pos, option, port, 1, 65535)? as u16;
    let addr = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| pos.bad(option, value, "cannot resolve this host"))?;
    Ok(BridgeAddress {
        host: host.to_owned(),
        addr,
    })
}

/// A word that may be `""` (mosquitto's empty pattern or prefix).
fn unquote(word: &str) -> &str {
    if word == "\"\"" {
        ""
    } else {
        word
    }
}

fn parse_topic(pos: &Pos, option: &str, rest: &str) -> Result<BridgeTopic, ConfigError> {
    // Not `words` alone: the pattern may be `#` itself, which is no comment there; a `#`
    // word after it starts one.
    let mut all = rest.split_whitespace();
    let w: Vec<&str> = all
        .next()
        .into_iter()
        .chain(all.take_while(|w| !w.starts_with('#')))
        .collect();
    if w.is_empty() {
        return Err(pos.missing(option));
    }
    if w.len() > 5 || w.len() == 4 {
        return Err(pos.bad(
            option,
            rest,
            "expected PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]",
        ));
    }
    let direction = match w.get(1).copied().unwrap_or("out") {
        "in" => Direction::In,
        "out" => Direction::Out,
        "both" => Direction::Both,
        d => return Err(pos.bad(option, d, "expected in, out or both")),
    };
    let qos = match w.get(2).copied().unwrap_or("0") {
        "0" => QoS::AtMostOnce,
        "1" => QoS::AtLeastOnce,
        "2" => QoS::ExactlyOnce,
        q => return Err(pos.bad(option, q, "expected a QoS of 0, 1 or 2")),
    };
    let topic = BridgeTopic {
        pattern: unquote(w[0]).to_owned(),
        direction,
        qos,
        local_prefix: w.get(3).map_or("", |p| unquote(p)).to_owned(),
        remote_prefix: w.get(4).map_or("", |p| unquote(p)).to_owned(),
    };
    for prefix in [&topic.local_prefix, &topic.remote_prefix] {
        if prefix.contains(['+', '#']) {
            return Err(pos.bad(option, prefix, "a prefix cannot hold wildcards"));
        }
    }
    if topic.pattern.is_empty() && topic.local_prefix.is_empty() && topic.remote_prefix.is_empty() {
        return Err(pos.bad(
            option,
            rest,
            "an empty pattern needs a local and a remote prefix",
        ));
    }
    for filter in [topic.local_filter(), topic.remote_filter()] {
        validate_topic_filter(&filter)
            .map_err(|e| pos.bad(option, &filter, format!("not a topic filter: {e:?}")))?;
    }
    Ok(topic)
}

#[cfg(test)]
#[path = "bridge_tests.rs"]
mod tests;
