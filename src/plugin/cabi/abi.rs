//! The `#[repr(C)]` mirror of `include/midge_plugin.h`: every type, constant and signature
//! the header declares, field for field. A layout test compiles a C program against the
//! header and compares `sizeof`/`offsetof` with these (tests/c_plugins.rs).

use std::ffi::{c_char, c_int, c_void};

pub const VERSION: c_int = 1;

pub const SUCCESS: c_int = 0;
pub const DENY: c_int = 1;
pub const DEFER: c_int = 2;
pub const LATER: c_int = 3;
pub const CONTINUE: c_int = 4;
pub const ERR_INVAL: c_int = 10;
pub const ERR_NOT_FOUND: c_int = 12;
pub const ERR_EXISTS: c_int = 13;
pub const ERR_STATE: c_int = 14;

pub const EVT_BASIC_AUTH: c_int = 1;
pub const EVT_EXTENDED_AUTH: c_int = 2;
pub const EVT_ACL_CHECK: c_int = 3;
pub const EVT_MESSAGE: c_int = 4;
pub const EVT_MESSAGE_OUT: c_int = 5;
pub const EVT_SUBSCRIBE: c_int = 6;
pub const EVT_UNSUBSCRIBE: c_int = 7;
pub const EVT_CONNECT: c_int = 8;
pub const EVT_DISCONNECT: c_int = 9;
pub const EVT_TICK: c_int = 10;
pub const EVT_RELOAD: c_int = 11;
/// One past the last event number (the size of per-event tables).
pub const EVT_COUNT: usize = 12;

pub const ACL_READ: c_int = 1;
pub const ACL_WRITE: c_int = 2;
pub const ACL_SUBSCRIBE: c_int = 4;

pub const LOG_ERROR: c_int = 1;
pub const LOG_WARNING: c_int = 2;
pub const LOG_INFO: c_int = 3;

/// `struct midge_opt`.
#[repr(C)]
pub struct Opt {
    pub key: *const c_char,
    pub value: *const c_char,
}

/// `struct midge_str`: borrowed bytes, `ptr` null when absent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Str {
    pub ptr: *const c_char,
    pub len: usize,
}

impl Str {
    pub const NONE: Str = Str {
        ptr: std::ptr::null(),
        len: 0,
    };

    pub fn of(bytes: &[u8]) -> Str {
        Str {
            ptr: bytes.as_ptr().cast(),
            len: bytes.len(),
        }
    }

    pub fn opt(bytes: Option<&[u8]>) -> Str {
        bytes.map_or(Str::NONE, Str::of)
    }
}

pub type Reserved = [*mut c_void; 8];
pub const RESERVED: Reserved = [std::ptr::null_mut(); 8];

/// `struct midge_client`.
#[repr(C)]
pub struct Client {
    pub size: usize,
    pub client_id: Str,
    pub username: Str,
    pub address: Str,
    pub cert_identity: Str,
    pub port: u16,
    pub listener_port: u16,
    pub protocol: c_int,
    pub reserved: Reserved,
}

pub type EventCb = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

/// Opaque to C: `midge_token_t`.
pub enum Token {}
/// Opaque to C: `midge_plugin_id_t`.
pub enum PluginId {}

#[repr(C)]
pub struct EvtBasicAuth {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub username: Str,
    pub password: Str,
    pub token: *mut Token,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtExtendedAuth {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub method: Str,
    pub data_in: Str,
    pub start: c_int,
    pub reauthenticate: c_int,
    pub data_out: *const c_void,
    pub data_out_len: usize,
    pub token: *mut Token,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtAclCheck {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub topic: Str,
    pub access: c_int,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtMessage {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub topic: Str,
    pub payload: Str,
    pub qos: c_int,
    pub retain: c_int,
    pub broker_private: *mut c_void,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtMessageOut {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub topic: Str,
    pub payload: Str,
    pub qos: c_int,
    pub retain: c_int,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtSubscribe {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub filter: Str,
    pub qos: c_int,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtUnsubscribe {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub filter: Str,
    pub reserved: Reserved,
}

/// `struct midge_evt_connect` (also the shape of nothing-but-the-client events).
#[repr(C)]
pub struct EvtConnect {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtDisconnect {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub client: *const Client,
    pub graceful: c_int,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtTick {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub now_ms: u64,
    pub reserved: Reserved,
}

#[repr(C)]
pub struct EvtReload {
    pub size: usize,
    pub shard_data: *mut c_void,
    pub options: *const Opt,
    pub option_count: c_int,
    pub reserved: Reserved,
}

/// The plugin's exported functions.
pub type VersionFn = unsafe extern "C" fn(c_int, *const c_int) -> c_int;
pub type InitFn = unsafe extern "C" fn(*mut PluginId, *mut *mut c_void, *mut Opt, c_int) -> c_int;
pub type CleanupFn = unsafe extern "C" fn(*mut c_void, *mut Opt, c_int) -> c_int;
pub type ShardInitFn = unsafe extern "C" fn(*mut PluginId, c_int, c_int, *mut *mut c_void) -> c_int;
pub type ShardCleanupFn = unsafe extern "C" fn(*mut PluginId, c_int, *mut c_void) -> c_int;
