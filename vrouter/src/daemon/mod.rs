//! Running the gateway: one TUN device per tenant, UDP 500 and 4500 on
//! the listen address, a thread for each input and one for timers. IKE
//! work takes the gateway's write lock; packets take only its read lock,
//! to find their SA, and are sealed and opened outside it under the SA's
//! own lock. Packets move in batches: a TUN read with offloads hands over
//! a whole TSO burst, which leaves as UDP GSO super-datagrams; UDP GRO
//! hands over coalesced ESP datagrams, whose TCP segments go back to the
//! TUN as one GRO packet. A unix socket (0600) answers `status`,
//! `metrics` and `reload` (SIGHUP also reloads).

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netstack::raw_esp::RawEsp;
use netstack::route::Route;
use netstack::tun::Tun;
use tracing::{debug, info, warn};

mod control;
mod packets;
mod routes;

use control::{metrics_loop, status_loop, timer_loop};
use packets::{ike_loop, nat_t_loop, raw_loop, tun_loop};
use routes::routes_for;

use crate::config::Settings;
use crate::gateway::{Gateway, Output, IKE_PORT, NAT_T_PORT};
use proto_ikev2::Transmit;

/// Room for ESP-in-UDP around a tenant's packets on a 1500-byte path.
const TUN_MTU: u32 = 1400;
/// Socket buffers that absorb bursts at line rate.
const SOCKET_BUFFER: usize = 4 << 20;

struct Io {
    gateway: RwLock<Gateway>,
    /// The routes we installed (the tunnels' remote subnets into their
    /// tenants' TUN devices), to update on reload and remove at exit.
    routes: std::sync::Mutex<Vec<Route>>,
    config: std::path::PathBuf,
    s500: UdpSocket,
    s4500: UdpSocket,
    tuns: Vec<Tun>,
    /// Whether UDP GSO still works on port 4500's socket and route.
    gso: AtomicBool,
    /// Raw ESP, when a tunnel has `encap = false`.
    raw: Option<RawEsp>,
}

impl Io {
    /// For IKE, timers, reloads: everything but packets.
    fn lock(&self) -> RwLockWriteGuard<'_, Gateway> {
        // A panic under the lock is a bug, but the gateway is consistent
        // between calls: keep serving rather than die.
        self.gateway.write().unwrap_or_else(|p| p.into_inner())
    }

    /// For packets: finding their SA.
    fn read(&self) -> RwLockReadGuard<'_, Gateway> {
        self.gateway.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the configuration file; a bad file changes nothing.
    fn reload(&self) -> String {
        let settings = match Settings::load(&self.config) {
            Ok(s) if self.raw.is_none() && s.tunnels.iter().any(|t| !t.ike.force_encap) => {
                let e = "encap = false needs the raw ESP socket: restart the vrouter to apply";
                warn!(error = %e, "reload refused");
                return format!("reload refused: {e}\n");
            }
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "reload refused");
                return format!("reload refused: {e}\n");
            }
        };
        let wanted = routes_for(&settings);
        let mut gw = self.lock();
        let out = gw.reload(Instant::now(), settings);
        self.flush(&mut gw);
        match out {
            Ok(report) => match wanted.and_then(|w| self.set_routes(w)) {
                Ok(()) => report,
                Err(e) => {
                    warn!(error = %e, "routes not updated");
                    format!("{report}routes not updated: {e}\n")
                }
            },
            Err(e) => {
                warn!(error = %e, "reload refused");
                format!("reload refused: {e}\n")
            }
        }
    }

    /// Carries out everything the gateway wants sent.
    fn flush(&self, gw: &mut Gateway) {
        while let Some(o) = gw.poll_output() {
            match o {
                Output::Udp(Transmit {
                    source,
                    destination,
                    contents,
                    ..
                }) => {
                    let sock = if source.port() == NAT_T_PORT {
                        &self.s4500
                    } else {
                        &self.s500
                    };
                    if let Err(e) = sock.send_to(&contents, destination) {
                        warn!(%destination, error = %e, "send failed");
                    }
                }
                Output::Tun { tenant, packet } => {
                    if let Some(t) = self.tuns.get(tenant) {
                        let _ = t.send(&packet);
                    }
                }
                Output::Esp {
                    destination,
                    contents,
                } => self.send_raw(destination, &contents),
            }
        }
    }

    /// Sends a raw ESP packet, if this vrouter serves raw ESP.
    fn send_raw(&self, destination: IpAddr, esp: &[u8]) {
        let (Some(raw), IpAddr::V4(to)) = (&self.raw, destination) else {
            return;
        };
        if let Err(e) = raw.send(to, esp) {
            debug!(%destination, error = %e, "raw ESP send failed");
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn seed() -> Result<[u8; 32], String> {
    cvlan_core::os_seed().map_err(|e| e.to_string())
}

fn bind(addr: IpAddr, port: u16) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind((addr, port)).map_err(|e| format!("bind {addr}:{port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    if let Err(e) = netstack::sockopt::set_buffer_sizes(&s, SOCKET_BUFFER) {
        debug!(error = %e, "could not enlarge socket buffers");
    }
    if port == NAT_T_PORT {
        if let Err(e) = netstack::udp::enable_gro(&s) {
            debug!(error = %e, "UDP GRO unavailable");
        }
    }
    Ok(s)
}

fn open_tuns(settings: &Settings) -> Result<Vec<Tun>, String> {
    settings
        .tenants
        .iter()
        .map(|t| {
            let err = |e: std::io::Error| format!("tenant {}: TUN {}: {e}", t.name, t.tun);
            let tun = Tun::create(&t.tun).map_err(err)?;
            tun.set_mtu(TUN_MTU).map_err(err)?;
            if let Some((IpAddr::V4(a), len)) = t.address {
                tun.set_ipv4(a, len).map_err(err)?;
            }
            tun.set_up(true).map_err(err)?;
            Ok(tun)
        })
        .collect()
}

/// Opens the raw ESP socket if some tunnel wants raw ESP.
fn open_raw(settings: &Settings) -> Result<Option<RawEsp>, String> {
    if settings.tunnels.iter().all(|t| t.ike.force_encap) {
        return Ok(None);
    }
    let IpAddr::V4(listen) = settings.listen else {
        return Err("encap = false (raw ESP) needs an IPv4 listen address".into());
    };
    let raw = RawEsp::bind(listen).map_err(|e| {
        format!("raw ESP socket on {listen}: {e} (needs CAP_NET_RAW; or set encap = true)")
    })?;
    raw.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    Ok(Some(raw))
}

/// Runs the vrouter until SIGTERM/SIGINT.
pub fn run(config: &Path) -> Result<(), String> {
    let settings = Settings::load(config)?;
    let tuns = open_tuns(&settings)?;
    let listen = settings.listen;
    let socket = settings.status_socket.clone();
    // 0600 from the start: it takes tunnels down and reloads.
    let listener = cvlan_core::local_socket::bind_private(&socket)
        .map_err(|e| format!("status socket {}: {e}", socket.display()))?;
    let metrics = settings
        .metrics
        .map(|a| std::net::TcpListener::bind(a).map_err(|e| format!("metrics {a}: {e}")))
        .transpose()?;
    let raw = open_raw(&settings)?;
    let routes = routes_for(&settings)?;
    let mut gateway = Gateway::new(settings, seed()?);
    gateway.set_unix_time(unix_now());
    let io = Arc::new(Io {
        gateway: RwLock::new(gateway),
        config: config.to_path_buf(),
        s500: bind(listen, IKE_PORT)?,
        s4500: bind(listen, NAT_T_PORT)?,
        tuns,
        gso: AtomicBool::new(true),
        raw,
        routes: std::sync::Mutex::new(Vec::new()),
    });
    io.set_routes(routes)?;
    info!(%listen, tunnels = io.lock().settings().tunnels.len(), "cvlan-vrouter up");
    {
        let mut gw = io.lock();
        gw.start(Instant::now());
        io.flush(&mut gw);
    }
    let (stop_tx, stop_rx) = mpsc::channel::<String>();
    let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(|e| e.to_string())
    };
    {
        let io = io.clone();
        spawn(
            "udp500".into(),
            Box::new(move || ike_loop(&io, &io.s500, SocketAddr::new(listen, IKE_PORT))),
        )?;
    }
    {
        let io = io.clone();
        spawn(
            "udp4500".into(),
            Box::new(move || nat_t_loop(&io, SocketAddr::new(listen, NAT_T_PORT))),
        )?;
    }
    for tenant in 0..io.tuns.len() {
        let (io, tx) = (io.clone(), stop_tx.clone());
        spawn(
            format!("tun{tenant}"),
            Box::new(move || {
                let _ = tx.send(tun_loop(&io, tenant));
            }),
        )?;
    }
    if io.raw.is_some() {
        let io = io.clone();
        spawn(
            "raw-esp".into(),
            Box::new(move || {
                if let Some(raw) = &io.raw {
                    raw_loop(&io, raw);
                }
            }),
        )?;
    }
    {
        let io = io.clone();
        spawn("timers".into(), Box::new(move || timer_loop(&io)))?;
    }
    {
        let io = io.clone();
        spawn(
            "status".into(),
            Box::new(move || status_loop(io, &listener)),
        )?;
    }
    if let Some(listener) = metrics {
        let io = io.clone();
        spawn(
            "metrics".into(),
            Box::new(move || metrics_loop(io, &listener)),
        )?;
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| e.to_string())?;
    {
        let io = io.clone();
        spawn(
            "signals".into(),
            Box::new(move || {
                for sig in signals.forever() {
                    if sig == signal_hook::consts::SIGHUP {
                        io.reload();
                    } else {
                        let _ = stop_tx.send(format!("signal {sig}"));
                        return;
                    }
                }
            }),
        )?;
    }
    let reason = stop_rx
        .recv()
        .unwrap_or_else(|_| "all threads ended".into());
    info!(%reason, "shutting down");
    if let Err(e) = io.set_routes(Vec::new()) {
        warn!(error = %e, "routes left behind");
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Asks a running vrouter over its status socket.
pub fn ask(socket: &Path, what: &str) -> Result<String, String> {
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("no vrouter at {}: {e}", socket.display()))?;
    conn.write_all(format!("{what}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut conn, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}
