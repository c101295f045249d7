//! CONNECT: client-id rules, the anonymous policy, moving the connection to the home shard of
//! its client id, session takeover and resumption, CONNACK (with its MQTT 5 properties).

use std::time::Instant;

use crate::auth::enhanced::EnhancedAuth;
use crate::config::Config;
use crate::protocol::reason::{v3, v5};
use crate::protocol::{
    ByteStr, ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion,
};
use crate::session::{Limits, Session};
use crate::shard::ctx::Ctx;
use crate::shard::Close;

/// A CONNECT refusal: the 3.x return code and the 5.0 reason code that say the same thing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Refusal {
    v3: u8,
    v5: u8,
}

const ID_REJECTED: Refusal = Refusal {
    v3: v3::IDENTIFIER_REJECTED,
    v5: v5::CLIENT_IDENTIFIER_NOT_VALID,
};
pub(super) const NOT_AUTHORIZED: Refusal = Refusal {
    v3: v3::NOT_AUTHORIZED,
    v5: v5::NOT_AUTHORIZED,
};
/// 3.x has no code for these: "not authorized" is the closest refusal it can express.
const RETAIN_UNAVAILABLE: Refusal = Refusal {
    v3: v3::NOT_AUTHORIZED,
    v5: v5::RETAIN_NOT_SUPPORTED,
};
const QOS_UNSUPPORTED: Refusal = Refusal {
    v3: v3::NOT_AUTHORIZED,
    v5: v5::QOS_NOT_SUPPORTED,
};
/// mosquitto answers every failed login "not authorized" in 3.x; 5.0 can say more.
pub(super) const BAD_CREDENTIALS: Refusal = Refusal {
    v3: v3::NOT_AUTHORIZED,
    v5: v5::BAD_USER_NAME_OR_PASSWORD,
};
pub(super) const SERVER_BUSY: Refusal = Refusal {
    v3: v3::SERVER_UNAVAILABLE,
    v5: v5::SERVER_BUSY,
};
/// mosquitto's answer to a will over `message_size_limit`.
const WILL_TOO_LARGE: Refusal = Refusal {
    v3: v3::NOT_AUTHORIZED,
    v5: v5::PACKET_TOO_LARGE,
};
pub(super) const BAD_AUTH_METHOD: Refusal = Refusal {
    v3: v3::NOT_AUTHORIZED,
    v5: v5::BAD_AUTHENTICATION_METHOD,
};

/// Handles CONNECT on a connection awaiting it.
pub(super) fn handle_connect(cx: &mut Ctx<'_>, mut connect: Connect) -> bool {
    cx.set_protocol(
        connect.version,
        connect.properties.request_problem_information != Some(0),
    );
    let max = connect.properties.maximum_packet_size.unwrap_or(0);
    if connect.username.as_deref() == Some("") {
        // An empty user name is no user name, as in mosquitto (its decoder reads an empty
        // string as none): the client is anonymous, for `allow_anonymous`, the password
        // file and the ACL (`%u` never becomes empty).
        connect.username = None;
    }
    let v5 = connect.version.is_v5();

    if connect.client_id.is_empty() {
        // 3.1 requires an id; 3.1.1 allows an empty one only with clean session
        // [MQTT-3.1.3-7], [MQTT-3.1.3-8]; 5.0 always lets the server assign one
        // [MQTT-3.1.3-6].
        let allowed = v5 || (connect.version == ProtocolVersion::V311 && connect.clean_start);
        if !allowed {
            return refuse(
                cx,
                max,
                ID_REJECTED,
                "empty client id without clean session",
            );
        }
    }
    if let Some(why) = super::client_ids::refusal(&cx.config().clients, &connect.client_id) {
        let refusal = if why.identifier {
            ID_REJECTED
        } else {
            NOT_AUTHORIZED
        };
        return refuse(cx, max, refusal, why.reason);
    }
    if let Some(will) = &mut connect.will {
        // Before its checks: the limits and the ACL see the full topic, as mosquitto's.
        if let Some(full) = cx.mounted_topic(&will.topic) {
            will.topic = full;
        }
    }
    if let Some(will) = &connect.will {
        let config = cx.config();
        // `max_topic_levels` / `max_topic_length`: mosquitto closes without a CONNACK.
        if let Err(e) = config.topic_limits().check(&will.topic) {
            return cx.protocol_error(v5::PROTOCOL_ERROR, format!("will {e}"));
        }
        if will.retain && !config.retain_available {
            // [MQTT-3.2.2-13]
            return refuse(
                cx,
                max,
                RETAIN_UNAVAILABLE,
                "will retain set but retain_available is false",
            );
        }
        if will.qos as u8 > config.max_qos {
            // [MQTT-3.2.2-12]
            return refuse(cx, max, QOS_UNSUPPORTED, "will QoS above max_qos");
        }
        let limit = config.message_size_limit;
        if limit != 0 && will.payload.len() > limit as usize {
            // As mosquitto (`will__read`): a will no PUBLISH could carry refuses the
            // CONNECT, 5.0 "packet too large", 3.x "not authorized".
            return refuse(
                cx,
                max,
                WILL_TOO_LARGE,
                "will payload over message_size_limit",
            );
        }
    }
    if !v5 && connect.keep_alive > cx.config().max_keepalive {
        // 3.x has no way to tell the client to use less; mosquitto refuses such clients
        // with "identifier rejected" and so do we. (5.0 clients get Server Keep Alive.)
        return refuse(cx, max, ID_REJECTED, "keep-alive above max_keepalive");
    }
    if connect.properties.authentication_method.is_some() {
        // MQTT 5 enhanced authentication: the plugins that provide the method decide
        // (`handle::auth`); CONNECT's user name and password are theirs to use or ignore.
        return super::auth::start(cx, connect);
    }
    super::hooks::authenticate(cx, connect)
}

/// Sends the password to the auth worker and parks the connection until it answers
/// ([`Ctx::password_checked`]). Other clients are served meanwhile.
pub(super) fn verify_password(cx: &mut Ctx<'_>, connect: Connect) -> bool {
    let max = connect.properties.maximum_packet_size.unwrap_or(0);
    // `connect_check` asks for verification only where the listener has a password file.
    let Some(passwords) = cx.listener_auth().0.passwords.clone() else {
        return refuse(cx, max, NOT_AUTHORIZED, "no password file on this listener");
    };
    match cx.check_password(connect, passwords) {
        Ok(()) => true,
        Err(why) => refuse(cx, max, SERVER_BUSY, why),
    }
}

impl Ctx<'_> {
    /// The auth worker answered a parked CONNECT: resume or refuse it.
    pub(crate) fn password_checked(mut self, connect: Connect, allowed: bool) -> bool {
        if !allowed {
            let max = connect.properties.maximum_packet_size.unwrap_or(0);
            if connect.properties.authentication_method.is_some() {
                // A deferred enhanced-auth step whose handle was dropped unanswered.
                return refuse(
                    &mut self,
                    max,
                    NOT_AUTHORIZED,
                    "enhanced authentication failed",
                );
            }
            return refuse(&mut self, max, BAD_CREDENTIALS, "bad username or password");
        }
        connect_accepted(&mut self, connect)
    }

    /// The cluster answered whether another node had the client's session (if so, it is
    /// installed here now): the CONNECT finishes, resuming it or starting a new one.
    pub(crate) fn cluster_session_resumed(mut self, connect: Connect) -> bool {
        let id = connect.client_id.clone();
        attach(&mut self, connect, id, false)
    }

    /// A connection another shard moved here (its CONNECT already checked and
    /// authenticated there) finishes its CONNECT.
    pub(crate) fn connect_adopted(mut self, connect: Connect) -> bool {
        connect_accepted(&mut self, connect)
    }
}

/// The CONNECT passed every check: assign an id if needed, move to the home shard of the
/// client id, or attach the session here.
pub(super) fn connect_accepted(cx: &mut Ctx<'_>, mut connect: Connect) -> bool {
    if cx.config().clients.use_username_as_clientid {
        // As mosquitto: the (authenticated) username is the client id; without one the
        // client is refused.
        match &connect.username {
            Some(user) => connect.client_id = user.clone(),
            None => {
                let max = connect.properties.maximum_packet_size.unwrap_or(0);
                return refuse(
                    cx,
                    max,
                    NOT_AUTHORIZED,
                    "use_username_as_clientid and no username",
                );
            }
        }
    }
    if connect.client_id.is_empty() {
        let id = cx.generate_client_id();
        return attach(cx, connect, id, true);
    }
    if !cx.is_home_of(&connect.client_id) {
        cx.migrate(connect);
        return false;
    }
    let id = connect.client_id.clone();
    if !connect.clean_start && cx.find_session(&id).is_none() {
        // The session may be on another cluster node: it comes here before CONNACK.
        if let Some(serial) = cx.ask_cluster_for_session(&id) {
            cx.park(connect, serial);
            return true;
        }
    }
    attach(cx, connect, id, false)
}

/// Queues a CONNACK refusal and closes.
/// `max` is the client's Maximum Packet Size (0 = none).
pub(super) fn refuse(cx: &mut Ctx<'_>, max: u32, refusal: Refusal, why: &str) -> bool {
    log::info!("Refusing client from {}: {why}.", cx.peer());
    let v5 = cx.is_v5();
    let mut ack = ConnAck {
        session_present: false,
        code: if v5 { refusal.v5 } else { refusal.v3 },
        ..Default::default()
    };
    if v5 && cx.problem_info() {
        ack.properties.reason_string = Some(why.into());
    }
    let version = cx.version().unwrap_or(ProtocolVersion::V311);
    if let Some(ack) = fit_connack(ack, version, max) {
        cx.send(&Packet::ConnAck(ack));
    }
    cx.close(Close::Refused);
    false
}

/// Binds the connection to its session (new, resumed or taken over) and sends CONNACK,
/// then everything the resumed session still owes the client.
fn attach(cx: &mut Ctx<'_>, connect: Connect, client_id: ByteStr, assigned: bool) -> bool {
    // The session, its registry entry and the connection keep the id for their lifetime:
    // a copy of its own, so that it does not pin the CONNECT's read buffer.
    let client_id = client_id.unshared();
    let config = cx.config();
    let v5 = connect.version.is_v5();
    // 3.x: clean session = the session ends with the connection, otherwise it never
    // expires. 5.0: Session Expiry Interval, absent = 0 [MQTT-3.1.2-23].
    let expiry_interval = match (v5, connect.clean_start) {
        (true, _) => connect.properties.session_expiry_interval.unwrap_or(0),
        (false, true) => 0,
        (false, false) => u32::MAX,
    };
    // `persistent_client_expiration`: a session that would never expire does after this.
    let expiry_interval = config.clients.persistent_expiry(expiry_interval);
    let receive_max = connect.properties.receive_maximum.unwrap_or(u16::MAX);
    let limits = Limits::new(
        config,
        receive_max,
        connect.properties.maximum_packet_size.unwrap_or(0),
    );
    let mut keep_alive = connect.keep_alive;
    let mut props = Properties::default();
    if v5 {
        props = connack_properties(config);
        if keep_alive > config.max_keepalive || (keep_alive == 0 && config.max_keepalive < u16::MAX)
        {
            // [MQTT-3.2.2-21]: the client must use the Server Keep Alive instead.
            keep_alive = config.max_keepalive;
            props.server_keep_alive = Some(keep_alive);
        }
        if assigned {
            props.assigned_client_identifier = Some(client_id.clone());
        }
        if let Some(method) = &connect.properties.authentication_method {
            // Enhanced authentication succeeded: CONNACK names the method [MQTT-4.12.0-5]
            // with the plugin's last data (`handle::auth` put it in the CONNECT).
            props.authentication_method = Some(method.clone());
            props.authentication_data = connect.properties.authentication_data.clone();
        }
        if connect.properties.request_response_information == Some(1) {
            // [MQTT-3.1.2-28]: only to a client that asked.
            props.response_information = config.response_information.as_deref().map(ByteStr::from);
        }
    }
    let aliases_out = match (v5, config.topic_alias_to_clients) {
        (true, true) => connect.properties.topic_alias_maximum.unwrap_or(0),
        _ => 0,
    };

    let acl = cx
        .listener_auth()
        .0
        .client_acl(&client_id, connect.username.as_deref());
    let mut will = connect.will;
    let username = connect.username.as_deref();
    if let Some(refused) = will
        .as_ref()
        .and_then(|w| super::hooks::will_refusal(cx, &client_id, username, &acl, &w.topic))
    {
        // As mosquitto 2.0 (`context__send_will`): the CONNECT is accepted and a will the
        // client could not publish itself is never published. The ACL is fixed at
        // CONNECT, so deciding now is deciding at publication; the will is dropped now.
        log::info!(
            "Dropping the will of {client_id} on {}: {refused}.",
            will.as_ref().map_or("", |w| &*w.topic)
        );
        will = None;
    }
    // [MQTT-3.1.2-24]: a CONNACK the client could not take is not sent (as mosquitto,
    // whose `send__connack` gives up on an oversize packet): the connection is closed.
    // [MQTT-3.2.2-1..3]: session present only when a stored session was resumed (set
    // below; the flag does not change the size).
    let mut ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code: v3::ACCEPTED,
        properties: props,
    });
    let connack_len = crate::protocol::encoded_len(&ack, connect.version);
    if limits.max_packet_size != 0 && connack_len > limits.max_packet_size as usize {
        log::info!(
            "Refusing client {client_id}: CONNACK of {connack_len} bytes is over its Maximum Packet Size."
        );
        cx.close(Close::Refused);
        return false;
    }
    let mut resumed = None;
    if let Some(slot) = cx.find_session(&client_id) {
        // [MQTT-3.1.4-2]/[MQTT-3.1.4-3]: the existing connection is closed (5.0: with
        // DISCONNECT 0x8E); its will is published per its delay.
        cx.close_session_conn(slot, Close::TakenOver);
        let (s, batch) = cx.session_at(slot);
        // A session whose expiry passed (between two ticks, or while the broker was down)
        // is over even if the tick has not removed it yet.
        let expired = s.expires_at.is_some_and(|at| Instant::now() >= at);
        if connect.clean_start || s.expiry_interval == 0 || expired {
            // [MQTT-3.1.2-6]/[MQTT-3.1.2-4]: clean start discards the previous session.
            // A will still waiting for its delay is cancelled, not published by the end
            // of the session: a new connection for the client id came first
            // [MQTT-3.1.3-9] (as mosquitto, `will_delay__remove`).
            if s.pending_will.take().is_some() {
                s.store_record(batch);
            }
            cx.end_session_replaced(slot);
        } else {
            resumed = Some(slot);
        }
    }
    // 3.1 has no session-present flag: that byte of its CONNACK is reserved (as mosquitto,
    // which sets the bit for 3.1.1 and 5.0 only).
    let session_present = resumed.is_some() && connect.version != ProtocolVersion::V31;
    let slot = match resumed {
        Some(slot) => slot,
        None => cx.new_session(Session::new(
            client_id.clone(),
            expiry_interval,
            connect.version,
            limits,
        )),
    };
    let durable = cx.persistent() && expiry_interval > 0;
    let (s, batch) = cx.session_at(slot);
    s.expiry_interval = expiry_interval;
    s.expires_at = None;
    // A reconnect within the Will Delay Interval cancels the old will [MQTT-3.1.3-9].
    s.pending_will = None;
    // QoS 2 PUBLISHes held back from the last connection are the client's to resend.
    s.forget_waiting_qos2();
    s.version = connect.version;
    // Its own allocation: the will lives as long as the connection, and its topic and
    // payload would otherwise keep the whole read buffer of the CONNECT alive.
    s.will = will.map(|w| Box::new(w.unshared()));
    s.limits = limits;
    s.acl = acl;
    // Persistent sessions are stored; one resumed with expiry 0 now ends with this
    // connection, so it leaves the store ([MQTT-3.1.2-23]: nothing survives it).
    if s.durable && !durable {
        batch.delete_session(&s.client_id);
    }
    s.durable = durable;
    s.store_record(batch);
    cx.mark_cluster_record(slot);

    cx.sync_cluster_will(slot);
    cx.cluster_connected(slot);

    let method = connect.properties.authentication_method.as_deref();
    // Re-authentication must use this method [MQTT-4.12.1-1]; without one, AUTH is refused.
    *cx.enhanced_auth() = method.map(|m| Box::new(EnhancedAuth::connected(m)));
    // [MQTT-3.1.2-24]: one and a half times the keep-alive (0: none).
    cx.activate(slot, aliases_out, u32::from(keep_alive) * 1500);
    log::info!(
        target: crate::logging::TARGET_CONNECTION,
        "New client connected from {} as {} (p{}, c{}, k{}).",
        cx.peer(),
        client_id,
        connect.version.level(),
        u8::from(connect.clean_start),
        keep_alive
    );
    if let Packet::ConnAck(a) = &mut ack {
        a.session_present = session_present;
    }
    cx.send(&ack);
    cx.with_session(slot)
        .send_from_session(|session, out, batch| session.resume(out, batch));
    true
}

/// What the broker tells an MQTT 5 client about itself in CONNACK (absent = the
/// specification's default, so only limits are sent).
fn connack_properties(config: &Config) -> Properties {
    let mut p = Properties::default();
    if config.max_inflight_messages != 0 {
        p.receive_maximum = Some(config.max_inflight_messages);
    }
    if config.max_qos < 2 {
        p.maximum_qos = Some(config.max_qos);
    }
    if !config.retain_available {
        p.retain_available = Some(0);
    }
    if config.max_packet_size != 0 {
        p.maximum_packet_size = Some(config.max_packet_size);
    }
    // Default 0 means "no aliases", so the maximum is always sent.
    p.topic_alias_maximum = Some(config.max_topic_alias);
    p
}

/// The CONNACK owed before closing when the first packet could not be decoded: an
/// unsupported protocol level gets "unacceptable protocol version" (0x01) in 3.x form
/// [MQTT-3.1.2-2]; a client that asked for level 5 gets a 5.0 CONNACK with the error's
/// reason code (0x84, 0x81, 0x82, ...). `level` is what `connect_level` read from the
/// frame before decoding. Other 3.x decode errors have no CONNACK code: just close.
pub(super) fn connack_for_decode_error(
    cx: &mut Ctx<'_>,
    level: Option<u8>,
    e: &DecodeError,
) -> Option<Packet> {
    if !cx.awaits_connect() {
        return None;
    }
    let code = if level == Some(5) {
        let problem_info = cx.problem_info();
        cx.set_protocol(ProtocolVersion::V5, problem_info);
        e.reason_code()
    } else if matches!(e, DecodeError::UnsupportedProtocolVersion { .. }) {
        v3::UNACCEPTABLE_PROTOCOL_VERSION
    } else {
        return None;
    };
    Some(Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        ..Default::default()
    }))
}

/// A refusal CONNACK the client can take: without its reason string when that makes it too
/// large for the client's Maximum Packet Size `max` (0 = none), which the specification allows
/// [MQTT-3.2.2-19]; `None` when even that is too large [MQTT-3.1.2-24].
fn fit_connack(mut ack: ConnAck, version: ProtocolVersion, max: u32) -> Option<ConnAck> {
    let fits = |a: &ConnAck| {
        max == 0
            || crate::protocol::encoded_len(&Packet::ConnAck(a.clone()), version) <= max as usize
    };
    if fits(&ack) {
        return Some(ack);
    }
    ack.properties.reason_string = None;
    ack.properties.user_properties.clear();
    fits(&ack).then_some(ack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_connack_loses_its_reason_string_to_fit_or_is_not_sent() {
        let ack = ConnAck {
            code: v5::NOT_AUTHORIZED,
            properties: Properties {
                reason_string: Some("a reason of some length".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let v = ProtocolVersion::V5;
        let full = crate::protocol::encoded_len(&Packet::ConnAck(ack.clone()), v) as u32;
        assert_eq!(
            fit_connack(ack.clone(), v, 0),
            Some(ack.clone()),
            "no limit"
        );
        assert_eq!(fit_connack(ack.clone(), v, full), Some(ack.clone()));
        let bare = fit_connack(ack.clone(), v, full - 1).expect("fits without the reason");
        assert_eq!(bare.properties.reason_string, None);
        assert_eq!(
            crate::protocol::encoded_len(&Packet::ConnAck(bare), v),
            5,
            "type, length, flags, code, empty properties"
        );
        assert_eq!(fit_connack(ack, v, 4), None, "nothing fits in 4 bytes");
    }
}
