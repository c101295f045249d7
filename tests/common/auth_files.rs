//! A temporary password file (written by `midge passwd`, mosquitto's format) and ACL file, and
//! a broker that uses them: the set-up every authentication and ACL test needs.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{run, Broker};

/// A private temporary directory holding `passwd` and `acl`; removed on drop.
pub struct AuthFiles {
    dir: tempfile::TempDir,
}

impl AuthFiles {
    /// `users` as (name, password), hashed with `midge passwd`'s default (`$7$`); `acl` is the
    /// ACL file's text.
    pub fn new(users: &[(&str, &str)], acl: &str) -> AuthFiles {
        let files = AuthFiles {
            dir: tempfile::tempdir().unwrap(),
        };
        let pw = files.path("passwd");
        for (i, (user, pass)) in users.iter().enumerate() {
            let mut args = vec!["-b"];
            if i == 0 {
                args.push("-c");
            }
            args.extend([pw.as_str(), user, pass]);
            files.passwd(&args);
        }
        std::fs::write(files.path("acl"), acl).unwrap();
        files
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> String {
        let p: PathBuf = self.dir.path().join(name);
        p.to_string_lossy().into_owned()
    }

    /// Runs `midge passwd ARGS` and asserts that it succeeded.
    pub fn passwd(&self, args: &[&str]) {
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_midge"))
                .arg("passwd")
                .args(args),
            Duration::from_secs(60),
        );
        assert!(out.success(), "midge passwd {args:?}: {out:?}");
    }

    /// A broker with both files, `allow_anonymous` as given, and the `extra` lines.
    /// `user root`: the files are 0600 in a private directory; mosquitto started as root would
    /// otherwise switch to its own user and not read them (midge likewise).
    pub fn broker(&self, allow_anonymous: bool, extra: &[&str]) -> Broker {
        let pw = format!("password_file {}", self.path("passwd"));
        let acl = format!("acl_file {}", self.path("acl"));
        let anon = format!("allow_anonymous {allow_anonymous}");
        let mut lines = vec![anon.as_str(), "user root", pw.as_str(), acl.as_str()];
        lines.extend_from_slice(extra);
        Broker::start_with(&lines)
    }
}
