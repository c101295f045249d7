//! How a node connects to NATS: its credentials and TLS (the `cluster_nats_*` lines).
//!
//! NATS offers user and password, a token, and credentials files (a JWT and an NKey seed,
//! what NATS accounts and the `nsc` tool issue); a node uses the one configured. TLS is
//! required when a CA file is given (or a `tls://` URL): the servers' certificates must chain
//! to it, and a client certificate is presented when one is configured (for servers that
//! verify clients).

use std::path::PathBuf;

/// The `cluster_nats_*` settings for authentication and TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A NATS credentials file (`.creds`).
    pub credentials: Option<PathBuf>,
    /// CA certificates (PEM) the NATS servers' certificates must chain to; TLS is required.
    pub cafile: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
}

impl NatsAuth {
    /// Whether the settings make sense together; the error names the lines to fix.
    pub fn check(&self) -> Result<(), String> {
        if self.user.is_some() != self.password.is_some() {
            return Err("cluster_nats_user and cluster_nats_password go together".into());
        }
        if self.certfile.is_some() != self.keyfile.is_some() {
            return Err("cluster_nats_certfile and cluster_nats_keyfile go together".into());
        }
        let ways = [
            self.user.is_some(),
            self.token.is_some(),
            self.credentials.is_some(),
        ];
        if ways.iter().filter(|&&w| w).count() > 1 {
            return Err(
                "give one of cluster_nats_user/_password, cluster_nats_token and \
                 cluster_nats_credentials"
                    .into(),
            );
        }
        Ok(())
    }

    /// `base` with these credentials and TLS settings.
    pub(super) async fn apply(
        &self,
        mut base: async_nats::ConnectOptions,
    ) -> std::io::Result<async_nats::ConnectOptions> {
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            base = base.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            base = base.token(token.clone());
        }
        if let Some(path) = &self.credentials {
            base = base.credentials_file(path).await?;
        }
        if let Some(ca) = &self.cafile {
            base = base.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.certfile, &self.keyfile) {
            base = base.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_go_together_are_checked() {
        assert!(NatsAuth::default().check().is_ok());
        let half = NatsAuth {
            user: Some("u".into()),
            ..Default::default()
        };
        assert!(half.check().unwrap_err().contains("cluster_nats_password"));
        let both = NatsAuth {
            user: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        };
        assert!(both.check().is_ok());
        let two_ways = NatsAuth {
            token: Some("t".into()),
            ..both
        };
        assert!(two_ways.check().is_err());
        let cert_alone = NatsAuth {
            certfile: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(cert_alone.check().unwrap_err().contains("keyfile"));
    }
}
