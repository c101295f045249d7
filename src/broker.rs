//! Starting and stopping the broker: listeners, shards and their threads.
//!
//! # Listeners: one SO_REUSEPORT socket per shard
//! Each shard accepts on its own socket bound to the same address with `SO_REUSEPORT`, so the
//! kernel spreads new connections over the shards and no thread hands sockets to another.
//! (The alternative, one acceptor passing sockets round-robin, costs a cross-thread message
//! and a wake-up per connection; and a connection is moved to its client id's home shard at
//! CONNECT anyway, so accept-time balance only decides who parses CONNECT.)
//! SO_REUSEPORT also lets a *second process* bind the same port silently and take half of the
//! connections (ARCHITECTURE.md §9), so before binding, the port is proven free with a plain bind,
//! and start-up fails with "address in use" as mosquitto does.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::auth::{Auth, AuthWorker};
use crate::config::Config;
use crate::reactor::{IoBackend, Reactor};
use crate::shard::handshakes::Handshakers;
use crate::shard::inbox::{inbox, ShardHandle};
/// Kept under its old path: the shared state is the shard layer's (see `shard::shared`).
pub use crate::shard::Shared;
use crate::shard::{home_shard, ListenerSocket, Shard, WAKER};
use crate::store::{self, Recovered, RecoveredSession, Store};
use crate::transport::{Listener, TlsListener, WsConfig};

mod reload;

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    shared: Arc<Shared>,
    peers: Arc<Vec<ShardHandle>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    addrs: Vec<SocketAddr>,
    /// The TLS listeners (shared with the shards), for [`Broker::reload_tls`].
    tls: Vec<Arc<TlsListener>>,
    /// The cluster gateway thread, when the node is part of a cluster.
    cluster: Option<crate::cluster::Gateway>,
    /// The TLS handshake threads (none without a TLS listener).
    handshake_threads: Vec<JoinHandle<()>>,
    /// The configuration in force: what a reload compares with and where it re-reads from.
    applied: Mutex<Config>,
}

/// The cluster settings of `config`, if it names NATS servers.
fn cluster_settings(config: &Config) -> Option<crate::cluster::Settings> {
    if config.cluster_nats_urls.is_empty() {
        return None;
    }
    let node_id = config.cluster_node_id.clone().unwrap_or_else(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
        ok.then(|| String::from_utf8_lossy(&buf[..end]).into_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "midge".into())
    });
    Some(crate::cluster::Settings {
        name: config
            .cluster_name
            .clone()
            .unwrap_or_else(|| "midge".into()),
        node_id,
        nats_urls: config.cluster_nats_urls.clone(),
        max_packet_size: config.max_packet_size,
        replicas: usize::from(config.cluster_replicas),
        node_timeout: std::time::Duration::from_secs(u64::from(config.cluster_node_timeout)),
        auth: config.cluster_nats_auth.clone(),
        home_shard: crate::shard::home_shard,
    })
}

/// The default listeners: loopback only, like mosquitto 2 without a config.
fn default_listeners() -> Vec<crate::config::Listener> {
    [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]
    .into_iter()
    .map(|ip| crate::config::Listener {
        addr: SocketAddr::new(ip, 1883),
        allow_anonymous: None,
        tls: None,
        password_file: None,
        acl_file: None,
        websockets: None,
        bind_interface: None,
        proxy_protocol: None,
        mount_point: None,
    })
    .collect()
}

/// Opens and reads the store when `persistence` is on. What a torn tail cost is logged; an
/// unreadable store is an error (never a silent start from empty).
fn open_store(config: &Config) -> io::Result<(Option<Arc<dyn Store>>, Recovered)> {
    let Some(dir) = config.persistence_dir() else {
        return Ok((None, Recovered::default()));
    };
    let fail = |e: crate::store::StoreError| {
        io::Error::other(format!(
            "{e} (refusing to start: move the directory away to start empty)"
        ))
    };
    let store: Arc<dyn Store> =
        Arc::from(store::open(&dir, config.persistence_sync).map_err(fail)?);
    let mut recovered = store.load().map_err(fail)?;
    store::limits::apply(&mut recovered, config.topic_limits());
    for d in &recovered.dropped {
        log::warn!("Persistence: {d}");
    }
    log::info!(
        "Persistence in {} (sync {}): restored {} session(s) and {} retained message(s).",
        dir.display(),
        config.persistence_sync,
        recovered.sessions.len(),
        recovered.retained.len()
    );
    Ok((Some(store), recovered))
}

/// `bind_interface`: the socket takes connections through that interface only.
fn bind_device(socket: &Socket, interface: Option<&str>) -> io::Result<()> {
    match interface {
        Some(name) => socket
            .bind_device(Some(name.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("bind_interface {name}: {e}"))),
        None => Ok(()),
    }
}

/// How long a listener's port that is in use is tried again at start (see `probe_port`).
const PORT_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Binds one listening socket with SO_REUSEPORT.
fn bind_reuseport(addr: SocketAddr, interface: Option<&str>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    bind_device(&socket, interface)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Proves `addr` free with a plain bind (no SO_REUSEPORT) and returns the port to use
/// (resolving port 0 to a concrete ephemeral port).
fn probe_port(addr: SocketAddr, interface: Option<&str>) -> io::Result<u16> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    bind_device(&socket, interface)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // A broker that was killed on io_uring leaves its sockets to the kernel's asynchronous
    // teardown of its rings, which takes well under a millisecond: a restart at once (a
    // supervisor's, a test's) waits for that instead of failing. A port another process
    // holds still fails, a little later.
    let deadline = std::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        match socket.bind(&addr.into()) {
            Ok(()) => break,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e}"),
                ))
            }
        }
    }
    let port = socket
        .local_addr()?
        .as_socket()
        .map_or(addr.port(), |a| a.port());
    Ok(port)
}

/// A listener's password file and ACL (its own with `per_listener_settings`, as in
/// mosquitto; otherwise the global ones, `global`) and whether it allows anonymous clients.
/// Refuses a network-facing listener where nothing could ever authenticate a client (secure
/// default); warns for such a loopback one. At start-up and at each reload.
fn listener_policy(
    config: &Config,
    l: &crate::config::Listener,
    global: &Auth,
) -> io::Result<(Auth, bool)> {
    let listener_auth = if config.per_listener_settings {
        Auth::load_files(l.password_file.as_deref(), l.acl_file.as_deref())
            .map_err(|e| io::Error::other(e.to_string()))?
    } else {
        global.clone()
    };
    let allow_anonymous = l
        .allow_anonymous
        .filter(|_| config.per_listener_settings)
        .or(config.allow_anonymous)
        .unwrap_or(l.addr.ip().is_loopback());
    let identity_auth = l.tls.as_ref().is_some_and(|t| {
        t.require_certificate && (t.use_identity_as_username || t.use_subject_as_username)
    });
    // A plugin line may authenticate (which hooks it registers is known only once loaded,
    // so any plugin counts): mosquitto does not refuse to start such a listener either.
    let plugin_auth = !config.plugins.is_empty();
    if !allow_anonymous && !listener_auth.has_authentication() && !identity_auth && !plugin_auth {
        // Nothing could ever authenticate a client here. On a network-facing listener that
        // is a configuration mistake (secure default: refuse to start); on loopback say so,
        // since every client will get CONNACK "not authorized".
        if !l.addr.ip().is_loopback() {
            return Err(io::Error::other(format!(
                "listener {} allows no anonymous clients and no authentication is configured \
                 (password_file, a plugin, or require_certificate with use_identity_as_username): \
                 set 'allow_anonymous true' to allow anonymous clients explicitly",
                l.addr
            )));
        }
        log::warn!(
            "Listener {} does not allow anonymous clients and no authentication is configured: \
             every client will be refused.",
            l.addr
        );
    }
    Ok((listener_auth, allow_anonymous))
}

impl Broker {
    /// Binds every listener and starts the shards. Returns once the broker accepts clients.
    pub fn start(config: Config) -> io::Result<Broker> {
        Broker::start_with_plugins(config, Vec::new())
    }

    /// [`Broker::start`] with `plugins` (Rust plugins of the program that runs midge as a
    /// library) in the chain, ahead of the plugins the configuration names (and of the
    /// password and ACL files). A configured plugin that cannot be loaded or configured stops
    /// start-up with `FILE:LINE: plugin NAME: message`.
    pub fn start_with_plugins(
        config: Config,
        plugins: Vec<Arc<dyn crate::plugin::Plugin>>,
    ) -> io::Result<Broker> {
        let mut plugins = crate::plugin::registry::Loaded::load(plugins, &config.plugins)
            .map_err(io::Error::other)?;
        if crate::plugin::builtin::scram::by_default(&config) {
            let scram = crate::plugin::builtin::scram::Scram::new().map_err(io::Error::other)?;
            plugins.implicit.push(Arc::new(scram));
        }
        let auth = Auth::load(&config).map_err(|e| io::Error::other(e.to_string()))?;
        let shards = config
            .shards
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .clamp(1, 128);
        let mut listeners = config.listeners.clone();
        if listeners.is_empty() {
            listeners = default_listeners();
        }
        // Per shard: one socket of each listener.
        let mut per_shard: Vec<Vec<ListenerSocket>> = (0..shards).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        let mut tls_listeners = Vec::new();
        let mut any_password_file = auth.passwords.is_some();
        let mut password_files = Vec::new();
        for l in &listeners {
            let (listener_auth, allow_anonymous) = listener_policy(&config, l, &auth)?;
            any_password_file |= listener_auth.passwords.is_some();
            // Certificate and key files are read before binding: a bad one stops start-up
            // with an error that names it (TlsError's Display).
            let tls = match &l.tls {
                Some(settings) => {
                    let tls = Arc::new(TlsListener::load(settings.clone())?);
                    tls_listeners.push(tls.clone());
                    Some(tls)
                }
                None => None,
            };
            let ws = l.websockets.as_ref().map(|w| {
                Arc::new(WsConfig {
                    headers_size: config.websockets_headers_size,
                    http_dir: w.http_dir.clone(),
                    max_frame: match config.max_packet_size {
                        0 => crate::protocol::MAX_PACKET_SIZE as u64,
                        max => u64::from(max),
                    },
                    trust_x_forwarded_for: w.trust_x_forwarded_for,
                })
            });
            let interface = l.bind_interface.as_deref();
            let port = probe_port(l.addr, interface)?;
            let addr = SocketAddr::new(l.addr.ip(), port);
            password_files.push((port, listener_auth.passwords.clone()));
            for sockets in per_shard.iter_mut() {
                sockets.push(
                    Listener::new(
                        bind_reuseport(addr, interface)?,
                        tls.clone(),
                        allow_anonymous,
                        listener_auth.clone(),
                    )
                    .with_websocket(ws.clone())
                    .with_proxy_protocol(l.proxy_protocol),
                );
            }
            let kind = match (tls.is_some(), ws.is_some()) {
                (false, false) => "",
                (true, false) => "TLS ",
                (false, true) => "WebSocket ",
                (true, true) => "WebSocket TLS ",
            };
            let proxied = if l.proxy_protocol.is_some() {
                " (PROXY protocol)"
            } else {
                ""
            };
            log::info!("Opening {kind}listen socket on {addr}{proxied}.");
            addrs.push(addr);
        }

        // Two threads: a slow PBKDF2 check never holds up another client's CONNECT for long,
        // and the queue bounds the memory an unauthenticated flood can take. Each request
        // carries its listener's password file.
        // The threads start with the first password file, now or at a reload.
        let auth_worker = AuthWorker::new(2, 1024);
        if any_password_file {
            auth_worker.ensure_running()?;
        }
        // The password file is the chain's last plugin; its checks go to these threads.
        let password =
            crate::plugin::builtin::password::PasswordPlugin::new(auth_worker.client(|| {}).0);
        password.set_files(password_files);
        plugins.password = Some(Arc::new(password));
        // The store is read before anything is served: an unreadable one stops start-up.
        let (store, recovered) = open_store(&config)?;
        let applied = Mutex::new(config.clone());
        let mut shared = Shared::new(config, auth, Some(auth_worker), shards);
        shared.plugins = plugins;
        let now = std::time::Instant::now();
        for msg in recovered.retained.iter().filter(|m| !m.is_expired(now)) {
            shared.retained.set(msg);
        }
        let shared = Arc::new(shared);
        let io_backend = IoBackend::from_env()?.unwrap_or(shared.config.io_backend);
        let mut polls = Vec::new();
        let mut handles = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..shards {
            let (poll, _, waker) = Reactor::new(io_backend, WAKER)?;
            let _ = shared.io_backend.set(poll.name());
            let (handle, inbox) = inbox(waker);
            polls.push(poll);
            handles.push(handle);
            inboxes.push(inbox);
        }
        if let Some(store) = &store {
            // The store's writer wakes a parked shard once a batch of that shard is written,
            // so held acknowledgements go out without waiting for the next tick.
            for (id, handle) in handles.iter().enumerate() {
                let handle = handle.clone();
                store.set_notify(id, Box::new(move || handle.wake_if_sleeping()));
            }
        }
        let peers = Arc::new(handles);
        let cluster = match cluster_settings(&shared.config) {
            Some(settings) => {
                let wake = peers
                    .iter()
                    .map(|h| {
                        let h = h.clone();
                        Box::new(move || h.wake_if_sleeping()) as crate::cluster::Wake
                    })
                    .collect();
                let (gateway, links) = crate::cluster::start(settings, wake)?;
                shared.set_cluster_links(links);
                Some(gateway)
            }
            None => None,
        };
        // Recovered sessions go to the home shard of their client id; every replica of the
        // index gets every recovered subscription before any shard runs.
        let mut homed: Vec<Vec<RecoveredSession>> = (0..shards).map(|_| Vec::new()).collect();
        for r in recovered.sessions {
            homed[home_shard(r.client_id.as_bytes(), shards)].push(r);
        }
        let mut built = Vec::new();
        let mut entries = Vec::new();
        for (id, ((poll, inbox), sockets)) in
            polls.into_iter().zip(inboxes).zip(per_shard).enumerate()
        {
            let mut shard = Shard::new(
                id,
                &poll,
                sockets,
                inbox,
                peers.clone(),
                shared.clone(),
                store.clone(),
            )?;
            entries.push(shard.recover(std::mem::take(&mut homed[id])));
            built.push((shard, poll));
        }
        for (id, (shard, _)) in built.iter_mut().enumerate() {
            for (other, list) in entries.iter().enumerate() {
                if other != id {
                    for (filter, entry) in list {
                        shard.index.insert(filter, *entry);
                    }
                }
            }
        }
        // The cluster learns the node's recovered subscriptions, each from its home shard.
        for ((shard, _), list) in built.iter_mut().zip(&entries) {
            if let Some(link) = &mut shard.cluster {
                for (filter, _) in list {
                    link.interest(filter, true);
                }
            }
        }
        if let Some(addr) = shared.config.metrics_listener {
            crate::metrics::start(addr, shared.clone())?;
        }
        // TLS handshakes run on threads of their own (`shard::handshakes`), one per shard.
        let mut handshake_threads = Vec::new();
        if !tls_listeners.is_empty() {
            let (handshakers, threads) = Handshakers::start(shards, shared.clone(), peers.clone())?;
            let _ = shared.handshakers.set(handshakers);
            handshake_threads = threads;
        }
        let mut threads = Vec::new();
        for (id, (shard, poll)) in built.into_iter().enumerate() {
            let thread = std::thread::Builder::new()
                .name(format!("midge-shard-{id}"))
                .spawn(move || shard.run(poll))?;
            threads.push(thread);
        }
        log::info!(
            "midge {} running with {shards} shard(s) on {}.",
            env!("CARGO_PKG_VERSION"),
            shared.io_backend.get().copied().unwrap_or("epoll")
        );
        Ok(Broker {
            shared,
            peers,
            threads,
            addrs,
            tls: tls_listeners,
            cluster,
            handshake_threads,
            applied,
        })
    }

    /// The addresses the listeners are bound to (with ephemeral ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Every shard's counters summed, as of each shard's last tick (a few times a second).
    pub fn stats(&self) -> crate::shard::stats::Stats {
        self.shared.stats()
    }

    /// The `$SYS` tree and per-shard figures as shard 0 last computed them (see
    /// [`Shared::sys_snapshot`]): for the metrics endpoint and tests.
    pub fn sys_snapshot(&self) -> Arc<crate::shard::systree::snapshot::SysSnapshot> {
        self.shared.sys_snapshot()
    }

    /// Re-reads every TLS listener's certificate, key and CA files (SIGHUP). New handshakes
    /// use the new files; open connections keep their session. A listener whose files are
    /// now bad keeps its old config; the errors are returned (and logged by the caller).
    pub fn reload_tls(&self) -> Vec<crate::transport::tls::TlsError> {
        self.tls.iter().filter_map(|l| l.reload().err()).collect()
    }

    /// Stops every shard (connections are closed after their pending writes) and waits.
    pub fn shutdown(self) -> io::Result<()> {
        self.shared.request_shutdown();
        for p in self.peers.iter() {
            p.wake();
            p.beacon.resume();
        }
        if let Some(h) = self.shared.handshakers.get() {
            h.wake_all();
        }
        for t in self.handshake_threads {
            let _ = t.join();
        }
        let mut result = Ok(());
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("a shard thread panicked")),
            }
        }
        // The shards' links are gone with them: the gateway flushes what they queued and ends.
        if let Some(gateway) = self.cluster {
            gateway.join();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::systree::snapshot::SysSnapshot;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    /// Polls `broker.stats()` until `ok` holds (the shards publish at their tick).
    fn wait_for(broker: &Broker, ok: impl Fn(&crate::shard::stats::Stats) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if ok(&broker.stats()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn expect(c: &mut TcpStream, want: &[u8]) {
        let mut got = vec![0; want.len()];
        c.read_exact(&mut got).expect("read");
        assert_eq!(got, want);
    }

    #[test]
    fn stats_count_a_client_its_subscription_and_its_messages() {
        let config =
            Config::parse_str("listener 0 127.0.0.1\nshards 2\n", "stats-test").expect("config");
        let broker = Broker::start(config).expect("start");
        let mut c = TcpStream::connect(broker.local_addrs()[0]).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // MQTT 3.1.1 CONNECT "c1", clean session, keep-alive 60.
        let connect = [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'c', b'1',
        ];
        c.write_all(&connect).unwrap();
        expect(&mut c, &[0x20, 2, 0, 0]);
        // SUBSCRIBE a/b at QoS 0, then PUBLISH "hi" on it: it comes back.
        c.write_all(&[0x82, 8, 0, 1, 0, 3, b'a', b'/', b'b', 0])
            .unwrap();
        expect(&mut c, &[0x90, 3, 0, 1, 0]);
        let publish = [0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'];
        c.write_all(&publish).unwrap();
        expect(&mut c, &publish);
        let all_in = (connect.len() + 10 + publish.len()) as u64;
        assert!(
            wait_for(&broker, |s| s.connections == 1
                && s.subscriptions == 1
                && s.messages_in == 1
                && s.messages_out == 1
                && s.bytes_in == all_in
                && s.bytes_out == 4 + 5 + publish.len() as u64),
            "{:?}",
            broker.stats()
        );
        drop(c);
        assert!(
            wait_for(&broker, |s| s.connections == 0 && s.subscriptions == 0),
            "a clean session ends with its connection: {:?}",
            broker.stats()
        );
        broker.shutdown().unwrap();
    }

    #[test]
    fn the_sys_snapshot_is_kept_fresh_for_a_reader_without_sys_interval() {
        let config = Config::parse_str(
            "listener 0 127.0.0.1\nshards 2\nsys_interval 0\n",
            "snapshot-test",
        )
        .expect("config");
        let broker = Broker::start(config).expect("start");
        let wait = |ok: &dyn Fn(&SysSnapshot) -> bool| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let snap = broker.sys_snapshot();
                if ok(&snap) || Instant::now() >= deadline {
                    return snap;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let snap = wait(&|s| s.get("$SYS/broker/clients/connected") == Some("0"));
        assert_eq!(snap.shards.len(), 2, "{snap:?}");
        let mut c = TcpStream::connect(broker.local_addrs()[0]).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(&[
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'c', b'1',
        ])
        .unwrap();
        expect(&mut c, &[0x20, 2, 0, 0]);
        let snap = wait(&|s| s.get("$SYS/broker/clients/connected") == Some("1"));
        assert_eq!(
            snap.get("$SYS/broker/clients/connected"),
            Some("1"),
            "{snap:?}"
        );
        assert_eq!(snap.total.connections, 1);
        let per_shard: u64 = snap.shards.iter().map(|s| s.stats.connections).sum();
        assert_eq!(per_shard, 1);
        drop(c);
        broker.shutdown().unwrap();
    }
}
