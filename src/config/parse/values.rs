//! Where a line is ([`Pos`], which words every error) and the parsers of option values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ConfigError;
use crate::config::Config;

/// Where a line is: file name and line number, for messages.
#[derive(Debug, Clone)]
pub(super) struct Pos {
    pub(super) file: String,
    pub(super) line: usize,
}

impl Pos {
    pub(super) fn unknown(&self, option: &str) -> ConfigError {
        ConfigError::UnknownOption {
            file: self.file.clone(),
            line: self.line,
            option: option.into(),
        }
    }
    pub(super) fn missing(&self, option: &str) -> ConfigError {
        ConfigError::MissingValue {
            file: self.file.clone(),
            line: self.line,
            option: option.into(),
        }
    }
    pub(super) fn bad(&self, option: &str, value: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            file: self.file.clone(),
            line: self.line,
            option: option.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
    pub(super) fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            line: self.line,
            message: message.into(),
        }
    }
    pub(super) fn warn(&self, config: &mut Config, message: impl fmt::Display) {
        config
            .warnings
            .push(format!("{}:{}: {message}", self.file, self.line));
    }
}

/// The values of a non-text option: whitespace-separated words, up to a word starting with `#`.
pub(super) fn words(rest: &str) -> Vec<&str> {
    rest.split_whitespace()
        .take_while(|w| !w.starts_with('#'))
        .collect()
}

/// The single value of an option.
pub(super) fn one<'a>(pos: &Pos, option: &str, rest: &'a str) -> Result<&'a str, ConfigError> {
    match words(rest).as_slice() {
        [] => Err(pos.missing(option)),
        [value] => Ok(value),
        more => Err(pos.bad(option, &more.join(" "), "expected one value")),
    }
}

/// The value of a text option: the rest of the line, as mosquitto reads it.
pub(super) fn text<'a>(pos: &Pos, option: &str, rest: &'a str) -> Result<&'a str, ConfigError> {
    if rest.is_empty() {
        Err(pos.missing(option))
    } else {
        Ok(rest)
    }
}

/// `persistence_sync every-batch | os | interval MS` (midge).
pub(super) fn parse_sync(
    pos: &Pos,
    option: &str,
    rest: &str,
) -> Result<crate::store::SyncPolicy, ConfigError> {
    use crate::store::SyncPolicy;
    const EXPECTED: &str = "expected every-batch, os or interval MS";
    match words(rest).as_slice() {
        [] => Err(pos.missing(option)),
        ["every-batch"] => Ok(SyncPolicy::EveryBatch),
        ["os"] => Ok(SyncPolicy::Os),
        ["interval", ms] => {
            let ms = parse_int(pos, option, ms, 1, 3_600_000)?;
            Ok(SyncPolicy::Interval(std::time::Duration::from_millis(
                ms as u64,
            )))
        }
        ["interval"] => Err(pos.bad(
            option,
            rest.trim(),
            "interval needs milliseconds (1..=3600000)",
        )),
        _ => Err(pos.bad(option, rest.trim(), EXPECTED)),
    }
}

pub(super) fn parse_bool(pos: &Pos, option: &str, value: &str) -> Result<bool, ConfigError> {
    // mosquitto's conf__parse_bool also takes 1 and 0.
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(pos.bad(option, value, "expected true or false")),
    }
}

pub(super) fn parse_int(
    pos: &Pos,
    option: &str,
    value: &str,
    min: i64,
    max: i64,
) -> Result<i64, ConfigError> {
    let range = || {
        if max == i64::MAX {
            format!("expected a whole number of at least {min}")
        } else {
            format!("expected a whole number from {min} to {max}")
        }
    };
    match value.parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(pos.bad(option, value, range())),
    }
}

pub(super) fn to_usize(pos: &Pos, option: &str, value: &str, v: i64) -> Result<usize, ConfigError> {
    usize::try_from(v).map_err(|_| pos.bad(option, value, "too large for this machine"))
}

pub(super) fn parse_port(pos: &Pos, option: &str, value: &str) -> Result<u16, ConfigError> {
    // Port 0 (an ephemeral port) is allowed for tests; mosquitto uses it for Unix sockets.
    parse_int(pos, option, value, 0, 65535).map(|p| p as u16)
}

/// A listener address: an IPv4 or IPv6 literal (as mosquitto writes them, without brackets;
/// brackets are accepted too) or `localhost` (127.0.0.1 and ::1).
pub(super) fn parse_address(
    pos: &Pos,
    option: &str,
    value: &str,
) -> Result<Vec<IpAddr>, ConfigError> {
    if value == "localhost" {
        return Ok(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
    }
    let literal = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    literal.parse::<IpAddr>().map(|ip| vec![ip]).map_err(|_| {
        pos.bad(
            option,
            value,
            "expected an IPv4 or IPv6 address or localhost (host names are not supported yet)",
        )
    })
}
