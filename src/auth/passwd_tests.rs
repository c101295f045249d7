//! Unit tests of `midge passwd` (`auth::passwd`): create, update, delete, -U, -S, errors.

use super::*;
use crate::auth::PasswordFile;

fn args(list: &[&str]) -> PasswdArgs {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        a: PasswdArgs,
    }
    use clap::Parser;
    Wrap::try_parse_from(std::iter::once("passwd").chain(list.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .a
}

fn run_args(list: &[&str]) -> Result<(), AuthError> {
    run(&args(list))
}

#[test]
fn create_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    let fs = f.to_str().unwrap();
    run_args(&["-c", "-b", fs, "alice", "one"]).unwrap();
    run_args(&["-b", "-H", "sha512", fs, "bob", "two"]).unwrap();
    run_args(&["-b", "-I", "7", fs, "carol", "-three"]).unwrap();
    let text = std::fs::read_to_string(&f).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("alice:$7$101$"), "{text}");
    assert!(lines[1].starts_with("bob:$6$"), "{text}");
    assert!(lines[2].starts_with("carol:$7$7$"), "{text}");
    let p = PasswordFile::load(&f).unwrap();
    assert!(p.verify("alice", b"one") && p.verify("bob", b"two"));
    assert!(p.verify("carol", b"-three"));
    // Update keeps the order and the other users.
    run_args(&["-b", fs, "alice", "uno"]).unwrap();
    let p = PasswordFile::load(&f).unwrap();
    assert!(p.verify("alice", b"uno") && !p.verify("alice", b"one"));
    assert!(std::fs::read_to_string(&f).unwrap().starts_with("alice:"));
    run_args(&["-D", fs, "bob"]).unwrap();
    let p = PasswordFile::load(&f).unwrap();
    assert_eq!(p.len(), 2);
    assert!(!p.contains("bob"));
    let e = run_args(&["-D", fs, "bob"]).unwrap_err().to_string();
    assert!(e.starts_with("user 'bob' not found in"), "{e}");
    // -c overwrites.
    run_args(&["-c", "-b", fs, "dave", "four"]).unwrap();
    assert_eq!(PasswordFile::load(&f).unwrap().len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn update_keeps_comments_and_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    let fs = f.to_str().unwrap();
    run_args(&["-c", "-b", fs, "alice", "one"]).unwrap();
    let alice = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, format!("# team\n\n{alice}# end")).unwrap();
    run_args(&["-b", fs, "bob", "two"]).unwrap();
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(
        text.starts_with(&format!("# team\n\n{alice}# end\nbob:$7$")),
        "{text}"
    );
    // A line that is not USER:... is refused with FILE:LINE, the file is left alone.
    std::fs::write(&f, "alice\n").unwrap();
    let e = run_args(&["-b", fs, "bob", "two"]).unwrap_err().to_string();
    assert_eq!(e, format!("{fs}:1: expected USER:PASSWORD_HASH"));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "alice\n");
}

#[test]
fn upgrade_hashes_plain_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    let fs = f.to_str().unwrap();
    run_args(&["-c", "-b", fs, "alice", "one"]).unwrap();
    let alice = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&f, format!("{alice}# c\nbob:two\ncarol:a:b c\n")).unwrap();
    run_args(&["-U", fs]).unwrap();
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(
        text.starts_with(&format!("{alice}# c\nbob:$7$101$")),
        "{text}"
    );
    let p = PasswordFile::load(&f).unwrap();
    assert!(p.verify("alice", b"one"));
    assert!(p.verify("bob", b"two"));
    assert!(p.verify("carol", b"a:b c"));
}

#[test]
fn scram_verifiers_are_written_with_dash_s() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    let fs = f.to_str().unwrap();
    run_args(&["-c", "-b", "-S", "sha256", fs, "alice", "one"]).unwrap();
    run_args(&["-b", "-S", "sha512", "-I", "10", fs, "bob", "two"]).unwrap();
    run_args(&["-b", fs, "carol", "three"]).unwrap();
    let text = std::fs::read_to_string(&f).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("alice:$scram-sha-256$4096$"), "{text}");
    assert!(lines[1].starts_with("bob:$scram-sha-512$10$"), "{text}");
    assert!(lines[2].starts_with("carol:$7$101$"), "{text}");
    let p = PasswordFile::load(&f).unwrap();
    assert!(p.verify("alice", b"one") && p.verify("bob", b"two"));
    assert!(p.scram_verifier("alice", Mechanism::Sha256).is_some());
    assert!(p.scram_verifier("bob", Mechanism::Sha512).is_some());
    std::fs::write(&f, format!("{text}dave:four\n")).unwrap();
    run_args(&["-U", "-S", "sha512", "-I", "5", fs]).unwrap();
    let after = std::fs::read_to_string(&f).unwrap();
    assert!(
        after.starts_with(&text),
        "verifiers and hashes stay: {after}"
    );
    assert!(after.contains("\ndave:$scram-sha-512$5$"), "{after}");
    assert!(PasswordFile::load(&f).unwrap().verify("dave", b"four"));
    let e = |l: &[&str]| run_args(l).unwrap_err().to_string();
    assert_eq!(
        e(&["-S", "md5", "-b", fs, "u", "p"]),
        "-S: unknown SCRAM hash 'md5' (expected sha256 or sha512)"
    );
    assert_eq!(
        e(&["-S", "sha256", "-H", "sha512", "-b", fs, "u", "p"]),
        "-S and -H cannot be used together"
    );
}

#[test]
fn argument_errors() {
    let e = |l: &[&str]| run_args(l).unwrap_err().to_string();
    assert_eq!(
        e(&["-c", "-D", "f", "u"]),
        "-c and -D cannot be used together"
    );
    assert_eq!(e(&["-b", "f", "u"]), "-b needs a PASSWORD after USER");
    assert_eq!(
        e(&["f", "u", "p"]),
        "a PASSWORD on the command line needs -b"
    );
    assert_eq!(
        e(&["-b", "f", "a:b", "p"]),
        "the user name must not contain ':'"
    );
    assert_eq!(e(&["-b", "-c", "f", "u", ""]), "empty password");
    assert_eq!(
        e(&["-H", "md5", "-b", "f", "u", "p"]),
        "-H: unknown hash 'md5' (expected sha512 or sha512-pbkdf2)"
    );
    assert_eq!(
        e(&["-H", "sha512", "-I", "5", "-b", "f", "u", "p"]),
        "-I only applies to -H sha512-pbkdf2"
    );
    assert_eq!(e(&["-U", "f", "u"]), "-U takes only the password file");
    assert_eq!(e(&["f"]), "missing USER (see midge passwd --help)");
    let missing = e(&["-b", "/nonexistent/midge/pw", "u", "p"]);
    assert!(
        missing.starts_with("/nonexistent/midge/pw: cannot read:"),
        "{missing}"
    );
}
