//! Unit tests of `auth::password`: mosquitto_passwd vectors, the file format, SCRAM lines.

use super::*;

// Made by Debian's mosquitto_passwd 2.0.11 (`-b`, then `-H sha512`, then `-I 1000`).
const ALICE_7: &str = "$7$101$eCx8auHoBbV2xAaU$v4fSUS09BUcOChROO1dqFMT7yq6VBt/zLPTHJ+8rOy60pJar5gYhKY9rp7nUhCRHrnnFX0TAeiF2Lzad/LJZVA==";
const BOB_6: &str = "$6$i+0wlo2GzCeMo0dW$Mb2oRryLuE4ImUmPv48Lx+As8c5S8gH0NMug8aQ+qxILa2Jj/PV/NzwtkTvvusYHFRfVq+d7Dr3LtA8q/Fesww==";
const CAROL_7_1000: &str = "$7$1000$/ruveaUWR6XW4ba/$6WQY8vrb67CoDNklh5Mpb4Z06mU+KapJOSTokGYVLYq1NkCzcHVLHiOJK2M5YlvcVXF0hhArZ9crUuUuFQHcnw==";

/// The one line `text` skips, without the "; line skipped" tail.
fn error(text: &str) -> String {
    let file = PasswordFile::parse(text, "pw").unwrap();
    match file.skipped() {
        [one] => one.strip_suffix("; line skipped").unwrap().to_owned(),
        other => panic!("expected one skipped line for {text:?}, got {other:?}"),
    }
}

#[test]
fn mosquitto_passwd_vectors_verify() {
    let alice = PasswordHash::parse(ALICE_7).unwrap();
    assert_eq!(
        alice.algorithm(),
        HashAlgorithm::Sha512Pbkdf2 { iterations: 101 }
    );
    assert!(alice.verify(b"secret"));
    assert!(!alice.verify(b"Secret"));
    assert!(!alice.verify(b""));
    let bob = PasswordHash::parse(BOB_6).unwrap();
    assert_eq!(bob.algorithm(), HashAlgorithm::Sha512);
    assert!(bob.verify(b"hunter2"));
    assert!(!bob.verify(b"hunter"));
    let carol = PasswordHash::parse(CAROL_7_1000).unwrap();
    assert!(carol.verify(b"pw3"));
    assert!(!carol.verify(b"pw4"));
}

#[test]
fn sha512_is_password_then_salt() {
    // SHA-512("abc"): FIPS 180-2 vector, split as password "ab" + salt "c".
    let h = PasswordHash::with_salt(b"ab", HashAlgorithm::Sha512, b"c".to_vec());
    let expected = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                    2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
    let hex: String = h.hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expected);
}

#[test]
fn pbkdf2_hmac_sha512_known_vector() {
    // RFC 6070-style vector for SHA-512 ("password", "salt", 1 iteration), first 64 bytes.
    let h = PasswordHash::with_salt(
        b"password",
        HashAlgorithm::Sha512Pbkdf2 { iterations: 1 },
        b"salt".to_vec(),
    );
    let hex: String = h.hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252\
         c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
    );
}

#[test]
fn hash_round_trips_through_text() {
    for algorithm in [
        HashAlgorithm::Sha512,
        HashAlgorithm::Sha512Pbkdf2 { iterations: 101 },
        HashAlgorithm::Sha512Pbkdf2 { iterations: 7 },
    ] {
        let h = PasswordHash::new(b"pw", algorithm).unwrap();
        assert_eq!(h.salt.len(), SALT_LEN);
        let text = h.to_string();
        let back = PasswordHash::parse(&text).unwrap();
        assert_eq!(back, h);
        assert!(back.verify(b"pw"));
        assert!(!back.verify(b"pw "));
    }
    let a = PasswordHash::new(b"pw", HashAlgorithm::Sha512).unwrap();
    let b = PasswordHash::new(b"pw", HashAlgorithm::Sha512).unwrap();
    assert_ne!(a.salt, b.salt, "salts are random");
}

#[test]
fn file_with_comments_blank_lines_and_crlf() {
    let text = format!(
        "# users\n\nalice:{ALICE_7}\r\n   \n  bob : {BOB_6} \n#carol:x\ncarol:{CAROL_7_1000}:extra\n"
    );
    let f = PasswordFile::parse(&text, "pw").unwrap();
    assert_eq!(f.len(), 3);
    assert!(f.verify("alice", b"secret"));
    assert!(f.verify("bob", b"hunter2"));
    assert!(f.verify("carol", b"pw3"));
    assert!(!f.verify("alice", b"hunter2"));
    assert!(!f.verify("nobody", b"secret"));
    assert!(!f.verify("", b""));
    assert!(f.contains("bob") && !f.contains("#carol"));
    assert!(PasswordFile::parse("", "pw").unwrap().is_empty());
}

#[test]
fn each_bad_line_names_file_and_line() {
    assert_eq!(error("\nalice\n"), "pw:2: expected USER:PASSWORD_HASH");
    assert_eq!(error(&format!(":{BOB_6}\n")), "pw:1: empty user name");
    assert_eq!(error("alice:\n"), "pw:1: empty password hash");
    assert!(
        error("# c\nalice:secret\n").starts_with("pw:2: user 'alice': the password is not hashed")
    );
    assert_eq!(
        error("alice:$5$abc$def\n"),
        "pw:1: user 'alice': unknown hash type '$5$' (expected $6$, $7$ or $scram-sha-256$)"
    );
    assert_eq!(
        error("alice:$7$x$abc$def\n"),
        "pw:1: user 'alice': bad iteration count 'x' (expected a whole number from 1)"
    );
    assert_eq!(
        error("alice:$7$0$abc$def\n"),
        "pw:1: user 'alice': bad iteration count '0' (expected a whole number from 1)"
    );
    assert_eq!(
        error("alice:$6$abc\n"),
        "pw:1: user 'alice': expected $6$SALT$HASH or $7$ITERATIONS$SALT$HASH"
    );
    assert_eq!(
        error("alice:$6$!!$abc\n"),
        "pw:1: user 'alice': the salt is not valid base64"
    );
    assert_eq!(
        error("alice:$6$YWJj$!!\n"),
        "pw:1: user 'alice': the hash is not valid base64"
    );
    assert_eq!(
        error("alice:$6$YWJj$YWJj\n"),
        "pw:1: user 'alice': the hash is 3 bytes, expected 64"
    );
    assert_eq!(
        error(&format!("bob:{BOB_6}\n\nbob:{ALICE_7}\n")),
        "pw:3: user 'bob' is already defined at line 1"
    );
}

#[test]
fn bad_lines_are_skipped_and_the_good_ones_load() {
    let text = format!(
        "garbage\nalice:{ALICE_7}\nbob:plaintext\n:{BOB_6}\nalice:{BOB_6}\ncarol:{CAROL_7_1000}\n"
    );
    let file = PasswordFile::parse(&text, "pw").unwrap();
    assert_eq!(
        file.skipped(),
        [
            "pw:1: expected USER:PASSWORD_HASH; line skipped".to_owned(),
            "pw:3: user 'bob': the password is not hashed (expected $6$ or $7$ or $scram-...$; \
             `midge passwd -U FILE` hashes a plain-text file); line skipped"
                .to_owned(),
            "pw:4: empty user name; line skipped".to_owned(),
            "pw:5: user 'alice' is already defined at line 2; line skipped".to_owned(),
        ]
    );
    assert_eq!(file.len(), 2);
    // The first definition stays; a skipped user cannot log in.
    assert_eq!(file.get("alice").unwrap().to_string(), ALICE_7);
    assert!(!file.contains("bob"));
    assert!(!file.verify("bob", b"plaintext"));
    assert!(file.contains("carol"));
    // Nothing of a hash is echoed.
    assert!(!file.skipped().concat().contains("$6$i+0w"));
}

#[test]
fn a_user_whose_password_is_empty_is_refused_without_one() {
    let hash = PasswordHash::with_salt(b"", HashAlgorithm::Sha512, vec![7u8; SALT_LEN]);
    let file = PasswordFile::parse(&format!("nopw:{hash}\n"), "pw").unwrap();
    assert!(!file.verify("nopw", b""), "empty or missing password");
    assert!(!file.verify("nopw", b"x"));
}

#[test]
fn scram_lines_load_verify_plain_passwords_and_print_back() {
    let algorithm = HashAlgorithm::Scram {
        mechanism: Mechanism::Sha256,
        iterations: 16,
    };
    let dave = PasswordHash::new(b"pw4", algorithm).unwrap();
    let erin = PasswordHash::new(
        b"pw5",
        HashAlgorithm::Scram {
            mechanism: Mechanism::Sha512,
            iterations: 8,
        },
    )
    .unwrap();
    let text = format!("alice:{ALICE_7}\ndave:{dave}\nerin:{erin}\n");
    assert!(text.contains("dave:$scram-sha-256$16$"), "{text}");
    let file = PasswordFile::parse(&text, "pw").unwrap();
    assert!(file.skipped().is_empty(), "{:?}", file.skipped());
    assert!(file.verify("dave", b"pw4") && !file.verify("dave", b"pw5"));
    assert!(file.verify("erin", b"pw5"));
    assert_eq!(file.get("dave").unwrap().to_string(), dave.to_string());
    assert_eq!(PasswordHash::parse(&erin.to_string()).unwrap(), erin);
    assert!(file.scram_verifier("dave", Mechanism::Sha256).is_some());
    assert!(file.scram_verifier("dave", Mechanism::Sha512).is_none());
    assert!(file.scram_verifier("alice", Mechanism::Sha256).is_none());
    assert_eq!(
        error("x:$scram-sha-1$1$YWJj$YWJj$YWJj\n"),
        "pw:1: user 'x': unknown SCRAM mechanism '$scram-sha-1$' \
         (expected $scram-sha-256$ or $scram-sha-512$)"
    );
    assert_eq!(
        error("x:$scram-sha-256\n"),
        "pw:1: user 'x': expected $scram-sha-256$ITERATIONS$SALT$STOREDKEY$SERVERKEY"
    );
    assert_eq!(
        error("x:$scram-sha-512$3$YWJj$YWJj$YWJj\n"),
        "pw:1: user 'x': the stored key is 3 bytes, expected 64"
    );
}

#[test]
fn missing_file_is_a_read_error() {
    let e = PasswordFile::load("/nonexistent/midge/pw").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/midge/pw: cannot read:"),
        "{e}"
    );
}

#[test]
fn debug_does_not_show_the_hash() {
    let h = PasswordHash::parse(BOB_6).unwrap();
    let s = format!("{h:?}");
    assert!(!s.contains("Mb2o") && !s.contains("i+0w"), "{s}");
}
