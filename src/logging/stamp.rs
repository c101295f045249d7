//! The time at the start of a log line: `log_timestamp` and `log_timestamp_format`.

use std::ffi::CString;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::HostOptions;

/// How a line's time is written.
#[derive(Debug)]
pub(super) enum Stamp {
    /// `log_timestamp false`.
    None,
    /// Unix seconds, as mosquitto's default.
    Unix,
    /// `log_timestamp_format`: a strftime(3) format in local time.
    Format(CString),
}

impl Stamp {
    pub(super) fn new(host: &HostOptions) -> Stamp {
        if !host.log_timestamp {
            return Stamp::None;
        }
        match &host.log_timestamp_format {
            // The parser refuses NUL in the format, so this cannot fail.
            Some(f) => CString::new(f.as_str()).map_or(Stamp::Unix, Stamp::Format),
            None => Stamp::Unix,
        }
    }

    /// Appends the time and `": "` (nothing for [`Stamp::None`]).
    pub(super) fn write(&self, buf: &mut String) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self {
            Stamp::None => {}
            Stamp::Unix => {
                let _ = write!(buf, "{now}: ");
            }
            Stamp::Format(format) => {
                buf.push_str(&strftime(format, now));
                buf.push_str(": ");
            }
        }
    }
}

/// `format` applied to `unix_seconds` in local time, as mosquitto's `log_timestamp_format`.
pub(super) fn strftime(format: &CString, unix_seconds: u64) -> String {
    let t = unix_seconds as libc::time_t;
    let mut out = [0u8; 256];
    // SAFETY: localtime_r writes into a local `tm`; strftime writes at most `out.len()` bytes
    // into `out` and returns how many (0 when the result would not fit).
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return unix_seconds.to_string();
        }
        libc::strftime(out.as_mut_ptr().cast(), out.len(), format.as_ptr(), &tm)
    };
    String::from_utf8_lossy(&out[..n]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_the_time() {
        // Local time zone: only the zone-independent parts are compared.
        let s = strftime(&CString::new("%Y|%M|%S").unwrap(), 1_700_000_007);
        assert_eq!(s, "2023|13|27");
        let s = strftime(&CString::new("%s").unwrap(), 1_700_000_007);
        assert_eq!(s, "1700000007");
    }

    #[test]
    fn stamp_follows_the_options() {
        let mut host = HostOptions::default();
        let mut line = String::new();
        Stamp::new(&host).write(&mut line);
        assert!(
            line.ends_with(": ") && line[..line.len() - 2].parse::<u64>().is_ok(),
            "{line}"
        );
        host.log_timestamp_format = Some("%Y-X".into());
        let mut line = String::new();
        Stamp::new(&host).write(&mut line);
        assert!(line.starts_with("20") && line.ends_with("-X: "), "{line}");
        host.log_timestamp = false;
        let mut line = String::new();
        Stamp::new(&host).write(&mut line);
        assert_eq!(line, "");
    }
}
