//! Authentication and authorisation: mosquitto password files, ACL files, the anonymous policy.
//!
//! - [`password`]: `password_file` in `mosquitto_passwd`'s formats (`$6$`, `$7$`): parse,
//!   verify in constant time, write.
//! - [`acl`]: `acl_file` in mosquitto's syntax; [`Acl::for_client`] compiles one client's rules
//!   at CONNECT, [`ClientAcl::allowed`] checks a PUBLISH/delivery/SUBSCRIBE without allocating.
//! - [`worker`]: [`AuthWorker`], a small thread pool that verifies passwords off the event loop
//!   (PBKDF2 is slow on purpose).
//! - [`x509`]: the username a client certificate carries (`use_identity_as_username`,
//!   `use_subject_as_username`).
//! - [`passwd`]: the `midge passwd` command (mosquitto_passwd's options).
//! - [`Auth`]: what the broker loads from its [`Config`] at start and consults per client.
//!
//! Nothing here logs a password or a hash.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;

pub mod acl;
pub mod enhanced;
pub mod passwd;
pub mod password;
pub mod scram;
pub mod topic;
pub mod worker;
pub mod x509;

pub use acl::{Access, Acl, ClientAcl};
pub use password::{HashAlgorithm, PasswordFile, PasswordHash};
pub use worker::{AuthClient, AuthRequest, AuthResponse, AuthWorker};

/// Why a password file or ACL file could not be loaded or written, or `midge passwd` failed.
/// `Display` is the one-line message for the user: `FILE:LINE: problem`, `FILE: cannot read:
/// OS error`, ...
#[derive(Debug)]
pub enum AuthError {
    /// A file could not be read.
    Read { path: PathBuf, error: io::Error },
    /// A file could not be written.
    Write { path: PathBuf, error: io::Error },
    /// A line of a password or ACL file is wrong.
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    /// Anything else (a bad `midge passwd` argument, no randomness, ...).
    Other(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Read { path, error } => {
                write!(f, "{}: cannot read: {error}", path.display())
            }
            AuthError::Write { path, error } => {
                write!(f, "{}: cannot write: {error}", path.display())
            }
            AuthError::Parse {
                file,
                line,
                message,
            } => write!(f, "{file}:{line}: {message}"),
            AuthError::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuthError::Read { error, .. } | AuthError::Write { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What CONNECT should do with a client's credentials, before any slow work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCheck {
    /// Accept (anonymous allowed, or no password file and the listener allows anonymous).
    Accept,
    /// Refuse: CONNACK 0x05 (3.1/3.1.1) or 0x87 Not authorized (5.0), as mosquitto 2.0 does.
    Refuse,
    /// Verify the user name and password against the password file
    /// ([`PasswordFile::verify`], off the event loop: [`AuthWorker`]).
    Verify,
}

/// The security state of the broker or of one listener, loaded from the [`Config`] at start.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// `password_file`, loaded.
    pub passwords: Option<Arc<PasswordFile>>,
    /// `acl_file`, loaded.
    pub acl: Option<Arc<Acl>>,
}

impl Auth {
    /// Loads `config.password_file` and `config.acl_file` (those that are set). Errors name the
    /// file and, for a bad line, the line.
    pub fn load(config: &Config) -> Result<Auth, AuthError> {
        Auth::load_files(config.password_file.as_deref(), config.acl_file.as_deref())
    }

    /// Loads a password file and an ACL file, either of which may be absent (one listener's
    /// under `per_listener_settings`).
    pub fn load_files(
        password_file: Option<&std::path::Path>,
        acl_file: Option<&std::path::Path>,
    ) -> Result<Auth, AuthError> {
        let passwords = password_file
            .map(|p| PasswordFile::load(p).map(Arc::new))
            .transpose()?;
        let acl = acl_file.map(|p| Acl::load(p).map(Arc::new)).transpose()?;
        Ok(Auth { passwords, acl })
    }

    /// True if something authenticates clients (a password file). A listener beyond loopback
    /// without it, and without `allow_anonymous true`, must not start.
    pub fn has_authentication(&self) -> bool {
        self.passwords.is_some()
    }

    /// The first, cheap step of CONNECT, with mosquitto 2.0's rules:
    /// - no user name: accepted only if `allow_anonymous` (the listener's effective value);
    /// - a user name and a password file: [`ConnectCheck::Verify`] (a missing password is
    ///   verified as empty and fails, as in mosquitto);
    /// - a user name and no password file: nothing can check it, so it counts as anonymous.
    pub fn connect_check(&self, username: Option<&str>, allow_anonymous: bool) -> ConnectCheck {
        match (username, &self.passwords) {
            (Some(_), Some(_)) => ConnectCheck::Verify,
            _ if allow_anonymous => ConnectCheck::Accept,
            _ => ConnectCheck::Refuse,
        }
    }

    /// [`Auth::connect_check`] then, if needed, the password check, on the calling thread:
    /// SLOW with `$7$` entries. For tests and tools; the broker uses [`AuthWorker`].
    pub fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
        allow_anonymous: bool,
    ) -> bool {
        match self.connect_check(username, allow_anonymous) {
            ConnectCheck::Accept => true,
            ConnectCheck::Refuse => false,
            ConnectCheck::Verify => match (&self.passwords, username) {
                (Some(file), Some(user)) => file.verify(user, password.unwrap_or(b"")),
                _ => false,
            },
        }
    }

    /// The ACL of one client (call at CONNECT, keep for the connection): everything allowed
    /// when no `acl_file` is configured.
    pub fn client_acl(&self, client_id: &str, username: Option<&str>) -> ClientAcl {
        match &self.acl {
            Some(acl) => acl.for_client(client_id, username),
            None => ClientAcl::allow_all_for(username),
        }
    }
}

/// Whether `acl` lets its client do `access` on `topic` (a topic for publish and receive, a
/// filter for subscribe): the one authorization decision, called for every publish, subscribe
/// and delivery (`handle::hooks` and the shard's `offer`), and the place a plugin's ACL check
/// will be asked.
#[inline]
pub fn authorize(acl: &ClientAcl, topic: &str, access: Access) -> bool {
    acl.allowed(topic, access)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB_6: &str = "bob:$6$i+0wlo2GzCeMo0dW$Mb2oRryLuE4ImUmPv48Lx+As8c5S8gH0NMug8aQ+qxILa2Jj/PV/NzwtkTvvusYHFRfVq+d7Dr3LtA8q/Fesww==\n";

    #[test]
    fn connect_rules_follow_mosquitto() {
        let none = Auth::default();
        assert_eq!(none.connect_check(None, true), ConnectCheck::Accept);
        assert_eq!(none.connect_check(None, false), ConnectCheck::Refuse);
        assert_eq!(none.connect_check(Some("u"), true), ConnectCheck::Accept);
        assert_eq!(none.connect_check(Some("u"), false), ConnectCheck::Refuse);
        let with = Auth {
            passwords: Some(Arc::new(PasswordFile::parse(BOB_6, "pw").unwrap())),
            acl: None,
        };
        assert!(with.has_authentication());
        assert_eq!(with.connect_check(None, false), ConnectCheck::Refuse);
        assert_eq!(with.connect_check(None, true), ConnectCheck::Accept);
        assert_eq!(with.connect_check(Some("bob"), true), ConnectCheck::Verify);
        assert!(with.authenticate(Some("bob"), Some(b"hunter2"), false));
        // Wrong credentials are refused even when anonymous clients are allowed.
        assert!(!with.authenticate(Some("bob"), Some(b"nope"), true));
        assert!(!with.authenticate(Some("bob"), None, true));
        assert!(!with.authenticate(Some("eve"), Some(b"hunter2"), true));
        assert!(with.client_acl("c", None).allowed("x", Access::Write));
    }

    #[test]
    fn load_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        let acl = dir.path().join("acl");
        std::fs::write(&pw, BOB_6).unwrap();
        std::fs::write(&acl, "user bob\ntopic read t\n").unwrap();
        let text = format!(
            "password_file {}\nacl_file {}\n",
            pw.display(),
            acl.display()
        );
        let config = Config::parse_str(&text, "m.conf").unwrap();
        let auth = Auth::load(&config).unwrap();
        assert_eq!(auth.passwords.as_ref().unwrap().len(), 1);
        let c = auth.client_acl("c", Some("bob"));
        assert!(c.allowed("t", Access::Read) && !c.allowed("t", Access::Write));
        std::fs::write(&acl, "user bob\ntopic reed t\n").unwrap();
        let e = Auth::load(&config).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2: bad access 'reed' (expected read, write, readwrite or deny)",
                acl.display()
            )
        );
    }
}
