//! `cvlan-agent daemon`: the node. It owns the WireGuard device (wg-device,
//! with the UAPI socket so `wg show` works), the connection to the
//! controller, and the lifecycle state machine, and it answers the CLI.
//!
//! One tokio task runs the loop (this file); the device runs on its own
//! threads and is configured through its typed API. A file per concern:
//! `control.rs` (the controller connection), `network.rs` (the map onto
//! the device and the cache), `paths.rs` (probes, the relay, endpoints),
//! `api.rs` (the local API's commands).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto_control::messages::{ClientBody, RelayInfo};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::info;
use zeroize::Zeroizing;

use crate::control_client::ControlEvent;
use crate::lifecycle::{Action, Input, Lifecycle, Phase};
use crate::local_api::{self, Reply};
use crate::mesh::Mesh;
use crate::reflexive::Reflexive;
use crate::relay_path::RelayLink;
use crate::settings::{HelloClock, Saved, StateDir};
use proto_path::PathManager;
use wg_device::DeviceHandle;

mod api;
mod control;
mod debug_ping;
mod network;
mod paths;
mod port_mapping;

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
    /// STUN servers asked besides the relays' (two at different addresses
    /// tell a symmetric NAT from a cone).
    pub stun_servers: Vec<SocketAddr>,
    /// Ask the gateway for a port mapping (PCP, NAT-PMP).
    pub port_mapping: bool,
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

/// How often local addresses are re-read besides the kernel's
/// notifications (a changed address is reported).
const ENDPOINT_CHECK: Duration = Duration::from_secs(30);

/// What the relays' task found: the relays, the home one's index, and
/// their STUN servers' addresses.
type RelayChoice = (Vec<RelayInfo>, usize, Vec<SocketAddr>);

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
    /// What we last reported: `local` and the reflexive addresses.
    endpoints: Vec<SocketAddr>,
    /// Our local addresses (with the listening port) last read.
    local: Vec<SocketAddr>,
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
    relay_choice: mpsc::Sender<RelayChoice>,
    /// Our reflexive addresses, from STUN on the WireGuard socket.
    reflexive: Reflexive,
    /// The relays' STUN servers (with `opts.stun_servers`, what is asked).
    relay_stun: Vec<SocketAddr>,
    /// `debug ping`s under way.
    debug_pings: Vec<debug_ping::DebugPing>,
    /// The NAT kind last reported (proto-control's NatKind).
    reported_nat: i32,
    /// The port mapping asked of the gateway, when there is one.
    portmap: Option<proto_path::portmap::PortMapper>,
    /// UPnP, for a gateway that speaks neither PCP nor NAT-PMP.
    upnp: port_mapping::Upnp,
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
    let (upnp_tx, upnp_rx) = mpsc::channel(2);
    let jitter_seed = u64::from_le_bytes(os_seed()?[..8].try_into().unwrap_or_default());
    let paths = new_path_manager(&node_key, node_public)?;
    let listen_port = device.listen_port().unwrap_or(opts.listen_port);
    let mut reflexive = Reflexive::new(std::time::Instant::now(), listen_port);
    reflexive.set_servers(std::time::Instant::now(), opts.stun_servers.clone());
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
        local: Vec::new(),
        generation: 0,
        conn: None,
        events_tx,
        waiting: Vec::new(),
        paths,
        node_key,
        relay: None,
        relays: Vec::new(),
        relay_choice,
        reflexive,
        relay_stun: Vec::new(),
        debug_pings: Vec::new(),
        reported_nat: 0,
        portmap: None,
        upnp: port_mapping::Upnp::new(upnp_tx),
    };
    runtime.block_on(daemon.run(events_rx, probes_async_rx, relay_chosen, upnp_rx))
}

/// A STUN transaction id: 96 bits from the OS.
fn transaction_id() -> Option<[u8; 12]> {
    let mut id = [0u8; 12];
    cvlan_core::seed::fill(&mut id).ok().map(|()| id)
}

/// Wakes the loop whenever the kernel reports an address or link change
/// (rtnetlink), so a readdressed host reports its endpoints at once.
fn watch_addresses() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    match netstack::addr_watch::AddressWatch::open() {
        Ok(mut watch) => {
            let _ = std::thread::Builder::new()
                .name("addresses".into())
                .spawn(move || {
                    while watch.wait().is_ok() {
                        // Several changes at once need one look.
                        let _ = tx.try_send(());
                        if tx.is_closed() {
                            return;
                        }
                    }
                });
        }
        Err(e) => tracing::warn!(error = %e, "no address notifications: polling only"),
    }
    rx
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
        mut relay_chosen: mpsc::Receiver<RelayChoice>,
        mut upnp_done: mpsc::Receiver<port_mapping::UpnpResult>,
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
        let mut address_changes = watch_addresses();

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
            let probe_due = [
                self.paths.poll_timeout(),
                self.reflexive.poll_timeout(),
                self.debug_ping_due(),
                self.portmap.as_ref().and_then(|m| m.poll_timeout()),
                self.upnp.next,
            ]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
            tokio::select! {
                Some((from, datagram)) = probes.recv() => self.on_datagram(from, &datagram),
                _ = async { tokio::time::sleep_until(probe_due.unwrap_or_else(tokio::time::Instant::now)).await }, if probe_due.is_some() => {
                    let now = std::time::Instant::now();
                    self.paths.handle_timeout(now);
                    self.reflexive.handle_timeout(now, &mut transaction_id);
                    self.debug_ping_tick(now);
                    self.port_mapping_tick(now);
                    self.reassert_direct_paths();
                }
                Some(()) = address_changes.recv() => self.refresh_endpoints(),
                Some((relays, home, stun)) = relay_chosen.recv() => self.start_relay(&relays, home, stun),
                Some(result) = upnp_done.recv() => self.on_upnp(result),
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
        self.release_port_mapping();
        if let Some(m) = self.upnp.mapping.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), crate::upnp::unmap(&m)).await;
        }
        if let Some(c) = self.conn.take() {
            c.task.abort();
        }
        let _ = std::fs::remove_file(socket);
        self.device.stop();
        Ok(())
    }

    /// Carries out the lifecycle's actions and answers waiting `up`s.
    pub(super) fn act(&mut self) {
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

    pub(super) fn summary(&self) -> String {
        match (&self.mesh.me, self.address) {
            (Some(me), Some((a, len))) => format!(
                "{} is up as {a}/{len}, {} peers\n",
                me.name,
                self.mesh.peers.len()
            ),
            _ => "up\n".into(),
        }
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
