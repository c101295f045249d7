//! `plugin builtin:jwt`: a JSON Web Token in the CONNECT password (or user name) verified
//! against a key file or a JWKS file, with the token's claims as the client's ACL.
//!
//! Verification runs on the shard, inside basic_auth: it is one HMAC, one RSA public-key
//! operation or one P-256 verification (tens of microseconds for the asymmetric ones, see
//! docs/PLUGINS.md for the measured numbers), the cost of a TLS handshake's smallest step;
//! a worker round trip would cost as much. No `Later`.
//!
//! ACL (`jwt_acl_claim`): a claim `{"pub": [filters], "sub": [filters]}` is compiled at
//! CONNECT into a [`ClientAcl`] (`pub` grants write, `sub` read and subscribe), handed (one
//! lock per CONNECT) to the shard that holds the session (the client id's home shard, not
//! always the one that authenticated it) by the `connect` hook, and kept there under the
//! client id until its session ends (not at disconnect: messages queued for
//! an offline persistent session are checked against it too); anything outside is refused.
//! A token without the claim leaves the ACL to the next plugin and the ACL file.

pub(crate) mod keys;
pub(crate) mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use self::keys::Key;
use self::token::Rules;
use crate::auth::{Access, Acl, ClientAcl};
use crate::plugin::{
    ClientInfo, Credentials, Decision, Events, Later, Plugin, PluginOptions, SessionEnd,
    ShardPlugin,
};

/// The options, read whole.
#[derive(Debug)]
pub struct JwtConfig {
    keys: Vec<(Option<String>, Key)>,
    rules: Rules,
    from_username: bool,
    username_claim: String,
    acl_claim: Option<String>,
}

impl JwtConfig {
    pub fn parse(options: &PluginOptions) -> Result<JwtConfig, String> {
        let mut key_file = None;
        let mut jwks_file = None;
        let mut c = JwtConfig {
            keys: Vec::new(),
            rules: Rules::default(),
            from_username: false,
            username_claim: "sub".into(),
            acl_claim: None,
        };
        for (key, value) in options {
            let value = value.trim();
            match key.as_str() {
                "jwt_key_file" => key_file = Some(PathBuf::from(value)),
                "jwt_jwks_file" => jwks_file = Some(PathBuf::from(value)),
                "jwt_from" => {
                    c.from_username = match value {
                        "password" => false,
                        "username" => true,
                        _ => return Err(format!("jwt_from {value:?}: password or username")),
                    }
                }
                "jwt_leeway_seconds" => {
                    c.rules.leeway = value
                        .parse()
                        .ok()
                        .filter(|n| *n <= 86_400)
                        .ok_or_else(|| format!("jwt_leeway_seconds {value:?}: 0 to 86400"))?
                }
                "jwt_audience" => c.rules.audience = Some(value.to_string()),
                "jwt_issuer" => c.rules.issuer = Some(value.to_string()),
                "jwt_username_claim" => c.username_claim = value.to_string(),
                "jwt_acl_claim" => c.acl_claim = Some(value.to_string()),
                _ => {
                    return Err(format!(
                        "unknown option {key} (the jwt plugin's start with jwt_)"
                    ))
                }
            }
        }
        c.keys = match (key_file, jwks_file) {
            (Some(f), None) => vec![(
                None,
                keys::load_key_file(&f).map_err(|e| format!("jwt_key_file {e}"))?,
            )],
            (None, Some(f)) => keys::load_jwks(&f).map_err(|e| format!("jwt_jwks_file {e}"))?,
            _ => return Err("exactly one of jwt_key_file and jwt_jwks_file is needed".into()),
        };
        Ok(c)
    }
}

/// `plugin builtin:jwt`'s constructor (the registry's row).
pub fn new(options: &PluginOptions) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(JwtPlugin {
        config: Arc::new(RwLock::new(Arc::new(JwtConfig::parse(options)?))),
        handoff: Arc::new(Mutex::new(HashMap::new())),
    }))
}

pub struct JwtPlugin {
    /// Shared with the shards, which take a new snapshot at reload.
    config: Arc<RwLock<Arc<JwtConfig>>>,
    handoff: Handoff,
}

/// Each allowed client's ACL (or none) between basic auth and the `connect` hook.
type Handoff = Arc<Mutex<HashMap<String, Option<ClientAcl>>>>;

impl JwtPlugin {
    fn config(&self) -> Arc<JwtConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Plugin for JwtPlugin {
    fn name(&self) -> &str {
        "jwt"
    }

    /// Re-reads the key files too (a rotated key applies at SIGHUP).
    fn configure(&self, options: &PluginOptions) -> Result<(), String> {
        let config = Arc::new(JwtConfig::parse(options)?);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn shard(&self, _shard: usize, _shards: usize) -> Box<dyn ShardPlugin> {
        Box::new(JwtShard {
            source: self.config.clone(),
            handoff: self.handoff.clone(),
            shared: self.config(),
            acls: HashMap::new(),
        })
    }
}

/// The plugin on one shard: the ACLs of its clients that had an ACL claim.
pub struct JwtShard {
    source: Arc<RwLock<Arc<JwtConfig>>>,
    handoff: Handoff,
    shared: Arc<JwtConfig>,
    acls: HashMap<String, ClientAcl>,
}

/// Compiles `{"pub": [...], "sub": [...]}` into the client's ACL.
fn claim_acl(claim: &Value, client_id: &str) -> Result<ClientAcl, String> {
    let mut text = String::new();
    for (field, access) in [("pub", "write"), ("sub", "read")] {
        let Some(list) = claim.get(field) else {
            continue;
        };
        let list = list
            .as_array()
            .ok_or_else(|| format!("the ACL claim's {field:?} is not a list"))?;
        for f in list {
            let f = f
                .as_str()
                .filter(|f| !f.is_empty() && !f.contains(['\n', '\r', '\0']))
                .ok_or_else(|| format!("the ACL claim's {field:?} holds a bad filter"))?;
            text.push_str(&format!("topic {access} {f}\n"));
        }
    }
    if text.is_empty() {
        // A claim granting nothing: a rule no topic matches, so everything is refused.
        text.push_str("topic deny #\n");
    }
    let acl = Acl::parse(&text, "the token's ACL claim").map_err(|e| e.to_string())?;
    Ok(acl.for_client(client_id, None))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl JwtShard {
    fn check(&self, creds: &Credentials<'_>) -> Result<Map<String, Value>, String> {
        let c = &self.shared;
        let token = if c.from_username {
            creds.username.map(str::as_bytes)
        } else {
            creds.password
        };
        let token = std::str::from_utf8(token.unwrap_or_default())
            .map_err(|_| "the token is not UTF-8".to_string())?;
        let claims = token::verify(token, &c.keys, &c.rules, unix_now())?;
        // The contract cannot rename a client, so the token must name the user the client
        // says it is (else the ACL file would apply another user's rules to it).
        if let (false, Some(user), Some(claimed)) = (
            c.from_username,
            creds.username,
            claims.get(&c.username_claim).and_then(Value::as_str),
        ) {
            if user != claimed {
                return Err(format!(
                    "user name {user:?} is not the token's {} {claimed:?}",
                    c.username_claim
                ));
            }
        }
        Ok(claims)
    }
}

impl ShardPlugin for JwtShard {
    fn events(&self) -> Events {
        let mut e = Events::BASIC_AUTH | Events::SESSION_END | Events::RELOAD;
        if self.shared.acl_claim.is_some() {
            e = e | Events::ACL_CHECK | Events::CONNECT;
        }
        e
    }

    fn basic_auth(
        &mut self,
        client: &ClientInfo<'_>,
        creds: &Credentials<'_>,
        later: Later,
    ) -> Decision {
        drop(later); // answered here, never later (dropped during the hook: sends nothing)
        let present = match self.shared.from_username {
            true => creds.username.is_some_and(|u| !u.is_empty()),
            false => creds.password.is_some_and(|p| !p.is_empty()),
        };
        if !present {
            return Decision::Pass;
        }
        let claims = match self.check(creds) {
            Ok(claims) => claims,
            Err(why) => {
                log::info!(
                    "plugin jwt: client {:?}: token refused: {why}",
                    client.client_id
                );
                return Decision::Deny;
            }
        };
        let mut acl = None;
        if let Some(name) = &self.shared.acl_claim {
            if let Some(claim) = claims.get(name) {
                match claim_acl(claim, client.client_id) {
                    Ok(a) => acl = Some(a),
                    Err(why) => {
                        log::info!(
                            "plugin jwt: client {:?}: token refused: {why}",
                            client.client_id
                        );
                        return Decision::Deny;
                    }
                }
            }
        }
        if self.shared.acl_claim.is_some() {
            let mut h = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
            if h.len() >= 100_000 {
                h.clear(); // CONNECTs allowed here and refused later: bounded
            }
            h.insert(client.client_id.to_string(), acl);
        }
        Decision::Allow
    }

    fn connect(&mut self, client: &ClientInfo<'_>) {
        let handed = {
            let mut h = self.handoff.lock().unwrap_or_else(|e| e.into_inner());
            h.remove(client.client_id)
        };
        match handed.flatten() {
            Some(acl) => {
                self.acls.insert(client.client_id.to_string(), acl);
            }
            None => {
                self.acls.remove(client.client_id);
            }
        }
    }

    fn acl_check(&mut self, client: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        if self.acls.is_empty() {
            return Decision::Pass;
        }
        match self.acls.get(client.client_id) {
            None => Decision::Pass,
            Some(acl) if acl.allowed(topic, access) => Decision::Allow,
            Some(_) => Decision::Deny,
        }
    }

    fn session_end(&mut self, client_id: &str, _why: SessionEnd) {
        self.acls.remove(client_id);
    }

    /// New keys and rules apply to new CONNECTs; connected clients keep the ACL their token
    /// gave them.
    fn reload(&mut self) {
        self.shared = self
            .source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
    }
}

#[cfg(test)]
mod tests;
