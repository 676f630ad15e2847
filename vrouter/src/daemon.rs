//! Running the gateway: one TUN device per tenant, UDP 500 and 4500 on
//! the listen address, a thread for each input and one for timers. IKE
//! work takes the gateway's write lock; packets take only its read lock,
//! to find their SA, and are sealed and opened outside it under the SA's
//! own lock. Packets move in batches: a TUN read with offloads hands over
//! a whole TSO burst, which leaves as UDP GSO super-datagrams; UDP GRO
//! hands over coalesced ESP datagrams, whose TCP segments go back to the
//! TUN as one GRO packet. A unix socket (0600) answers `status`,
//! `metrics` and `reload` (SIGHUP also reloads).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netstack::raw_esp::RawEsp;
use netstack::route::{Route, Routes};
use netstack::tun::{Tun, TunReader};
use netstack::udp::{RecvBatch, UdpSender};
use proto_esp::udp_encap::{classify, Udp4500};
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::datapath::{InboundPath, OutboundPath, HEADROOM, TAILROOM};
use crate::gateway::{Gateway, Output, IKE_PORT, NAT_T_PORT};

/// Room for ESP-in-UDP around a tenant's packets on a 1500-byte path.
const TUN_MTU: u32 = 1400;
/// One slot of a TUN batch: the largest packet plus the room to seal it.
const SLOT: usize = HEADROOM + 1500 + TAILROOM;
/// Packets per TUN batch: with TSO, one read can become ~48 segments.
const TUN_SLOTS: usize = 160;
/// UDP messages per receive (each up to 64 KiB with GRO).
const UDP_BATCH: usize = 32;
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
                Output::Udp {
                    source,
                    destination,
                    contents,
                } => {
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

    /// Makes the installed routes `wanted`: removes the others, adds the
    /// new ones.
    fn set_routes(&self, wanted: Vec<Route>) -> Result<(), String> {
        let mut installed = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut nl = Routes::open().map_err(|e| format!("rtnetlink: {e}"))?;
        for r in installed.iter().filter(|r| !wanted.contains(r)) {
            match nl.delete(r) {
                Ok(()) => info!(dst = %r.dst, prefix = r.prefix, table = r.table, "route removed"),
                Err(e) => warn!(route = ?r, error = %e, "could not remove route"),
            }
        }
        let mut result = Ok(());
        for r in &wanted {
            match nl.add(r) {
                Ok(()) if !installed.contains(r) => {
                    info!(dst = %r.dst, prefix = r.prefix, table = r.table, ifindex = r.ifindex, "route added")
                }
                Ok(()) => {}
                Err(e) => {
                    result = Err(format!(
                        "route {}/{} table {}: {e}",
                        r.dst, r.prefix, r.table
                    ))
                }
            }
        }
        *installed = wanted;
        result
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
    let mut s = [0u8; 32];
    getrandom::getrandom(&mut s).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(s)
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

/// What a receive gave, if anything: timeouts (our wake-ups) and
/// interruptions are quiet; other errors (ICMP errors surface as
/// ECONNREFUSED, a malformed raw packet as InvalidData) are logged at
/// debug and never fatal.
fn received<T>(what: &str, r: std::io::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) =>
        {
            None
        }
        Err(e) => {
            debug!(error = %e, "{what}");
            None
        }
    }
}

/// Port 500 carries IKE only.
fn ike_loop(io: &Io, sock: &UdpSocket, local: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some((n, from)) = received("UDP receive", sock.recv_from(&mut buf)) {
            let mut gw = io.lock();
            gw.handle_udp(Instant::now(), from, local, &buf[..n]);
            io.flush(&mut gw);
        }
    }
}

/// Port 4500: ESP in batches on the fast path, IKE and keepalives to the
/// gateway.
fn nat_t_loop(io: &Io, local: SocketAddr) {
    let mut batch = RecvBatch::new(UDP_BATCH, 65_536);
    let mut gro_buf = vec![0u8; netstack::offload::VNET_HDR_LEN + 65_536];
    let mut esp: Vec<(usize, Range<usize>, Arc<InboundPath>)> = Vec::new();
    let mut control: Vec<(usize, Range<usize>)> = Vec::new();
    // Opened packets: message, range of the inner packet, tenant.
    let mut opened: Vec<(usize, Range<usize>, usize)> = Vec::new();
    loop {
        let Some(n) = received("UDP receive", batch.recv(&io.s4500)) else {
            continue;
        };
        {
            let gw = io.read();
            for i in 0..n {
                // With UDP GRO one message can hold many datagrams.
                for part in batch.datagrams(i) {
                    let datagram = &batch.get(i)[part.clone()];
                    match classify(datagram) {
                        Udp4500::Esp(_) => {
                            if let Some(path) = gw.inbound_path(datagram) {
                                esp.push((i, part, path));
                            }
                        }
                        Udp4500::Ike(_) => control.push((i, part)),
                        Udp4500::Keepalive | Udp4500::Invalid => {}
                    }
                }
            }
        }
        if !control.is_empty() {
            let now = Instant::now();
            let mut gw = io.lock();
            for (i, part) in control.drain(..) {
                let from = batch.get_mut(i).1;
                gw.handle_udp(now, from, local, &batch.get(i)[part]);
            }
            io.flush(&mut gw);
        }
        for (i, part, path) in esp.drain(..) {
            let datagram = &mut batch.get_mut(i).0[part.clone()];
            if let Some(inner) = path.open(datagram) {
                let at = part.start + inner.start..part.start + inner.end;
                opened.push((i, at, path.tenant));
            }
        }
        // Runs of one tenant go to its TUN in order.
        let mut k = 0;
        while k < opened.len() {
            let tenant = opened[k].2;
            let run = opened[k..].iter().take_while(|o| o.2 == tenant).count();
            let packet = |j: usize| {
                let (i, r, _) = &opened[k + j];
                &batch.get(*i)[r.clone()]
            };
            if let Some(tun) = io.tuns.get(tenant) {
                if let (failed @ 1.., Some(e)) = tun.send_in_order(run, packet, &mut gro_buf) {
                    debug!(failed, error = %e, "TUN write failed");
                }
            }
            k += run;
        }
        opened.clear();
    }
}

/// A tenant's packets: read in batches, sealed in place, sent with GSO.
fn tun_loop(io: &Io, tenant: usize) -> String {
    let tun = &io.tuns[tenant];
    // Zeroed slots are backed lazily by the OS: only touched pages cost.
    let mut bufs: Vec<Vec<u8>> = (0..TUN_SLOTS).map(|_| vec![0u8; SLOT]).collect();
    let mut lens = [0usize; TUN_SLOTS];
    let mut reader = TunReader::default();
    let mut routes: Vec<(usize, Arc<OutboundPath>)> = Vec::with_capacity(TUN_SLOTS);
    // Sealed packets: destination, slot, range in the slot.
    let mut sealed: Vec<(SocketAddr, usize, Range<usize>)> = Vec::with_capacity(TUN_SLOTS);
    let mut sender = UdpSender::new();
    let mut dropped_seen = 0;
    loop {
        let n = match tun.recv_batch(&mut reader, &mut bufs, HEADROOM, &mut lens) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return format!("TUN {}: {e}", tun.name()),
        };
        if reader.dropped > dropped_seen {
            debug!(total = reader.dropped, reason = ?reader.last_drop, "dropped unusable TUN read");
            dropped_seen = reader.dropped;
        }
        {
            let gw = io.read();
            for (i, buf) in bufs.iter().enumerate().take(n) {
                if let Some(path) = gw.route(tenant, &buf[HEADROOM..HEADROOM + lens[i]]) {
                    routes.push((i, path));
                }
            }
        }
        for (i, path) in routes.drain(..) {
            match path.seal(&mut bufs[i], lens[i]) {
                Ok(r) if path.encap => sealed.push((path.peer, i, r)),
                // Raw ESP is the legacy path without NAT: one by one.
                Ok(r) => io.send_raw(path.peer.ip(), &bufs[i][r]),
                Err(e) => debug!(error = %e, "dropped outbound packet"),
            }
        }
        // ESP always goes in UDP from port 4500 (NAT-T is always on).
        let result =
            netstack::udp::send_in_order(&mut sender, &io.s4500, &io.gso, sealed.len(), |k| {
                let (to, i, r) = &sealed[k];
                (*to, &bufs[*i][r.clone()])
            });
        if let Err(e) = result {
            debug!(error = %e, "UDP send failed");
        }
        sealed.clear();
    }
}

/// Raw ESP from peers without NAT (tunnels with `encap = false`).
fn raw_loop(io: &Io, raw: &RawEsp) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Some((_, esp)) = received("raw ESP receive", raw.recv(&mut buf)) else {
            continue;
        };
        let path = io.read().inbound_path(&buf[esp.clone()]);
        let Some(path) = path else { continue };
        let packet = &mut buf[esp.clone()];
        if let Some(inner) = path.open(packet) {
            if let Some(tun) = io.tuns.get(path.tenant) {
                if let Err(e) = tun.send(&packet[inner]) {
                    debug!(error = %e, "TUN write failed");
                }
            }
        }
    }
}

/// The routes the configuration asks for: each tunnel's remote subnets
/// through its tenant's TUN, in the tenant's table.
fn routes_for(settings: &Settings) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    for t in &settings.tunnels {
        let tenant = &settings.tenants[t.tenant];
        let Some(table) = tenant.table else { continue };
        let ifindex = netstack::route::ifindex(&tenant.tun)
            .map_err(|e| format!("tenant {}: TUN {}: {e}", tenant.name, tenant.tun))?;
        for &(dst, prefix) in &t.remote_subnets {
            let r = Route {
                dst: netstack::route::network(dst, prefix),
                prefix,
                ifindex,
                table,
            };
            if !routes.contains(&r) {
                routes.push(r);
            }
        }
    }
    Ok(routes)
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

fn timer_loop(io: &Io) {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let mut gw = io.lock();
        gw.set_unix_time(unix_now());
        let now = Instant::now();
        if gw.poll_timeout().is_some_and(|t| t <= now) {
            gw.handle_timeout(now);
        }
        io.flush(&mut gw);
    }
}

fn status_loop(io: &Io, listener: &UnixListener) {
    for conn in listener.incoming().flatten() {
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let answer = match line.trim().split_once(' ') {
            None if line.trim() == "status" => io.read().status(),
            None if line.trim() == "metrics" => io.read().metrics(),
            None if line.trim() == "reload" => io.reload(),
            Some((verb @ ("up" | "down"), tunnel)) => {
                let mut gw = io.lock();
                let now = Instant::now();
                let result = if verb == "up" {
                    gw.up(now, tunnel)
                } else {
                    gw.down(now, tunnel)
                };
                io.flush(&mut gw);
                result.unwrap_or_else(|e| format!("refused: {e}\n"))
            }
            _ => format!(
                "unknown request {:?} (status, metrics, reload, up TUNNEL or down TUNNEL)\n",
                line.trim()
            ),
        };
        let _ = (&conn).write_all(answer.as_bytes());
    }
}

/// A minimal HTTP server: GET /metrics (Prometheus text) and /health.
fn metrics_loop(io: &Io, listener: &std::net::TcpListener) {
    for conn in listener.incoming().flatten() {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let (status, body) = match line.split_whitespace().nth(1) {
            Some("/metrics") => ("200 OK", io.read().metrics()),
            Some("/health") => ("200 OK", "ok\n".to_string()),
            _ => ("404 Not Found", "not found\n".to_string()),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = (&conn).write_all(reply.as_bytes());
    }
}

/// Runs the vrouter until SIGTERM/SIGINT.
pub fn run(config: &Path) -> Result<(), String> {
    let settings = Settings::load(config)?;
    let tuns = open_tuns(&settings)?;
    let listen = settings.listen;
    let socket = settings.status_socket.clone();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("status socket {}: {e}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
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
            Box::new(move || status_loop(&io, &listener)),
        )?;
    }
    if let Some(listener) = metrics {
        let io = io.clone();
        spawn(
            "metrics".into(),
            Box::new(move || metrics_loop(&io, &listener)),
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
