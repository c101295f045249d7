//! The `mosquitto_*` functions a mosquitto 2.0 plugin calls (see [`super::mosq`]), exported
//! from the midge binary like the `midge_*` ones (build.rs). `mosquitto_log_printf` is in
//! mosq_log.c (variadic).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

use super::mosq::{
    Callback, MosqClient, MosqState, ERR_ALREADY_EXISTS, ERR_INVAL, ERR_MALFORMED_UTF8,
    ERR_NOT_FOUND, ERR_NOT_SUPPORTED, ERR_SUCCESS, EVT_ACL_CHECK, EVT_BASIC_AUTH, EVT_RELOAD,
};

/// Events already reported as unsupported (logged once each).
static WARNED: Mutex<BTreeMap<c_int, ()>> = Mutex::new(BTreeMap::new());

/// # Safety
/// `id` is null or the pointer midge gave `mosquitto_plugin_init`.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_callback_register(
    id: *mut c_void,
    event: c_int,
    callback: Option<Callback>,
    _event_data: *const c_void,
    userdata: *mut c_void,
) -> c_int {
    let (Some(state), Some(cb)) = ((id as *const MosqState).as_ref(), callback) else {
        return ERR_INVAL;
    };
    if !matches!(event, EVT_RELOAD | EVT_ACL_CHECK | EVT_BASIC_AUTH) {
        let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
        if warned.insert(event, ()).is_none() {
            log::warn!(
                "plugin {}: mosquitto event {event} is not supported by midge; that callback will not be called",
                state.name
            );
        }
    }
    let mut list = state.callbacks.lock().unwrap_or_else(|e| e.into_inner());
    if list
        .iter()
        .any(|&(e, c, _)| e == event && c as usize == cb as usize)
    {
        return ERR_ALREADY_EXISTS;
    }
    list.push((event, cb, userdata));
    ERR_SUCCESS
}

/// # Safety
/// As [`mosquitto_callback_register`]. Takes effect for shards made afterwards.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_callback_unregister(
    id: *mut c_void,
    event: c_int,
    callback: Option<Callback>,
    _event_data: *const c_void,
) -> c_int {
    let (Some(state), Some(cb)) = ((id as *const MosqState).as_ref(), callback) else {
        return ERR_INVAL;
    };
    let mut list = state.callbacks.lock().unwrap_or_else(|e| e.into_inner());
    match list
        .iter()
        .position(|&(e, c, _)| e == event && c as usize == cb as usize)
    {
        Some(i) => {
            list.remove(i);
            ERR_SUCCESS
        }
        None => ERR_NOT_FOUND,
    }
}

/// Called by mosq_log.c's `mosquitto_log_printf` with the formatted text.
///
/// # Safety
/// `text` is NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn midge_mosq_log(level: c_int, text: *const c_char) {
    if text.is_null() {
        return;
    }
    let text = CStr::from_ptr(text).to_string_lossy();
    let text = text.trim_end();
    match level {
        8 => log::error!("plugin (mosquitto): {text}"),
        4 => log::warn!("plugin (mosquitto): {text}"),
        1 | 2 => log::info!("plugin (mosquitto): {text}"),
        _ => log::debug!("plugin (mosquitto): {text}"),
    }
}

#[no_mangle]
pub extern "C" fn mosquitto_malloc(size: usize) -> *mut c_void {
    // SAFETY: libc's allocator, freed by mosquitto_free.
    unsafe { libc::malloc(size) }
}

#[no_mangle]
pub extern "C" fn mosquitto_calloc(n: usize, size: usize) -> *mut c_void {
    // SAFETY: as above.
    unsafe { libc::calloc(n, size) }
}

/// # Safety
/// `p` came from the functions above (or is null).
#[no_mangle]
pub unsafe extern "C" fn mosquitto_free(p: *mut c_void) {
    libc::free(p)
}

/// # Safety
/// `s` is NUL-terminated or null.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_strdup(s: *const c_char) -> *mut c_char {
    if s.is_null() {
        return std::ptr::null_mut();
    }
    libc::strdup(s)
}

/// # Safety
/// `client` is the `struct mosquitto *` of a running callback.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_client_id(client: *const MosqClient) -> *const c_char {
    client
        .as_ref()
        .map_or(std::ptr::null(), |c| c.client_id.as_ptr())
}

/// # Safety
/// As [`mosquitto_client_id`].
#[no_mangle]
pub unsafe extern "C" fn mosquitto_client_username(client: *const MosqClient) -> *const c_char {
    client
        .as_ref()
        .and_then(|c| c.username.as_ref())
        .map_or(std::ptr::null(), |u| u.as_ptr())
}

/// Not supported (dynamic security's `$CONTROL` answers need it).
#[no_mangle]
pub extern "C" fn mosquitto_broker_publish(
    _client_id: *const c_char,
    _topic: *const c_char,
    _payloadlen: c_int,
    _payload: *mut c_void,
    _qos: c_int,
    _retain: bool,
    _properties: *mut c_void,
) -> c_int {
    ERR_NOT_SUPPORTED
}

/// Not supported.
#[no_mangle]
pub extern "C" fn mosquitto_kick_client_by_username(
    _username: *const c_char,
    _with_will: bool,
) -> c_int {
    ERR_NOT_SUPPORTED
}

unsafe fn text<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        return None;
    }
    CStr::from_ptr(s).to_str().ok()
}

/// # Safety
/// `sub` is NUL-terminated or null.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_sub_topic_check(sub: *const c_char) -> c_int {
    match text(sub) {
        Some(s) if crate::protocol::topic::validate_topic_filter(s).is_ok() => ERR_SUCCESS,
        _ => ERR_INVAL,
    }
}

/// # Safety
/// `sub` and `topic` are NUL-terminated or null; `result` is writable or null.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_topic_matches_sub(
    sub: *const c_char,
    topic: *const c_char,
    result: *mut bool,
) -> c_int {
    let (Some(sub), Some(topic), Some(result)) = (text(sub), text(topic), result.as_mut()) else {
        return ERR_INVAL;
    };
    *result = false;
    // As mosquitto: a topic (not a filter) is matched; wildcards in it or an empty
    // argument are invalid.
    if sub.is_empty() || topic.is_empty() || topic.contains(['+', '#']) {
        return ERR_INVAL;
    }
    *result = crate::protocol::topic::filter_matches(sub, topic);
    ERR_SUCCESS
}

/// # Safety
/// `s` points to `len` bytes or is null.
#[no_mangle]
pub unsafe extern "C" fn mosquitto_validate_utf8(s: *const c_char, len: c_int) -> c_int {
    if s.is_null() || !(0..=65536).contains(&len) {
        return ERR_INVAL;
    }
    let bytes = std::slice::from_raw_parts(s.cast::<u8>(), len as usize);
    match std::str::from_utf8(bytes) {
        Ok(t) if !t.contains('\0') => ERR_SUCCESS,
        _ => ERR_MALFORMED_UTF8,
    }
}
