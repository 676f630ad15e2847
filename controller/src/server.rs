//! The controller's network side (tokio): one task per node connection.
//! A connection is an HTTP upgrade, the Noise handshake (the node's hello
//! rides in it), registration, the map, then deltas whenever the map
//! version moves, until the node goes away, is removed, or reconnects.
//!
//! Every wait is bounded: a peer that stalls the handshake, stops reading
//! or goes silent is dropped, and other nodes never wait on it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use proto_control::http::{self, Request};
use proto_control::messages::{
    decode_client, encode_server, split_map_update, split_relay_keys, ClientBody, ClientHello,
    Pong, Refused, RefusedReason, Registered, RelayInfo, ServerBody, ServerHello, UpdateEndpoints,
    PROTOCOL_VERSION,
};
use proto_control::{Channel, ChannelEvent};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::timeout;
use tracing::{debug, info, warn};
use transport::{Io, TlsAcceptor};
use zeroize::Zeroizing;

use crate::registry::Registry;

/// How long the server waits on a node before dropping it, and how many
/// it serves at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time allowed for the HTTP head and the Noise handshake.
    pub handshake: Duration,
    /// A write that takes longer means the node stopped reading.
    pub write: Duration,
    /// Nodes ping every 15 s; silence this long means the node is gone.
    pub idle: Duration,
    /// Open connections at most (each holds a socket and a task).
    pub connections: usize,
    /// Endpoint updates closer together than this are ignored: each one
    /// is a database write and a delta to every node.
    pub endpoint_update_interval: Duration,
    /// Connections from one address that have not finished the handshake
    /// yet, at most (a whole office behind one NAT reconnects at once;
    /// one host cannot hold every slot).
    pub pending_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            write: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            connections: 65_536,
            endpoint_update_interval: Duration::from_secs(1),
            pending_per_address: 64,
        }
    }
}

pub type SharedRegistry = Arc<Mutex<Registry>>;

pub fn lock(r: &SharedRegistry) -> MutexGuard<'_, Registry> {
    // The registry applies changes only after they are durable, so it is
    // consistent even if a holder panicked.
    r.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("channel: {0}")]
    Channel(#[from] proto_control::ChannelError),
    #[error("closed by peer")]
    Eof,
    #[error(transparent)]
    Http(#[from] transport::HttpError),
    #[error("malformed message: {0}")]
    Decode(#[from] proto_control::messages::DecodeError),
    #[error("refused: {0}")]
    Refused(String),
    #[error("a hello not newer than the last confirmed one (a replay, or the node's clock)")]
    StaleHello,
    #[error(transparent)]
    Seed(#[from] cvlan_core::seed::SeedError),
}

impl From<tokio::time::error::Elapsed> for ConnError {
    fn from(_: tokio::time::error::Elapsed) -> Self {
        Self::Timeout
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How the server runs, beyond its key and registry.
#[derive(Clone, Default)]
pub struct ServeOptions {
    pub limits: Limits,
    /// The relays every node is told about.
    pub relays: Arc<Vec<RelayInfo>>,
    /// Serve inside TLS (nodes dial `https://`); the Noise channel inside
    /// stays the authentication.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("limits", &self.limits)
            .field("relays", &self.relays.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Accepts node connections until the listener fails.
pub async fn serve(
    listener: TcpListener,
    registry: SharedRegistry,
    key: Arc<Zeroizing<[u8; 32]>>,
) -> std::io::Result<()> {
    serve_with(listener, registry, key, ServeOptions::default()).await
}

/// As [`serve`], with explicit options (tests use short limits).
pub async fn serve_with(
    listener: TcpListener,
    registry: SharedRegistry,
    key: Arc<Zeroizing<[u8; 32]>>,
    options: ServeOptions,
) -> std::io::Result<()> {
    let ServeOptions {
        limits,
        relays,
        tls,
    } = options;
    let next_conn = Arc::new(AtomicU64::new(1));
    let slots = Arc::new(Semaphore::new(limits.connections));
    let pending = Arc::new(Pending::default());
    let refusals = Arc::new(LogBudget::default());
    loop {
        let (stream, from) = listener.accept().await?;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%from, "connection limit reached, dropping");
            continue;
        };
        let Some(handshaking) = Pending::enter(&pending, from.ip(), limits.pending_per_address)
        else {
            if let Some(suppressed) = refusals.allow() {
                warn!(%from, suppressed, "too many handshakes pending from this address, dropping");
            }
            continue;
        };
        let (registry, key, relays) = (registry.clone(), key.clone(), relays.clone());
        let (refusals, tls) = (refusals.clone(), tls.clone());
        let conn = next_conn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let peer = from.to_string();
            let stream =
                match transport::accept(stream, tls.as_ref(), &peer, limits.handshake).await {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(%from, error = %e, "TLS refused");
                        return;
                    }
                };
            let mut c = Connection {
                stream,
                from,
                conn,
                registry,
                node: None,
                limits,
                last_endpoint_update: None,
                pending_endpoints: None,
                relays,
                handshaking: Some(handshaking),
                refusals,
            };
            match c.run(&key).await {
                Ok(()) | Err(ConnError::Eof) => debug!(%from, "connection closed"),
                Err(e) => info!(%from, node = ?c.node, error = %e, "connection ended"),
            }
            if let Some(id) = c.node {
                lock(&c.registry).set_offline(id, conn);
            }
        });
    }
}

/// Connections that have not finished the handshake, by address.
#[derive(Debug, Default)]
struct Pending(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`Pending`], given back when dropped.
#[derive(Debug)]
struct PendingSlot {
    pending: Arc<Pending>,
    ip: IpAddr,
}

impl Pending {
    fn enter(pending: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<PendingSlot> {
        let mut map = pending.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            pending: pending.clone(),
            ip,
        })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut map = self.pending.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// At most [`LogBudget::LINES`] warnings per [`LogBudget::WINDOW`] about
/// refused peers, so a flood cannot flood the log too; the next line
/// after a quiet spell says how many were left out.
#[derive(Debug, Default)]
struct LogBudget(Mutex<(Option<tokio::time::Instant>, u32, u64)>);

impl LogBudget {
    const LINES: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    /// `Some(lines suppressed since the last one)` if this one may be logged.
    fn allow(&self) -> Option<u64> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (start, lines, suppressed) = &mut *g;
        let now = tokio::time::Instant::now();
        if start.is_none_or(|s| now - s >= Self::WINDOW) {
            *start = Some(now);
            *lines = 0;
        }
        if *lines >= Self::LINES {
            *suppressed += 1;
            return None;
        }
        *lines += 1;
        Some(std::mem::take(suppressed))
    }
}

struct Connection {
    stream: Box<dyn Io>,
    from: SocketAddr,
    conn: u64,
    registry: SharedRegistry,
    node: Option<u64>,
    limits: Limits,
    last_endpoint_update: Option<tokio::time::Instant>,
    /// An update that came too soon after the last: applied (the newest
    /// one) once the interval has passed, never dropped.
    pending_endpoints: Option<UpdateEndpoints>,
    relays: Arc<Vec<RelayInfo>>,
    /// Held until the handshake completes.
    handshaking: Option<PendingSlot>,
    refusals: Arc<LogBudget>,
}

impl Connection {
    async fn run(&mut self, key: &[u8; 32]) -> Result<(), ConnError> {
        let Some(rest) = timeout(self.limits.handshake, self.http_head(key)).await?? else {
            return Ok(());
        };
        let hello = ServerHello {
            protocol_version: PROTOCOL_VERSION,
        }
        .encode_to_vec();
        let mut ch = Channel::server(key, cvlan_core::os_seed()?, &hello)?;
        let (machine_key, timestamp, hello) =
            timeout(self.limits.handshake, self.handshake(&mut ch, rest)).await??;
        self.handshaking = None;
        let hello = ClientHello::decode(hello.as_slice())
            .map_err(proto_control::messages::DecodeError::from)?;
        let mut versions = lock(&self.registry).subscribe();
        if hello.relay_feed {
            return self.serve_relay(&mut ch, machine_key, &mut versions).await;
        }
        let joined = {
            let mut reg = lock(&self.registry);
            reg.connect(machine_key, &hello, unix_now()).map(|node| {
                reg.hello_confirmed(machine_key, timestamp);
                reg.set_online(node.id, self.conn);
                let map = reg
                    .delta_since(node.id, hello.map_version)
                    .filter(|_| hello.map_version != 0)
                    .unwrap_or_else(|| reg.full_map(node.id));
                (node, map, reg.prefix().prefix_len())
            })
        };
        let (node, map, prefix_len) = match joined {
            Ok(j) => j,
            Err(e) => {
                if let Some(suppressed) = self.refusals.allow() {
                    warn!(from = %self.from, machine = %hex::encode(machine_key), error = %e, suppressed, "node refused");
                }
                self.refuse(&mut ch, e.refusal(), &e.to_string()).await?;
                return Err(ConnError::Refused(e.to_string()));
            }
        };
        self.node = Some(node.id);
        info!(from = %self.from, node = node.id, name = %node.name, "node connected");
        let registered = Registered {
            node_id: node.id,
            name: node.name.clone(),
            address: node.address.to_be_bytes().to_vec(),
            prefix_len: u32::from(prefix_len),
            relays: self.relays.to_vec(),
        };
        ch.send(&encode_server(ServerBody::Registered(registered)))?;
        let mut sent_version = map.version;
        self.send_map(&mut ch, map).await?;
        self.serve_node(&mut ch, node.id, &mut versions, &mut sent_version)
            .await
    }

    /// Reads the HTTP head. `Some(bytes after it)` for an upgrade; `None`
    /// when the request was answered and the connection is done.
    async fn http_head(&mut self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, ConnError> {
        let peer = self.from.to_string();
        let limit = self.limits.handshake;
        let request = match transport::http::read_head(&mut self.stream, &peer, limit).await {
            Ok(request) => request,
            Err(transport::HttpError::Closed { .. }) => return Err(ConnError::Eof),
            Err(e) => return Err(e.into()),
        };
        let response = match http::parse(&request.head) {
            Request::Upgrade => {
                self.stream
                    .write_all(http::upgrade_response().as_bytes())
                    .await?;
                return Ok(Some(request.rest));
            }
            Request::Key => http::simple_response(
                "200 OK",
                &format!("{}\n", hex::encode(proto_control::public_key(key))),
            ),
            Request::NotFound => http::simple_response("404 Not Found", "not found\n"),
            Request::BadRequest => http::simple_response("400 Bad Request", "bad request\n"),
        };
        self.stream.write_all(response.as_bytes()).await?;
        Ok(None)
    }

    /// The Noise handshake, until the node has proven it is live: a
    /// replayed first message is refused here (stale timestamp) or never
    /// gets past the confirmation. Returns the machine key, the hello's
    /// timestamp and the hello.
    async fn handshake(
        &mut self,
        ch: &mut Channel,
        early: Vec<u8>,
    ) -> Result<([u8; 32], u64, Vec<u8>), ConnError> {
        let mut input = early;
        let mut buf = vec![0u8; 16 * 1024];
        let mut stamp = 0;
        loop {
            ch.handle_input(&input)?;
            while let Some(event) = ch.poll_event() {
                match event {
                    ChannelEvent::Hello { peer, timestamp } => {
                        if !lock(&self.registry).hello_is_fresh(&peer, timestamp) {
                            ch.refuse();
                            if let Some(suppressed) = self.refusals.allow() {
                                warn!(from = %self.from, machine = %hex::encode(peer), suppressed, "stale hello refused (a replayed handshake, or the node's clock stepped back)");
                            }
                            return Err(ConnError::StaleHello);
                        }
                        stamp = timestamp;
                        ch.accept()?;
                    }
                    ChannelEvent::Connected { peer, hello } => return Ok((peer, stamp, hello)),
                    ChannelEvent::Message(_) => {}
                }
            }
            self.flush(ch).await?;
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(ConnError::Eof);
            }
            input = buf[..n].to_vec();
        }
    }

    async fn flush(&mut self, ch: &mut Channel) -> Result<(), ConnError> {
        while let Some(bytes) = ch.poll_transmit() {
            timeout(self.limits.write, self.stream.write_all(&bytes)).await??;
        }
        Ok(())
    }

    async fn refuse(
        &mut self,
        ch: &mut Channel,
        reason: RefusedReason,
        message: &str,
    ) -> Result<(), ConnError> {
        let refused = Refused {
            reason: reason as i32,
            message: message.into(),
        };
        ch.send(&encode_server(ServerBody::Refused(refused)))?;
        self.flush(ch).await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    async fn send_map(
        &mut self,
        ch: &mut Channel,
        map: proto_control::messages::MapUpdate,
    ) -> Result<(), ConnError> {
        for part in split_map_update(map) {
            ch.send(&part)?;
            self.flush(ch).await?;
        }
        Ok(())
    }

    async fn serve_node(
        &mut self,
        ch: &mut Channel,
        id: u64,
        versions: &mut watch::Receiver<u64>,
        sent_version: &mut u64,
    ) -> Result<(), ConnError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let pending_due = self
                .pending_endpoints
                .as_ref()
                .and(self.last_endpoint_update)
                .map(|t| t + self.limits.endpoint_update_interval);
            tokio::select! {
                read = timeout(self.limits.idle, self.stream.read(&mut buf)) => {
                    let n = read??;
                    if n == 0 {
                        return Err(ConnError::Eof);
                    }
                    ch.handle_input(&buf[..n])?;
                    while let Some(ChannelEvent::Message(m)) = ch.poll_event() {
                        self.handle_message(ch, id, &m)?;
                    }
                    self.flush(ch).await?;
                }
                _ = async { tokio::time::sleep_until(pending_due.unwrap_or_else(tokio::time::Instant::now)).await }, if pending_due.is_some() => {
                    if let Some(e) = self.pending_endpoints.take() {
                        self.apply_endpoints(id, &e);
                    }
                }
                changed = versions.changed() => {
                    if changed.is_err() {
                        return Ok(()); // the registry is gone: shutting down
                    }
                    let update = {
                        let reg = lock(&self.registry);
                        if reg.node(id).is_none() {
                            None
                        } else if !reg.is_current(id, self.conn) {
                            return Err(ConnError::Refused("replaced by a newer connection".into()));
                        } else if reg.version() == *sent_version {
                            continue;
                        } else {
                            Some(reg.delta_since(id, *sent_version).unwrap_or_else(|| reg.full_map(id)))
                        }
                    };
                    let Some(update) = update else {
                        info!(node = id, "node removed, closing its connection");
                        self.refuse(ch, RefusedReason::NodeRemoved, "this node was removed from the network").await?;
                        return Ok(());
                    };
                    *sent_version = update.version;
                    self.send_map(ch, update).await?;
                }
            }
        }
    }

    /// A relay of this network (its key is one we announce) keeps the node
    /// keys it may serve current: the whole set now, then what changes.
    async fn serve_relay(
        &mut self,
        ch: &mut Channel,
        relay_key: [u8; 32],
        versions: &mut watch::Receiver<u64>,
    ) -> Result<(), ConnError> {
        if !self
            .relays
            .iter()
            .any(|r| r.public_key.as_slice() == relay_key.as_slice())
        {
            let why = "this key is not one of the network's relays";
            self.refuse(ch, RefusedReason::BadRequest, why).await?;
            return Err(ConnError::Refused(why.into()));
        }
        info!(from = %self.from, relay = %hex::encode(relay_key), "relay following the node keys");
        let mut sent = lock(&self.registry).node_keys();
        for part in split_relay_keys(true, sent.iter().copied().collect(), Vec::new()) {
            ch.send(&part)?;
        }
        self.flush(ch).await?;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                read = timeout(self.limits.idle, self.stream.read(&mut buf)) => {
                    let n = read??;
                    if n == 0 {
                        return Err(ConnError::Eof);
                    }
                    ch.handle_input(&buf[..n])?;
                    while let Some(ChannelEvent::Message(m)) = ch.poll_event() {
                        if let ClientBody::Ping(p) = decode_client(&m)? {
                            ch.send(&encode_server(ServerBody::Pong(Pong { nonce: p.nonce })))?;
                        }
                    }
                    self.flush(ch).await?;
                }
                changed = versions.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let now = lock(&self.registry).node_keys();
                    let added: Vec<[u8; 32]> = now.difference(&sent).copied().collect();
                    let removed: Vec<[u8; 32]> = sent.difference(&now).copied().collect();
                    if added.is_empty() && removed.is_empty() {
                        continue;
                    }
                    for part in split_relay_keys(false, added, removed) {
                        ch.send(&part)?;
                    }
                    self.flush(ch).await?;
                    sent = now;
                }
            }
        }
    }

    fn handle_message(&mut self, ch: &mut Channel, id: u64, m: &[u8]) -> Result<(), ConnError> {
        match decode_client(m)? {
            ClientBody::Ping(p) => {
                ch.send(&encode_server(ServerBody::Pong(Pong { nonce: p.nonce })))?;
            }
            ClientBody::Endpoints(e) => {
                let now = tokio::time::Instant::now();
                if self
                    .last_endpoint_update
                    .is_some_and(|t| now - t < self.limits.endpoint_update_interval)
                {
                    // Too soon: kept (the newest replaces an older one)
                    // and applied when the interval has passed, so a node
                    // whose addresses change twice in a second is not
                    // left with the first.
                    debug!(node = id, "endpoint update too soon, deferred");
                    self.pending_endpoints = Some(e);
                    return Ok(());
                }
                self.apply_endpoints(id, &e);
            }
        }
        Ok(())
    }

    fn apply_endpoints(&mut self, id: u64, e: &UpdateEndpoints) {
        self.last_endpoint_update = Some(tokio::time::Instant::now());
        self.pending_endpoints = None;
        if let Err(err) = lock(&self.registry).update_endpoints(id, &e.endpoints, e.nat) {
            debug!(node = id, error = %err, "endpoint update refused");
        }
    }
}
