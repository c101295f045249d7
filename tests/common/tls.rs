//! Certificates for the TLS tests, made by `openssl` in a temporary directory, and TLS client
//! helpers (mosquitto_pub/mosquitto_sub arguments, a paho-mqtt script).
//!
//! [`Certs::generate`] makes (all EC P-256, so that generation is fast):
//! - `ca.pem`/`ca.key`: the test CA;
//! - `server.pem`/`server.key`: signed by the CA, for `localhost` and `127.0.0.1` (SAN);
//! - `client.pem`/`client.key`: a client certificate signed by the CA, subject
//!   `O=midge tests, CN=tls-client`;
//! - `other-client.pem`/`.key`: signed by another CA (`other-ca.pem`) the broker does not trust;
//! - `expired.pem`/`.key`: signed by the CA, valid only in January 2020 (`openssl ca
//!   -startdate/-enddate`, since `openssl x509 -days` cannot go back in time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{run, Finished};

/// The subject CN of `client.pem` (what `use_identity_as_username` makes the username).
pub const CLIENT_CN: &str = "tls-client";
/// The subject of `client.pem` as mosquitto prints it for `use_subject_as_username`.
pub const CLIENT_SUBJECT: &str = "CN=tls-client,O=midge tests";

/// A directory of generated certificates; removed on drop.
pub struct Certs {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = run(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(30),
    );
    assert!(
        out.success(),
        "openssl {args:?} failed (is openssl installed?): {out:?}"
    );
}

const CA_CNF: &str = "\
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = .
database = index.txt
serial = serial
new_certs_dir = .
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[ any ]
commonName = supplied
organizationName = optional
[ client_ext ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth
";

impl Certs {
    /// Generates every certificate listed in the module documentation.
    pub fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("midge-tls-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let ca = |name: &str, cn: &str| {
            let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &pem, "-days", "3650", "-subj", cn]);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(d, &args);
        };
        ca("ca", "/CN=midge test CA");
        ca("other-ca", "/CN=another CA");
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        let leaf = |name: &str, subj: &str, ca: &str, ext: &str| {
            let (key, csr, pem) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
            );
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", subj]);
            openssl(d, &args);
            let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "3650",
                    "-extfile",
                    ext,
                ],
            );
        };
        leaf("server", "/CN=localhost", "ca", "server.ext");
        leaf("client", "/O=midge tests/CN=tls-client", "ca", "client.ext");
        leaf("other-client", "/CN=other-client", "other-ca", "client.ext");
        // Expired: `openssl ca` is the one openssl command that takes explicit dates.
        std::fs::write(d.join("ca.cnf"), CA_CNF).unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("serial"), "1000\n").unwrap();
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "expired.key",
            "-out",
            "expired.csr",
            "-subj",
            "/CN=expired-client",
        ]);
        openssl(d, &args);
        openssl(
            d,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-cert",
                "ca.pem",
                "-keyfile",
                "ca.key",
                "-in",
                "expired.csr",
                "-out",
                "expired.pem",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200201000000Z",
                "-extensions",
                "client_ext",
                "-notext",
            ],
        );
        let certs = Certs { dir };
        certs.open_up();
        certs
    }

    /// mosquitto started as root drops to the `mosquitto` user before reading certificates:
    /// let everyone read these throw-away test files (and those of subdirectories).
    pub fn open_up(&self) {
        fn walk(p: &Path) {
            use std::os::unix::fs::PermissionsExt;
            let dir = p.is_dir();
            let mode = if dir { 0o755 } else { 0o644 };
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
            if dir {
                for entry in std::fs::read_dir(p).unwrap().flatten() {
                    walk(&entry.path());
                }
            }
        }
        walk(self.dir.path());
    }

    /// Makes another server certificate `NAME.pem`/`NAME.key` signed by the test CA, for
    /// `localhost`/`127.0.0.1`, with subject `CN=CN` (to tell two server certificates apart).
    pub fn server_cert(&self, name: &str, cn: &str) {
        let d = self.dir.path();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN={cn}");
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subj,
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "3650",
                "-extfile",
                "server.ext",
            ],
        );
        self.open_up();
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Full path of a generated file, as a string for command lines and config lines.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    pub fn path_buf(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `certfile` and `keyfile` lines for the server certificate.
    pub fn server_lines(&self) -> Vec<String> {
        vec![
            format!("certfile {}", self.path("server.pem")),
            format!("keyfile {}", self.path("server.key")),
        ]
    }

    /// [`Certs::server_lines`] plus `cafile` and `require_certificate true`.
    pub fn require_certificate_lines(&self) -> Vec<String> {
        let mut lines = self.server_lines();
        lines.push(format!("cafile {}", self.path("ca.pem")));
        lines.push("require_certificate true".into());
        lines
    }

    /// mosquitto client arguments: `--cafile ca.pem`, plus `--cert`/`--key` of the named
    /// client certificate (`client`, `other-client`, `expired`) if any.
    pub fn client_args(&self, cert: Option<&str>) -> Vec<String> {
        let mut args = vec!["--cafile".to_string(), self.path("ca.pem")];
        if let Some(name) = cert {
            args.extend([
                "--cert".to_string(),
                self.path(&format!("{name}.pem")),
                "--key".to_string(),
                self.path(&format!("{name}.key")),
            ]);
        }
        args
    }
}

/// Borrows a `Vec<String>` as `&[&str]`-friendly strings.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs `mosquitto_pub -h 127.0.0.1 -p PORT ARGS...` bounded to 10 s, without asserting.
pub fn try_mosquitto_pub(port: u16, args: &[&str]) -> Finished {
    run(
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args),
        Duration::from_secs(10),
    )
}

/// A blocking TLS MQTT client built on rustls (ring), for byte-exact flows over TLS: what
/// `raw::Raw` is for plain TCP. Verifies the server as `localhost` against the test CA.
pub struct TlsRaw {
    stream: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
}

impl TlsRaw {
    /// Connects and completes the TLS handshake (bounded by the socket time-outs).
    pub fn connect(certs: &Certs, port: u16) -> TlsRaw {
        let sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        TlsRaw::over(certs, sock)
    }

    /// The TLS handshake over a connected socket (on which the test may have sent bytes of
    /// its own first, e.g. a PROXY protocol header).
    pub fn over(certs: &Certs, sock: std::net::TcpStream) -> TlsRaw {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        use std::sync::Arc;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(certs.path("ca.pem")).expect("ca.pem"))
            .expect("CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        sock.set_read_timeout(Some(super::STEP)).unwrap();
        sock.set_write_timeout(Some(super::STEP)).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake");
        }
        TlsRaw { stream }
    }

    /// Writes `bytes` in one go (one or more TLS records).
    pub fn send(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("TLS write");
        self.stream.flush().expect("TLS flush");
    }

    /// Closes the write side of the TCP socket (a FIN, no close_notify: how most clients go).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.sock.shutdown(std::net::Shutdown::Write);
    }

    /// Reads one MQTT packet: (first byte, body). Panics on time-out or close.
    pub fn recv(&mut self) -> (u8, Vec<u8>) {
        use std::io::Read;
        let mut first = [0u8; 1];
        self.stream
            .read_exact(&mut first)
            .expect("read packet type");
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            self.stream.read_exact(&mut b).expect("read length");
            len |= usize::from(b[0] & 0x7f) << shift;
            if b[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).expect("read body");
        (first[0], body)
    }
}
