//! An example midge plugin, in Rust, that knows nothing of midge but its C ABI
//! (`include/midge_plugin.h`, declared by hand below, as a plugin in any language would).
//!
//! Options (`plugin_opt_KEY VALUE` in midge.conf):
//! - `deny_topic T`: publishing to T, subscribing to T and receiving T are denied
//!   (an ACL callback answering MIDGE_DENY, MIDGE_DEFER for anything else);
//! - `rewrite_topic T`: messages published to T have their payload rewritten (a message
//!   callback calling `midge_message_set_payload`): uppercased, or replaced by
//!   `rewrite_payload P` when that option is given.
//!
//! Build: `cargo build -p midge-plugin-example`, load `target/debug/libmidge_plugin_example.so`.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CStr};

// ---- The part of include/midge_plugin.h this plugin uses ----------------------------------

const MIDGE_PLUGIN_VERSION: c_int = 1;
const MIDGE_SUCCESS: c_int = 0;
const MIDGE_DENY: c_int = 1;
const MIDGE_DEFER: c_int = 2;
const MIDGE_ERR_INVAL: c_int = 10;
const MIDGE_EVT_ACL_CHECK: c_int = 3;
const MIDGE_EVT_MESSAGE: c_int = 4;
const MIDGE_LOG_INFO: c_int = 3;

#[repr(C)]
pub struct midge_plugin_id_t {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct midge_opt {
    key: *const c_char,
    value: *const c_char,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct midge_str {
    ptr: *const c_char,
    len: usize,
}

impl midge_str {
    /// The bytes (none when absent).
    unsafe fn bytes<'a>(self) -> Option<&'a [u8]> {
        if self.ptr.is_null() {
            None
        } else {
            Some(std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len))
        }
    }
}

#[repr(C)]
struct midge_evt_acl_check {
    size: usize,
    shard_data: *mut c_void,
    client: *const c_void,
    topic: midge_str,
    access: c_int,
    reserved: [*mut c_void; 8],
}

#[repr(C)]
pub struct midge_evt_message {
    size: usize,
    shard_data: *mut c_void,
    client: *const c_void,
    topic: midge_str,
    payload: midge_str,
    qos: c_int,
    retain: c_int,
    broker_private: *mut c_void,
    reserved: [*mut c_void; 8],
}

type midge_event_cb = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;

extern "C" {
    fn midge_callback_register(
        id: *mut midge_plugin_id_t,
        event: c_int,
        callback: midge_event_cb,
        event_data: *const c_void,
        userdata: *mut c_void,
    ) -> c_int;
    fn midge_message_set_payload(
        evt: *mut midge_evt_message,
        payload: *const c_void,
        len: usize,
    ) -> c_int;
    fn midge_log(id: *mut midge_plugin_id_t, level: c_int, message: *const c_char);
}

// ---- The plugin ----------------------------------------------------------------------------

/// The options, read once in init; shared read-only by every shard.
struct Config {
    deny_topic: Option<Vec<u8>>,
    rewrite_topic: Option<Vec<u8>>,
    rewrite_payload: Option<Vec<u8>>,
}

unsafe extern "C" fn on_acl(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    let evt = &*(data as *const midge_evt_acl_check);
    let config = &*(userdata as *const Config);
    match (&config.deny_topic, evt.topic.bytes()) {
        (Some(deny), Some(topic)) if deny.as_slice() == topic => MIDGE_DENY,
        _ => MIDGE_DEFER,
    }
}

unsafe extern "C" fn on_message(_event: c_int, data: *mut c_void, userdata: *mut c_void) -> c_int {
    let evt = data as *mut midge_evt_message;
    let config = &*(userdata as *const Config);
    let (Some(want), Some(topic)) = (&config.rewrite_topic, (*evt).topic.bytes()) else {
        return MIDGE_SUCCESS;
    };
    if want.as_slice() != topic {
        return MIDGE_SUCCESS;
    }
    let new = match &config.rewrite_payload {
        Some(fixed) => fixed.clone(),
        None => (*evt)
            .payload
            .bytes()
            .unwrap_or_default()
            .to_ascii_uppercase(),
    };
    midge_message_set_payload(evt, new.as_ptr().cast(), new.len())
}

/// # Safety
/// `versions` points to `count` ints (midge's offer).
#[no_mangle]
pub unsafe extern "C" fn midge_plugin_version(count: c_int, versions: *const c_int) -> c_int {
    if versions.is_null() || count <= 0 {
        return -1;
    }
    let offered = std::slice::from_raw_parts(versions, count as usize);
    if offered.contains(&MIDGE_PLUGIN_VERSION) {
        MIDGE_PLUGIN_VERSION
    } else {
        -1
    }
}

/// # Safety
/// Called by midge as the header says.
#[no_mangle]
pub unsafe extern "C" fn midge_plugin_init(
    id: *mut midge_plugin_id_t,
    userdata: *mut *mut c_void,
    options: *mut midge_opt,
    count: c_int,
) -> c_int {
    if userdata.is_null() || (options.is_null() && count > 0) {
        return MIDGE_ERR_INVAL;
    }
    let mut config = Config {
        deny_topic: None,
        rewrite_topic: None,
        rewrite_payload: None,
    };
    for i in 0..count.max(0) as usize {
        let opt = &*options.add(i);
        if opt.key.is_null() || opt.value.is_null() {
            continue;
        }
        let value = CStr::from_ptr(opt.value).to_bytes().to_vec();
        match CStr::from_ptr(opt.key).to_bytes() {
            b"deny_topic" => config.deny_topic = Some(value),
            b"rewrite_topic" => config.rewrite_topic = Some(value),
            b"rewrite_payload" => config.rewrite_payload = Some(value),
            _ => {}
        }
    }
    let wants_acl = config.deny_topic.is_some();
    let wants_message = config.rewrite_topic.is_some();
    let config = Box::into_raw(Box::new(config)).cast::<c_void>();
    *userdata = config;
    if wants_acl {
        midge_callback_register(id, MIDGE_EVT_ACL_CHECK, on_acl, std::ptr::null(), config);
    }
    if wants_message {
        midge_callback_register(id, MIDGE_EVT_MESSAGE, on_message, std::ptr::null(), config);
    }
    midge_log(id, MIDGE_LOG_INFO, c"example plugin loaded".as_ptr());
    MIDGE_SUCCESS
}

/// # Safety
/// Called by midge once, with the userdata init set.
#[no_mangle]
pub unsafe extern "C" fn midge_plugin_cleanup(
    userdata: *mut c_void,
    _options: *mut midge_opt,
    _count: c_int,
) -> c_int {
    if !userdata.is_null() {
        drop(Box::from_raw(userdata.cast::<Config>()));
    }
    MIDGE_SUCCESS
}
