//! The two request/answer shapes the HTTP plugin speaks.
//!
//! - **EMQX** (its HTTP authentication and authorization): POST JSON; the answer is JSON
//!   `{"result": "allow"|"deny"|"ignore", "is_superuser": bool}` with status 200 (a 204
//!   without a body means "ignore", as EMQX reads it). `ignore` passes to the next plugin.
//!   Authorization asks `action` `publish` or `subscribe`; EMQX never asks per delivery, so a
//!   receive check passes.
//! - **mosquitto-go-auth** (its `http` backend): POST JSON; status 200 allows, anything else
//!   denies; a JSON body `{"ok": false, "error": "..."}` denies even with 200. Superuser is
//!   its own endpoint (`{"username"}`), ACL asks `acc` 1 read, 2 write, 4 subscribe.

use serde_json::{json, Value};

use crate::auth::Access;

use super::client::Response;

/// Which server the plugin talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Emqx,
    GoAuth,
}

impl Shape {
    pub fn parse(text: &str) -> Result<Shape, String> {
        match text {
            "emqx" => Ok(Shape::Emqx),
            "go-auth" | "mosquitto-go-auth" => Ok(Shape::GoAuth),
            _ => Err(format!("http_shape {text:?}: expected emqx or go-auth")),
        }
    }
}

/// What a server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        superuser: bool,
    },
    Deny,
    /// Not this server's business (EMQX `ignore`): the next plugin decides.
    Ignore,
}

/// The client fields a request carries (owned: the request is built on a worker).
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub client_id: String,
    pub username: Option<String>,
    pub peer_ip: Option<String>,
    pub listener_port: u16,
}

/// `acc` as mosquitto-go-auth numbers it.
pub fn acc(access: Access) -> u8 {
    match access {
        Access::Read => 1,
        Access::Write => 2,
        Access::Subscribe => 4,
    }
}

/// The authentication request body. The password is sent as text (lossily, if it is not
/// UTF-8: JSON has no bytes).
pub fn auth_body(shape: Shape, who: &Who, password: Option<&[u8]>) -> Vec<u8> {
    let password = password.map(|p| String::from_utf8_lossy(p).into_owned());
    let v = match shape {
        Shape::Emqx => json!({
            "clientid": who.client_id,
            "username": who.username,
            "password": password,
            "peerhost": who.peer_ip,
            "port": who.listener_port,
        }),
        Shape::GoAuth => json!({
            "username": who.username.as_deref().unwrap_or(""),
            "password": password.as_deref().unwrap_or(""),
            "clientid": who.client_id,
        }),
    };
    v.to_string().into_bytes()
}

/// The superuser request body (go-auth's separate endpoint).
pub fn superuser_body(who: &Who) -> Vec<u8> {
    json!({ "username": who.username.as_deref().unwrap_or("") })
        .to_string()
        .into_bytes()
}

/// The ACL request body; `None` when this shape does not ask about `access` (EMQX and
/// receive).
pub fn acl_body(shape: Shape, who: &Who, topic: &str, access: Access) -> Option<Vec<u8>> {
    let v = match shape {
        Shape::Emqx => {
            let action = match access {
                Access::Write => "publish",
                Access::Subscribe => "subscribe",
                Access::Read => return None,
            };
            json!({
                "clientid": who.client_id,
                "username": who.username,
                "peerhost": who.peer_ip,
                "topic": topic,
                "action": action,
            })
        }
        Shape::GoAuth => json!({
            "username": who.username.as_deref().unwrap_or(""),
            "clientid": who.client_id,
            "topic": topic,
            "acc": acc(access),
        }),
    };
    Some(v.to_string().into_bytes())
}

/// Reads a server's answer.
pub fn verdict(shape: Shape, resp: &Response) -> Verdict {
    let json: Option<Value> = serde_json::from_slice(&resp.body).ok();
    match shape {
        Shape::Emqx => {
            if resp.status == 204 {
                return Verdict::Ignore;
            }
            if !(200..300).contains(&resp.status) {
                return Verdict::Deny;
            }
            let Some(v) = json else {
                return Verdict::Deny;
            };
            match v.get("result").and_then(Value::as_str) {
                Some("allow") => Verdict::Allow {
                    superuser: v
                        .get("is_superuser")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                },
                Some("ignore") => Verdict::Ignore,
                _ => Verdict::Deny,
            }
        }
        Shape::GoAuth => {
            if resp.status != 200 {
                return Verdict::Deny;
            }
            match json
                .as_ref()
                .and_then(|v| v.get("ok"))
                .and_then(Value::as_bool)
            {
                Some(false) => Verdict::Deny,
                _ => Verdict::Allow { superuser: false },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn emqx_answers() {
        let e = Shape::Emqx;
        let allow = resp(200, r#"{"result":"allow","is_superuser":true}"#);
        assert_eq!(verdict(e, &allow), Verdict::Allow { superuser: true });
        let allow = resp(200, r#"{"result":"allow"}"#);
        assert_eq!(verdict(e, &allow), Verdict::Allow { superuser: false });
        assert_eq!(
            verdict(e, &resp(200, r#"{"result":"deny"}"#)),
            Verdict::Deny
        );
        assert_eq!(
            verdict(e, &resp(200, r#"{"result":"ignore"}"#)),
            Verdict::Ignore
        );
        assert_eq!(verdict(e, &resp(204, "")), Verdict::Ignore);
        assert_eq!(verdict(e, &resp(200, "allow")), Verdict::Deny);
        assert_eq!(
            verdict(e, &resp(500, r#"{"result":"allow"}"#)),
            Verdict::Deny
        );
    }

    #[test]
    fn go_auth_answers() {
        let g = Shape::GoAuth;
        assert_eq!(
            verdict(g, &resp(200, "")),
            Verdict::Allow { superuser: false }
        );
        assert_eq!(
            verdict(g, &resp(200, r#"{"ok":true}"#)),
            Verdict::Allow { superuser: false }
        );
        assert_eq!(
            verdict(g, &resp(200, r#"{"ok":false,"error":"x"}"#)),
            Verdict::Deny
        );
        assert_eq!(verdict(g, &resp(403, "")), Verdict::Deny);
    }

    #[test]
    fn bodies() {
        let who = Who {
            client_id: "c1".into(),
            username: Some("u".into()),
            peer_ip: Some("127.0.0.1".into()),
            listener_port: 1883,
        };
        let v: Value = serde_json::from_slice(&auth_body(Shape::Emqx, &who, Some(b"pw"))).unwrap();
        assert_eq!(v["clientid"], "c1");
        assert_eq!(v["password"], "pw");
        assert_eq!(v["peerhost"], "127.0.0.1");
        let v: Value = serde_json::from_slice(
            &acl_body(Shape::GoAuth, &who, "a/b", Access::Subscribe).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (v["acc"].as_u64(), v["topic"].as_str()),
            (Some(4), Some("a/b"))
        );
        let v: Value =
            serde_json::from_slice(&acl_body(Shape::Emqx, &who, "a/b", Access::Write).unwrap())
                .unwrap();
        assert_eq!(v["action"], "publish");
        assert!(acl_body(Shape::Emqx, &who, "a/b", Access::Read).is_none());
        let v: Value = serde_json::from_slice(&superuser_body(&who)).unwrap();
        assert_eq!(v["username"], "u");
    }
}
