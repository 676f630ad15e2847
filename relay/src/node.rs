//! `cvlan-relay`'s IO (tokio): the TCP port (HTTP upgrade to the relay
//! protocol, `/metrics`, `/health`, `/key`), links to the other relays of
//! the region, and STUN on UDP. One task per connection; the forwarding
//! core ([`RelayServer`]) sits behind one mutex held only for a frame's
//! bookkeeping, never across IO.

use crate::error::ConnError;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto_control::{http, HelloTimes};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio::time::timeout;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use proto_relay::client::{ClientEvent, RelayClient};
use proto_relay::frame::Key;
use proto_relay::link::ServerLink;
use proto_relay::server::{ConnId, Limits, RelayServer, Role};
use proto_relay::{RELAY_PATH, UPGRADE_TOKEN};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames moved per lock acquisition when draining a connection's queue.
const DRAIN_BATCH: usize = 64;
const MAX_CONNECTIONS: u64 = 100_000;

/// One connection's wake-up and close signals.
#[derive(Debug, Default)]
struct ConnHandle {
    notify: Notify,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub rejected_handshake: AtomicU64,
    pub rejected_mesh_key: AtomicU64,
    pub rejected_limit: AtomicU64,
    /// One address already held its share of connections.
    pub rejected_per_address: AtomicU64,
    /// A node key the controller has not registered (`--verify-clients`).
    pub rejected_unknown_key: AtomicU64,
    pub closed_protocol: AtomicU64,
    pub closed_slow: AtomicU64,
    pub stun_answered: AtomicU64,
    pub stun_ignored: AtomicU64,
}

/// Everything the relay's tasks share.
#[derive(Debug)]
pub struct RelayNode {
    key: Zeroizing<[u8; 32]>,
    public: Key,
    mesh_keys: HashSet<Key>,
    core: Mutex<RelayServer>,
    handles: Mutex<HashMap<ConnId, Arc<ConnHandle>>>,
    next_conn: AtomicU64,
    open: AtomicU64,
    /// The newest hello timestamp each key proved live: a recorded first
    /// handshake message is turned away unanswered.
    hello_times: Mutex<HelloTimes>,
    /// The timestamp of our own last hello (mesh links we dial, and the
    /// controller's feed of node keys).
    last_hello: AtomicU64,
    /// Which node keys may use this relay, when it verifies clients.
    allowed: Mutex<AllowList>,
    /// Open connections by source address.
    per_address: Mutex<HashMap<IpAddr, usize>>,
    limits: Limits,
    pub counters: Counters,
}

/// With `--verify-clients`, the registered node keys the controller sent
/// (or, until it has, the list saved from the last run).
#[derive(Debug, Default)]
struct AllowList {
    verify: bool,
    /// A full list arrived (or was loaded): until then no client is served.
    ready: bool,
    keys: HashSet<Key>,
}

/// Hello timestamps remembered (a full table forgets arbitrary entries;
/// a forgotten key's replays still fail at the handshake's confirmation).
const MAX_HELLO_TIMES: usize = 1 << 17;

/// The timestamp for our next hello: wall-clock nanoseconds, never at or
/// below the last one (`last` keeps it).
pub fn hello_timestamp(last: &AtomicU64) -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut prev = last.load(Ordering::Relaxed);
    loop {
        let next = proto_control::next_timestamp(wall, prev);
        match last.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

fn seed() -> Result<[u8; 32], ConnError> {
    Ok(cvlan_core::os_seed()?)
}

/// One connection's place among those of its source address.
struct AddressSlot {
    node: Arc<RelayNode>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self
            .node
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What carries frames on a link: the relay's side of an accepted
/// connection, or our client side of a link we dialled to another relay.
trait Sealer: Send {
    /// Stream bytes in; frames out. `Some` when authenticated: the peer's
    /// key and role, and for a peer that dialled us, its hello timestamp.
    /// `fresh` says whether a first message's timestamp may be answered.
    fn input(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<Vec<u8>>,
        fresh: &dyn Fn(&Key, u64) -> bool,
    ) -> Result<Option<(Key, Role, Option<u64>)>, ConnError>;
    fn send(&mut self, frame: &[u8]) -> Result<(), ConnError>;
    fn transmit(&mut self) -> Option<Vec<u8>>;
}

impl Sealer for ServerLink {
    fn input(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<Vec<u8>>,
        fresh: &dyn Fn(&Key, u64) -> bool,
    ) -> Result<Option<(Key, Role, Option<u64>)>, ConnError> {
        let auth = self.handle_input(bytes, frames, fresh)?;
        Ok(auth.map(|a| (a.key, a.role, Some(a.timestamp))))
    }
    fn send(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        Ok(ServerLink::send(self, frame)?)
    }
    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_transmit()
    }
}

/// Our side of a mesh link: the other relay's key is known in advance.
struct MeshDialer {
    client: RelayClient,
    peer: Key,
}

impl Sealer for MeshDialer {
    fn input(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<Vec<u8>>,
        _fresh: &dyn Fn(&Key, u64) -> bool,
    ) -> Result<Option<(Key, Role, Option<u64>)>, ConnError> {
        self.client.handle_input(Instant::now(), bytes)?;
        let mut connected = None;
        while let Some(ev) = self.client.poll_event() {
            match ev {
                ClientEvent::Connected => connected = Some((self.peer, Role::Mesh, None)),
                ClientEvent::MeshFrame(f) => frames.push(f),
                _ => {}
            }
        }
        Ok(connected)
    }
    fn send(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        Ok(self.client.send_raw(Instant::now(), frame)?)
    }
    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.client.poll_transmit()
    }
}

impl RelayNode {
    pub fn new(key: Zeroizing<[u8; 32]>, mesh_keys: HashSet<Key>, limits: Limits) -> Arc<Self> {
        let public = proto_control::public_key(&key);
        Arc::new(Self {
            key,
            public,
            mesh_keys,
            core: Mutex::new(RelayServer::new(limits)),
            handles: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            open: AtomicU64::new(0),
            hello_times: Mutex::new(HelloTimes::new(MAX_HELLO_TIMES)),
            last_hello: AtomicU64::new(0),
            allowed: Mutex::new(AllowList::default()),
            per_address: Mutex::new(HashMap::new()),
            limits,
            counters: Counters::default(),
        })
    }

    pub fn public_key(&self) -> Key {
        self.public
    }

    /// Serves only node keys the controller registered: none until the
    /// first list arrives through [`apply_keys`](Self::apply_keys), unless
    /// `saved` (the list kept from the last run) is given.
    pub fn verify_clients(&self, saved: Option<HashSet<Key>>) {
        let mut a = self.allowed();
        a.verify = true;
        if let Some(keys) = saved {
            a.keys = keys;
            a.ready = true;
        }
    }

    /// Whether a client with `key` may connect.
    pub fn admits(&self, key: &Key) -> bool {
        let a = self.allowed();
        !a.verify || (a.ready && a.keys.contains(key))
    }

    /// A change to the registered node keys: `full` replaces the list.
    /// Clients whose key is no longer on it are disconnected. Returns the
    /// list now (to save).
    pub fn apply_keys(&self, full: bool, added: &[Key], removed: &[Key]) -> HashSet<Key> {
        let (gone, now): (Vec<Key>, HashSet<Key>) = {
            let mut a = self.allowed();
            let before = if full {
                std::mem::take(&mut a.keys)
            } else {
                HashSet::new()
            };
            a.keys.extend(added.iter().copied());
            for k in removed {
                a.keys.remove(k);
            }
            a.ready |= full;
            let mut gone: Vec<Key> = removed.to_vec();
            gone.extend(before.into_iter().filter(|k| !a.keys.contains(k)));
            (gone, a.keys.clone())
        };
        let conns: Vec<ConnId> = {
            let core = self.core();
            gone.iter().filter_map(|k| core.conn_of(k)).collect()
        };
        let handles = self.handles();
        for c in conns {
            if let Some(h) = handles.get(&c) {
                h.closed.store(true, Ordering::Relaxed);
                h.notify.notify_one();
            }
        }
        now
    }

    /// Our last hello's timestamp (see [`hello_timestamp`]).
    pub fn hello_clock(&self) -> &AtomicU64 {
        &self.last_hello
    }

    fn allowed(&self) -> MutexGuard<'_, AllowList> {
        self.allowed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection from `ip`, if it is under its share; given back when
    /// the guard drops.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut m = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.limits.connections_per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            node: self.clone(),
            ip,
        })
    }

    /// Local clients, mesh links and keys known through the mesh.
    pub fn status(&self) -> (usize, usize, usize) {
        let core = self.core();
        (core.clients(), core.mesh_links(), core.remote_keys())
    }

    pub fn stats(&self) -> proto_relay::server::Stats {
        self.core().stats().clone()
    }

    fn core(&self) -> MutexGuard<'_, RelayServer> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hello_times(&self) -> MutexGuard<'_, HelloTimes> {
        self.hello_times.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<ConnId, Arc<ConnHandle>>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes every connection the core queued something for.
    fn wake(&self, core: &mut RelayServer) {
        let mut woken = Vec::new();
        while let Some(c) = core.poll_wake() {
            woken.push(c);
        }
        if woken.is_empty() {
            return;
        }
        let handles = self.handles();
        for c in woken {
            if let Some(h) = handles.get(&c) {
                h.notify.notify_one();
            }
        }
    }

    /// The Prometheus text for `/metrics`.
    pub fn metrics(&self) -> String {
        let (stats, clients, mesh, remote) = {
            let core = self.core();
            (
                core.stats().clone(),
                core.clients(),
                core.mesh_links(),
                core.remote_keys(),
            )
        };
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in lines {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        metric(
            "cvlan_relay_clients",
            "gauge",
            "Nodes connected to this relay.",
            &[("", clients as u64)],
        );
        metric(
            "cvlan_relay_mesh_links",
            "gauge",
            "Links to other relays of the region.",
            &[("", mesh as u64)],
        );
        metric(
            "cvlan_relay_remote_keys",
            "gauge",
            "Nodes reachable through other relays.",
            &[("", remote as u64)],
        );
        metric(
            "cvlan_relay_packets_forwarded_total",
            "counter",
            "Packets delivered to a local node.",
            &[("", stats.packets_forwarded)],
        );
        metric(
            "cvlan_relay_bytes_forwarded_total",
            "counter",
            "Bytes delivered to a local node.",
            &[("", stats.bytes_forwarded)],
        );
        metric(
            "cvlan_relay_packets_to_mesh_total",
            "counter",
            "Packets handed to another relay.",
            &[("", stats.packets_to_mesh)],
        );
        let d = &stats.drops;
        metric(
            "cvlan_relay_packets_dropped_total",
            "counter",
            "Packets dropped, by reason.",
            &[
                ("{reason=\"unknown_destination\"}", d.unknown_destination),
                ("{reason=\"queue_full\"}", d.queue_full),
                ("{reason=\"rate_limited\"}", d.rate_limited),
                ("{reason=\"protocol_violation\"}", d.protocol_violation),
                ("{reason=\"remote_table_full\"}", d.remote_table_full),
                ("{reason=\"memory_budget\"}", d.memory_budget),
            ],
        );
        metric(
            "cvlan_relay_connections_rejected_total",
            "counter",
            "Connections refused, by reason.",
            &[
                ("{reason=\"handshake\"}", g(&c.rejected_handshake)),
                ("{reason=\"mesh_key\"}", g(&c.rejected_mesh_key)),
                ("{reason=\"limit\"}", g(&c.rejected_limit)),
                ("{reason=\"per_address\"}", g(&c.rejected_per_address)),
                ("{reason=\"unknown_key\"}", g(&c.rejected_unknown_key)),
            ],
        );
        metric(
            "cvlan_relay_connections_closed_total",
            "counter",
            "Connections closed by the relay, by reason.",
            &[
                ("{reason=\"protocol\"}", g(&c.closed_protocol)),
                ("{reason=\"slow_reader\"}", g(&c.closed_slow)),
            ],
        );
        metric(
            "cvlan_relay_stun_requests_total",
            "counter",
            "STUN datagrams, answered or ignored.",
            &[
                ("{result=\"answered\"}", g(&c.stun_answered)),
                ("{result=\"ignored\"}", g(&c.stun_ignored)),
            ],
        );
        out
    }
}

pub use transport::Io;

/// Opens a stream to `addr` (`host:port`, or `tls://host:port` with a
/// connector that trusts the relay's certificate).
pub async fn connect(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<Box<dyn Io>, ConnError> {
    let (host_port, wants_tls) = cvlan_core::relay_addr::split_scheme(addr);
    let tls = transport::tls_for(addr, wants_tls, tls)?;
    let limits = transport::DialLimits {
        connect: HANDSHAKE_TIMEOUT,
        tls: HANDSHAKE_TIMEOUT,
    };
    Ok(transport::dial(host_port, tls, limits).await?)
}

/// Accepts TCP connections (inside TLS when `tls` is given) until the
/// listener fails.
pub async fn serve_tcp(
    listener: TcpListener,
    node: Arc<RelayNode>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    loop {
        let (stream, from) = listener.accept().await?;
        if node.open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            node.counters.rejected_limit.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Some(slot) = node.enter(from.ip()) else {
            node.counters
                .rejected_per_address
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (node, tls) = (node.clone(), tls.clone());
        tokio::spawn(async move {
            let _slot = slot;
            node.open.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            let peer = from.to_string();
            let result =
                match transport::accept(stream, tls.as_ref(), &peer, HANDSHAKE_TIMEOUT).await {
                    Ok(s) => accept(s, &peer, &node).await,
                    Err(e) => {
                        node.counters
                            .rejected_handshake
                            .fetch_add(1, Ordering::Relaxed);
                        Err(e.into())
                    }
                };
            if let Err(e) = result {
                debug!(%from, error = %e, "connection ended");
            }
            node.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn accept(mut stream: impl Io, peer: &str, node: &Arc<RelayNode>) -> Result<(), ConnError> {
    let request = transport::http::read_head(&mut stream, peer, HANDSHAKE_TIMEOUT).await?;
    let head = http::parse_head(&request.head);
    let reply = match head {
        Some(h)
            if h.path == RELAY_PATH
                && h.upgrade
                    .is_some_and(|u| u.eq_ignore_ascii_case(UPGRADE_TOKEN)) =>
        {
            stream
                .write_all(http::upgrade_response_for(UPGRADE_TOKEN).as_bytes())
                .await?;
            let link = ServerLink::new(&node.key, seed()?)?;
            return run_link(stream, link, request.rest, node).await;
        }
        Some(h) if h.method == "GET" && h.path == "/metrics" => {
            http::simple_response("200 OK", &node.metrics())
        }
        Some(h) if h.method == "GET" && h.path == "/health" => {
            http::simple_response("200 OK", "ok\n")
        }
        Some(h) if h.method == "GET" && h.path == "/key" => {
            http::simple_response("200 OK", &format!("{}\n", hex::encode(node.public)))
        }
        Some(_) => http::simple_response("404 Not Found", "not found\n"),
        None => http::simple_response("400 Bad Request", "bad request\n"),
    };
    Ok(stream.write_all(reply.as_bytes()).await?)
}

/// Writes everything sealed so far, in one write.
async fn flush(
    stream: &mut (impl AsyncWrite + Unpin + ?Sized),
    sealer: &mut impl Sealer,
) -> Result<(), ConnError> {
    let Some(mut out) = sealer.transmit() else {
        return Ok(());
    };
    while let Some(b) = sealer.transmit() {
        out.extend_from_slice(&b);
    }
    Ok(timeout(WRITE_TIMEOUT, stream.write_all(&out))
        .await
        .map_err(|_| ConnError::NotReading)??)
}

/// Runs one authenticated link: handshake, registration with the core,
/// then frames both ways until either side fails.
async fn run_link(
    mut stream: impl Io,
    mut sealer: impl Sealer,
    early: Vec<u8>,
    node: &Arc<RelayNode>,
) -> Result<(), ConnError> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut input = early;
    // A first message is answered only if it is not a replay and, when the
    // relay verifies clients, comes from a registered node (or a relay of
    // the mesh): anyone else gets no reply to work with.
    let fresh = |key: &Key, timestamp: u64| {
        if !node.admits(key) && !node.mesh_keys.contains(key) {
            node.counters
                .rejected_unknown_key
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        node.hello_times().is_fresh(key, timestamp)
    };
    let handshake = async {
        loop {
            if let Some(peer) = sealer.input(&input, &mut frames, &fresh)? {
                flush(&mut stream, &mut sealer).await?;
                return Ok::<_, ConnError>(peer);
            }
            flush(&mut stream, &mut sealer).await?;
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(ConnError::ClosedInHandshake);
            }
            input = buf[..n].to_vec();
        }
    };
    let (key, role) = match timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok((key, role, timestamp))) => {
            if let Some(t) = timestamp {
                node.hello_times().confirm(key, t);
            }
            (key, role)
        }
        Ok(Err(e)) => {
            node.counters
                .rejected_handshake
                .fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        Err(_) => {
            node.counters
                .rejected_handshake
                .fetch_add(1, Ordering::Relaxed);
            return Err(ConnError::HandshakeTimeout);
        }
    };
    if role == Role::Client && !node.admits(&key) {
        node.counters
            .rejected_unknown_key
            .fetch_add(1, Ordering::Relaxed);
        debug!(key = %hex::encode(key), "a node the controller has not registered");
        return Err(ConnError::NotRegistered);
    }
    if role == Role::Mesh && !node.mesh_keys.contains(&key) {
        node.counters
            .rejected_mesh_key
            .fetch_add(1, Ordering::Relaxed);
        warn!(key = %hex::encode(key), "a relay not on our mesh list tried to link");
        return Err(ConnError::MeshKeyNotAllowed);
    }
    let conn = ConnId(node.next_conn.fetch_add(1, Ordering::Relaxed));
    let handle = Arc::new(ConnHandle::default());
    node.handles().insert(conn, handle.clone());
    {
        let mut core = node.core();
        if let Some(old) = core.connect(Instant::now(), conn, key, role) {
            if let Some(h) = node.handles().get(&old) {
                h.closed.store(true, Ordering::Relaxed);
                h.notify.notify_one();
            }
        }
        node.wake(&mut core);
    }
    // Unregistered while it was connecting: apply_keys saw no connection.
    if role == Role::Client && !node.admits(&key) {
        handle.closed.store(true, Ordering::Relaxed);
        handle.notify.notify_one();
    }
    debug!(key = %hex::encode(key), ?role, "link up");
    let result = pump(stream, sealer, conn, &handle, frames, node).await;
    {
        let mut core = node.core();
        core.disconnect(conn);
        node.wake(&mut core);
    }
    node.handles().remove(&conn);
    debug!(key = %hex::encode(key), ?role, "link down");
    result
}

/// Hands decrypted frames to the core; an error closes the link.
fn handle_frames(
    node: &RelayNode,
    conn: ConnId,
    frames: &mut Vec<Vec<u8>>,
) -> Result<(), ConnError> {
    if frames.is_empty() {
        return Ok(());
    }
    let mut core = node.core();
    let now = Instant::now();
    for f in frames.drain(..) {
        if let Err(e) = core.handle_frame(now, conn, &f) {
            node.counters
                .closed_protocol
                .fetch_add(1, Ordering::Relaxed);
            return Err(ConnError::Violation(e));
        }
    }
    node.wake(&mut core);
    Ok(())
}

fn lock_sealer<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Moves frames both ways. Reading and writing run side by side (never
/// one waiting for the other), or two peers that both write could each
/// block on a full socket while neither reads. The sealer is shared
/// under a lock held only to seal or open, never across IO.
async fn pump(
    stream: impl Io,
    sealer: impl Sealer,
    conn: ConnId,
    handle: &ConnHandle,
    mut frames: Vec<Vec<u8>>,
    node: &RelayNode,
) -> Result<(), ConnError> {
    handle_frames(node, conn, &mut frames)?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let sealer = Mutex::new(sealer);
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = timeout(RelayServer::IDLE_TIMEOUT, rd.read(&mut buf))
                .await
                .map_err(|_| ConnError::Idle)??;
            if n == 0 {
                return Ok::<(), ConnError>(());
            }
            // Authenticated already: no first message can come again.
            lock_sealer(&sealer).input(&buf[..n], &mut frames, &|_, _| false)?;
            handle_frames(node, conn, &mut frames)?;
        }
    };
    let writer = async {
        let mut batch = Vec::with_capacity(DRAIN_BATCH);
        let mut out = Vec::new();
        loop {
            let idle = tokio::time::sleep(proto_relay::client::KEEPALIVE_INTERVAL);
            let keepalive = tokio::select! {
                () = handle.notify.notified() => false,
                () = idle => true,
            };
            if handle.closed.load(Ordering::Relaxed) {
                return Err(ConnError::Replaced);
            }
            if keepalive {
                let ka = proto_relay::frame::Frame::KeepAlive.to_vec()?;
                batch.push(ka);
            }
            loop {
                {
                    let mut core = node.core();
                    while batch.len() < DRAIN_BATCH {
                        match core.poll_send(conn) {
                            Some(f) => batch.push(f),
                            None => break,
                        }
                    }
                }
                if batch.is_empty() {
                    break;
                }
                {
                    let mut sealer = lock_sealer(&sealer);
                    for f in batch.drain(..) {
                        sealer.send(&f)?;
                    }
                    while let Some(b) = sealer.transmit() {
                        out.extend_from_slice(&b);
                    }
                }
                let written = timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
                out.clear();
                if !matches!(written, Ok(Ok(()))) {
                    node.counters.closed_slow.fetch_add(1, Ordering::Relaxed);
                    return Err(ConnError::NotReading);
                }
            }
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}

/// Keeps a link to another relay of the region up: dials `addr`, proves
/// our relay key, and redials with backoff whenever the link drops.
pub async fn mesh_with(
    addr: String,
    peer: Key,
    node: Arc<RelayNode>,
    tls: Option<tokio_rustls::TlsConnector>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        match dial_mesh(&addr, peer, &node, tls.as_ref()).await {
            Ok(()) => delay = Duration::from_secs(1),
            Err(e) => info!(relay = %addr, error = %e, "mesh link down"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn dial_mesh(
    addr: &str,
    peer: Key,
    node: &Arc<RelayNode>,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<(), ConnError> {
    let mut stream = connect(addr, tls).await?;
    let early = upgrade(&mut stream, cvlan_core::relay_addr::split_scheme(addr).0).await?;
    let client = RelayClient::new(
        Instant::now(),
        Role::Mesh,
        &node.key,
        &peer,
        seed()?,
        hello_timestamp(&node.last_hello),
    )?;
    info!(relay = %addr, "mesh link connecting");
    let mut dialer = MeshDialer { client, peer };
    // The first handshake message goes out before anything comes in.
    flush(&mut stream, &mut dialer).await?;
    run_link(stream, dialer, early, node).await
}

/// The client side of the HTTP upgrade to the relay protocol; returns
/// bytes after the head.
pub async fn upgrade(stream: &mut (impl Io + ?Sized), host: &str) -> Result<Vec<u8>, ConnError> {
    Ok(
        transport::http::upgrade(stream, host, RELAY_PATH, UPGRADE_TOKEN, HANDSHAKE_TIMEOUT)
            .await?,
    )
}

/// Answers STUN Binding requests on `socket` (never more bytes than asked).
pub async fn serve_stun(socket: UdpSocket, node: Arc<RelayNode>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    loop {
        let (n, from): (usize, SocketAddr) = socket.recv_from(&mut buf).await?;
        match stun::server::answer(&buf[..n], from, &mut out) {
            stun::server::Answer::Reply(len) => {
                node.counters.stun_answered.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(&out[..len], from).await;
            }
            _ => {
                node.counters.stun_ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
