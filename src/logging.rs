//! The broker's logger: a [`log::Log`] that writes `<unix seconds>: <level>: <message>` lines
//! to the `log_dest` of the config, keeping the event kinds chosen by `log_type`.
//!
//! `log_type` maps onto `log` levels: `error` -> Error, `warning` -> Warn, `notice` and
//! `information` -> Info, `debug` (and `internal`) -> Debug and Trace; mosquitto's default set
//! is error, warning, notice and information. mosquitto's `subscribe`, `unsubscribe` and
//! `websockets` kinds are `log` targets: log them with `log::info!(target: TARGET_SUBSCRIBE, ..)`
//! and they are written only when that kind is chosen, whatever their level.
//!
//! Each line is formatted into one buffer and written with a single `write_all` under the
//! stream's lock, so lines from two shard threads never interleave.
//!
//! Never log secrets: passwords (CONNECT password, password-file hashes, bridge passwords) must
//! not reach a log call, at any level. Log the user name and the outcome instead.

use std::fmt::Write as _;
use std::io;
use std::sync::{OnceLock, RwLock};

use log::{Level, LevelFilter, Metadata, Record};

use crate::config::{Config, LogDests};

mod sinks;
mod stamp;

use sinks::Sinks;
pub use sinks::{take_topic_lines, TopicLine};
use stamp::Stamp;

/// Target for SUBSCRIBE events (`log_type subscribe`).
pub const TARGET_SUBSCRIBE: &str = "subscribe";
/// Target for UNSUBSCRIBE events (`log_type unsubscribe`).
pub const TARGET_UNSUBSCRIBE: &str = "unsubscribe";
/// Target for WebSocket events (`log_type websockets`).
pub const TARGET_WEBSOCKETS: &str = "websockets";
/// Target for client connect and disconnect lines, written unless `connection_messages false`
/// (they are `notice` lines otherwise: kept by the default `log_type`s).
pub const TARGET_CONNECTION: &str = "connection";

/// Which kinds of event are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogTypes {
    pub error: bool,
    pub warning: bool,
    pub info: bool,
    pub debug: bool,
    pub subscribe: bool,
    pub unsubscribe: bool,
    pub websockets: bool,
}

impl LogTypes {
    /// Everything (`log_type all`, `-v`).
    pub const ALL: LogTypes = LogTypes {
        error: true,
        warning: true,
        info: true,
        debug: true,
        subscribe: true,
        unsubscribe: true,
        websockets: true,
    };

    /// mosquitto's default: error, warning, notice, information.
    pub const DEFAULT: LogTypes = LogTypes {
        error: true,
        warning: true,
        info: true,
        ..LogTypes::NONE
    };

    /// Nothing (`log_type none`).
    pub const NONE: LogTypes = LogTypes {
        error: false,
        warning: false,
        info: false,
        debug: false,
        subscribe: false,
        unsubscribe: false,
        websockets: false,
    };

    /// Folds `log_type` values in order, as mosquitto does: an empty list is the default set,
    /// `none` clears what came before, `all` sets everything. Unknown names are ignored (the
    /// config parser has already refused them).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> LogTypes {
        if names.is_empty() {
            return LogTypes::DEFAULT;
        }
        let mut t = LogTypes::NONE;
        for name in names {
            match name.as_ref() {
                "error" => t.error = true,
                "warning" => t.warning = true,
                "notice" | "information" => t.info = true,
                "debug" | "internal" => t.debug = true,
                "subscribe" => t.subscribe = true,
                "unsubscribe" => t.unsubscribe = true,
                "websockets" => t.websockets = true,
                "all" => t = LogTypes::ALL,
                "none" => t = LogTypes::NONE,
                _ => {}
            }
        }
        t
    }

    /// Whether an event of `level` for `target` is written.
    pub fn enabled(&self, level: Level, target: &str) -> bool {
        match target {
            TARGET_SUBSCRIBE => return self.subscribe,
            TARGET_UNSUBSCRIBE => return self.unsubscribe,
            TARGET_WEBSOCKETS => return self.websockets,
            _ => {}
        }
        match level {
            Level::Error => self.error,
            Level::Warn => self.warning,
            Level::Info => self.info,
            Level::Debug | Level::Trace => self.debug,
        }
    }

    /// The most verbose level any enabled kind needs (for `log::set_max_level`, so that
    /// disabled log calls cost one comparison).
    pub fn max_level(&self) -> LevelFilter {
        if self.debug {
            LevelFilter::Trace
        } else if self.info || self.subscribe || self.unsubscribe || self.websockets {
            // The kind targets may be logged at any level up to Trace; Info is what the
            // broker uses for them.
            LevelFilter::Info
        } else if self.warning {
            LevelFilter::Warn
        } else if self.error {
            LevelFilter::Error
        } else {
            LevelFilter::Off
        }
    }
}

/// Whether `target` is midge's own (its modules, or one of the kind targets above).
fn is_midge_target(target: &str) -> bool {
    target == "midge"
        || target.starts_with("midge::")
        || matches!(
            target,
            TARGET_SUBSCRIBE | TARGET_UNSUBSCRIBE | TARGET_WEBSOCKETS | TARGET_CONNECTION
        )
}

/// The logger installed by [`init`].
#[derive(Debug)]
pub struct Logger {
    /// The `log_dest`s the sinks were opened for (a reload compares them).
    dest: LogDests,
    types: LogTypes,
    sinks: Sinks,
    stamp: Stamp,
    /// `connection_messages`: whether [`TARGET_CONNECTION`] events are written.
    connection_messages: bool,
}

impl Logger {
    /// A logger for `config`; `verbose` (`-v`) turns every kind on, as mosquitto's `-v`.
    /// Opens the log file and the syslog socket now (before privileges are dropped); a log
    /// file that cannot be opened is an error that names it.
    pub fn new(config: &Config, verbose: bool) -> io::Result<Logger> {
        let types = if verbose {
            LogTypes::ALL
        } else {
            LogTypes::from_names(&config.log_types)
        };
        Ok(Logger {
            dest: config.log_dest.clone(),
            types,
            sinks: Sinks::open(&config.log_dest, config.host.log_facility)?,
            stamp: Stamp::new(&config.host),
            connection_messages: config.host.connection_messages,
        })
    }

    /// The kinds this logger writes.
    pub fn types(&self) -> LogTypes {
        self.types
    }
}

/// The word a line gives for its level.
fn level_word(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Appends one log line (`<unix seconds>: <level>: <message>\n`) to `buf`.
pub fn format_line(
    buf: &mut String,
    unix_seconds: u64,
    level: Level,
    message: &std::fmt::Arguments<'_>,
) {
    // Writing to a String cannot fail.
    let _ = writeln!(buf, "{unix_seconds}: {}: {message}", level_word(level));
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Debug and trace events of dependencies (mio's per-registration traces) are noise
        // even under -v: only midge's own are written. Their warnings and errors still show.
        let foreign_detail = metadata.level() > Level::Info && !is_midge_target(metadata.target());
        let target = metadata.target();
        !self.sinks.is_empty()
            && !foreign_detail
            && (self.connection_messages || target != TARGET_CONNECTION)
            && self.types.enabled(metadata.level(), target)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = String::with_capacity(128);
        self.stamp.write(&mut line);
        let body_at = line.len();
        let _ = writeln!(line, "{}: {}", level_word(record.level()), record.args());
        self.sinks
            .write(&line, body_at, record.level(), record.target());
    }

    fn flush(&self) {
        self.sinks.flush();
    }
}

/// The installed logger: a [`Logger`] that a reload can replace.
struct Installed {
    logger: RwLock<Logger>,
    /// `-v` was given: a reload keeps logging everything.
    verbose: bool,
}

impl log::Log for Installed {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.logger
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        self.logger
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .log(record)
    }

    fn flush(&self) {
        self.logger
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .flush()
    }
}

static INSTALLED: OnceLock<&'static Installed> = OnceLock::new();

/// The most verbose level `logger` writes.
fn max_level(logger: &Logger) -> LevelFilter {
    if logger.sinks.is_empty() {
        LevelFilter::Off
    } else {
        logger.types.max_level()
    }
}

/// Installs the logger for `config` as the process's `log` logger; `verbose` (`-v`) logs
/// everything. Call once, before the broker starts; later calls leave the first logger in place
/// ([`reconfigure`] changes it). Fails when a `log_dest file` cannot be opened for appending.
pub fn init(config: &Config, verbose: bool) -> io::Result<()> {
    let logger = Logger::new(config, verbose)?;
    let max = max_level(&logger);
    let installed: &'static Installed = Box::leak(Box::new(Installed {
        logger: RwLock::new(logger),
        verbose,
    }));
    if INSTALLED.set(installed).is_ok() && log::set_logger(installed).is_ok() {
        log::set_max_level(max);
    }
    Ok(())
}

/// Applies a reloaded config's `log_dest` and `log_type` to the installed logger. Returns
/// what changed, for the log (empty: nothing, or no logger installed by [`init`]). A log file
/// that cannot be opened (the broker may no longer be root) keeps the old logger and is the error.
pub fn reconfigure(config: &Config) -> io::Result<Vec<String>> {
    let Some(installed) = INSTALLED.get() else {
        return Ok(Vec::new());
    };
    let new = Logger::new(config, installed.verbose)?;
    let mut logger = installed.logger.write().unwrap_or_else(|e| e.into_inner());
    let mut changes = Vec::new();
    if logger.dest != new.dest {
        changes.push(format!("log_dest {:?} -> {:?}", logger.dest, new.dest).to_lowercase());
    }
    if logger.types != new.types {
        changes.push(format!("log_type {:?}", config.log_types));
    }
    log::set_max_level(max_level(&new));
    *logger = new;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log as _;

    #[test]
    fn default_types_are_mosquittos() {
        let t = LogTypes::from_names::<&str>(&[]);
        assert_eq!(t, LogTypes::DEFAULT);
        assert!(t.enabled(Level::Error, "midge"));
        assert!(t.enabled(Level::Warn, "midge"));
        assert!(t.enabled(Level::Info, "midge"));
        assert!(!t.enabled(Level::Debug, "midge"));
        assert!(!t.enabled(Level::Trace, "midge"));
        assert!(!t.enabled(Level::Info, TARGET_SUBSCRIBE));
        assert_eq!(t.max_level(), LevelFilter::Info);
    }

    #[test]
    fn log_types_fold_in_order() {
        let t = LogTypes::from_names(&["error"]);
        assert!(t.enabled(Level::Error, "x"));
        assert!(!t.enabled(Level::Warn, "x"));
        assert_eq!(t.max_level(), LevelFilter::Error);
        assert_eq!(LogTypes::from_names(&["all", "none"]), LogTypes::NONE);
        assert_eq!(LogTypes::NONE.max_level(), LevelFilter::Off);
        let t = LogTypes::from_names(&["none", "debug"]);
        assert!(t.enabled(Level::Trace, "x"));
        assert!(!t.enabled(Level::Error, "x"));
        assert_eq!(t.max_level(), LevelFilter::Trace);
        let t = LogTypes::from_names(&["notice"]);
        assert!(t.enabled(Level::Info, "x"));
        let t = LogTypes::from_names(&["subscribe"]);
        assert!(t.enabled(Level::Info, TARGET_SUBSCRIBE));
        assert!(!t.enabled(Level::Info, TARGET_UNSUBSCRIBE));
        assert!(!t.enabled(Level::Info, "midge"));
        assert_eq!(LogTypes::from_names(&["all"]), LogTypes::ALL);
    }

    #[test]
    fn verbose_enables_everything() {
        let config = Config {
            log_types: vec!["error".into()],
            ..Config::default()
        };
        assert_eq!(Logger::new(&config, true).unwrap().types(), LogTypes::ALL);
        assert_eq!(
            Logger::new(&config, false).unwrap().types(),
            LogTypes::from_names(&["error"])
        );
    }

    #[test]
    fn log_dest_none_writes_nothing() {
        let config = Config {
            log_dest: crate::config::LogDests::NONE,
            ..Config::default()
        };
        let logger = Logger::new(&config, true).unwrap();
        let meta = Metadata::builder()
            .level(Level::Error)
            .target("midge")
            .build();
        assert!(!logger.enabled(&meta));
    }

    #[test]
    fn dependency_debug_is_not_written_even_when_verbose() {
        let logger = Logger::new(&Config::default(), true).unwrap();
        let meta = |level, target| Metadata::builder().level(level).target(target).build();
        assert!(logger.enabled(&meta(Level::Trace, "midge::shard")));
        assert!(logger.enabled(&meta(Level::Debug, "midge")));
        assert!(!logger.enabled(&meta(Level::Trace, "mio::poll")));
        assert!(!logger.enabled(&meta(Level::Debug, "rustls")));
        assert!(logger.enabled(&meta(Level::Warn, "rustls")));
        assert!(logger.enabled(&meta(Level::Debug, TARGET_SUBSCRIBE)));
    }

    #[test]
    fn connection_messages_false_drops_connection_lines_only() {
        let mut config = Config::default();
        let meta = |target| {
            Metadata::builder()
                .level(Level::Info)
                .target(target)
                .build()
        };
        assert!(Logger::new(&config, false)
            .unwrap()
            .enabled(&meta(TARGET_CONNECTION)));
        config.host.connection_messages = false;
        let logger = Logger::new(&config, false).unwrap();
        assert!(!logger.enabled(&meta(TARGET_CONNECTION)));
        assert!(logger.enabled(&meta("midge::broker")));
    }

    #[test]
    fn line_format() {
        let mut buf = String::new();
        format_line(
            &mut buf,
            1700000000,
            Level::Warn,
            &format_args!("client {} gone", "c1"),
        );
        format_line(&mut buf, 1700000001, Level::Error, &format_args!("x"));
        assert_eq!(
            buf,
            "1700000000: warning: client c1 gone\n1700000001: error: x\n"
        );
    }
}
