//! MQTT 5 enhanced authentication (§4.12): CONNECT with an Authentication Method, the AUTH
//! packets that follow, and re-authentication, over the plugins' extended-auth hook
//! (`ShardPlugins::extended_auth`; SCRAM is the built-in `builtin:scram`).
//!
//! ```text
//! CONNECT method=M data=D    -> step(start)  -> Continue(d): AUTH 0x18 M d, await AUTH
//! AUTH 0x18 M d              -> step         -> Success(d):  CONNACK 0 M d (connect_accepted)
//!                                               Deny: CONNACK 0x87   Pass: CONNACK 0x8C
//!                                               Later: parked until `Later::answer_extended`
//! (connected) AUTH 0x19 M d  -> step(start, reauthenticate) -> Continue: AUTH 0x18,
//!                                               Success: AUTH 0x00, Deny: DISCONNECT 0x87
//! ```
//! Normative rules kept here: every AUTH and a successful CONNACK carry CONNECT's method
//! [MQTT-4.12.0-5]; a client that gave no method sends no AUTH [MQTT-4.12.0-7] (protocol
//! error), and gets no method back [MQTT-4.12.0-6]; before CONNACK only AUTH (or DISCONNECT)
//! may follow CONNECT; re-authentication uses CONNECT's method [MQTT-4.12.1-1], and its
//! failure closes with DISCONNECT [MQTT-4.12.1-2]. Bounds on what the client controls: the
//! data of one packet, the steps and the time of one exchange (`auth::enhanced`), and each
//! wait for the client before CONNACK is `connect_timeout` (the shard's tick).

use std::time::Instant;

use bytes::Bytes;

use crate::auth::enhanced::EnhancedAuth;
use crate::plugin::{AuthStep, ExtendedAuth};
use crate::protocol::reason::v5;
use crate::protocol::{Auth, Connect, Packet, Properties};
use crate::shard::ctx::{Ctx, SessionCtx};
use crate::shard::Close;

use super::connect::{connect_accepted, refuse, BAD_AUTH_METHOD, NOT_AUTHORIZED};

/// CONNECT named an Authentication Method: the first step of its exchange.
pub(super) fn start(cx: &mut Ctx<'_>, mut connect: Connect) -> bool {
    let Some(method) = connect.properties.authentication_method.clone() else {
        return super::hooks::authenticate(cx, connect);
    };
    if let Some(identity) = cx.required_tls_identity() {
        // `use_identity_as_username` / `use_subject_as_username` still name the client (as
        // for basic auth); the method must then authenticate that name.
        let Some(identity) = identity else {
            let max = connect.properties.maximum_packet_size.unwrap_or(0);
            return refuse(cx, max, NOT_AUTHORIZED, "no client certificate identity");
        };
        connect.username = Some(String::from(identity).into());
        connect.password = None;
    }
    *cx.enhanced_auth() = Some(Box::new(EnhancedAuth::starting(&method, Instant::now())));
    let data = connect.properties.authentication_data.clone();
    step_connect(cx, connect, data, true)
}

/// AUTH before CONNACK: the client's next step of CONNECT's exchange.
pub(super) fn handle_auth_connecting(cx: &mut Ctx<'_>, auth: Auth) -> bool {
    let parked = cx
        .enhanced_auth()
        .as_mut()
        .and_then(|a| a.exchange.as_mut())
        .and_then(|e| e.connect.take());
    let Some(connect) = parked else {
        return cx.protocol_error(
            v5::PROTOCOL_ERROR,
            "AUTH before CONNECT [MQTT-3.1.0-1]".into(),
        );
    };
    if auth.reason != v5::CONTINUE_AUTHENTICATION {
        let reason = format!(
            "AUTH with reason 0x{:02X} during CONNECT's authentication (expected 0x18)",
            auth.reason
        );
        return cx.protocol_error(v5::PROTOCOL_ERROR, reason);
    }
    let method = auth.properties.authentication_method.as_deref();
    if !cx
        .enhanced_auth()
        .as_ref()
        .is_some_and(|a| a.same_method(method))
    {
        let reason = "AUTH with another authentication method than CONNECT's [MQTT-4.12.0-5]";
        return cx.protocol_error(v5::PROTOCOL_ERROR, reason.into());
    }
    step_connect(cx, *connect, auth.properties.authentication_data, false)
}

/// Whether the connection is between CONNECT and CONNACK of an enhanced authentication
/// (then only AUTH and DISCONNECT may come).
pub(super) fn exchanging(cx: &mut Ctx<'_>) -> bool {
    cx.enhanced_auth()
        .as_ref()
        .is_some_and(|a| a.exchange.is_some())
}

/// One step of CONNECT's exchange, with the client's `data`.
fn step_connect(cx: &mut Ctx<'_>, mut connect: Connect, data: Option<Bytes>, start: bool) -> bool {
    let max = connect.properties.maximum_packet_size.unwrap_or(0);
    let len = data.as_ref().map_or(0, Bytes::len);
    let bounded = match cx.enhanced_auth().as_mut() {
        Some(a) => a.step(Instant::now(), len),
        None => return refuse(cx, max, NOT_AUTHORIZED, "no authentication in progress"),
    };
    if let Err(bound) = bounded {
        return refuse(cx, max, NOT_AUTHORIZED, &bound.to_string());
    }
    let method = connect
        .properties
        .authentication_method
        .clone()
        .unwrap_or_default();
    let step = AuthStep {
        method: &method,
        data: data.as_deref(),
        start,
        reauthenticate: false,
    };
    let (answer, serial) =
        cx.plugin_extended_auth(&connect.client_id, connect.username.as_deref(), &step);
    // A SCRAM client that gave no user name in CONNECT is known by the one it proved (its
    // ACL rules, `%u`); one that gave a name had to give this one. Taken right after the
    // call that set it, so no other connection's answer can see it.
    let proved = crate::plugin::builtin::scram::take_authenticated_user();
    if matches!(answer, ExtendedAuth::Success(_)) && connect.username.is_none() {
        connect.username = proved.map(crate::protocol::ByteStr::from);
    }
    connect_answer(cx, connect, answer, serial)
}

/// A deferred answer (`Later::answer_extended`) for a CONNECT parked by its exchange.
pub(crate) fn extended_auth_answer(
    mut cx: Ctx<'_>,
    connect: Connect,
    answer: ExtendedAuth,
) -> bool {
    let answer = match answer {
        // [`Later::answer_extended`]: these two count as a refusal.
        ExtendedAuth::Pass | ExtendedAuth::Later => ExtendedAuth::Deny,
        a => a,
    };
    connect_answer(&mut cx, connect, answer, 0)
}

/// What the plugins answered to a step of CONNECT's exchange.
fn connect_answer(
    cx: &mut Ctx<'_>,
    mut connect: Connect,
    answer: ExtendedAuth,
    serial: u64,
) -> bool {
    let max = connect.properties.maximum_packet_size.unwrap_or(0);
    match answer {
        ExtendedAuth::Continue(data) => {
            let method = connect.properties.authentication_method.clone();
            if !send_auth(cx, v5::CONTINUE_AUTHENTICATION, method, Some(data), max) {
                return refuse(
                    cx,
                    max,
                    NOT_AUTHORIZED,
                    "AUTH over the client's maximum packet size",
                );
            }
            let parked = cx
                .enhanced_auth()
                .as_mut()
                .and_then(|a| a.exchange.as_mut());
            match parked {
                Some(exchange) => {
                    exchange.connect = Some(Box::new(connect));
                    true
                }
                None => refuse(cx, max, NOT_AUTHORIZED, "no authentication in progress"),
            }
        }
        ExtendedAuth::Success(data) => {
            if let Some(a) = cx.enhanced_auth().as_mut() {
                a.exchange = None;
            }
            // CONNACK carries the method and the plugin's last data [MQTT-4.12.0-5]; the
            // CONNECT brings them there (it may move to another shard first).
            connect.properties.authentication_data = data;
            connect_accepted(cx, connect)
        }
        ExtendedAuth::Deny => refuse(cx, max, NOT_AUTHORIZED, "enhanced authentication failed"),
        ExtendedAuth::Pass => {
            let why = format!(
                "no plugin provides authentication method '{}'",
                connect
                    .properties
                    .authentication_method
                    .as_deref()
                    .unwrap_or("")
            );
            refuse(cx, max, BAD_AUTH_METHOD, &why)
        }
        ExtendedAuth::Later => {
            cx.park(connect, serial);
            true
        }
    }
}

/// Queues AUTH `reason` with the connection's method and `data`; `false` when it would be
/// over the client's Maximum Packet Size `max` (0: none).
fn send_auth(
    cx: &mut Ctx<'_>,
    reason: u8,
    method: Option<crate::protocol::ByteStr>,
    data: Option<Bytes>,
    max: u32,
) -> bool {
    let packet = Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: method,
            authentication_data: data,
            ..Default::default()
        },
    });
    let len = crate::protocol::encoded_len(&packet, crate::protocol::ProtocolVersion::V5);
    if max != 0 && len > max as usize {
        return false;
    }
    cx.send(&packet);
    true
}

/// AUTH from a connected client: re-authentication (0x19) or its next step (0x18).
pub(super) fn handle_auth_session(cx: &mut SessionCtx<'_>, auth: Auth) -> bool {
    let method = auth.properties.authentication_method.as_deref();
    let (same, running) = match cx.enhanced_auth().as_ref() {
        None => {
            let reason =
                "AUTH from a client that connected without authentication method [MQTT-4.12.0-7]";
            return cx.protocol_error(v5::PROTOCOL_ERROR, reason.into());
        }
        Some(a) => (a.same_method(method), a.exchange.is_some()),
    };
    if !same {
        let reason = "re-authentication with another method than CONNECT's [MQTT-4.12.1-1]";
        return cx.protocol_error(v5::PROTOCOL_ERROR, reason.into());
    }
    let start = match (auth.reason, running) {
        (v5::RE_AUTHENTICATE, false) => true,
        (v5::CONTINUE_AUTHENTICATION, true) => false,
        (v5::RE_AUTHENTICATE, true) => {
            let reason = "AUTH 0x19 while a re-authentication is in progress";
            return cx.protocol_error(v5::PROTOCOL_ERROR, reason.into());
        }
        (code, _) => {
            let reason = format!("AUTH with reason 0x{code:02X} out of place");
            return cx.protocol_error(v5::PROTOCOL_ERROR, reason);
        }
    };
    let data = auth.properties.authentication_data;
    let len = data.as_ref().map_or(0, Bytes::len);
    let bounded = cx
        .enhanced_auth()
        .as_mut()
        .map_or(Ok(()), |a| a.step(Instant::now(), len));
    if let Err(bound) = bounded {
        return reauth_failed(cx, v5::NOT_AUTHORIZED, bound.to_string());
    }
    let method = auth.properties.authentication_method.unwrap_or_default();
    let step = AuthStep {
        method: &method,
        data: data.as_deref(),
        start,
        reauthenticate: true,
    };
    let answer = cx.plugin_reauthenticate(&step);
    // The user stays the one of CONNECT (the plugin checked the proof is for it).
    let _ = crate::plugin::builtin::scram::take_authenticated_user();
    let max = cx.session().limits.max_packet_size;
    match answer {
        ExtendedAuth::Continue(d) => {
            if !send_auth(cx, v5::CONTINUE_AUTHENTICATION, Some(method), Some(d), max) {
                return reauth_failed(
                    cx,
                    v5::NOT_AUTHORIZED,
                    "AUTH over the client's maximum packet size".into(),
                );
            }
            true
        }
        ExtendedAuth::Success(d) => {
            if let Some(a) = cx.enhanced_auth().as_mut() {
                a.exchange = None;
            }
            if !send_auth(cx, v5::SUCCESS, Some(method), d, max) {
                return reauth_failed(
                    cx,
                    v5::NOT_AUTHORIZED,
                    "AUTH over the client's maximum packet size".into(),
                );
            }
            log::info!("Client {} re-authenticated.", cx.label());
            true
        }
        ExtendedAuth::Deny => {
            reauth_failed(cx, v5::NOT_AUTHORIZED, "re-authentication failed".into())
        }
        ExtendedAuth::Pass => reauth_failed(
            cx,
            v5::BAD_AUTHENTICATION_METHOD,
            format!("no plugin provides authentication method '{method}'"),
        ),
        // A connected client cannot be parked (its other packets keep flowing), and the
        // inbox path resumes CONNECTs only: a deferred answer is not supported here.
        ExtendedAuth::Later => reauth_failed(
            cx,
            v5::NOT_AUTHORIZED,
            "a plugin deferred a re-authentication (not supported)".into(),
        ),
    }
}

/// Re-authentication failed: DISCONNECT `code` and close [MQTT-4.12.1-2].
fn reauth_failed(cx: &mut SessionCtx<'_>, code: u8, reason: String) -> bool {
    cx.close(Close::Protocol { code, reason });
    false
}
