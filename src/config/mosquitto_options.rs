//! The typed values of mosquitto options about the process (logging, pid file, user) and
//! about clients (client ids, outgoing QoS, session expiry), kept apart from
//! [`Config`](super::Config)'s broker limits so a mosquitto host's file maps onto one place.

use std::path::PathBuf;

/// Where log lines go (`log_dest`). mosquitto ORs every `log_dest` line together and `none`
/// clears them; with no `log_dest` at all it logs to stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDests {
    pub stdout: bool,
    pub stderr: bool,
    /// `log_dest syslog`: to the local syslog daemon (`/dev/log`), facility `log_facility`.
    pub syslog: bool,
    /// `log_dest topic`: published on `$SYS/broker/log/<kind>` as mosquitto does.
    pub topic: bool,
    /// `log_dest file PATH`: appended to PATH, opened before privileges are dropped.
    pub file: Option<PathBuf>,
}

impl LogDests {
    /// mosquitto's default: stderr only.
    pub const STDERR: LogDests = LogDests {
        stdout: false,
        stderr: true,
        syslog: false,
        topic: false,
        file: None,
    };
    /// `log_dest none`.
    pub const NONE: LogDests = LogDests {
        stdout: false,
        stderr: false,
        syslog: false,
        topic: false,
        file: None,
    };
    /// Only stdout (`log_dest stdout`).
    pub const STDOUT: LogDests = LogDests {
        stdout: true,
        ..LogDests::NONE
    };

    /// No destination at all: nothing is ever written.
    pub fn is_none(&self) -> bool {
        *self == LogDests::NONE
    }
}

impl Default for LogDests {
    fn default() -> LogDests {
        LogDests::STDERR
    }
}

/// Process-level options: how log lines look, the pid file, the user to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOptions {
    /// `pid_file`: written at start (before privileges are dropped), removed at exit.
    pub pid_file: Option<PathBuf>,
    /// `user`: when started as root, the user to switch to once the listeners are bound and
    /// the files opened. `None` = mosquitto's default: `mosquitto`, or `nobody` when there is
    /// no such user. `root` keeps root (with a warning, as mosquitto).
    pub user: Option<String>,
    /// `log_facility N`: syslog facility LOCAL0..LOCAL7; `None` = DAEMON (mosquitto's default).
    pub log_facility: Option<u8>,
    /// `log_timestamp`: prefix each line with the time (default true).
    pub log_timestamp: bool,
    /// `log_timestamp_format`: strftime(3) format of that time; `None` = Unix seconds.
    pub log_timestamp_format: Option<String>,
    /// `connection_messages`: log client connects and disconnects (default true).
    pub connection_messages: bool,
}

impl Default for HostOptions {
    fn default() -> HostOptions {
        HostOptions {
            pid_file: None,
            user: None,
            log_facility: None,
            log_timestamp: true,
            log_timestamp_format: None,
            connection_messages: true,
        }
    }
}

/// Options about what clients may do and what they get, beyond the broker limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// `allow_zero_length_clientid` (default true): a 3.1.1/5.0 client may send an empty
    /// client id and get one assigned; when false it is refused (identifier rejected).
    pub allow_zero_length_clientid: bool,
    /// `auto_id_prefix`: the start of assigned client ids (default `auto-`, as mosquitto).
    pub auto_id_prefix: String,
    /// `clientid_prefixes`: only client ids starting with this are accepted (`None` = any).
    pub clientid_prefixes: Option<String>,
    /// `use_username_as_clientid`: the username replaces the client id (a client without a
    /// username is refused, as mosquitto does).
    pub use_username_as_clientid: bool,
    /// `persistent_client_expiration`: the session of a client that stays away this many
    /// seconds is removed, whatever its own expiry (3.x clean session 0 never expires
    /// otherwise); `None` = no cap.
    pub persistent_client_expiration: Option<u32>,
    /// `upgrade_outgoing_qos`: deliver at the subscription's QoS, not the message's.
    pub upgrade_outgoing_qos: bool,
    /// `max_inflight_bytes`: payload bytes of outgoing QoS 1/2 messages in flight per client
    /// (0 = no limit), besides `max_inflight_messages`.
    pub max_inflight_bytes: usize,
    /// `set_tcp_nodelay`: disable Nagle's algorithm on client sockets. midge always does,
    /// for latency (it coalesces its own writes per loop turn); false is honoured.
    pub set_tcp_nodelay: bool,
    /// `check_retain_source`: a retained message is sent to a new subscriber only while its
    /// publisher may still publish on its topic (the ACL as it is now, e.g. after a reload).
    /// Default false: what mosquitto 2.0 does (its manual says true; its code never sets it).
    pub check_retain_source: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".into(),
            clientid_prefixes: None,
            use_username_as_clientid: false,
            persistent_client_expiration: None,
            upgrade_outgoing_qos: false,
            max_inflight_bytes: 0,
            set_tcp_nodelay: true,
            check_retain_source: false,
        }
    }
}

impl ClientOptions {
    /// The QoS a message published at `published` is delivered at to a subscription granted
    /// `granted`: the lower of the two, or `granted` with `upgrade_outgoing_qos` (as
    /// mosquitto, against the specification's rule [MQTT-3.8.4-8]).
    pub fn outgoing_qos(
        &self,
        granted: crate::protocol::QoS,
        published: crate::protocol::QoS,
    ) -> crate::protocol::QoS {
        if self.upgrade_outgoing_qos {
            granted
        } else {
            granted.min(published)
        }
    }

    /// How long a session is kept for an absent client: its own expiry interval (3.x clean
    /// session 0 is "never", `u32::MAX`), at most `persistent_client_expiration` (as
    /// mosquitto's `session_expiry__add` caps every interval by it).
    pub fn persistent_expiry(&self, interval: u32) -> u32 {
        match self.persistent_client_expiration {
            Some(limit) => interval.min(limit),
            None => interval,
        }
    }
}

/// `persistent_client_expiration`'s value: a number and a unit (`h`, `d`, `w`, `m`, `y`), as
/// mosquitto reads it: "1d", "2w". Returns seconds.
pub fn parse_expiration(value: &str) -> Option<u32> {
    // The unit is the last character, which need not be one byte ("1é").
    let last = value.char_indices().next_back()?.0;
    let (digits, unit) = value.split_at(last);
    let n: u64 = digits.parse().ok().filter(|n| *n > 0)?;
    let unit: u64 = match unit {
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        "m" => 30 * 86400,
        "y" => 365 * 86400,
        _ => return None,
    };
    u32::try_from(n.checked_mul(unit)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_qos_is_the_lower_unless_upgraded() {
        use crate::protocol::QoS;
        let mut o = ClientOptions::default();
        assert_eq!(
            o.outgoing_qos(QoS::ExactlyOnce, QoS::AtMostOnce),
            QoS::AtMostOnce
        );
        assert_eq!(
            o.outgoing_qos(QoS::AtMostOnce, QoS::ExactlyOnce),
            QoS::AtMostOnce
        );
        o.upgrade_outgoing_qos = true;
        assert_eq!(
            o.outgoing_qos(QoS::ExactlyOnce, QoS::AtMostOnce),
            QoS::ExactlyOnce
        );
        assert_eq!(
            o.outgoing_qos(QoS::AtMostOnce, QoS::ExactlyOnce),
            QoS::AtMostOnce
        );
    }

    #[test]
    fn the_expiration_caps_every_session() {
        let mut o = ClientOptions::default();
        assert_eq!(o.persistent_expiry(u32::MAX), u32::MAX);
        o.persistent_client_expiration = Some(3600);
        assert_eq!(o.persistent_expiry(u32::MAX), 3600);
        assert_eq!(o.persistent_expiry(60), 60);
        assert_eq!(o.persistent_expiry(7200), 3600);
        assert_eq!(o.persistent_expiry(0), 0);
    }

    #[test]
    fn expiration_units_are_mosquittos() {
        assert_eq!(parse_expiration("2h"), Some(7200));
        assert_eq!(parse_expiration("1d"), Some(86400));
        assert_eq!(parse_expiration("1w"), Some(604800));
        assert_eq!(parse_expiration("1m"), Some(30 * 86400));
        assert_eq!(parse_expiration("1y"), Some(365 * 86400));
        // A last character of several bytes (a fuzzer found the split inside one).
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "1x",
            "10",
            "99999999y",
            "1é",
            "é",
            "1€",
        ] {
            assert_eq!(parse_expiration(bad), None, "{bad}");
        }
    }
}
