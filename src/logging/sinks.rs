//! Where a formatted line goes: stdout, stderr, a file, syslog and the `$SYS/broker/log`
//! topics, any of them at once (`log_dest`, as mosquitto ORs them).
//!
//! The file and the syslog socket are opened when the logger is made, before the broker drops
//! root privileges, as mosquitto does: a log file under `/var/log` stays writable.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;

use log::Level;

use super::{TARGET_SUBSCRIBE, TARGET_UNSUBSCRIBE, TARGET_WEBSOCKETS};
use crate::config::LogDests;

/// The syslog daemon's socket.
const SYSLOG_SOCKET: &str = "/dev/log";
/// LOG_DAEMON, mosquitto's facility when `log_facility` is not said.
const FACILITY_DAEMON: u8 = 3;
/// LOG_LOCAL0: `log_facility N` is LOCAL0 + N.
const FACILITY_LOCAL0: u8 = 16;
/// Lines waiting for the `$SYS/broker/log` publisher; older ones are dropped past this.
const TOPIC_QUEUE_MAX: usize = 1000;

/// One line for `log_dest topic`: mosquitto's topic for its kind and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLine {
    pub topic: &'static str,
    pub payload: String,
}

static TOPIC_LINES: Mutex<VecDeque<TopicLine>> = Mutex::new(VecDeque::new());

/// Takes the lines logged for `log_dest topic` since the last call (shard 0 publishes them
/// at its tick, as mosquitto publishes its log on `$SYS/broker/log/...`).
pub fn take_topic_lines() -> Vec<TopicLine> {
    match TOPIC_LINES.lock() {
        Ok(mut q) => q.drain(..).collect(),
        Err(_) => Vec::new(),
    }
}

/// mosquitto's topic for a line of `level` and `target` (`$SYS/broker/log/E`, `W`, `N`, `I`,
/// `D`, `M` for subscribe, `U` for unsubscribe, `WS`).
fn topic_of(level: Level, target: &str) -> &'static str {
    match target {
        TARGET_SUBSCRIBE => return "$SYS/broker/log/M/subscribe",
        TARGET_UNSUBSCRIBE => return "$SYS/broker/log/M/unsubscribe",
        TARGET_WEBSOCKETS => return "$SYS/broker/log/WS",
        _ => {}
    }
    match level {
        Level::Error => "$SYS/broker/log/E",
        Level::Warn => "$SYS/broker/log/W",
        Level::Info => "$SYS/broker/log/N",
        Level::Debug | Level::Trace => "$SYS/broker/log/D",
    }
}

/// The destinations of a logger.
#[derive(Debug)]
pub(super) struct Sinks {
    stdout: bool,
    stderr: bool,
    topic: bool,
    file: Option<File>,
    syslog: Option<Syslog>,
}

impl Sinks {
    pub(super) fn open(dests: &LogDests, facility: Option<u8>) -> io::Result<Sinks> {
        let file = match &dests.file {
            Some(path) => Some(open_append(path)?),
            None => None,
        };
        let syslog = if dests.syslog {
            let facility = facility.map_or(FACILITY_DAEMON, |n| FACILITY_LOCAL0 + n);
            match Syslog::connect(Path::new(SYSLOG_SOCKET), facility) {
                Ok(s) => Some(s),
                Err(e) => {
                    // As openlog(3): no syslog daemon is not fatal; say so where we can.
                    eprintln!("midge: warning: log_dest syslog: cannot reach {SYSLOG_SOCKET}: {e}");
                    None
                }
            }
        } else {
            None
        };
        Ok(Sinks {
            stdout: dests.stdout,
            stderr: dests.stderr,
            topic: dests.topic,
            file,
            syslog,
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        !self.stdout && !self.stderr && !self.topic && self.file.is_none() && self.syslog.is_none()
    }

    /// Writes `line` (time, level, message, newline) everywhere; syslog gets it from
    /// `body_at` (without the time, which syslog adds). Each destination gets one write of
    /// the whole line, so lines of two threads never interleave. A failed write has nowhere
    /// to be reported: the line is dropped there.
    pub(super) fn write(&self, line: &str, body_at: usize, level: Level, target: &str) {
        if self.stdout {
            let _ = io::stdout().lock().write_all(line.as_bytes());
        }
        if self.stderr {
            let _ = io::stderr().lock().write_all(line.as_bytes());
        }
        if let Some(mut f) = self.file.as_ref() {
            // O_APPEND: each write lands whole at the end, whatever other writers do.
            let _ = f.write_all(line.as_bytes());
        }
        if let Some(s) = &self.syslog {
            s.send(level, line[body_at..].trim_end());
        }
        if self.topic {
            if let Ok(mut q) = TOPIC_LINES.lock() {
                if q.len() >= TOPIC_QUEUE_MAX {
                    q.pop_front();
                }
                q.push_back(TopicLine {
                    topic: topic_of(level, target),
                    payload: line.trim_end().to_owned(),
                });
            }
        }
    }

    pub(super) fn flush(&self) {
        if self.stdout {
            let _ = io::stdout().flush();
        }
        if self.stderr {
            let _ = io::stderr().flush();
        }
    }
}

/// Opens `path` for appending, creating it (0640: logs may name users and addresses).
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open log file {}: {e}", path.display()),
            )
        })
}

/// A connected datagram socket to the syslog daemon.
#[derive(Debug)]
pub(super) struct Syslog {
    socket: UnixDatagram,
    facility: u8,
    pid: u32,
}

impl Syslog {
    pub(super) fn connect(path: &Path, facility: u8) -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        // A full syslog queue must not stall a shard: drop the line instead.
        socket.set_nonblocking(true)?;
        Ok(Syslog {
            socket,
            facility,
            pid: std::process::id(),
        })
    }

    /// Sends `<PRI>midge[PID]: message` (the local syslog format, RFC 3164 without the
    /// time, which the daemon adds).
    pub(super) fn send(&self, level: Level, message: &str) {
        let _ = self.socket.send(self.datagram(level, message).as_bytes());
    }

    fn datagram(&self, level: Level, message: &str) -> String {
        let severity = match level {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        let pri = u32::from(self.facility) * 8 + severity;
        format!("<{pri}>midge[{}]: {message}", self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_gets_priority_and_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let daemon = UnixDatagram::bind(&path).unwrap();
        let s = Syslog::connect(&path, FACILITY_LOCAL0 + 3).unwrap();
        s.send(Level::Warn, "warning: disk is slow");
        let mut buf = [0u8; 256];
        let n = daemon.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        // LOCAL3 (19) * 8 + warning (4) = 156.
        assert_eq!(
            got,
            format!("<156>midge[{}]: warning: disk is slow", std::process::id())
        );
        let daemon_default = Syslog::connect(&path, FACILITY_DAEMON).unwrap();
        assert!(daemon_default
            .datagram(Level::Error, "x")
            .starts_with("<27>"));
    }

    #[test]
    fn topics_are_mosquittos() {
        assert_eq!(topic_of(Level::Error, "midge"), "$SYS/broker/log/E");
        assert_eq!(topic_of(Level::Warn, "midge"), "$SYS/broker/log/W");
        assert_eq!(topic_of(Level::Info, "midge::x"), "$SYS/broker/log/N");
        assert_eq!(topic_of(Level::Debug, "midge"), "$SYS/broker/log/D");
        assert_eq!(
            topic_of(Level::Info, TARGET_SUBSCRIBE),
            "$SYS/broker/log/M/subscribe"
        );
    }

    #[test]
    fn file_gets_every_line_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        std::fs::write(&path, "old\n").unwrap();
        let dests = LogDests {
            file: Some(path.clone()),
            ..LogDests::NONE
        };
        let sinks = Sinks::open(&dests, None).unwrap();
        assert!(!sinks.is_empty());
        sinks.write("1: info: a\n", 3, Level::Info, "midge");
        sinks.write("2: info: b\n", 3, Level::Info, "midge");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "old\n1: info: a\n2: info: b\n"
        );
        let missing = LogDests {
            file: Some(dir.path().join("no/such/dir/m.log")),
            ..LogDests::NONE
        };
        let err = Sinks::open(&missing, None).unwrap_err().to_string();
        assert!(
            err.contains("cannot open log file") && err.contains("no/such/dir"),
            "{err}"
        );
    }
}
