//! Certificates for the brokers loadgen starts with `--tls`: a CA, a server certificate for
//! `localhost`/`127.0.0.1` and a client certificate, all EC P-256 (the common choice for
//! MQTT fleets, and one both rustls/ring and OpenSSL sign fast), made by the `openssl`
//! command in a private temporary directory that is removed on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::broker::Flavor;

/// Generated certificates and how the broker's TLS listener uses them.
#[derive(Debug)]
pub struct BrokerTls {
    dir: PathBuf,
    /// The broker asks for a client certificate signed by the CA and refuses others.
    pub require_certificate: bool,
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("openssl (is it installed?): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl BrokerTls {
    /// Makes `ca.pem`, `server.pem`/`.key` and `client.pem`/`.key`, plus `other-ca.pem`, a CA
    /// that signed nothing the broker uses (for "wrong CA" checks).
    pub fn generate(require_certificate: bool) -> Result<BrokerTls, String> {
        let dir = std::env::temp_dir().join(format!(
            "loadgen-tls-{}-{}",
            std::process::id(),
            crate::runner::run_tag()
        ));
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let me = BrokerTls {
            dir,
            require_certificate,
        };
        let d = me.dir.as_path();
        for (name, cn) in [("ca", "/CN=loadgen CA"), ("other-ca", "/CN=another CA")] {
            let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
            let mut args = vec!["req", "-x509"];
            args.extend(EC);
            args.extend(["-keyout", &key, "-out", &pem, "-days", "3650", "-subj", cn]);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(d, &args)?;
        }
        let write = |name: &str, text: &str| {
            fs::write(d.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write(
            "server.ext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )?;
        write(
            "client.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        )?;
        for (name, subj) in [
            ("server", "/CN=localhost"),
            ("client", "/CN=loadgen-client"),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let mut args = vec!["req"];
            args.extend(EC);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", subj]);
            openssl(d, &args)?;
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
                    &ext,
                ],
            )?;
        }
        me.open_up()?;
        Ok(me)
    }

    /// mosquitto started as root reads its files as the `mosquitto` user: let it (these are
    /// throw-away keys in a directory of their own).
    fn open_up(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        set(&self.dir, 0o755)?;
        for entry in fs::read_dir(&self.dir)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            set(&entry.path(), 0o644)?;
        }
        Ok(())
    }

    /// A file of the set, e.g. `ca.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The listener lines that make the generated config's listener a TLS one (midge and
    /// mosquitto share the syntax); an error for a broker loadgen has no TLS config for.
    pub fn config_lines(&self, flavor: Flavor) -> Result<String, String> {
        if !matches!(flavor, Flavor::Midge | Flavor::Mosquitto) {
            return Err(format!(
                "{flavor:?}: loadgen has no TLS listener config for it; give it as --broker name=host:port with --cafile"
            ));
        }
        let p = |n: &str| self.path(n).display().to_string();
        let mut s = format!(
            "certfile {}\nkeyfile {}\n",
            p("server.pem"),
            p("server.key")
        );
        if self.require_certificate {
            s.push_str(&format!(
                "cafile {}\nrequire_certificate true\n",
                p("ca.pem")
            ));
        }
        Ok(s)
    }
}

impl Drop for BrokerTls {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
