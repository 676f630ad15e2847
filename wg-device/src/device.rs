//! `cvlan-wg`'s runtime: one [`Device`] state machine driven by a TUN
//! interface, a UDP socket and the UAPI socket, the way wireguard-go runs.
//!
//! Threads: TUN reader (encapsulate, send), UDP reader (decapsulate, write
//! TUN), timers, and the UAPI listener. The device sits behind one mutex;
//! each thread holds it only for the state machine call and sends after
//! releasing it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netstack::udp::{RecvBatch, UdpSender};
use netstack::Tun;
use proto_wg::{
    ConsumedInitiation, Device, Event, Incoming, InitiationJob, OpenJob, PeerInfo, Prepared,
    Received, SealJob, Transmit, DATA_HEADER_LEN,
};
use tracing::{debug, info, warn};

use crate::config::{self, ConfigError, PeerChange};
use crate::uapi::{self, Sockets, UapiError};

/// Largest IP packet a TUN read returns, plus room for header, padding, tag.
const BUF_LEN: usize = DATA_HEADER_LEN + 65_535 + TAIL_ROOM;
/// Room behind a packet for padding (< 16) and the tag (16).
const TAIL_ROOM: usize = 64;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams moved per syscall and per lock acquisition.
const BATCH: usize = 32;
/// Packets per TUN batch: with TSO, a single read can become 48 segments.
const TUN_SLOTS: usize = 160;
/// Socket buffers large enough to absorb bursts at line rate.
const SOCKET_BUFFER: usize = 4 << 20;
/// How often blocking reads wake up to notice shutdown or a rebind.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// More handshake messages than this per second switch on cookie replies.
const UNDER_LOAD_HANDSHAKES_PER_SEC: u32 = 1000;
/// Longest UAPI line we accept (keys are 64 hex digits; this is generous).
const MAX_UAPI_LINE: usize = 4096;
const DEFAULT_MTU: u32 = 1420;

#[derive(Debug, Clone)]
pub struct Options {
    pub ifname: String,
    pub socket_dir: PathBuf,
    /// Where datagrams on the WireGuard socket that are not WireGuard go
    /// (`proto_wg::wire::is_wireguard`): the agent's path probes, which
    /// share the socket so they share its NAT mapping, and STUN next. The
    /// device does not know their formats. Without a sink they go to the
    /// device, which drops and counts them like any malformed datagram.
    pub other_datagrams: Option<mpsc::SyncSender<(SocketAddr, Vec<u8>)>>,
}

struct Shared {
    device: Mutex<Device>,
    tun: Tun,
    udp: RwLock<Arc<UdpSocket>>,
    fwmark: AtomicU32,
    handshakes_this_second: AtomicU32,
    /// Whether UDP GSO still works on this socket and route.
    gso: AtomicBool,
    shutdown: AtomicBool,
    other_datagrams: Option<mpsc::SyncSender<(SocketAddr, Vec<u8>)>>,
}

impl Shared {
    fn device(&self) -> MutexGuard<'_, Device> {
        // A panic while holding the lock is a bug, but the state machine is
        // still consistent between calls: keep serving rather than die.
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn socket(&self) -> Arc<UdpSocket> {
        self.udp.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends sealed packets `bufs[i][..len]` to `to`, in order, with
    /// UDP GSO where runs allow and the kernel accepts it.
    fn send_sealed(&self, sender: &mut UdpSender, bufs: &[Vec<u8>], sealed: &[Sealed]) {
        let was_on = self.gso.load(Ordering::Relaxed);
        let result =
            netstack::udp::send_in_order(sender, &self.socket(), &self.gso, sealed.len(), |k| {
                let (to, i, len) = sealed[k];
                (to, &bufs[i][..len])
            });
        if was_on && !self.gso.load(Ordering::Relaxed) {
            info!("UDP GSO unavailable, sending datagrams one by one");
        }
        if let Err(e) = result {
            debug!(error = %e, "udp send failed");
        }
    }

    fn send_many<'a>(
        &self,
        sender: &mut UdpSender,
        sock: &UdpSocket,
        datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
    ) {
        if let Err(e) = sender.send_many(sock, datagrams) {
            debug!(error = %e, "udp send failed");
        }
    }

    /// Sends handshake messages and keepalives the device queued.
    fn send_all(&self, sender: &mut UdpSender, transmits: &mut Vec<Transmit>) {
        if !transmits.is_empty() {
            self.send_many(
                sender,
                &self.socket(),
                transmits
                    .iter()
                    .map(|t| (t.destination, t.contents.as_slice())),
            );
            transmits.clear();
        }
    }
}

/// A sealed packet waiting to be sent: destination, buffer index, length.
type Sealed = (SocketAddr, usize, usize);

/// Takes what the device produced while the lock is held.
fn drain(device: &mut Device, out: &mut Vec<Transmit>) {
    while let Some(t) = device.poll_transmit() {
        out.push(t);
    }
    while let Some(e) = device.poll_event() {
        match e {
            Event::HandshakeCompleted { peer, initiator } => {
                info!(?peer, initiator, "handshake completed")
            }
            Event::HandshakeGaveUp { peer } => info!(?peer, "handshake gave up after 90 s"),
            Event::KeysZeroed { peer } => debug!(?peer, "keys zeroed"),
            Event::EndpointChanged { peer, endpoint } => {
                debug!(?peer, %endpoint, "endpoint changed")
            }
            other => debug!(?other, "event"),
        }
    }
}

fn bind_udp(port: u16, mark: u32) -> io::Result<UdpSocket> {
    // One dual-stack socket carries IPv4 (as mapped addresses) and IPv6.
    let sock = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
        .or_else(|_| UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))))?;
    sock.set_read_timeout(Some(POLL_INTERVAL))?;
    if let Err(e) = netstack::sockopt::set_buffer_sizes(&sock, SOCKET_BUFFER) {
        debug!(error = %e, "could not enlarge socket buffers");
    }
    if mark != 0 {
        netstack::sockopt::set_mark(&sock, mark)?;
    }
    if let Err(e) = netstack::udp::enable_gro(&sock) {
        debug!(error = %e, "UDP GRO unavailable");
    }
    Ok(sock)
}

/// The UAPI's view of the socket settings.
struct SocketControl<'a>(&'a Shared);

impl Sockets for SocketControl<'_> {
    fn listen_port(&self) -> Option<u16> {
        self.0.socket().local_addr().ok().map(|a| a.port())
    }

    fn set_listen_port(&mut self, port: u16) -> Result<(), UapiError> {
        if port != 0 && self.listen_port() == Some(port) {
            return Ok(());
        }
        let sock = bind_udp(port, self.fwmark()).map_err(|_| UapiError::PortInUse(port))?;
        *self.0.udp.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(sock);
        Ok(())
    }

    fn fwmark(&self) -> u32 {
        self.0.fwmark.load(Ordering::Relaxed)
    }

    fn set_fwmark(&mut self, mark: u32) -> Result<(), UapiError> {
        netstack::sockopt::set_mark(&*self.0.socket(), mark).map_err(|_| UapiError::Io)?;
        self.0.fwmark.store(mark, Ordering::Relaxed);
        Ok(())
    }
}

fn tun_loop(shared: &Shared) -> io::Result<()> {
    // Slots are allocated zeroed and lazily backed by the OS: only the pages
    // a packet touches cost memory.
    let mut bufs: Vec<Vec<u8>> = (0..TUN_SLOTS).map(|_| vec![0u8; BUF_LEN]).collect();
    let mut lens = [0usize; TUN_SLOTS];
    let mut sealed: Vec<Sealed> = Vec::with_capacity(TUN_SLOTS);
    let mut jobs: Vec<(usize, SealJob)> = Vec::with_capacity(TUN_SLOTS);
    let mut reader = netstack::tun::TunReader::default();
    let mut tun_drops_seen = 0;
    let mut sender = UdpSender::new();
    let mut pending = Vec::new();
    loop {
        let n = match shared
            .tun
            .recv_batch(&mut reader, &mut bufs, DATA_HEADER_LEN, &mut lens)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if reader.dropped > tun_drops_seen {
            debug!(total = reader.dropped, reason = ?reader.last_drop, "dropped unusable tun read");
            tun_drops_seen = reader.dropped;
        }
        let now = Instant::now();
        // Bookkeeping under the lock; the AEAD after releasing it, so the
        // receive thread can decrypt on the other core meanwhile.
        {
            let mut device = shared.device();
            for (i, buf) in bufs.iter().enumerate().take(n) {
                match device.prepare_send(now, &buf[DATA_HEADER_LEN..DATA_HEADER_LEN + lens[i]]) {
                    Ok(Prepared::Seal(job)) => jobs.push((i, job)),
                    Ok(Prepared::Queued) => {}
                    Err(e) => debug!(error = %e, "dropped outbound packet"),
                }
            }
            drain(&mut device, &mut pending);
        }
        for (i, job) in jobs.drain(..) {
            match job.seal(&mut bufs[i], lens[i]) {
                Ok(len) => {
                    sealed.push((job.to, i, len));
                    if let Some(also) = job.also_to {
                        sealed.push((also, i, len));
                    }
                }
                Err(e) => debug!(error = %e, "dropped outbound packet"),
            }
        }
        shared.send_sealed(&mut sender, &bufs, &sealed);
        sealed.clear();
        shared.send_all(&mut sender, &mut pending);
    }
}

fn udp_loop(shared: &Shared) -> io::Result<()> {
    let mut batch = RecvBatch::new(BATCH, MAX_DATAGRAM);
    let mut gro_buf = vec![0u8; netstack::offload::VNET_HDR_LEN + 65_536];
    let mut opened: Vec<(usize, Range<usize>)> = Vec::with_capacity(BATCH);
    let mut jobs: Vec<(usize, Range<usize>, OpenJob)> = Vec::with_capacity(BATCH);
    let mut results: Vec<Result<usize, proto_wg::RecvError>> = Vec::with_capacity(BATCH);
    // Handshake initiations read outside the lock, then answered under it.
    let mut initiations: Vec<(SocketAddr, InitiationJob)> = Vec::new();
    let mut consumed: Vec<(SocketAddr, Result<ConsumedInitiation, proto_wg::RecvError>)> =
        Vec::new();
    let mut sender = UdpSender::new();
    let mut pending = Vec::new();
    let mut window_start = Instant::now();
    loop {
        if shared.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        let sock = shared.socket();
        let n = match batch.recv(&sock) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // ICMP errors surface here as ECONNREFUSED etc.: not fatal.
                debug!(error = %e, "udp receive error");
                continue;
            }
        };
        let now = Instant::now();
        // Pass 1, under the lock: handshakes, session lookup, replay pre-check.
        {
            let mut device = shared.device();
            for i in 0..n {
                // With UDP GRO one message can hold many datagrams.
                for part in batch.datagrams(i) {
                    let (message, from) = batch.get_mut(i);
                    let datagram = &message[part.clone()];
                    if let Some(sink) = &shared.other_datagrams {
                        if !proto_wg::wire::is_wireguard(datagram) {
                            // Bounded: a flood is dropped, not queued.
                            let _ = sink.try_send((from, datagram.to_vec()));
                            continue;
                        }
                    }
                    device.set_under_load(count_handshake(
                        shared,
                        datagram,
                        now,
                        &mut window_start,
                    ));
                    match device.prepare_datagram(now, from, datagram) {
                        Ok(Incoming::Open(job)) => jobs.push((i, part, job)),
                        Ok(Incoming::Initiation(job)) => initiations.push((from, job)),
                        Ok(Incoming::Done(_)) => {}
                        Err(e) => debug!(%from, error = %e, "dropped datagram"),
                    }
                }
            }
            drain(&mut device, &mut pending);
        }
        // Pass 2, lock released: the AEAD and the initiations' DH, while
        // the TUN thread may seal.
        results.clear();
        for (i, part, job) in &jobs {
            results.push(job.open(&mut batch.get_mut(*i).0[part.clone()]));
        }
        consumed.extend(
            initiations
                .drain(..)
                .map(|(from, job)| (from, job.consume())),
        );
        // Pass 3, under the lock: replay window, timers, roaming, source check.
        {
            let mut device = shared.device();
            for (from, c) in consumed.drain(..) {
                if let Err(e) = device.finish_initiation(now, from, c) {
                    debug!(%from, error = %e, "dropped initiation");
                }
            }
            for ((i, part, job), result) in jobs.drain(..).zip(results.drain(..)) {
                let (message, from) = batch.get_mut(i);
                match device.finish_datagram(now, from, &job, &message[part.clone()], result) {
                    Ok(Received::Packet { range, .. }) => {
                        opened.push((i, part.start + range.start..part.start + range.end))
                    }
                    Ok(_) => {}
                    Err(e) => debug!(%from, error = %e, "dropped datagram"),
                }
            }
            drain(&mut device, &mut pending);
        }
        write_to_tun(shared, &batch, &opened, &mut gro_buf);
        opened.clear();
        shared.send_all(&mut sender, &mut pending);
    }
}

/// Writes the opened packets to the TUN in order (TCP runs coalesced
/// into GRO super-packets when the TUN has offloads).
fn write_to_tun(
    shared: &Shared,
    batch: &RecvBatch,
    opened: &[(usize, Range<usize>)],
    gro_buf: &mut [u8],
) {
    let packet = |k: usize| {
        let (i, r) = &opened[k];
        &batch.get(*i)[r.clone()]
    };
    if let (failed @ 1.., Some(e)) = shared.tun.send_in_order(opened.len(), packet, gro_buf) {
        debug!(failed, error = %e, "tun write failed");
    }
}

/// Counts handshake messages per second; true while the rate is high
/// enough that responders should demand cookies.
fn count_handshake(
    shared: &Shared,
    datagram: &[u8],
    now: Instant,
    window_start: &mut Instant,
) -> bool {
    let is_handshake = matches!(datagram.first(), Some(1 | 2));
    if now.duration_since(*window_start) >= Duration::from_secs(1) {
        *window_start = now;
        let last = shared.handshakes_this_second.swap(0, Ordering::Relaxed);
        return last > UNDER_LOAD_HANDSHAKES_PER_SEC;
    }
    let count = if is_handshake {
        shared
            .handshakes_this_second
            .fetch_add(1, Ordering::Relaxed)
            + 1
    } else {
        shared.handshakes_this_second.load(Ordering::Relaxed)
    };
    count > UNDER_LOAD_HANDSHAKES_PER_SEC
}

fn timer_loop(shared: &Shared) {
    let mut pending = Vec::new();
    let mut sender = UdpSender::new();
    let mut last_mtu_check = Instant::now();
    while !shared.shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        let next = {
            let mut device = shared.device();
            device.handle_timeout(now);
            drain(&mut device, &mut pending);
            device.poll_timeout()
        };
        shared.send_all(&mut sender, &mut pending);
        if now.duration_since(last_mtu_check) >= Duration::from_secs(1) {
            last_mtu_check = now;
            if let Ok(mtu) = shared.tun.mtu() {
                shared.device().set_mtu(mtu as usize);
            }
        }
        let wait = next.map_or(POLL_INTERVAL, |t| {
            t.saturating_duration_since(Instant::now())
        });
        // Bounded so that deadlines set by the other threads are noticed.
        std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(100)));
    }
}

fn uapi_loop(shared: &Shared, listener: &UnixListener) {
    for conn in listener.incoming() {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        match conn {
            Ok(stream) => {
                if let Err(e) = serve_uapi(shared, stream) {
                    debug!(error = %e, "uapi connection ended");
                }
            }
            Err(e) => warn!(error = %e, "uapi accept failed"),
        }
    }
}

fn read_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<bool> {
    line.clear();
    let n = io::Read::take(&mut *reader, MAX_UAPI_LINE as u64 + 1).read_line(line)?;
    if n > MAX_UAPI_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "uapi line too long",
        ));
    }
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(n > 0)
}

fn serve_uapi(shared: &Shared, stream: UnixStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    while read_line(&mut reader, &mut line)? {
        match line.as_str() {
            "get=1" => {
                // The request ends with a blank line.
                while read_line(&mut reader, &mut line)? && !line.is_empty() {}
                let text = uapi::get(&shared.device(), &SocketControl(shared));
                writer.write_all(text.as_bytes())?;
                writer.write_all(b"errno=0\n\n")?;
            }
            "set=1" => {
                let mut body = Vec::new();
                while read_line(&mut reader, &mut line)? && !line.is_empty() {
                    body.push(line.clone());
                }
                let result = apply_set(shared, body.iter().map(String::as_str));
                let errno = match result {
                    Ok(()) => 0,
                    Err(e) => {
                        warn!(error = %e, "uapi set rejected");
                        e.errno()
                    }
                };
                writeln!(writer, "errno={errno}\n")?;
            }
            "" => {}
            _ => {
                writeln!(writer, "errno={}\n", UapiError::Protocol.errno())?;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Applies a UAPI `set=1` body and sends what the change produced (a
/// handshake for a peer with an endpoint, for instance).
fn apply_set<'a>(
    shared: &Shared,
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<(), UapiError> {
    let mut pending = Vec::new();
    let mut device = shared.device();
    let r = uapi::set(
        &mut device,
        &mut SocketControl(shared),
        Instant::now(),
        lines,
    );
    drain(&mut device, &mut pending);
    drop(device);
    shared.send_all(&mut UdpSender::new(), &mut pending);
    r
}

/// Binds the UAPI socket, refusing to steal one a live daemon still serves.
fn bind_uapi(dir: &Path, ifname: &str) -> io::Result<(UnixListener, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join(format!("{ifname}.sock"));
    // `get` returns the private key: only root may talk to it, ever.
    let listener = cvlan_core::local_socket::bind_private(&path)?;
    Ok((listener, path))
}

fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    cvlan_core::seed::fill(&mut seed).map_err(io::Error::other)?;
    Ok(seed)
}

/// A running device: its threads serve the TUN interface, the UDP socket
/// and the UAPI socket (so `wg show` works) until [`DeviceHandle::stop`]
/// or until one of them fails. The embedding program configures it with
/// typed calls ([`DeviceHandle::configure`] and the setters), outside
/// tools through the UAPI socket.
pub struct DeviceHandle {
    shared: Arc<Shared>,
    stop_tx: mpsc::Sender<String>,
    stop_rx: Mutex<mpsc::Receiver<String>>,
    socket_path: PathBuf,
}

impl std::fmt::Debug for DeviceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHandle")
            .field("interface", &self.shared.tun.name())
            .finish_non_exhaustive()
    }
}

impl DeviceHandle {
    /// Sets (or, all zero, removes) the device's private key.
    pub fn set_private_key(&self, key: &zeroize::Zeroizing<[u8; 32]>) {
        let key = (**key != [0u8; 32]).then(|| proto_wg::PrivateKey::from_bytes(**key));
        self.with_device(|device| device.set_private_key(key));
    }

    /// Moves the device to UDP port `port` (0: any free one).
    pub fn set_listen_port(&self, port: u16) -> Result<(), ConfigError> {
        SocketControl(&self.shared)
            .set_listen_port(port)
            .map_err(|e| match e {
                UapiError::PortInUse(p) => ConfigError::PortInUse(p),
                _ => ConfigError::Socket,
            })
    }

    /// Adds, updates and removes peers (see [`config::apply`]); what the
    /// change makes the device send (a keepalive, a handshake) goes out.
    pub fn configure(&self, changes: &[PeerChange]) -> Result<(), ConfigError> {
        self.with_device(|device| config::apply(device, Instant::now(), changes))
    }

    /// Points a peer the device has at `endpoint`; false if it has none.
    pub fn set_endpoint(&self, peer: &[u8; 32], endpoint: SocketAddr) -> bool {
        self.with_device(|device| config::set_endpoint(device, Instant::now(), peer, endpoint))
    }

    /// Every peer's configuration and counters.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared.device().peers().collect()
    }

    /// Runs `f` on the device under its lock, then sends what it queued.
    fn with_device<T>(&self, f: impl FnOnce(&mut Device) -> T) -> T {
        let mut pending = Vec::new();
        let mut device = self.shared.device();
        let out = f(&mut device);
        drain(&mut device, &mut pending);
        drop(device);
        self.shared.send_all(&mut UdpSender::new(), &mut pending);
        out
    }

    /// The device's drop counters and totals.
    pub fn stats(&self) -> proto_wg::Stats {
        self.shared.device().stats().clone()
    }

    pub fn tun(&self) -> &Tun {
        &self.shared.tun
    }

    /// Sends one datagram from the device's UDP socket (a path probe).
    pub fn send_datagram(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        self.shared.socket().send_to(bytes, to).map(|_| ())
    }

    pub fn listen_port(&self) -> Option<u16> {
        self.shared.socket().local_addr().ok().map(|a| a.port())
    }

    /// Blocks until a thread fails or `stop` is called; returns why.
    pub fn wait(&self) -> String {
        let rx = self.stop_rx.lock().unwrap_or_else(|e| e.into_inner());
        rx.recv().unwrap_or_else(|_| "all threads ended".into())
    }

    /// A sender that ends [`wait`](Self::wait) with the given reason.
    pub fn stopper(&self) -> mpsc::Sender<String> {
        self.stop_tx.clone()
    }

    /// Stops serving: the UAPI socket goes away at once; the interface
    /// when the process exits (the reader threads sit in syscalls).
    pub fn stop(&self) {
        self.shared.shutdown.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.socket_path);
        let stats = self.shared.device().stats().clone();
        info!(?stats, "final counters");
    }
}

/// Creates the interface and starts the device's threads.
pub fn start(opts: &Options) -> io::Result<DeviceHandle> {
    let tun = Tun::create(&opts.ifname)?;
    if let Err(e) = tun.set_mtu(DEFAULT_MTU) {
        warn!(error = %e, "could not set MTU");
    }
    let now = Instant::now();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut device = Device::new(os_seed()?, now, unix_now);
    device.set_mtu(tun.mtu().unwrap_or(DEFAULT_MTU) as usize);
    let udp = bind_udp(0, 0)?;
    let shared = Arc::new(Shared {
        device: Mutex::new(device),
        tun,
        udp: RwLock::new(Arc::new(udp)),
        fwmark: AtomicU32::new(0),
        handshakes_this_second: AtomicU32::new(0),
        gso: AtomicBool::new(true),
        shutdown: AtomicBool::new(false),
        other_datagrams: opts.other_datagrams.clone(),
    });
    let (listener, socket_path) = bind_uapi(&opts.socket_dir, &opts.ifname)?;
    info!(
        interface = %opts.ifname,
        socket = %socket_path.display(),
        tun_offloads = shared.tun.has_offloads(),
        "WireGuard device up"
    );

    let (stop_tx, stop_rx) = mpsc::channel::<String>();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(f)
    };
    {
        let (s, tx) = (shared.clone(), stop_tx.clone());
        spawn(
            "tun",
            Box::new(move || {
                let e = tun_loop(&s)
                    .err()
                    .map_or_else(|| "tun closed".into(), |e| format!("tun: {e}"));
                let _ = tx.send(e);
            }),
        )?;
    }
    {
        let (s, tx) = (shared.clone(), stop_tx.clone());
        spawn(
            "udp",
            Box::new(move || {
                if let Err(e) = udp_loop(&s) {
                    let _ = tx.send(format!("udp: {e}"));
                }
            }),
        )?;
    }
    {
        let s = shared.clone();
        spawn("timers", Box::new(move || timer_loop(&s)))?;
    }
    {
        let s = shared.clone();
        spawn("uapi", Box::new(move || uapi_loop(&s, &listener)))?;
    }
    Ok(DeviceHandle {
        shared,
        stop_tx,
        stop_rx: Mutex::new(stop_rx),
        socket_path,
    })
}

/// Runs the device until SIGTERM/SIGINT or until the interface goes away.
/// `ready` is called once the interface and socket exist.
pub fn run(opts: &Options, ready: impl FnOnce()) -> io::Result<()> {
    let handle = start(opts)?;
    let tx = handle.stopper();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = tx.send(format!("signal {sig}"));
            }
        })?;
    ready();
    let reason = handle.wait();
    info!(%reason, "shutting down");
    handle.stop();
    // The TUN interface disappears when the process exits and its file
    // descriptor closes; the reader threads are blocked in syscalls, so the
    // caller exits the process rather than joining them.
    Ok(())
}
