//! `builtin:scram` driven as the chain drives it: two steps per exchange, the password file
//! named around each call.

use super::*;
use crate::auth::scram::client_final;
use crate::auth::{HashAlgorithm, PasswordHash};
use crate::protocol::ProtocolVersion;

fn file() -> Arc<PasswordFile> {
    let alg = |mechanism| HashAlgorithm::Scram {
        mechanism,
        iterations: 32,
    };
    let alice = PasswordHash::new(b"wonder", alg(Mechanism::Sha256)).unwrap();
    let bob = PasswordHash::new(b"builder", alg(Mechanism::Sha512)).unwrap();
    let carol = PasswordHash::new(b"plain", HashAlgorithm::Sha512).unwrap();
    let text = format!("alice:{alice}\nbob:{bob}\ncarol:{carol}\n");
    Arc::new(PasswordFile::parse(&text, "pw").unwrap())
}

fn client(port: u16, username: Option<&str>) -> ClientInfo<'_> {
    ClientInfo {
        client_id: "c1",
        username,
        protocol: ProtocolVersion::V5,
        peer: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        listener_port: 1883,
        certificate_identity: None,
    }
}

fn step<'a>(method: &'a str, data: &'a [u8], start: bool) -> AuthStep<'a> {
    AuthStep {
        method,
        data: Some(data),
        start,
        reauthenticate: false,
    }
}

/// One whole exchange: the server's answer to client-final, and whether its server-final
/// is the genuine one.
fn exchange(
    p: &mut dyn ShardPlugin,
    c: &ClientInfo<'_>,
    m: Mechanism,
    user: &str,
    password: &[u8],
) -> (ExtendedAuth, bool) {
    let passwords = Some(file());
    let bare = format!("n={user},r=cnonce42");
    let first = format!("n,,{bare}");
    let answer = with_password_file(passwords.clone(), || {
        p.extended_auth(
            c,
            &step(m.name(), first.as_bytes(), true),
            Later::detached(),
        )
    });
    let ExtendedAuth::Continue(server_first) = answer else {
        return (answer, false);
    };
    let server_first = std::str::from_utf8(&server_first).unwrap().to_owned();
    assert!(server_first.starts_with("r=cnonce42"), "{server_first}");
    let (fin, expected) = client_final(m, password, &bare, &server_first, "n,,").unwrap();
    let answer = with_password_file(passwords, || {
        p.extended_auth(c, &step(m.name(), fin.as_bytes(), false), Later::detached())
    });
    let genuine = answer == ExtendedAuth::Success(Some(Bytes::from(expected)));
    (answer, genuine)
}

fn shard() -> Box<dyn ShardPlugin> {
    Scram::new().unwrap().shard(0, 1)
}

#[test]
fn right_password_succeeds_with_the_server_signature() {
    let mut p = shard();
    let (_, ok) = exchange(
        &mut *p,
        &client(1, None),
        Mechanism::Sha256,
        "alice",
        b"wonder",
    );
    assert!(ok);
    let (_, ok) = exchange(
        &mut *p,
        &client(2, Some("bob")),
        Mechanism::Sha512,
        "bob",
        b"builder",
    );
    assert!(ok);
}

#[test]
fn wrong_password_unknown_user_wrong_hash_and_other_user_are_denied() {
    let mut p = shard();
    let deny = |p: &mut dyn ShardPlugin, c: &ClientInfo<'_>, m, u, pw: &[u8]| {
        exchange(p, c, m, u, pw).0 == ExtendedAuth::Deny
    };
    let c = client(1, None);
    assert!(deny(&mut *p, &c, Mechanism::Sha256, "alice", b"wonder!"));
    assert!(deny(&mut *p, &c, Mechanism::Sha256, "nobody", b"x"));
    assert!(
        deny(&mut *p, &c, Mechanism::Sha512, "alice", b"wonder"),
        "a -256 verifier"
    );
    assert!(
        deny(&mut *p, &c, Mechanism::Sha256, "carol", b"plain"),
        "not a verifier"
    );
    let (answer, _) = exchange(
        &mut *p,
        &client(3, Some("bob")),
        Mechanism::Sha256,
        "alice",
        b"wonder",
    );
    assert_eq!(
        answer,
        ExtendedAuth::Deny,
        "CONNECT says bob, SCRAM says alice"
    );
}

#[test]
fn other_methods_and_no_password_file_pass() {
    let mut p = shard();
    let c = client(1, None);
    let a = with_password_file(Some(file()), || {
        p.extended_auth(
            &c,
            &step("SCRAM-SHA-1", b"n,,n=a,r=b", true),
            Later::detached(),
        )
    });
    assert_eq!(a, ExtendedAuth::Pass);
    let a = p.extended_auth(
        &c,
        &step("SCRAM-SHA-256", b"n,,n=a,r=b", true),
        Later::detached(),
    );
    assert_eq!(a, ExtendedAuth::Pass);
}

#[test]
fn client_final_without_an_exchange_and_bad_first_messages_are_denied() {
    let mut p = shard();
    let c = client(1, None);
    let run = |p: &mut dyn ShardPlugin, data: &[u8], start| {
        with_password_file(Some(file()), || {
            p.extended_auth(&c, &step("SCRAM-SHA-256", data, start), Later::detached())
        })
    };
    assert_eq!(
        run(&mut *p, b"c=biws,r=x,p=AAAA", false),
        ExtendedAuth::Deny
    );
    assert_eq!(
        run(&mut *p, b"p=tls-unique,,n=alice,r=x", true),
        ExtendedAuth::Deny
    );
    assert_eq!(run(&mut *p, b"garbage", true), ExtendedAuth::Deny);
}

#[test]
fn pending_exchanges_are_bounded_and_expire() {
    let mut s = ScramShard {
        secret: [1; 32],
        pending: HashMap::new(),
    };
    let passwords = file();
    let long_ago = Instant::now() - PENDING_FOR - Duration::from_secs(1);
    for i in 0..MAX_PENDING as u16 {
        let c = client(i, None);
        let a = s.first(
            (c.peer, 1),
            &c,
            Mechanism::Sha256,
            &passwords,
            b"n,,n=alice,r=x",
        );
        assert!(matches!(a, ExtendedAuth::Continue(_)));
    }
    let c = client(u16::MAX, None);
    let full = s.first(
        (c.peer, 1),
        &c,
        Mechanism::Sha256,
        &passwords,
        b"n,,n=alice,r=x",
    );
    assert_eq!(full, ExtendedAuth::Deny, "full");
    for p in s.pending.values_mut().take(10) {
        p.since = long_ago;
    }
    let room = s.first(
        (c.peer, 1),
        &c,
        Mechanism::Sha256,
        &passwords,
        b"n,,n=alice,r=x",
    );
    assert!(
        matches!(room, ExtendedAuth::Continue(_)),
        "expired ones made room"
    );
    assert_eq!(s.pending.len(), MAX_PENDING - 9);
    for p in s.pending.values_mut() {
        p.since = long_ago;
    }
    s.tick(Instant::now());
    assert!(s.pending.is_empty());
}

#[test]
fn the_password_file_is_scoped_to_the_call() {
    assert!(password_file().is_none());
    with_password_file(Some(file()), || {
        assert!(password_file().is_some());
        with_password_file(None, || assert!(password_file().is_none()));
        assert!(password_file().is_some());
    });
    assert!(password_file().is_none());
    assert!(new(&PluginOptions::new()).is_ok());
    let mut opts = PluginOptions::new();
    opts.insert("x".into(), "y".into());
    assert!(new(&opts).err().unwrap().contains("plugin_opt_x"));
}

#[test]
fn on_by_default_with_a_password_file_unless_a_line_names_it() {
    let config = |text: &str| crate::config::Config::parse_str(text, "t.conf").unwrap();
    assert!(!by_default(&config("listener 1883\n")));
    assert!(by_default(&config("password_file /x\n")));
    assert!(by_default(&config(
        "per_listener_settings true\nlistener 1883\npassword_file /x\n"
    )));
    assert!(!by_default(&config(
        "password_file /x\nplugin builtin:scram\n"
    )));
}
