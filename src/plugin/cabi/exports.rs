//! The functions midge exports for a C plugin to call: `midge_callback_register` /
//! `unregister`, the message setters, `midge_complete_*` and `midge_log` (declared in
//! `include/midge_plugin.h`).
//!
//! They are resolved by the dynamic linker when the plugin is loaded, so they must be in the
//! midge binary's dynamic symbol table: build.rs passes `--export-dynamic-symbol` (and `-u`,
//! so the linker keeps them) for each name in [`EXPORTED`]. None of them may unwind: each
//! does a few checks and returns an error code for a bad argument.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::abi::{self, EventCb, EvtMessage, PluginId, Str, Token};
use super::loader::{Registered, State};
use super::shard::MessageCtx;
use crate::plugin::api::{Decision, ExtendedAuth, Later};
use crate::protocol::ByteStr;

/// The exported names (one list with build.rs: exported_names.rs).
pub const EXPORTED: &[&str] = super::exported_names::MIDGE_EXPORTED;

/// The plugin's registration state behind an id, or `None` for a null id.
///
/// # Safety
/// `id` is null or the pointer midge gave the plugin's init (it lives until cleanup).
unsafe fn state<'a>(id: *mut PluginId) -> Option<&'a State> {
    (id as *const State).as_ref()
}

/// `midge_callback_register(id, event, callback, event_data, userdata)`.
///
/// # Safety
/// Called by C with the id midge gave it.
#[no_mangle]
pub unsafe extern "C" fn midge_callback_register(
    id: *mut PluginId,
    event: c_int,
    callback: Option<EventCb>,
    _event_data: *const c_void,
    userdata: *mut c_void,
) -> c_int {
    let (Some(state), Some(callback)) = (state(id), callback) else {
        return abi::ERR_INVAL;
    };
    if !(abi::EVT_BASIC_AUTH..=abi::EVT_RELOAD).contains(&event) {
        return abi::ERR_INVAL;
    }
    if state.frozen.load(Ordering::Acquire) {
        return abi::ERR_STATE;
    }
    let mut list = state.callbacks.lock().unwrap_or_else(|e| e.into_inner());
    if list
        .iter()
        .any(|r| r.event == event && r.callback as usize == callback as usize)
    {
        return abi::ERR_EXISTS;
    }
    list.push(Registered {
        event,
        callback,
        userdata,
        enabled: Arc::new(AtomicBool::new(true)),
    });
    abi::SUCCESS
}

/// `midge_callback_unregister(id, event, callback, event_data)`: works at any time (the
/// shards check the registration's flag before each call).
///
/// # Safety
/// Called by C with the id midge gave it.
#[no_mangle]
pub unsafe extern "C" fn midge_callback_unregister(
    id: *mut PluginId,
    event: c_int,
    callback: Option<EventCb>,
    _event_data: *const c_void,
) -> c_int {
    let (Some(state), Some(callback)) = (state(id), callback) else {
        return abi::ERR_INVAL;
    };
    let mut list = state.callbacks.lock().unwrap_or_else(|e| e.into_inner());
    match list
        .iter()
        .position(|r| r.event == event && r.callback as usize == callback as usize)
    {
        Some(i) => {
            list[i].enabled.store(false, Ordering::Release);
            list.remove(i);
            abi::SUCCESS
        }
        None => abi::ERR_NOT_FOUND,
    }
}

/// The message being changed, if `evt` is a message event still in its callback.
unsafe fn message_ctx<'a>(
    evt: *mut EvtMessage,
) -> Option<(&'a mut EvtMessage, &'a mut MessageCtx<'a>)> {
    let evt = evt.as_mut()?;
    let ctx = (evt.broker_private as *mut MessageCtx<'a>).as_mut()?;
    Some((evt, ctx))
}

/// `midge_message_set_topic(evt, topic, len)`: a valid topic name (UTF-8, no wildcard, not
/// empty), copied.
///
/// # Safety
/// `evt` is the event of a running message callback, `topic` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn midge_message_set_topic(
    evt: *mut EvtMessage,
    topic: *const c_char,
    len: usize,
) -> c_int {
    let Some((evt, ctx)) = message_ctx(evt) else {
        return abi::ERR_STATE;
    };
    if topic.is_null() || len == 0 {
        return abi::ERR_INVAL;
    }
    let bytes = std::slice::from_raw_parts(topic.cast::<u8>(), len);
    let Ok(text) = std::str::from_utf8(bytes) else {
        return abi::ERR_INVAL;
    };
    if crate::protocol::topic::validate_topic_name(text).is_err() {
        return abi::ERR_INVAL;
    }
    let Some(new) = ByteStr::from_utf8(Bytes::copy_from_slice(bytes)) else {
        return abi::ERR_INVAL;
    };
    *ctx.msg.topic = new;
    evt.topic = Str::of(ctx.msg.topic.as_str().as_bytes());
    abi::SUCCESS
}

/// `midge_message_set_payload(evt, payload, len)`, copied.
///
/// # Safety
/// `evt` is the event of a running message callback, `payload` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn midge_message_set_payload(
    evt: *mut EvtMessage,
    payload: *const c_void,
    len: usize,
) -> c_int {
    let Some((evt, ctx)) = message_ctx(evt) else {
        return abi::ERR_STATE;
    };
    if payload.is_null() && len != 0 {
        return abi::ERR_INVAL;
    }
    *ctx.msg.payload = if len == 0 {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(std::slice::from_raw_parts(payload.cast::<u8>(), len))
    };
    evt.payload = Str::of(ctx.msg.payload);
    abi::SUCCESS
}

/// Makes the token a deferring callback may keep: the boxed [`Later`].
pub(super) fn token(later: Later) -> *mut Token {
    Box::into_raw(Box::new(later)).cast()
}

/// Takes back a token the callback did not keep (it answered without `MIDGE_LATER`).
///
/// # Safety
/// `token` came from [`token`] and was not completed.
pub(super) unsafe fn forget_token(token: *mut Token) {
    let mut later = Box::from_raw(token.cast::<Later>());
    // The hook answered now: drop the handle without its deny-on-drop answer.
    drop(later.inner.take());
}

/// `midge_complete_basic_auth(token, result)`: from any thread, once.
///
/// # Safety
/// `token` is one a basic-auth event carried and whose callback returned `MIDGE_LATER`.
#[no_mangle]
pub unsafe extern "C" fn midge_complete_basic_auth(token: *mut Token, result: c_int) -> c_int {
    if token.is_null() {
        return abi::ERR_INVAL;
    }
    let later = Box::from_raw(token.cast::<Later>());
    later.answer(if result == abi::SUCCESS {
        Decision::Allow
    } else {
        Decision::Deny
    });
    abi::SUCCESS
}

/// `midge_complete_extended_auth(token, result, data, len)`: from any thread, once.
///
/// # Safety
/// `token` is one an extended-auth event carried and whose callback returned `MIDGE_LATER`;
/// `data` points to `len` bytes (or is null).
#[no_mangle]
pub unsafe extern "C" fn midge_complete_extended_auth(
    token: *mut Token,
    result: c_int,
    data: *const c_void,
    len: usize,
) -> c_int {
    if token.is_null() {
        return abi::ERR_INVAL;
    }
    let later = Box::from_raw(token.cast::<Later>());
    let data = copy_out(data, len);
    later.answer_extended(match result {
        abi::SUCCESS => ExtendedAuth::Success(data),
        abi::CONTINUE => ExtendedAuth::Continue(data.unwrap_or_default()),
        _ => ExtendedAuth::Deny,
    });
    abi::SUCCESS
}

/// Copies `len` bytes at `data` (none for a null pointer).
pub(super) unsafe fn copy_out(data: *const c_void, len: usize) -> Option<Bytes> {
    if data.is_null() {
        return None;
    }
    Some(Bytes::copy_from_slice(std::slice::from_raw_parts(
        data.cast::<u8>(),
        len,
    )))
}

/// `midge_log(id, level, message)`: logged as `plugin NAME: message`.
///
/// # Safety
/// `message` is null or NUL-terminated; `id` is null or midge's.
#[no_mangle]
pub unsafe extern "C" fn midge_log(id: *mut PluginId, level: c_int, message: *const c_char) {
    if message.is_null() {
        return;
    }
    let text = CStr::from_ptr(message).to_string_lossy();
    let name = state(id).map_or("?", |s| s.name.as_str());
    let level = match level {
        abi::LOG_ERROR => log::Level::Error,
        abi::LOG_WARNING => log::Level::Warn,
        abi::LOG_INFO => log::Level::Info,
        _ => log::Level::Debug,
    };
    log::log!(level, "plugin {name}: {text}");
}
