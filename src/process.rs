//! What a broker started by an init system does as a process, as mosquitto does it: the pid
//! file (`pid_file`) and the switch from root to an unprivileged user (`user`) once the
//! listeners are bound and the files are open.

use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// mosquitto's default `user`, and where it falls back when that user does not exist.
const DEFAULT_USER: &str = "mosquitto";
const FALLBACK_USER: &str = "nobody";

/// The pid file, removed when dropped (at exit).
#[derive(Debug)]
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's id to `path` (as root, before privileges are dropped).
    pub fn write(path: &Path) -> io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write pid file {}: {e}", path.display()),
            )
        })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // After the switch to another user the file (written as root) may not be removable;
        // mosquitto leaves it too, and a stale pid file is harmless to systemd.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A user to switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Looks `name` up in the user database.
pub fn lookup(name: &str) -> io::Result<Option<Account>> {
    let c_name = CString::new(name).map_err(|_| io::Error::other("user name contains NUL"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r fills `pwd` with pointers into `buf`, both alive for this call;
    // `result` is null when there is no such user.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Ok(None);
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwnam_r.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Ok(Some(Account {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }))
}

/// The account a root process switches to: `user`, or mosquitto's default (`mosquitto`, else
/// `nobody`). `Ok(None)` = stay root (`user root`, or not root at all).
pub fn target_account(config: &Config, euid: libc::uid_t) -> io::Result<Option<Account>> {
    if euid != 0 {
        return Ok(None); // "If run as a non-root user, this setting has no effect."
    }
    match config.host.user.as_deref() {
        Some("root") => Ok(None),
        Some(name) if name != DEFAULT_USER => lookup(name)?.map(Some).ok_or_else(|| {
            io::Error::other(format!(
                "cannot switch to user '{name}' (the 'user' option): no such user"
            ))
        }),
        _ => match lookup(DEFAULT_USER)? {
            Some(a) => Ok(Some(a)),
            None => lookup(FALLBACK_USER)?.map(Some).ok_or_else(|| {
                io::Error::other(
                    "running as root and neither 'mosquitto' nor 'nobody' exists: \
                     set 'user' to an unprivileged user (or 'user root')",
                )
            }),
        },
    }
}

/// Switches the whole process (every thread: glibc applies set*id to all of them) to
/// `account`: supplementary groups, then group, then user. Checks that root cannot be
/// regained.
pub fn drop_to(account: &Account) -> io::Result<()> {
    let c_name = CString::new(account.name.as_str())
        .map_err(|_| io::Error::other("user name contains NUL"))?;
    let fail = |what: &str| {
        let e = io::Error::last_os_error();
        io::Error::new(
            e.kind(),
            format!("cannot switch to user '{}': {what}: {e}", account.name),
        )
    };
    // SAFETY: plain system calls with valid arguments; order matters (groups need root).
    unsafe {
        if libc::initgroups(c_name.as_ptr(), account.gid) != 0 {
            return Err(fail("initgroups"));
        }
        if libc::setgid(account.gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(account.uid) != 0 {
            return Err(fail("setuid"));
        }
        if account.uid != 0 && libc::setuid(0) == 0 {
            return Err(io::Error::other(format!(
                "switched to user '{}' but root could be regained",
                account.name
            )));
        }
    }
    Ok(())
}

/// Whether the current (possibly new) user may create files in `dir`.
pub fn can_write(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The effective user id.
pub fn euid() -> libc::uid_t {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Writes the pid file and leaves root as `config` says, after the broker bound its ports
/// and opened its files. Returns the pid file to keep until exit.
pub fn settle(config: &Config) -> io::Result<Option<PidFile>> {
    let pid_file = match &config.host.pid_file {
        Some(path) => Some(PidFile::write(path)?),
        None => None,
    };
    let euid = euid();
    match target_account(config, euid)? {
        Some(account) => {
            drop_to(&account)?;
            log::info!(
                "Switched to user '{}' (uid {}, gid {}).",
                account.name,
                account.uid,
                account.gid
            );
            if let Some(dir) = config.persistence_dir() {
                if !can_write(&dir) {
                    return Err(io::Error::other(format!(
                        "user '{}' cannot write the persistence directory {} \
                         (give it to that user, as for mosquitto, or set 'user')",
                        account.name,
                        dir.display()
                    )));
                }
            }
        }
        None if euid == 0 => {
            log::warn!("Running as root: set 'user' to an unprivileged user.");
        }
        None => {}
    }
    Ok(pid_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_and_unknown_users_are_not() {
        let root = lookup("root").unwrap().expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(lookup("no-such-user-midge-test").unwrap(), None);
    }

    #[test]
    fn the_target_follows_mosquittos_rules() {
        let mut config = Config::default();
        // Not root: nothing to do, whatever `user` says.
        config.host.user = Some("no-such-user-midge-test".into());
        assert_eq!(target_account(&config, 1000).unwrap(), None);
        // Root and an unknown user: an error that names it.
        let err = target_account(&config, 0).unwrap_err().to_string();
        assert!(err.contains("no-such-user-midge-test"), "{err}");
        config.host.user = Some("root".into());
        assert_eq!(target_account(&config, 0).unwrap(), None);
        // Unset: mosquitto, else nobody.
        config.host.user = None;
        let want = lookup("mosquitto")
            .unwrap()
            .or_else(|| lookup("nobody").unwrap());
        assert_eq!(target_account(&config, 0).unwrap(), want);
    }

    #[test]
    fn pid_file_holds_the_pid_and_goes_at_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pid");
        let pid = PidFile::write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(pid);
        assert!(!path.exists());
        let err = PidFile::write(&dir.path().join("none/m.pid")).unwrap_err();
        assert!(err.to_string().contains("none/m.pid"), "{err}");
    }
}
