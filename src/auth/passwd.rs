//! `midge passwd`: create, update and delete users in a mosquitto password file, with
//! `mosquitto_passwd`'s options, writing files that mosquitto reads.
//!
//! ```text
//! midge passwd [-H sha512|sha512-pbkdf2] [-I ITERATIONS] [-c | -D] FILE USER     (asks twice)
//! midge passwd [-H sha512|sha512-pbkdf2] [-I ITERATIONS] [-c] -b FILE USER PASSWORD
//! midge passwd -U FILE                             (hash a plain-text `user:password` file)
//! midge passwd -S sha256|sha512 [-I ITERATIONS] [-c] [-b] FILE USER [PASSWORD]
//! ```
//! `-S` (midge's own; mosquitto_passwd has no `-S`) writes a SCRAM verifier
//! (`$scram-sha-256$...`, see `auth::password`) instead of a mosquitto hash: the user can then
//! log in with MQTT 5 enhanced authentication (SCRAM-SHA-256 / -512) and with a plain password
//! as before. `-I` sets its iterations (default 4096, RFC 7677's minimum). With `-U`, every
//! plain-text line becomes a verifier.
//! Differences from mosquitto_passwd 2.0.11, all on the safe side: comment and blank lines are
//! kept when a file is updated (mosquitto_passwd calls them corrupt); `-U` leaves lines that are
//! already hashed alone (mosquitto_passwd hashes them a second time, locking those users out);
//! files are replaced atomically (write to a temporary file, then rename) and a new file is
//! created readable by its owner only (0600).
//!
//! Without `-b`, the password is read from the terminal twice without echo; when standard input
//! is not a terminal, its first line is the password (and a second line, if any, must repeat it).

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::password::{split_line, HashAlgorithm, PasswordHash, DEFAULT_ITERATIONS};
use super::scram::{self, Mechanism};
use super::AuthError;

/// The arguments of `midge passwd` (mosquitto_passwd's).
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Manage a mosquitto-compatible password file (mosquitto_passwd's options)",
    after_help = "Usage forms:\n  \
        midge passwd [-H sha512|sha512-pbkdf2] [-I N] [-c | -D] FILE USER\n  \
        midge passwd [-H sha512|sha512-pbkdf2] [-I N] [-c] -b FILE USER PASSWORD\n  \
        midge passwd -U FILE\n  \
        midge passwd -S sha256|sha512 [-I N] [-c] [-b] FILE USER [PASSWORD]"
)]
pub struct PasswdArgs {
    /// Create a new password file; an existing one is overwritten.
    #[arg(short = 'c')]
    pub create: bool,
    /// Delete USER rather than adding or updating its password.
    #[arg(short = 'D')]
    pub delete: bool,
    /// Batch mode: the password is given on the command line.
    #[arg(short = 'b')]
    pub batch: bool,
    /// Update a plain-text password file (`user:password` lines) to hashed passwords.
    #[arg(short = 'U')]
    pub upgrade: bool,
    /// Hash algorithm: sha512-pbkdf2 (`$7$`, the default) or sha512 (`$6$`, mosquitto 1.x).
    #[arg(short = 'H', value_name = "sha512|sha512-pbkdf2")]
    pub hash: Option<String>,
    /// Write a SCRAM verifier (sha256 or sha512) for MQTT 5 enhanced authentication
    /// (SCRAM-SHA-256 / SCRAM-SHA-512) rather than a mosquitto hash; it verifies plain
    /// passwords too. midge's own option (not in mosquitto_passwd).
    #[arg(short = 'S', value_name = "sha256|sha512")]
    pub scram: Option<String>,
    /// PBKDF2 iterations for sha512-pbkdf2 (default 101, as mosquitto 2.0) or -S (default 4096).
    #[arg(short = 'I', value_name = "ITERATIONS")]
    pub iterations: Option<u32>,
    /// The password file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The user name.
    #[arg(value_name = "USER")]
    pub username: Option<String>,
    /// The password (with -b only).
    #[arg(value_name = "PASSWORD", allow_hyphen_values = true)]
    pub password: Option<String>,
}

fn usage(message: &str) -> AuthError {
    AuthError::Other(message.to_owned())
}

impl PasswdArgs {
    /// The hash algorithm said by `-H` and `-I`.
    pub fn algorithm(&self) -> Result<HashAlgorithm, AuthError> {
        if let Some(scram) = self.scram.as_deref() {
            if self.hash.is_some() {
                return Err(usage("-S and -H cannot be used together"));
            }
            let mechanism = match scram {
                "sha256" | "sha-256" => Mechanism::Sha256,
                "sha512" | "sha-512" => Mechanism::Sha512,
                other => {
                    return Err(usage(&format!(
                        "-S: unknown SCRAM hash '{other}' (expected sha256 or sha512)"
                    )))
                }
            };
            let iterations = self.iterations.unwrap_or(scram::DEFAULT_ITERATIONS);
            if iterations == 0 {
                return Err(usage("-I: the number of iterations must be at least 1"));
            }
            return Ok(HashAlgorithm::Scram {
                mechanism,
                iterations,
            });
        }
        match (self.hash.as_deref(), self.iterations) {
            (None | Some("sha512-pbkdf2"), iterations) => {
                let iterations = iterations.unwrap_or(DEFAULT_ITERATIONS);
                if iterations == 0 {
                    return Err(usage("-I: the number of iterations must be at least 1"));
                }
                Ok(HashAlgorithm::Sha512Pbkdf2 { iterations })
            }
            (Some("sha512"), None) => Ok(HashAlgorithm::Sha512),
            (Some("sha512"), Some(_)) => Err(usage("-I only applies to -H sha512-pbkdf2")),
            (Some(other), _) => Err(usage(&format!(
                "-H: unknown hash '{other}' (expected sha512 or sha512-pbkdf2)"
            ))),
        }
    }
}

/// Runs `midge passwd`. Errors are one line for the user.
pub fn run(args: &PasswdArgs) -> Result<(), AuthError> {
    let algorithm = args.algorithm()?;
    if args.create && args.delete {
        return Err(usage("-c and -D cannot be used together"));
    }
    if args.upgrade {
        if args.create || args.delete || args.batch || args.username.is_some() {
            return Err(usage("-U takes only the password file"));
        }
        return upgrade(&args.file, algorithm);
    }
    let Some(username) = args.username.as_deref() else {
        return Err(usage("missing USER (see midge passwd --help)"));
    };
    check_username(username)?;
    if args.delete {
        if args.password.is_some() {
            return Err(usage("-D takes no password"));
        }
        return delete(&args.file, username);
    }
    let password = match (args.batch, &args.password) {
        (true, Some(p)) => p.clone(),
        (true, None) => return Err(usage("-b needs a PASSWORD after USER")),
        (false, Some(_)) => return Err(usage("a PASSWORD on the command line needs -b")),
        (false, None) => read_password()?,
    };
    if password.is_empty() {
        return Err(usage("empty password"));
    }
    let hash = PasswordHash::new(password.as_bytes(), algorithm)?;
    let entry = format!("{username}:{hash}");
    if args.create {
        write_atomically(&args.file, &format!("{entry}\n"))
    } else {
        set_user(&args.file, username, &entry)
    }
}

/// A user name must fit on its line and be readable back: no `:`, no line break, no blanks at
/// the ends (mosquitto trims them), not empty, at most 65535 bytes.
fn check_username(username: &str) -> Result<(), AuthError> {
    if username.is_empty() {
        return Err(usage("empty user name"));
    }
    if username.contains(':') {
        return Err(usage("the user name must not contain ':'"));
    }
    if username.chars().any(char::is_control) {
        return Err(usage("the user name must not contain control characters"));
    }
    if username.trim() != username {
        return Err(usage("the user name must not start or end with blanks"));
    }
    if username.starts_with('#') {
        return Err(usage("the user name must not start with '#' (a comment)"));
    }
    if username.len() > 65535 {
        return Err(usage("the user name is longer than 65535 bytes"));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, AuthError> {
    std::fs::read_to_string(path).map_err(|error| AuthError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// The lines of `text` with their user name (None for comments and blank lines); a line that is
/// not `USER:...` is an error naming `FILE:LINE`.
fn entries<'a>(text: &'a str, path: &Path) -> Result<Vec<(&'a str, Option<&'a str>)>, AuthError> {
    text.lines()
        .enumerate()
        .map(|(i, line)| match split_line(line) {
            Ok(Some((user, _))) => Ok((line, Some(user))),
            Ok(None) => Ok((line, None)),
            Err(message) => Err(AuthError::Parse {
                file: path.display().to_string(),
                line: i + 1,
                message: message.into(),
            }),
        })
        .collect()
}

/// Replaces `username`'s line with `entry` (dropping any duplicate), or appends it.
fn set_user(path: &Path, username: &str, entry: &str) -> Result<(), AuthError> {
    let text = read_file(path)?;
    let mut out = String::with_capacity(text.len() + entry.len() + 1);
    let mut done = false;
    for (line, user) in entries(&text, path)? {
        if user == Some(username) {
            if !done {
                out.push_str(entry);
                out.push('\n');
                done = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        out.push_str(entry);
        out.push('\n');
    }
    write_atomically(path, &out)
}

fn delete(path: &Path, username: &str) -> Result<(), AuthError> {
    let text = read_file(path)?;
    let mut out = String::with_capacity(text.len());
    let mut found = false;
    for (line, user) in entries(&text, path)? {
        if user == Some(username) {
            found = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found {
        return Err(AuthError::Other(format!(
            "user '{username}' not found in {}",
            path.display()
        )));
    }
    write_atomically(path, &out)
}

/// `-U`: hashes every `user:password` line whose password is not already a `$6$`/`$7$` hash.
/// The plain password is the rest of the line after the first `:`.
fn upgrade(path: &Path, algorithm: HashAlgorithm) -> Result<(), AuthError> {
    let text = read_file(path)?;
    let mut out = String::with_capacity(text.len() * 4);
    for (line, user) in entries(&text, path)? {
        let Some(user) = user else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let rest = line.split_once(':').map_or("", |(_, r)| r);
        let rest = rest.trim_end_matches('\r');
        if PasswordHash::parse(rest.trim()).is_ok() {
            out.push_str(line);
        } else {
            let hash = PasswordHash::new(rest.as_bytes(), algorithm)?;
            out.push_str(&format!("{user}:{hash}"));
        }
        out.push('\n');
    }
    write_atomically(path, &out)
}

/// Writes `text` to a temporary file next to `path`, then renames it over `path`: a crash
/// leaves the old file or the new one, never half of one. Keeps an existing file's permissions;
/// a new file is 0600.
fn write_atomically(path: &Path, text: &str) -> Result<(), AuthError> {
    let werr = |error| AuthError::Write {
        path: path.to_path_buf(),
        error,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| usage("the password file path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".midge-tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let permissions = std::fs::metadata(path).ok().map(|m| m.permissions());
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        if let Some(p) = permissions {
            file.set_permissions(p)?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(werr)
}

/// Reads the password: twice without echo from a terminal, else the first line of stdin (and
/// the second, if any, must repeat it).
fn read_password() -> Result<String, AuthError> {
    let other = |e: io::Error| AuthError::Other(format!("cannot read the password: {e}"));
    let stdin = io::stdin();
    let (first, second) = if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(other)?;
        let second = rpassword::prompt_password("Reenter password: ").map_err(other)?;
        (first, Some(second))
    } else {
        let mut lines = stdin.lock().lines();
        let first = match lines.next() {
            Some(line) => line.map_err(other)?,
            None => return Err(usage("no password on standard input")),
        };
        let second = lines.next().transpose().map_err(other)?;
        (first, second)
    };
    let first = first.trim_end_matches('\r').to_owned();
    if let Some(second) = second {
        if second.trim_end_matches('\r') != first {
            return Err(usage("passwords do not match"));
        }
    }
    Ok(first)
}

#[cfg(test)]
#[path = "passwd_tests.rs"]
mod tests;
