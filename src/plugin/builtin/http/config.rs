//! The HTTP plugin's `plugin_opt_http_*` options, read into one immutable [`HttpConfig`]
//! (replaced whole at reload, so a worker never sees half of an old and half of a new one).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring as provider;
use rustls::ClientConfig;

use super::client::Url;
use super::shape::Shape;
use crate::plugin::PluginOptions;

/// Where the system's CA bundle usually is (Debian, Ubuntu, Alpine); used for `https` URLs
/// when `http_cafile` is not given.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub auth_url: Option<Url>,
    pub superuser_url: Option<Url>,
    pub acl_url: Option<Url>,
    pub shape: Shape,
    pub timeout: Duration,
    /// How long an answer is reused; zero: authentication answers are not cached (ACL
    /// answers still are, for one second, so the delivery path can be answered at all).
    pub cache_ttl: Duration,
    /// Bound on cached ACL answers per shard and on cached authentication answers.
    pub cache_entries: usize,
    pub workers: usize,
    pub queue: usize,
    pub tls: Option<Arc<ClientConfig>>,
}

impl HttpConfig {
    /// Reads the options; every unknown `http_*` key is an error (a typo would otherwise be
    /// an open door or a closed one, silently).
    pub fn parse(options: &PluginOptions) -> Result<HttpConfig, String> {
        let mut c = HttpConfig {
            auth_url: None,
            superuser_url: None,
            acl_url: None,
            shape: Shape::Emqx,
            timeout: Duration::from_millis(2000),
            cache_ttl: Duration::from_secs(30),
            cache_entries: 10_000,
            workers: 4,
            queue: 256,
            tls: None,
        };
        let mut cafile: Option<PathBuf> = None;
        for (key, value) in options {
            let value = value.trim();
            let number = |max: u64| -> Result<u64, String> {
                match value.parse::<u64>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(format!("{key} {value:?}: expected a number up to {max}")),
                }
            };
            match key.as_str() {
                "http_auth_url" => c.auth_url = Some(Url::parse(value)?),
                "http_superuser_url" => c.superuser_url = Some(Url::parse(value)?),
                "http_acl_url" => c.acl_url = Some(Url::parse(value)?),
                "http_shape" => c.shape = Shape::parse(value)?,
                "http_timeout_ms" => c.timeout = Duration::from_millis(number(600_000)?.max(1)),
                "http_cache_seconds" => c.cache_ttl = Duration::from_secs(number(86_400)?),
                "http_cache_entries" => c.cache_entries = number(10_000_000)?.max(1) as usize,
                "http_workers" => c.workers = number(64)?.max(1) as usize,
                "http_queue" => c.queue = number(1_000_000)?.max(1) as usize,
                "http_cafile" => cafile = Some(PathBuf::from(value)),
                _ => {
                    return Err(format!(
                        "unknown option {key} (the http plugin's start with http_)"
                    ))
                }
            }
        }
        if c.auth_url.is_none() && c.acl_url.is_none() {
            return Err("http_auth_url or http_acl_url is needed".into());
        }
        if c.superuser_url.is_some() && c.shape == Shape::Emqx {
            return Err(
                "http_superuser_url is go-auth's; EMQX answers is_superuser with the auth".into(),
            );
        }
        let https = [&c.auth_url, &c.superuser_url, &c.acl_url]
            .iter()
            .any(|u| u.as_ref().is_some_and(|u| u.https));
        if https || cafile.is_some() {
            c.tls = Some(tls(cafile)?);
        }
        Ok(c)
    }
}

fn tls(cafile: Option<PathBuf>) -> Result<Arc<ClientConfig>, String> {
    let cafile = cafile.unwrap_or_else(|| PathBuf::from(SYSTEM_CAS));
    let settings = crate::config::TlsSettings {
        cafile: Some(cafile.clone()),
        ..Default::default()
    };
    let roots = crate::transport::pem::load_roots(&settings)
        .map_err(|e| format!("http_cafile {}: {e}", cafile.display()))?
        .ok_or_else(|| format!("http_cafile {}: no CA certificate", cafile.display()))?;
    let config = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> PluginOptions {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_errors() {
        let c = HttpConfig::parse(&opts(&[("http_auth_url", "http://127.0.0.1:9/a")])).unwrap();
        assert_eq!(c.timeout, Duration::from_millis(2000));
        assert_eq!(c.shape, Shape::Emqx);
        assert!(c.tls.is_none());
        let e = HttpConfig::parse(&opts(&[])).unwrap_err();
        assert!(e.contains("http_auth_url"), "{e}");
        let e = HttpConfig::parse(&opts(&[("http_auth_url", "x"), ("http_timeout_ms", "1")]))
            .unwrap_err();
        assert!(e.contains("http://"), "{e}");
        let e = HttpConfig::parse(&opts(&[
            ("http_auth_url", "http://h/"),
            ("http_timeout", "5"),
        ]))
        .unwrap_err();
        assert!(e.contains("unknown option http_timeout"), "{e}");
        let e = HttpConfig::parse(&opts(&[
            ("http_auth_url", "http://h/"),
            ("http_cache_seconds", "-1"),
        ]))
        .unwrap_err();
        assert!(e.contains("http_cache_seconds"), "{e}");
        let e = HttpConfig::parse(&opts(&[
            ("http_auth_url", "https://h/"),
            ("http_cafile", "/nonexistent/ca.pem"),
        ]))
        .unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
