//! Loading a C plugin: `dlopen` (through `libloading`), version negotiation, `init` with the
//! `plugin_opt_*` options, and [`CPlugin`], the [`Plugin`] the chain sees. Every failure
//! names the file, and stops start-up (the registry turns the `Err` into the message).

use std::ffi::{c_int, c_void, CString};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use libloading::Library;

use super::abi::{self, EventCb, EvtReload, Opt, PluginId};
use super::shard::CShard;
use crate::plugin::api::{Plugin, PluginOptions, ShardPlugin};

/// One registered callback.
pub(super) struct Registered {
    pub event: c_int,
    pub callback: EventCb,
    pub userdata: *mut c_void,
    /// Cleared by `midge_callback_unregister`; the shards test it before each call.
    pub enabled: Arc<AtomicBool>,
}

/// What `midge_plugin_id_t *` points to.
pub(super) struct State {
    pub name: String,
    /// Set before the first shard is made: registering after that is `MIDGE_ERR_STATE`.
    pub frozen: AtomicBool,
    pub callbacks: Mutex<Vec<Registered>>,
}

/// `plugin_opt_*` as C strings, and the `struct midge_opt` array pointing into them.
struct OptionSet {
    _strings: Vec<(CString, CString)>,
    array: Vec<Opt>,
}

impl OptionSet {
    fn new(options: &PluginOptions, file: &str) -> Result<OptionSet, String> {
        let mut strings = Vec::with_capacity(options.len());
        for (k, v) in options {
            let key = CString::new(k.as_str())
                .map_err(|_| format!("plugin {file}: option {k} contains a NUL byte"))?;
            let value = CString::new(v.as_str())
                .map_err(|_| format!("plugin {file}: option {k}'s value contains a NUL byte"))?;
            strings.push((key, value));
        }
        let array = strings
            .iter()
            .map(|(k, v)| Opt {
                key: k.as_ptr(),
                value: v.as_ptr(),
            })
            .collect();
        Ok(OptionSet {
            _strings: strings,
            array,
        })
    }

    fn len(&self) -> c_int {
        self.array.len() as c_int
    }
}

/// Everything a loaded plugin holds; shared by the [`CPlugin`] and its shards, so the library
/// outlives every shard's last call. Dropping it calls `midge_plugin_cleanup`.
pub(super) struct Inner {
    pub name: String,
    pub state: Box<State>,
    pub userdata: *mut c_void,
    pub shard_init: Option<abi::ShardInitFn>,
    pub shard_cleanup: Option<abi::ShardCleanupFn>,
    cleanup: abi::CleanupFn,
    /// The init options (handed to cleanup) and every reload's (the plugin may keep
    /// pointers into them until cleanup, as the header promises).
    options: Mutex<Vec<OptionSet>>,
    init_options: PluginOptions,
    /// The code: never unloaded (`dlclose` under a plugin's own threads, e.g. one answering
    /// MIDGE_LATER, would crash); the process is ending anyway when the last plugin drops.
    _lib: std::mem::ManuallyDrop<Library>,
}

// SAFETY: the raw pointers are the plugin's `userdata` and option strings. The header makes
// the plugin responsible for its callbacks being callable from any shard thread at once.
unsafe impl Send for Inner {}
unsafe impl Sync for Inner {}
unsafe impl Send for Registered {}

impl Inner {
    /// The `*mut midge_plugin_id_t` the plugin is given.
    pub fn id(&self) -> *mut PluginId {
        &*self.state as *const State as *mut PluginId
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut sets = self.options.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = sets.first_mut() {
            let n = first.len();
            // SAFETY: the symbol of a library never unloaded, with the init options.
            let rc = unsafe { (self.cleanup)(self.userdata, first.array.as_mut_ptr(), n) };
            if rc != abi::SUCCESS {
                log::warn!("plugin {}: midge_plugin_cleanup returned {rc}", self.name);
            }
        }
    }
}

/// A C plugin as the chain sees it.
pub struct CPlugin {
    inner: Arc<Inner>,
}

/// dlopen with RTLD_NOW: a plugin needing a symbol nobody provides fails here, naming the
/// symbol, not later in a callback (glibc's lazy binding would end the process there).
///
/// mosquitto's own plugins (dynamic security) call OpenSSL's libcrypto, which they expect
/// from the mosquitto binary; midge uses ring. On an undefined symbol, libcrypto is loaded
/// into the global namespace (when installed) and the plugin opened once more.
fn open(path: &Path) -> Result<Library, String> {
    use libloading::os::unix::{Library as Unix, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers; a plugin is trusted code, named by the
    // administrator in the configuration (as in mosquitto).
    match unsafe { Unix::open(Some(path), RTLD_NOW | RTLD_LOCAL) } {
        Ok(lib) => Ok(lib.into()),
        Err(first) => {
            let first = chain(&first);
            if !first.contains("undefined symbol") {
                return Err(first);
            }
            // SAFETY: OpenSSL's library, as the mosquitto binary links it; kept for good.
            match unsafe { Unix::open(Some("libcrypto.so.3"), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(crypto) => std::mem::forget(crypto),
                Err(_) => return Err(first),
            }
            // SAFETY: as above.
            unsafe { Unix::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
                .map(Library::from)
                .map_err(|e| chain(&e))
        }
    }
}

/// An error and its sources (libloading's `dlopen failed` carries dlerror's text as source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

/// Loads the plugin at `path` and calls its init with `options`.
/// A mosquitto v5 plugin (no `midge_plugin_version`, a `mosquitto_plugin_version`) goes
/// through the mosquitto shim (`super::mosq`).
pub fn load(path: &Path, options: &PluginOptions) -> Result<Arc<dyn Plugin>, String> {
    let file = path.display().to_string();
    let lib = open(path).map_err(|e| format!("plugin {file}: cannot load: {e}"))?;
    let sym = |name: &str| {
        format!("plugin {file}: not a midge plugin (no symbol {name}: see include/midge_plugin.h)")
    };
    // SAFETY: the types are the header's; a library exporting these names promises them.
    let (version, init, cleanup, shard_init, shard_cleanup) = unsafe {
        let version = match lib.get::<abi::VersionFn>(b"midge_plugin_version\0") {
            Ok(v) => *v,
            Err(_) if lib.get::<*const ()>(b"mosquitto_plugin_version\0").is_ok() => {
                return Ok(Arc::new(super::mosq::load(path, lib, options)?));
            }
            Err(_) => return Err(sym("midge_plugin_version")),
        };
        let init = *lib
            .get::<abi::InitFn>(b"midge_plugin_init\0")
            .map_err(|_| sym("midge_plugin_init"))?;
        let cleanup = *lib
            .get::<abi::CleanupFn>(b"midge_plugin_cleanup\0")
            .map_err(|_| sym("midge_plugin_cleanup"))?;
        let shard_init = lib
            .get::<abi::ShardInitFn>(b"midge_plugin_shard_init\0")
            .ok()
            .map(|s| *s);
        let shard_cleanup = lib
            .get::<abi::ShardCleanupFn>(b"midge_plugin_shard_cleanup\0")
            .ok()
            .map(|s| *s);
        (version, init, cleanup, shard_init, shard_cleanup)
    };
    let supported = [abi::VERSION];
    // SAFETY: the header's signature; `supported` outlives the call.
    let chosen = unsafe { version(supported.len() as c_int, supported.as_ptr()) };
    if !supported.contains(&chosen) {
        return Err(format!(
            "plugin {file}: midge_plugin_version chose version {chosen}; this midge offers {supported:?}"
        ));
    }
    let name = path
        .file_name()
        .map_or_else(|| file.clone(), |n| n.to_string_lossy().into_owned());
    let mut set = OptionSet::new(options, &file)?;
    let state = Box::new(State {
        name: name.clone(),
        frozen: AtomicBool::new(false),
        callbacks: Mutex::new(Vec::new()),
    });
    let id = &*state as *const State as *mut PluginId;
    let mut userdata: *mut c_void = std::ptr::null_mut();
    let n = set.len();
    // SAFETY: the header's signature; `id` and the options live until cleanup.
    let rc = unsafe { init(id, &mut userdata, set.array.as_mut_ptr(), n) };
    if rc != abi::SUCCESS {
        // Not initialised: no cleanup (as mosquitto). The library stays mapped: its init may
        // have started threads.
        std::mem::forget(lib);
        return Err(format!(
            "plugin {file}: midge_plugin_init failed (returned {rc})"
        ));
    }
    Ok(Arc::new(CPlugin {
        inner: Arc::new(Inner {
            name,
            state,
            userdata,
            shard_init,
            shard_cleanup,
            cleanup,
            options: Mutex::new(vec![set]),
            init_options: options.clone(),
            _lib: std::mem::ManuallyDrop::new(lib),
        }),
    }))
}

impl CPlugin {
    /// The callbacks registered for `event` (reload runs them here, on the caller's thread).
    fn callbacks_for(&self, event: c_int) -> Vec<(EventCb, *mut c_void)> {
        let list = self
            .inner
            .state
            .callbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        list.iter()
            .filter(|r| r.event == event)
            .map(|r| (r.callback, r.userdata))
            .collect()
    }
}

impl Plugin for CPlugin {
    fn name(&self) -> &str {
        &self.inner.name
    }

    /// At start (the init options again): nothing to do, init had them. At reload: the
    /// plugin's `MIDGE_EVT_RELOAD` callbacks get the new options; a non-zero answer refuses.
    fn configure(&self, options: &PluginOptions) -> Result<(), String> {
        let mut sets = self.inner.options.lock().unwrap_or_else(|e| e.into_inner());
        if sets.len() == 1 && *options == self.inner.init_options {
            return Ok(());
        }
        let set = OptionSet::new(options, &self.inner.name)?;
        let mut evt = EvtReload {
            size: std::mem::size_of::<EvtReload>(),
            shard_data: std::ptr::null_mut(),
            options: set.array.as_ptr(),
            option_count: set.len(),
            reserved: abi::RESERVED,
        };
        sets.push(set);
        drop(sets);
        for (cb, userdata) in self.callbacks_for(abi::EVT_RELOAD) {
            // SAFETY: a registered callback with its own userdata and a live event.
            let rc = unsafe {
                cb(
                    abi::EVT_RELOAD,
                    (&mut evt as *mut EvtReload).cast(),
                    userdata,
                )
            };
            if rc != abi::SUCCESS {
                return Err(format!(
                    "plugin {}: refused the new options (reload callback returned {rc})",
                    self.inner.name
                ));
            }
        }
        Ok(())
    }

    fn shard(&self, shard: usize, shards: usize) -> Box<dyn ShardPlugin> {
        self.inner.state.frozen.store(true, Ordering::Release);
        Box::new(CShard::new(self.inner.clone(), shard, shards))
    }
}
