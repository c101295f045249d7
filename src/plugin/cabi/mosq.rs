//! Loading a mosquitto 2.0 (plugin API version 5) plugin `.so` unchanged, e.g. Debian's
//! `mosquitto_dynamic_security.so`: midge exports the `mosquitto_*` functions such a plugin
//! calls (see [`EXPORTED`]), offers it version 5, and maps its `MOSQ_EVT_BASIC_AUTH`,
//! `MOSQ_EVT_ACL_CHECK` and `MOSQ_EVT_RELOAD` callbacks onto the chain. Other events
//! (`MOSQ_EVT_CONTROL`, `MESSAGE`, `TICK`, `DISCONNECT`, extended auth, PSK) are accepted at
//! registration, logged once, and never called; `mosquitto_broker_publish` and
//! `mosquitto_kick_client_by_username` answer `MOSQ_ERR_NOT_SUPPORTED`.
//!
//! A compatibility path, not a fast one: mosquitto's structs carry NUL-terminated strings, so
//! each call copies the client id, user name and topic into C strings (an allocation per ACL
//! check). Plugins written for midge use `include/midge_plugin.h`, which borrows.

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::Path;
use std::sync::{Arc, Mutex};

use libloading::Library;

use crate::auth::Access;
use crate::plugin::api::{
    ClientInfo, Credentials, Decision, Events, Later, Plugin, PluginOptions, ShardPlugin,
};

pub const ERR_SUCCESS: c_int = 0;
pub const ERR_INVAL: c_int = 3;
pub const ERR_NOT_FOUND: c_int = 6;
pub const ERR_NOT_SUPPORTED: c_int = 10;
pub const ERR_PLUGIN_DEFER: c_int = 17;
pub const ERR_MALFORMED_UTF8: c_int = 18;
pub const ERR_ALREADY_EXISTS: c_int = 31;

pub const EVT_RELOAD: c_int = 1;
pub const EVT_ACL_CHECK: c_int = 2;
pub const EVT_BASIC_AUTH: c_int = 3;

/// The `mosquitto_*` functions midge exports (one list with build.rs: exported_names.rs).
pub const EXPORTED: &[&str] = super::exported_names::MOSQUITTO_EXPORTED;

pub type Callback = unsafe extern "C" fn(c_int, *mut c_void, *mut c_void) -> c_int;
type VersionFn = unsafe extern "C" fn(c_int, *const c_int) -> c_int;
type InitFn = unsafe extern "C" fn(*mut c_void, *mut *mut c_void, *mut MosqOpt, c_int) -> c_int;
type CleanupFn = unsafe extern "C" fn(*mut c_void, *mut MosqOpt, c_int) -> c_int;

#[repr(C)]
pub struct MosqOpt {
    key: *mut c_char,
    value: *mut c_char,
}

/// What `struct mosquitto *` points to for the duration of one call.
pub struct MosqClient {
    pub client_id: CString,
    pub username: Option<CString>,
}

#[repr(C)]
struct EvtBasicAuth {
    future: *mut c_void,
    client: *const MosqClient,
    username: *const c_char,
    password: *const c_char,
    future2: [*mut c_void; 4],
}

#[repr(C)]
struct EvtAclCheck {
    future: *mut c_void,
    client: *const MosqClient,
    topic: *const c_char,
    payload: *const c_void,
    properties: *mut c_void,
    access: c_int,
    payloadlen: u32,
    qos: u8,
    retain: bool,
    future2: [*mut c_void; 4],
}

#[repr(C)]
struct EvtReload {
    future: *mut c_void,
    options: *mut MosqOpt,
    option_count: c_int,
    future2: [*mut c_void; 4],
}

/// What `mosquitto_plugin_id_t *` points to.
pub struct MosqState {
    pub name: String,
    pub callbacks: Mutex<Vec<(c_int, Callback, *mut c_void)>>,
}

unsafe impl Send for MosqState {}
unsafe impl Sync for MosqState {}

/// Options as mosquitto hands them (`char *`, the plugin may keep them until cleanup).
struct Opts {
    _strings: Vec<(CString, CString)>,
    array: Vec<MosqOpt>,
}

impl Opts {
    fn new(options: &PluginOptions) -> Opts {
        let strings: Vec<(CString, CString)> = options
            .iter()
            .map(|(k, v)| {
                let clean = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
                (clean(k), clean(v))
            })
            .collect();
        let array = strings
            .iter()
            .map(|(k, v)| MosqOpt {
                key: k.as_ptr() as *mut c_char,
                value: v.as_ptr() as *mut c_char,
            })
            .collect();
        Opts {
            _strings: strings,
            array,
        }
    }
}

struct Inner {
    state: Box<MosqState>,
    userdata: *mut c_void,
    cleanup: CleanupFn,
    options: Mutex<Vec<Opts>>,
    init_options: PluginOptions,
    _lib: std::mem::ManuallyDrop<Library>,
}

unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut sets = self.options.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = sets.first_mut() {
            let n = first.array.len() as c_int;
            // SAFETY: mosquitto's signature, a library never unloaded.
            unsafe { (self.cleanup)(self.userdata, first.array.as_mut_ptr(), n) };
        }
    }
}

/// A mosquitto v5 plugin as the chain sees it.
pub struct MosqPlugin {
    inner: Arc<Inner>,
}

/// Loads `lib` (already opened, exporting `mosquitto_plugin_version`) as a mosquitto plugin.
pub(super) fn load(
    path: &Path,
    lib: Library,
    options: &PluginOptions,
) -> Result<MosqPlugin, String> {
    let file = path.display().to_string();
    let sym = |name: &str| format!("plugin {file}: a mosquitto plugin without {name}");
    // SAFETY: mosquitto_plugin.h's signatures.
    let (version, init, cleanup) = unsafe {
        (
            *lib.get::<VersionFn>(b"mosquitto_plugin_version\0")
                .map_err(|_| sym("mosquitto_plugin_version"))?,
            *lib.get::<InitFn>(b"mosquitto_plugin_init\0")
                .map_err(|_| sym("mosquitto_plugin_init"))?,
            *lib.get::<CleanupFn>(b"mosquitto_plugin_cleanup\0")
                .map_err(|_| sym("mosquitto_plugin_cleanup"))?,
        )
    };
    let offered = [5];
    // SAFETY: as above.
    let chosen = unsafe { version(1, offered.as_ptr()) };
    if chosen != 5 {
        return Err(format!(
            "plugin {file}: a mosquitto plugin asking for plugin API version {chosen}; midge offers mosquitto's version 5 only"
        ));
    }
    let name = path
        .file_name()
        .map_or_else(|| file.clone(), |n| n.to_string_lossy().into_owned());
    let state = Box::new(MosqState {
        name,
        callbacks: Mutex::new(Vec::new()),
    });
    let mut opts = Opts::new(options);
    let mut userdata = std::ptr::null_mut();
    let id = &*state as *const MosqState as *mut c_void;
    let n = opts.array.len() as c_int;
    // SAFETY: as above; `id` and the options live until cleanup.
    let rc = unsafe { init(id, &mut userdata, opts.array.as_mut_ptr(), n) };
    if rc != ERR_SUCCESS {
        std::mem::forget(lib);
        return Err(format!(
            "plugin {file}: mosquitto_plugin_init failed (returned {rc})"
        ));
    }
    Ok(MosqPlugin {
        inner: Arc::new(Inner {
            state,
            userdata,
            cleanup,
            options: Mutex::new(vec![opts]),
            init_options: options.clone(),
            _lib: std::mem::ManuallyDrop::new(lib),
        }),
    })
}

impl MosqPlugin {
    fn callbacks(&self, event: c_int) -> Vec<(Callback, *mut c_void)> {
        let list = self
            .inner
            .state
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        list.iter()
            .filter(|(e, _, _)| *e == event)
            .map(|&(_, cb, ud)| (cb, ud))
            .collect()
    }
}

impl Plugin for MosqPlugin {
    fn name(&self) -> &str {
        &self.inner.state.name
    }

    fn configure(&self, options: &PluginOptions) -> Result<(), String> {
        let mut sets = self.inner.options.lock().unwrap_or_else(|e| e.into_inner());
        if sets.len() == 1 && *options == self.inner.init_options {
            return Ok(());
        }
        let mut opts = Opts::new(options);
        let mut evt = EvtReload {
            future: std::ptr::null_mut(),
            options: opts.array.as_mut_ptr(),
            option_count: opts.array.len() as c_int,
            future2: [std::ptr::null_mut(); 4],
        };
        sets.push(opts);
        drop(sets);
        for (cb, ud) in self.callbacks(EVT_RELOAD) {
            // SAFETY: a registered callback and its event.
            let rc = unsafe { cb(EVT_RELOAD, (&mut evt as *mut EvtReload).cast(), ud) };
            if rc != ERR_SUCCESS {
                return Err(format!("reload callback returned {rc}"));
            }
        }
        Ok(())
    }

    fn shard(&self, _shard: usize, _shards: usize) -> Box<dyn ShardPlugin> {
        Box::new(MosqShard {
            _inner: self.inner.clone(),
            basic_auth: self.callbacks(EVT_BASIC_AUTH),
            acl_check: self.callbacks(EVT_ACL_CHECK),
        })
    }
}

/// A mosquitto plugin on one shard.
struct MosqShard {
    _inner: Arc<Inner>,
    basic_auth: Vec<(Callback, *mut c_void)>,
    acl_check: Vec<(Callback, *mut c_void)>,
}

unsafe impl Send for MosqShard {}

fn cstring(bytes: &[u8]) -> Option<CString> {
    CString::new(bytes).ok()
}

/// Asks `callbacks` in order; the first answer other than `MOSQ_ERR_PLUGIN_DEFER` decides.
/// When all defer: `deferred`.
///
/// mosquitto 2.0 turns "every plugin deferred" into a denial for ACL checks, and for basic
/// auth of a client that gave a user name (src/security.c); plugins such as dynamic security
/// rely on it (they defer where their default access is "deny"). So a mosquitto plugin's
/// deferral is final here too: midge's own rule (pass to the next, then the files) would turn
/// dynamic security's default deny into an allow.
fn ask<T>(
    callbacks: &[(Callback, *mut c_void)],
    event: c_int,
    evt: &mut T,
    deferred: Decision,
) -> Decision {
    for &(cb, ud) in callbacks {
        // SAFETY: a registered callback and an event struct of its type.
        match unsafe { cb(event, (evt as *mut T).cast(), ud) } {
            ERR_PLUGIN_DEFER => continue,
            ERR_SUCCESS => return Decision::Allow,
            _ => return Decision::Deny,
        }
    }
    deferred
}

impl ShardPlugin for MosqShard {
    fn events(&self) -> Events {
        let mut e = Events::default();
        if !self.basic_auth.is_empty() {
            e = e | Events::BASIC_AUTH;
        }
        if !self.acl_check.is_empty() {
            e = e | Events::ACL_CHECK;
        }
        e
    }

    fn basic_auth(
        &mut self,
        info: &ClientInfo<'_>,
        creds: &Credentials<'_>,
        _later: Later,
    ) -> Decision {
        let username = creds.username.and_then(|u| cstring(u.as_bytes()));
        let password = creds.password.and_then(cstring);
        let Some(client_id) = cstring(info.client_id.as_bytes()) else {
            return Decision::Deny;
        };
        let client = MosqClient {
            client_id,
            username: username.clone(),
        };
        let mut evt = EvtBasicAuth {
            future: std::ptr::null_mut(),
            client: &client,
            username: username.as_ref().map_or(std::ptr::null(), |u| u.as_ptr()),
            password: password.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
            future2: [std::ptr::null_mut(); 4],
        };
        let deferred = if creds.username.is_some() {
            Decision::Deny
        } else {
            Decision::Pass
        };
        ask(&self.basic_auth, EVT_BASIC_AUTH, &mut evt, deferred)
    }

    fn acl_check(&mut self, info: &ClientInfo<'_>, topic: &str, access: Access) -> Decision {
        let (Some(client_id), Some(topic)) = (
            cstring(info.client_id.as_bytes()),
            cstring(topic.as_bytes()),
        ) else {
            return Decision::Deny;
        };
        let client = MosqClient {
            client_id,
            username: info.username.and_then(|u| cstring(u.as_bytes())),
        };
        let mut evt = EvtAclCheck {
            future: std::ptr::null_mut(),
            client: &client,
            topic: topic.as_ptr(),
            payload: std::ptr::null(),
            properties: std::ptr::null_mut(),
            access: match access {
                Access::Read => 1,
                Access::Write => 2,
                Access::Subscribe => 4,
            },
            payloadlen: 0,
            qos: 0,
            retain: false,
            future2: [std::ptr::null_mut(); 4],
        };
        ask(&self.acl_check, EVT_ACL_CHECK, &mut evt, Decision::Deny)
    }
}
