//! `cvlan-agent daemon`: the node. It owns the WireGuard device (TUN +
//! proto-wg, with the UAPI socket so `wg show` works), the connection to
//! the controller, and the lifecycle state machine, and it answers the CLI.
//!
//! One tokio task runs the loop; the device runs on its own threads and
//! is configured through UAPI text, the same path `wg set` takes.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto_control::messages::{
    ip_from_bytes, key32, ClientBody, ClientHello, Endpoint, RefusedReason, RelayInfo,
    UpdateEndpoints, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::control_client::{self, controller_address, ConnectParams, ControlEvent};
use crate::lifecycle::{Action, Input, Lifecycle, Phase};
use crate::local_api::{self, Reply, Request};
use crate::mesh::{peer_changes_with, Change, Mesh};
use crate::relay_path::{choose_home, RelayLink};
use crate::settings::{CachedMap, HelloClock, Saved, StateDir};
use proto_path::{Event as PathEvent, Path, PathManager};
use wg_device::DeviceHandle;

#[derive(Clone)]
pub struct DaemonOptions {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub interface: String,
    pub listen_port: u16,
    /// From the config file: used when `up` and the saved settings do not say.
    pub defaults: Saved,
    pub auth_key: Option<Zeroizing<String>>,
    /// Trusted for `tls://` relays.
    pub relay_tls: Option<tokio_rustls::TlsConnector>,
    /// CA certificates for an `https://` controller (else the system's).
    pub controller_ca: Option<PathBuf>,
}

impl std::fmt::Debug for DaemonOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No auth key in logs.
        f.debug_struct("DaemonOptions")
            .field("state_dir", &self.state_dir)
            .field("socket", &self.socket)
            .field("interface", &self.interface)
            .field("listen_port", &self.listen_port)
            .field("relay_tls", &self.relay_tls.is_some())
            .finish_non_exhaustive()
    }
}

/// How often local addresses are re-read (a changed address is reported).
const ENDPOINT_CHECK: Duration = Duration::from_secs(30);

struct Connection {
    task: JoinHandle<()>,
    outgoing: mpsc::Sender<ClientBody>,
}

struct Daemon {
    opts: DaemonOptions,
    state: StateDir,
    hello_clock: HelloClock,
    controller_tls: Option<transport::TlsConnector>,
    device: Arc<DeviceHandle>,
    machine_key: Zeroizing<[u8; 32]>,
    node_public: [u8; 32],
    saved: Saved,
    auth_key: Option<Zeroizing<String>>,
    lifecycle: Lifecycle,
    mesh: Mesh,
    /// The controller key the mesh belongs to.
    mesh_controller: Option<[u8; 32]>,
    address: Option<(Ipv4Addr, u8)>,
    endpoints: Vec<SocketAddr>,
    generation: u64,
    conn: Option<Connection>,
    events_tx: mpsc::Sender<(u64, ControlEvent)>,
    /// `up` requests waiting for the node to run (or to fail for good).
    waiting: Vec<oneshot::Sender<Reply>>,
    node_key: Zeroizing<[u8; 32]>,
    paths: PathManager,
    relay: Option<RelayLink>,
    /// The relays the controller announced, and the home relay chosen.
    relays: Vec<RelayInfo>,
    relay_choice: mpsc::Sender<(Vec<RelayInfo>, usize)>,
}

fn hex_key(text: &str) -> Result<[u8; 32], String> {
    cvlan_core::Key32::parse(text).map(|k| k.0).map_err(|_| {
        format!(
            "controller key {text:?}: expected 64 hex digits (`cvlan-controller key` prints it)"
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

/// Runs the daemon until SIGTERM/SIGINT or until the device fails.
pub fn run(opts: DaemonOptions) -> Result<(), String> {
    let state = StateDir::open(&opts.state_dir)?;
    let machine_key = state.machine_key()?;
    let node_key = state.node_key()?;
    let node_public = *proto_wg::PrivateKey::from_bytes(*node_key)
        .public_key()
        .as_bytes();
    // Path probes arrive on the device's UDP thread; a small thread hands
    // them to the async side (bounded both ways: a flood is dropped).
    let (probe_tx, probe_rx) = std::sync::mpsc::sync_channel(256);
    let (probes_async_tx, probes_async_rx) = mpsc::channel(256);
    std::thread::Builder::new()
        .name("probes".into())
        .spawn(move || {
            while let Ok(p) = probe_rx.recv() {
                if probes_async_tx.blocking_send(p).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    let device = wg_device::start(&wg_device::Options {
        ifname: opts.interface.clone(),
        socket_dir: PathBuf::from("/var/run/wireguard"),
        other_datagrams: Some(probe_tx),
    })
    .map_err(|e| format!("interface {}: {e}", opts.interface))?;
    device.set_private_key(&node_key);
    device
        .set_listen_port(opts.listen_port)
        .map_err(|e| format!("configuring the device: {e}"))?;
    let device = Arc::new(device);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let saved = state.saved()?;
    let (events_tx, events_rx) = mpsc::channel(64);
    let (relay_choice, relay_chosen) = mpsc::channel(4);
    let jitter_seed = u64::from_le_bytes(os_seed()?[..8].try_into().unwrap_or_default());
    let paths = new_path_manager(&node_key, node_public)?;
    let mut daemon = Daemon {
        auth_key: opts.auth_key.clone(),
        opts,
        hello_clock: HelloClock::open(&state),
        controller_tls: None,
        state,
        device: device.clone(),
        machine_key,
        node_public,
        saved,
        lifecycle: Lifecycle::new(jitter_seed),
        mesh: Mesh::default(),
        mesh_controller: None,
        address: None,
        endpoints: Vec::new(),
        generation: 0,
        conn: None,
        events_tx,
        waiting: Vec::new(),
        paths,
        node_key,
        relay: None,
        relays: Vec::new(),
        relay_choice,
    };
    runtime.block_on(daemon.run(events_rx, probes_async_rx, relay_chosen))
}

/// 32 bytes from the OS's CSPRNG; without them the daemon does not run.
fn os_seed() -> Result<[u8; 32], String> {
    cvlan_core::os_seed().map_err(|e| e.to_string())
}

/// The path machine for `node_key`, its nonces from the OS's randomness
/// (never from the key, whose bytes a probe nonce would then reveal).
fn new_path_manager(
    node_key: &Zeroizing<[u8; 32]>,
    public: [u8; 32],
) -> Result<PathManager, String> {
    Ok(PathManager::new(node_key.clone(), public, os_seed()?))
}

impl Daemon {
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<(u64, ControlEvent)>,
        mut probes: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        mut relay_chosen: mpsc::Receiver<(Vec<RelayInfo>, usize)>,
    ) -> Result<(), String> {
        let socket = &self.opts.socket.clone();
        if local_api::call(socket, "status", &[])
            .ok()
            .flatten()
            .is_some()
        {
            return Err(format!(
                "{} is served by a running daemon",
                socket.display()
            ));
        }
        if let Some(dir) = socket.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // 0600 from the start: the local API can take the node down.
        let listener = cvlan_core::local_socket::bind_private(socket)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)
            })
            .map_err(|e| format!("cannot bind {}: {e}", socket.display()))?;
        let (api_tx, mut api_rx) = mpsc::channel(16);
        tokio::spawn(local_api::serve(listener, api_tx));
        let (dead_tx, mut dead_rx) = oneshot::channel::<String>();
        let device = self.device.clone();
        std::thread::spawn(move || {
            let _ = dead_tx.send(device.wait());
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        let mut endpoint_check = tokio::time::interval(ENDPOINT_CHECK);

        self.restore_from_cache();
        if self.saved.up {
            self.lifecycle.handle(std::time::Instant::now(), Input::Up);
        }
        info!(interface = %self.opts.interface, socket = %socket.display(), "cvlan-agent running");
        let reason = loop {
            self.act();
            self.path_actions();
            let retry = self
                .lifecycle
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let probe_due = self
                .paths
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                Some((from, datagram)) = probes.recv() => {
                    self.paths.handle_input(std::time::Instant::now(), from, &datagram);
                }
                _ = async { tokio::time::sleep_until(probe_due.unwrap_or_else(tokio::time::Instant::now)).await }, if probe_due.is_some() => {
                    self.paths.handle_timeout(std::time::Instant::now());
                }
                Some((relays, home)) = relay_chosen.recv() => self.start_relay(&relays, home),
                Some((generation, event)) = events.recv() => {
                    if generation == self.generation {
                        self.on_control(event);
                    }
                }
                Some((req, reply)) = api_rx.recv() => self.on_request(req, reply),
                _ = async { tokio::time::sleep_until(retry.unwrap_or_else(tokio::time::Instant::now)).await }, if retry.is_some() => {
                    self.lifecycle.handle_timeout(std::time::Instant::now());
                }
                _ = endpoint_check.tick() => self.refresh_endpoints(),
                r = &mut dead_rx => break r.unwrap_or_else(|_| "device stopped".into()),
                _ = term.recv() => break "SIGTERM".to_string(),
                _ = tokio::signal::ctrl_c() => break "SIGINT".to_string(),
            }
        };
        info!(%reason, "cvlan-agent stopping");
        if let Some(c) = self.conn.take() {
            c.task.abort();
        }
        let _ = std::fs::remove_file(socket);
        self.device.stop();
        Ok(())
    }

    /// Carries out the lifecycle's actions and answers waiting `up`s.
    fn act(&mut self) {
        while let Some(action) = self.lifecycle.poll_action() {
            match action {
                Action::Connect => self.connect(),
                Action::Disconnect => {
                    if let Some(c) = self.conn.take() {
                        c.task.abort();
                    }
                    self.generation += 1;
                }
            }
        }
        let reply = match self.lifecycle.phase() {
            Phase::Running => Some(Reply::ok(self.summary())),
            Phase::Disconnected => Some(Reply::error(
                self.lifecycle
                    .last_error()
                    .unwrap_or("disconnected")
                    .to_string(),
            )),
            // The first attempt failed: tell the user now rather than let
            // `up` hang; the daemon keeps trying in the background.
            Phase::Reconnecting => Some(Reply::error(format!(
                "not connected: {} (the daemon keeps retrying; see `cvlan-agent status`)",
                self.lifecycle.last_error().unwrap_or("connection failed")
            ))),
            _ => None,
        };
        if let Some(reply) = reply {
            for w in self.waiting.drain(..) {
                let _ = w.send(reply.clone());
            }
        }
    }

    fn summary(&self) -> String {
        match (&self.mesh.me, self.address) {
            (Some(me), Some((a, len))) => format!(
                "{} is up as {a}/{len}, {} peers\n",
                me.name,
                self.mesh.peers.len()
            ),
            _ => "up\n".into(),
        }
    }

    fn controller_key(&self) -> Option<[u8; 32]> {
        self.saved
            .controller_key
            .as_deref()
            .and_then(|k| hex_key(k).ok())
    }

    fn connect(&mut self) {
        if let Some(c) = self.conn.take() {
            c.task.abort();
        }
        self.generation += 1;
        let (Some(controller), Some(controller_key)) =
            (self.saved.controller.clone(), self.controller_key())
        else {
            self.lifecycle.handle(
                std::time::Instant::now(),
                Input::Refused("no controller configured".into()),
            );
            return;
        };
        self.endpoints = self.local_endpoints();
        let same_network = self.mesh_controller == Some(controller_key);
        let hello = ClientHello {
            protocol_version: PROTOCOL_VERSION,
            node_key: self.node_public.to_vec(),
            hostname: self.saved.hostname.clone().unwrap_or_else(hostname),
            auth_key: self
                .auth_key
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_default(),
            endpoints: self.endpoints.iter().map(|&e| Endpoint::from(e)).collect(),
            map_version: if same_network { self.mesh.version } else { 0 },
            relay_feed: false,
        };
        let tls = self.controller_tls(&controller);
        let params = ConnectParams {
            controller,
            controller_key,
            machine_key: self.machine_key.clone(),
            hello,
            timestamp: self.hello_clock.next(),
            tls,
        };
        let (out_tx, out_rx) = mpsc::channel(8);
        let task = tokio::spawn(control_client::run(
            params,
            self.generation,
            self.events_tx.clone(),
            out_rx,
        ));
        self.conn = Some(Connection {
            task,
            outgoing: out_tx,
        });
    }

    fn on_control(&mut self, event: ControlEvent) {
        let now = std::time::Instant::now();
        match event {
            ControlEvent::Registered(r) => {
                self.auth_key = None; // registered: the key is not needed again
                let controller_key = self.controller_key();
                if self.mesh_controller != controller_key {
                    // Another network: start from an empty map.
                    self.apply_changes(
                        &self
                            .mesh
                            .peers
                            .values()
                            .cloned()
                            .map(Change::Remove)
                            .collect::<Vec<_>>(),
                    );
                    self.mesh = Mesh::default();
                    self.mesh_controller = controller_key;
                }
                self.set_address(&r);
                self.on_relays(&r.relays);
                info!(name = %r.name, node = r.node_id, "registered");
                self.mesh.me = Some(r);
                self.lifecycle.handle(now, Input::Registered);
            }
            ControlEvent::Map(update) => match self.mesh.apply(&update) {
                Ok((changes, invalid)) => {
                    if invalid > 0 {
                        warn!(invalid, "peers with unusable keys or addresses left out");
                    }
                    self.apply_changes(&changes);
                    self.save_cache();
                    self.lifecycle.handle(now, Input::MapApplied);
                }
                Err(e) => {
                    warn!(error = %e, "map out of sequence, asking for a full one");
                    self.mesh.version = 0;
                    self.lifecycle.handle(now, Input::Lost(e.to_string()));
                }
            },
            ControlEvent::Refused(r) => {
                let reason =
                    RefusedReason::try_from(r.reason).unwrap_or(RefusedReason::Unspecified);
                let text = format!(
                    "controller refused: {} ({})",
                    r.message,
                    reason.as_str_name()
                );
                warn!("{text}");
                match reason {
                    RefusedReason::Internal | RefusedReason::Unspecified => {
                        self.lifecycle.handle(now, Input::Lost(text));
                    }
                    RefusedReason::NodeRemoved => {
                        self.forget_network();
                        self.lifecycle.handle(now, Input::Refused(text));
                    }
                    _ => self.lifecycle.handle(now, Input::Refused(text)),
                }
            }
            ControlEvent::Lost(why) => {
                info!(reason = %why, "control connection lost");
                self.lifecycle.handle(now, Input::Lost(why));
            }
        }
    }

    /// Drops every peer and the cached map (the node was removed).
    fn forget_network(&mut self) {
        let removals: Vec<Change> = self
            .mesh
            .peers
            .values()
            .cloned()
            .map(Change::Remove)
            .collect();
        self.apply_changes(&removals);
        self.mesh = Mesh::default();
        self.state.forget_map();
    }

    fn apply_changes(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        for c in changes {
            match c {
                Change::Remove(p) => self.forget_path(&p.node_key),
                Change::Update { old, new } if old.node_key != new.node_key => {
                    self.forget_path(&old.node_key)
                }
                _ => {}
            }
        }
        let (paths, relay) = (&mut self.paths, &self.relay);
        let device_changes = peer_changes_with(changes, |p| {
            let proxy = relay.as_ref().and_then(|r| r.proxy_for(p.node_key).ok());
            paths.set_peer(now, p.node_key, p.endpoints.clone(), proxy)
        });
        if let Err(e) = self.device.configure(&device_changes) {
            warn!(error = %e, "device refused peer configuration");
        }
        for c in changes {
            match c {
                Change::Add(p) => info!(peer = %p.name, address = %p.address, "peer added"),
                Change::Update { new, .. } => info!(peer = %new.name, "peer updated"),
                Change::Remove(p) => info!(peer = %p.name, "peer removed"),
            }
        }
    }

    fn forget_path(&mut self, key: &[u8; 32]) {
        self.paths.remove_peer(key);
        if let Some(r) = &self.relay {
            r.remove_peer(key);
        }
    }

    /// Carries out the path manager's decisions on the device.
    fn path_actions(&mut self) {
        while let Some(t) = self.paths.poll_transmit() {
            if let Err(e) = self.device.send_datagram(t.destination, &t.contents) {
                debug!(to = %t.destination, error = %e, "probe not sent");
            }
        }
        while let Some(event) = self.paths.poll_event() {
            let PathEvent::UseEndpoint { peer, endpoint } = event else {
                continue;
            };
            // Only for a peer the device still has (a `public_key` line
            // would otherwise create it).
            if !self.mesh.peers.values().any(|p| p.node_key == peer) {
                continue;
            }
            if self.device.set_endpoint(&peer, endpoint) {
                info!(peer = %hex::encode(&peer[..4]), %endpoint, "path changed");
            }
        }
    }

    /// The controller named the network's relays: pick the home relay
    /// (lowest STUN round trip) without holding up anything else.
    fn on_relays(&mut self, relays: &[RelayInfo]) {
        if relays == self.relays.as_slice() {
            return;
        }
        self.relays = relays.to_vec();
        if relays.is_empty() {
            self.relay = None;
            return;
        }
        let (relays, tx) = (relays.to_vec(), self.relay_choice.clone());
        tokio::spawn(async move {
            let home = choose_home(&relays).await.unwrap_or(0);
            let _ = tx.send((relays, home)).await;
        });
    }

    fn start_relay(&mut self, relays: &[RelayInfo], home: usize) {
        if relays != self.relays.as_slice() {
            return; // superseded
        }
        let Some(info) = relays.get(home) else { return };
        if self
            .relay
            .as_ref()
            .is_some_and(|r| r.address == info.address)
        {
            return;
        }
        let port = self.device.listen_port().unwrap_or(self.opts.listen_port);
        self.relay = RelayLink::start(
            info,
            self.node_key.clone(),
            port,
            self.opts.relay_tls.clone(),
            self.hello_clock.clone(),
        );
        info!(relay = %info.address, "home relay");
        // Every peer gets its relay path (and starts on it if not direct).
        let peers: Vec<Change> = self.mesh.peers.values().cloned().map(Change::Add).collect();
        self.apply_changes(&peers);
    }

    fn set_address(&mut self, r: &proto_control::messages::Registered) {
        let Some(IpAddr::V4(a)) = ip_from_bytes(&r.address) else {
            warn!("controller gave no IPv4 address");
            return;
        };
        let len = u8::try_from(r.prefix_len).unwrap_or(32).min(32);
        if self.address == Some((a, len)) {
            return;
        }
        let tun = self.device.tun();
        match tun.set_ipv4(a, len).and_then(|()| tun.set_up(true)) {
            Ok(()) => {
                info!(address = %a, prefix_len = len, "overlay address set");
                self.address = Some((a, len));
            }
            Err(e) => warn!(error = %e, "could not set the overlay address"),
        }
    }

    fn save_cache(&self) {
        let cache = CachedMap {
            registered: self.mesh.me.clone(),
            map: Some(self.mesh.as_full_update()),
            controller_key: self.mesh_controller.map(|k| k.to_vec()).unwrap_or_default(),
        };
        if let Err(e) = self.state.save_map(&cache) {
            warn!(error = %e, "could not cache the map");
        }
    }

    /// A restarted node brings its tunnels back from the last map at once,
    /// before (or without) reaching the controller.
    fn restore_from_cache(&mut self) {
        if !self.saved.up {
            return;
        }
        let Some(cache) = self.state.cached_map() else {
            return;
        };
        let (Some(me), Some(map)) = (cache.registered, cache.map) else {
            return;
        };
        if key32(&cache.controller_key) != self.controller_key() {
            return;
        }
        self.mesh_controller = key32(&cache.controller_key);
        self.set_address(&me);
        self.on_relays(&me.relays);
        self.mesh.me = Some(me);
        if let Ok((changes, _)) = self.mesh.apply(&map) {
            info!(
                peers = changes.len(),
                version = map.version,
                "restored the cached map"
            );
            self.apply_changes(&changes);
        }
    }

    /// The TLS configuration for an `https://` controller, built once;
    /// `None` for plain ones (and when it cannot be built: the error is
    /// logged and the connection then says TLS is not configured).
    fn controller_tls(&mut self, url: &str) -> Option<transport::TlsConnector> {
        if !controller_address(url).is_ok_and(|a| a.tls) {
            return None;
        }
        if self.controller_tls.is_none() {
            match transport::connector(self.opts.controller_ca.as_deref()) {
                Ok(c) => self.controller_tls = Some(c),
                Err(e) => warn!(error = %e, "cannot check the controller's TLS certificate"),
            }
        }
        self.controller_tls.clone()
    }

    /// Local addresses and the listening port: the route toward the
    /// controller first, then every other address that is up.
    fn local_endpoints(&self) -> Vec<SocketAddr> {
        let port = self.device.listen_port().unwrap_or(self.opts.listen_port);
        let mut ips: Vec<IpAddr> = Vec::new();
        let controller_ip = self
            .saved
            .controller
            .as_deref()
            .and_then(|c| controller_address(c).ok())
            .and_then(|a| a.host_port.parse::<SocketAddr>().ok());
        if let Some(c) = controller_ip {
            let any: SocketAddr = if c.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            if let Ok(s) = std::net::UdpSocket::bind(any) {
                if s.connect(c).is_ok() {
                    if let Ok(local) = s.local_addr() {
                        if !local.ip().is_loopback() {
                            ips.push(local.ip());
                        }
                    }
                }
            }
        }
        let overlay = self.address;
        for a in netstack::ifaddrs::local_addresses().unwrap_or_default() {
            let in_overlay = match (a.ip, overlay) {
                (IpAddr::V4(ip), Some((net, len))) => {
                    len > 0 && (u32::from(ip) ^ u32::from(net)) >> (32 - u32::from(len)) == 0
                }
                _ => false,
            };
            let link_local = matches!(a.ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
            if a.loopback
                || link_local
                || in_overlay
                || a.interface == self.opts.interface
                || ips.contains(&a.ip)
            {
                continue;
            }
            ips.push(a.ip);
        }
        ips.truncate(proto_control::messages::MAX_ENDPOINTS);
        ips.into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    }

    fn refresh_endpoints(&mut self) {
        if self.lifecycle.phase() != Phase::Running {
            return;
        }
        let now = self.local_endpoints();
        if now != self.endpoints {
            info!(endpoints = ?now, "local addresses changed");
            self.endpoints = now.clone();
            if let Some(c) = &self.conn {
                let body = ClientBody::Endpoints(UpdateEndpoints {
                    endpoints: now.into_iter().map(Endpoint::from).collect(),
                });
                let _ = c.outgoing.try_send(body);
            }
        }
    }

    fn on_request(&mut self, req: Request, reply: oneshot::Sender<Reply>) {
        let answer = match req.command.as_str() {
            "up" => match self.up(&req) {
                Ok(()) => {
                    self.waiting.push(reply);
                    return;
                }
                Err(e) => Reply::error(e),
            },
            "rotate-key" => match self.rotate_key() {
                Ok(()) => {
                    self.waiting.push(reply);
                    return;
                }
                Err(e) => Reply::error(e),
            },
            "down" => self.down(),
            "status" => Reply::ok(self.status()),
            "peers" => Reply::ok(crate::report::peers(
                &self.mesh,
                &self.device.peers(),
                |k| match self.paths.path(k) {
                    Some(Path::Relay) => "relay".to_string(),
                    Some(Path::Direct(_)) => "direct".to_string(),
                    Some(Path::Unproven(_)) => "direct?".to_string(),
                    _ => "-".to_string(),
                },
            )),
            "routes" => Reply::ok(crate::report::routes(
                &self.mesh,
                self.address,
                &self.opts.interface,
            )),
            other => Reply::error(format!("unknown command {other:?}")),
        };
        let _ = reply.send(answer);
    }

    /// A new WireGuard key: stored first (so a crash keeps the new one),
    /// then given to the device, then announced on a fresh connection; the
    /// controller pushes it to every peer in the next delta.
    fn rotate_key(&mut self) -> Result<(), String> {
        if !self.saved.up {
            return Err("the node is down: `cvlan-agent up` first".into());
        }
        let mut fresh = Zeroizing::new([0u8; 32]);
        cvlan_core::seed::fill(&mut fresh[..]).map_err(|e| e.to_string())?;
        self.state.store_node_key(&fresh)?;
        self.device.set_private_key(&fresh);
        self.node_public = *proto_wg::PrivateKey::from_bytes(*fresh)
            .public_key()
            .as_bytes();
        // Probes and the relay prove the node key: both start over with it.
        self.paths = new_path_manager(&fresh, self.node_public)?;
        self.node_key = fresh.clone();
        self.relay = None;
        let relays = std::mem::take(&mut self.relays);
        let peers: Vec<Change> = self.mesh.peers.values().cloned().map(Change::Add).collect();
        self.apply_changes(&peers);
        self.on_relays(&relays);
        info!(public_key = %hex::encode(self.node_public), "node key rotated");
        let now = std::time::Instant::now();
        self.lifecycle.handle(now, Input::Down);
        self.lifecycle.handle(now, Input::Up);
        Ok(())
    }

    fn up(&mut self, req: &Request) -> Result<(), String> {
        let mut next = self.saved.clone();
        let pick = |given: Option<&str>, saved: &Option<String>, default: &Option<String>| {
            given
                .map(str::to_string)
                .or_else(|| saved.clone())
                .or_else(|| default.clone())
        };
        next.controller = pick(
            req.param("controller"),
            &self.saved.controller,
            &self.opts.defaults.controller,
        );
        next.controller_key = pick(
            req.param("controller_key"),
            &self.saved.controller_key,
            &self.opts.defaults.controller_key,
        );
        next.hostname = pick(
            req.param("hostname"),
            &self.saved.hostname,
            &self.opts.defaults.hostname,
        );
        let Some(controller) = &next.controller else {
            return Err(
                "no controller: cvlan-agent up --controller URL --controller-key KEY".into(),
            );
        };
        controller_address(controller)?;
        let Some(key) = &next.controller_key else {
            return Err(
                "no controller key: pass --controller-key (`cvlan-controller key` prints it)"
                    .into(),
            );
        };
        hex_key(key)?;
        if let Some(k) = req.param("auth_key") {
            self.auth_key = Some(Zeroizing::new(k.to_string()));
        }
        let changed = next.controller != self.saved.controller
            || next.controller_key != self.saved.controller_key
            || next.hostname != self.saved.hostname;
        next.up = true;
        self.state.save(&next)?;
        self.saved = next;
        let now = std::time::Instant::now();
        if changed || req.param("auth_key").is_some() {
            // New settings take effect on a fresh connection.
            self.lifecycle.handle(now, Input::Down);
        }
        self.lifecycle.handle(now, Input::Up);
        Ok(())
    }

    fn down(&mut self) -> Reply {
        self.lifecycle
            .handle(std::time::Instant::now(), Input::Down);
        let removals: Vec<Change> = self
            .mesh
            .peers
            .values()
            .cloned()
            .map(Change::Remove)
            .collect();
        self.apply_changes(&removals);
        // Keep the registration and cache: `up` brings the same node back.
        self.mesh.peers.clear();
        self.mesh.version = 0;
        if let Err(e) = self.device.tun().set_up(false) {
            warn!(error = %e, "could not set the interface down");
        }
        self.address = None;
        self.saved.up = false;
        if let Err(e) = self.state.save(&self.saved) {
            return Reply::error(e);
        }
        Reply::ok("down\n")
    }

    fn status(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "state:       {}", self.lifecycle.phase().as_str());
        if let (Some(me), Some((a, len))) = (&self.mesh.me, self.address) {
            let _ = writeln!(
                out,
                "node:        {} (id {}), {a}/{len}",
                me.name, me.node_id
            );
        }
        let _ = writeln!(
            out,
            "controller:  {}",
            self.saved.controller.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            out,
            "interface:   {} (UDP port {})",
            self.opts.interface,
            self.device.listen_port().unwrap_or(0)
        );
        let _ = writeln!(out, "map version: {}", self.mesh.version);
        let _ = writeln!(out, "peers:       {}", self.mesh.peers.len());
        if let Some(e) = self.lifecycle.last_error() {
            let _ = writeln!(out, "last error:  {e}");
        }
        if let Some(at) = self.lifecycle.retry_at() {
            let secs = at
                .saturating_duration_since(std::time::Instant::now())
                .as_secs_f32();
            let _ = writeln!(out, "retry in:    {secs:.1}s");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first probe a path machine made the way the daemon makes one
    /// (same key both times) sends.
    fn first_probe(key: &Zeroizing<[u8; 32]>) -> Vec<u8> {
        let public = *proto_wg::PrivateKey::from_bytes(**key)
            .public_key()
            .as_bytes();
        let mut paths = new_path_manager(key, public).unwrap();
        let peer = *proto_wg::PrivateKey::from_bytes([9; 32])
            .public_key()
            .as_bytes();
        let now = std::time::Instant::now();
        paths.set_peer(now, peer, vec!["192.0.2.1:41641".parse().unwrap()], None);
        paths.handle_timeout(now);
        paths.poll_transmit().expect("no probe sent").contents
    }

    #[test]
    fn probe_nonces_come_from_the_os_not_from_the_key() {
        let key = Zeroizing::new([0x5a; 32]);
        let (a, b) = (first_probe(&key), first_probe(&key));
        let nonce = |p: &[u8]| p[36..48].to_vec();
        // Seeded from the key (or the key and a process id), a restarted
        // node would repeat its nonces under the same probe key.
        assert_ne!(nonce(&a), nonce(&b), "same key, same nonce");
        assert!(
            !nonce(&a).windows(4).any(|w| key.windows(4).any(|k| k == w)),
            "the nonce shows key bytes"
        );
    }
}
