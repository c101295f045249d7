//! [`CShard`]: a C plugin on one shard, the [`ShardPlugin`] whose hooks build the header's
//! event structs on the stack and call the registered callbacks in registration order (the
//! first that does not answer `MIDGE_DEFER` decides). No allocation per message: the client
//! struct borrows the shard's strings, the address is formatted into a stack buffer.

use std::ffi::{c_int, c_void};
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::abi::{self, Client, EventCb, Str};
use super::exports::{copy_out, forget_token, token};
use super::loader::Inner;
use crate::auth::Access;
use crate::plugin::api::{
    AuthStep, ClientInfo, Credentials, Decision, Events, ExtendedAuth, Later, MessageIn,
    MessageOut, ShardPlugin, Verdict,
};
use crate::protocol::{ProtocolVersion, QoS};

/// A registered callback as a shard calls it.
struct Cb {
    callback: EventCb,
    userdata: *mut c_void,
    enabled: Arc<AtomicBool>,
}

/// What `broker_private` of a message event points to: the message the setters change.
pub(super) struct MessageCtx<'a> {
    pub msg: MessageIn<'a>,
}

/// The event numbers in the order of [`Events`]' bits (the reload event is run by
/// `Plugin::configure`, once, not per shard).
const EVENT_BITS: [(c_int, Events); 10] = [
    (abi::EVT_BASIC_AUTH, Events::BASIC_AUTH),
    (abi::EVT_EXTENDED_AUTH, Events::EXTENDED_AUTH),
    (abi::EVT_ACL_CHECK, Events::ACL_CHECK),
    (abi::EVT_MESSAGE, Events::MESSAGE_IN),
    (abi::EVT_MESSAGE_OUT, Events::MESSAGE_OUT),
    (abi::EVT_SUBSCRIBE, Events::SUBSCRIBE),
    (abi::EVT_UNSUBSCRIBE, Events::UNSUBSCRIBE),
    (abi::EVT_CONNECT, Events::CONNECT),
    (abi::EVT_DISCONNECT, Events::DISCONNECT),
    (abi::EVT_TICK, Events::TICK),
];

/// One C plugin on one shard.
pub struct CShard {
    inner: Arc<Inner>,
    shard: usize,
    shard_data: *mut c_void,
    /// Per event number, the callbacks registered at start.
    callbacks: [Vec<Cb>; abi::EVT_COUNT],
    events: Events,
}

// SAFETY: `shard_data` and the userdata pointers are the plugin's; the header says the
// callbacks may run on any shard thread. A shard's own state moves to its thread once.
unsafe impl Send for CShard {}

impl CShard {
    pub(super) fn new(inner: Arc<Inner>, shard: usize, shards: usize) -> CShard {
        let mut shard_data = std::ptr::null_mut();
        if let Some(init) = inner.shard_init {
            // SAFETY: the header's signature, the plugin's id.
            let rc = unsafe { init(inner.id(), shard as c_int, shards as c_int, &mut shard_data) };
            if rc != abi::SUCCESS {
                log::error!(
                    "plugin {}: midge_plugin_shard_init({shard}) returned {rc}; shard data left NULL",
                    inner.name
                );
                shard_data = std::ptr::null_mut();
            }
        }
        let mut callbacks: [Vec<Cb>; abi::EVT_COUNT] = Default::default();
        for r in inner
            .state
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            callbacks[r.event as usize].push(Cb {
                callback: r.callback,
                userdata: r.userdata,
                enabled: r.enabled.clone(),
            });
        }
        let mut events = Events::default();
        for (event, bit) in EVENT_BITS {
            if !callbacks[event as usize].is_empty() {
                events = events | bit;
            }
        }
        CShard {
            inner,
            shard,
            shard_data,
            callbacks,
            events,
        }
    }

    /// Calls `event`'s callbacks with `data` until one answers other than `MIDGE_DEFER`.
    fn ask<T>(&self, event: c_int, data: &mut T) -> c_int {
        for cb in &self.callbacks[event as usize] {
            if !cb.enabled.load(Ordering::Relaxed) {
                continue;
            }
            // SAFETY: a registered callback, its userdata, an event struct of its type.
            let rc = unsafe { (cb.callback)(event, (data as *mut T).cast(), cb.userdata) };
            if rc != abi::DEFER {
                return rc;
            }
        }
        abi::DEFER
    }

    /// Calls every callback of `event` (notifications; answers ignored).
    fn tell<T>(&self, event: c_int, data: &mut T) {
        for cb in &self.callbacks[event as usize] {
            if cb.enabled.load(Ordering::Relaxed) {
                // SAFETY: as in `ask`.
                unsafe { (cb.callback)(event, (data as *mut T).cast(), cb.userdata) };
            }
        }
    }
}

impl Drop for CShard {
    fn drop(&mut self) {
        if let Some(cleanup) = self.inner.shard_cleanup {
            // SAFETY: the header's signature, with what shard_init made.
            unsafe { cleanup(self.inner.id(), self.shard as c_int, self.shard_data) };
        }
    }
}

/// Builds the C view of `info` (its address formatted into `buf`).
fn client<'a>(info: &ClientInfo<'a>, buf: &'a mut [u8; 48]) -> Client {
    let (address, port) = match info.peer {
        Some(peer) => {
            let written = format_ip(peer.ip(), buf);
            (Str::of(&buf[..written]), peer.port())
        }
        None => (Str::NONE, 0),
    };
    Client {
        size: std::mem::size_of::<Client>(),
        client_id: Str::of(info.client_id.as_bytes()),
        username: Str::opt(info.username.map(str::as_bytes)),
        address,
        cert_identity: Str::opt(info.certificate_identity.map(str::as_bytes)),
        port,
        listener_port: info.listener_port,
        protocol: match info.protocol {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        },
        reserved: abi::RESERVED,
    }
}

/// Writes `ip` as text into `buf`, returning the length. IPv4 by hand: `fmt` costs about
/// 1,100 instructions per call (callgrind), paid on every ACL check of every delivery.
fn format_ip(ip: IpAddr, buf: &mut [u8; 48]) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            n
        }
        IpAddr::V6(v6) => {
            let mut cursor: &mut [u8] = &mut buf[..];
            let _ = write!(cursor, "{v6}");
            48 - cursor.len()
        }
    }
}

fn qos(q: QoS) -> c_int {
    q as u8 as c_int
}

/// A monotonic clock in milliseconds from the first tick.
fn millis(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    now.saturating_duration_since(*EPOCH.get_or_init(|| now))
        .as_millis() as u64
}

impl ShardPlugin for CShard {
    fn events(&self) -> Events {
        self.events
    }

    fn basic_auth(
        &mut self,
        info: &ClientInfo<'_>,
        creds: &Credentials<'_>,
        later: Later,
    ) -> Decision {
        let mut buf = [0; 48];
        let c = client(info, &mut buf);
        let token = token(later);
        let mut evt = abi::EvtBasicAuth {
            size: std::mem::size_of::<abi::EvtBasicAuth>(),
            shard_data: self.shard_data,
            client: &c,
            username: Str::opt(creds.username.map(str::as_bytes)),
            password: Str::opt(creds.password),
            token,
            reserved: abi::RESERVED,
        };
        let rc = self.ask(abi::EVT_BASIC_AUTH, &mut evt);
        if rc == abi::LATER {
            return Decision::Later;
        }
        // SAFETY: not kept by the plugin (it did not answer LATER).
        unsafe { forget_token(token) };
        match rc {
            abi::SUCCESS => Decision::Allow,
            abi::DEFER => Decision::Pass,
            _ => Decision::Deny,
        }
    }

    fn extended_auth(
        &mut self,
        info: &ClientInfo<'_>,
        step: &AuthStep<'_>,
        later: Later,
    ) -> ExtendedAuth {
        let mut buf = [0; 48];
        let c = client(info, &mut buf);
        let token = token(later);
        let mut evt = abi::EvtExtendedAuth {
            size: std::mem::size_of::<abi::EvtExtendedAuth>(),
            shard_data: self.shard_data,
            client: &c,
            method: Str::of(step.method.as_bytes()),
            data_in: Str::opt(step.data),
            start: step.start as c_int,
            reauthenticate: step.reauthenticate as c_int,
            data_out: std::ptr::null(),
            data_out_len: 0,
            token,
            reserved: abi::RESERVED,
        };
        let rc = self.ask(abi::EVT_EXTENDED_AUTH, &mut evt);
        if rc == abi::LATER {
            return ExtendedAuth::Later;
        }
        // SAFETY: not kept by the plugin; data_out is the plugin's, valid until now.
        unsafe { forget_token(token) };
        let data = unsafe { copy_out(evt.data_out, evt.data_out_len) };
        match rc {
            abi::SUCCESS => ExtendedAuth::Success(data),
            abi::CONTINUE => ExtendedAuth::Continue(data.unwrap_or_default()),
            abi::DEFER => ExtendedAuth::Pass,
            _ => ExtendedAuth::Deny,
        }
    }

    fn acl_check(&mut self, info: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        let mut buf = [0; 48];
        let c = client(info, &mut buf);
        let mut evt = abi::EvtAclCheck {
            size: std::mem::size_of::<abi::EvtAclCheck>(),
            shard_data: self.shard_data,
            client: &c,
            topic: Str::of(topic.as_bytes()),
            access: match access {
                Access::Read => abi::ACL_READ,
                Access::Write => abi::ACL_WRITE,
                Access::Subscribe => abi::ACL_SUBSCRIBE,
            },
            reserved: abi::RESERVED,
        };
        match self.ask(abi::EVT_ACL_CHECK, &mut evt) {
            abi::SUCCESS => Decision::Allow,
            abi::DEFER => Decision::Pass,
            _ => Decision::Deny,
        }
    }

    fn message_in(&mut self, info: Option<&ClientInfo<'_>>, msg: MessageIn<'_>) -> Verdict {
        let mut buf = [0; 48];
        let c = info.map(|i| client(i, &mut buf));
        let mut ctx = MessageCtx { msg };
        let mut evt = abi::EvtMessage {
            size: std::mem::size_of::<abi::EvtMessage>(),
            shard_data: self.shard_data,
            client: c.as_ref().map_or(std::ptr::null(), |c| c as *const Client),
            topic: Str::of(ctx.msg.topic.as_str().as_bytes()),
            payload: Str::of(ctx.msg.payload),
            qos: qos(*ctx.msg.qos),
            retain: *ctx.msg.retain as c_int,
            broker_private: (&mut ctx as *mut MessageCtx<'_>).cast(),
            reserved: abi::RESERVED,
        };
        let mut verdict = Verdict::Keep;
        for cb in &self.callbacks[abi::EVT_MESSAGE as usize] {
            if !cb.enabled.load(Ordering::Relaxed) {
                continue;
            }
            // SAFETY: as in `ask`; the setters reach `ctx` through broker_private.
            let rc = unsafe {
                (cb.callback)(
                    abi::EVT_MESSAGE,
                    (&mut evt as *mut abi::EvtMessage).cast(),
                    cb.userdata,
                )
            };
            if rc == abi::DENY {
                verdict = Verdict::Drop;
                break;
            }
        }
        // The setters must not reach `ctx` after this call (a plugin keeping `evt`).
        evt.broker_private = std::ptr::null_mut();
        let _ = &evt;
        verdict
    }

    fn message_out(&mut self, info: &ClientInfo<'_>, msg: &MessageOut<'_>) {
        let mut buf = [0; 48];
        let c = client(info, &mut buf);
        let mut evt = abi::EvtMessageOut {
            size: std::mem::size_of::<abi::EvtMessageOut>(),
            shard_data: self.shard_data,
            client: &c,
            topic: Str::of(msg.topic.as_bytes()),
            payload: Str::of(msg.payload),
            qos: qos(msg.qos),
            retain: msg.retain as c_int,
            reserved: abi::RESERVED,
        };
        self.tell(abi::EVT_MESSAGE_OUT, &mut evt);
    }

    fn subscribe(&mut self, info: &ClientInfo<'_>, filter: &str, q: QoS) {
        let mut buf = [0; 48];
        let c = client(info, &mut buf);
        let mut evt = abi::EvtSubscribe {
            size: std::mem::size_of::<abi::EvtSubscribe>(),
            shard_data: self.shard_data,
            client: &c,
            filter: Str::of(filter.as_bytes()),
            qos: qos(q),
            reserved: abi::RESERVED,
        };
        self.tell(abi::EVT_SUBSCRIBE, &mut evt);
    }

    fn unsubscribe(&mut self, info: &ClientInfo<'_>, filter: &str) {
        let mut buf = [0; 48];
        let c = client(info, &mut buf);
        let mut evt = abi::EvtUnsubscribe {
            size: std::mem::size_of::<abi::EvtUnsubscribe>(),
            shard_data: self.shard_data,
            client: &c,
            filter: Str::of(filter.as_bytes()),
            reserved: abi::RESERVED,
        };
        self.tell(abi::EVT_UNSUBSCRIBE, &mut evt);
    }

    fn connect(&mut self, info: &ClientInfo<'_>) {
        let mut buf = [0; 48];
        let c = client(info, &mut buf);
        let mut evt = abi::EvtConnect {
            size: std::mem::size_of::<abi::EvtConnect>(),
            shard_data: self.shard_data,
            client: &c,
            reserved: abi::RESERVED,
        };
        self.tell(abi::EVT_CONNECT, &mut evt);
    }

    fn disconnect(&mut self, info: &ClientInfo<'_>, graceful: bool) {
        let mut buf = [0; 48];
        let c = client(info, &mut buf);
        let mut evt = abi::EvtDisconnect {
            size: std::mem::size_of::<abi::EvtDisconnect>(),
            shard_data: self.shard_data,
            client: &c,
            graceful: graceful as c_int,
            reserved: abi::RESERVED,
        };
        self.tell(abi::EVT_DISCONNECT, &mut evt);
    }

    fn tick(&mut self, now: Instant) {
        let mut evt = abi::EvtTick {
            size: std::mem::size_of::<abi::EvtTick>(),
            shard_data: self.shard_data,
            now_ms: millis(now),
            reserved: abi::RESERVED,
        };
        self.tell(abi::EVT_TICK, &mut evt);
    }
}

#[cfg(test)]
mod tests {
    use super::format_ip;

    #[test]
    fn addresses_format_as_std_does() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "9.99.199.250",
            "::1",
            "fe80::1:2",
        ] {
            let ip = text.parse().unwrap();
            let mut buf = [0; 48];
            let n = format_ip(ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), ip.to_string());
        }
    }
}
