//! [`ConfigError`]: why a configuration could not be loaded.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a configuration could not be loaded. `Display` gives the one-line message shown to the
/// user: `FILE:LINE: problem`, or `FILE: cannot read: OS error`.
#[derive(Debug)]
pub enum ConfigError {
    /// A file or `include_dir` directory could not be read.
    Read { path: PathBuf, error: io::Error },
    /// An option midge does not know (neither mosquitto's nor its own).
    UnknownOption {
        file: String,
        line: usize,
        option: String,
    },
    /// An option with no value.
    MissingValue {
        file: String,
        line: usize,
        option: String,
    },
    /// An option whose value is wrong; `reason` says why.
    BadValue {
        file: String,
        line: usize,
        option: String,
        value: String,
        reason: String,
    },
    /// A line that is well-formed but does not fit with the rest (order rules, duplicates).
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "{}: cannot read: {error}", path.display())
            }
            ConfigError::UnknownOption { file, line, option } => {
                write!(f, "{file}:{line}: unknown option '{option}'")
            }
            ConfigError::MissingValue { file, line, option } => {
                write!(f, "{file}:{line}: missing value for '{option}'")
            }
            ConfigError::BadValue {
                file,
                line,
                option,
                value,
                reason,
            } => {
                write!(
                    f,
                    "{file}:{line}: bad value '{value}' for '{option}': {reason}"
                )
            }
            ConfigError::Invalid {
                file,
                line,
                message,
            } => write!(f, "{file}:{line}: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}
