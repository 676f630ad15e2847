//! The relay's forwarding core as a sans-IO state machine. The IO layer
//! authenticates each connection (the Noise handshake proves the client
//! holds the node key it claims), then hands this machine the decrypted
//! frames and asks it what to send to whom.
//!
//! Bounds: every connection's outgoing queue is capped in frames and bytes
//! and drops its oldest frame when full (a slow reader loses its own
//! packets, nobody else's); every client's sending is rate-limited by a
//! token bucket; the tables of known keys and of who-sent-to-whom are
//! capped. Loops between meshed relays are impossible: a packet that came
//! from another relay is only ever delivered to a local client.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::frame::{Frame, FrameError, GoneReason, Key};

/// A connection, as the IO layer numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A node sending and receiving its own packets.
    Client,
    /// Another relay of the region (its key is on the mesh list).
    Mesh,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub queue_frames: usize,
    pub queue_bytes: usize,
    /// Sustained bytes per second one client may send, and its burst.
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u64,
    /// Keys another relay may announce.
    pub remote_keys: usize,
    /// Senders remembered per destination (to tell them it went away).
    pub watchers_per_key: usize,
    /// Bytes queued over all connections: beyond it, a new frame is
    /// dropped (so many slow readers together cannot exhaust memory).
    pub queue_budget_bytes: usize,
    /// TCP connections one address may hold open (the IO layer's bound;
    /// generous, for offices behind one NAT).
    pub connections_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Small, like DERP's: TCP buffers already hold a burst, and a
            // long queue only adds latency and memory per client.
            queue_frames: 128,
            queue_bytes: 512 << 10,
            rate_bytes_per_sec: 125_000_000, // 1 Gbit/s per client
            burst_bytes: 4 << 20,
            remote_keys: 1 << 20,
            watchers_per_key: 64,
            queue_budget_bytes: 256 << 20,
            connections_per_address: 256,
        }
    }
}

/// Why packets were dropped, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drops {
    pub unknown_destination: u64,
    pub queue_full: u64,
    pub rate_limited: u64,
    pub protocol_violation: u64,
    pub remote_table_full: u64,
    /// Dropped because frames queued over all connections hit the budget.
    pub memory_budget: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    pub packets_to_mesh: u64,
    pub drops: Drops,
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("frame not allowed from this kind of connection")]
    WrongRole,
    #[error("unknown connection")]
    UnknownConn,
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn take(&mut self, now: Instant, n: usize, l: &Limits) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens =
            (self.tokens + elapsed * l.rate_bytes_per_sec as f64).min(l.burst_bytes as f64);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Conn {
    key: Key,
    role: Role,
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    bucket: TokenBucket,
}

#[derive(Debug)]
pub struct RelayServer {
    limits: Limits,
    conns: HashMap<ConnId, Conn>,
    /// Keys connected here.
    local: HashMap<Key, ConnId>,
    /// Keys connected to another relay of the mesh, and through which link.
    remote: HashMap<Key, ConnId>,
    /// Who sent to a key that is present (local or remote): told when it goes.
    watchers: HashMap<Key, HashSet<ConnId>>,
    wake: Vec<ConnId>,
    /// Bytes queued over all connections.
    queued_total: usize,
    stats: Stats,
}

impl RelayServer {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            conns: HashMap::new(),
            local: HashMap::new(),
            remote: HashMap::new(),
            watchers: HashMap::new(),
            wake: Vec::new(),
            queued_total: 0,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn clients(&self) -> usize {
        self.local.len()
    }

    pub fn mesh_links(&self) -> usize {
        self.conns.values().filter(|c| c.role == Role::Mesh).count()
    }

    pub fn remote_keys(&self) -> usize {
        self.remote.len()
    }

    /// Bytes queued over all connections.
    pub fn queued_bytes(&self) -> usize {
        self.queued_total
    }

    /// The connection a client key is served on here, if any.
    pub fn conn_of(&self, key: &Key) -> Option<ConnId> {
        self.local.get(key).copied()
    }

    fn mesh_conns(&self) -> Vec<ConnId> {
        let mut v: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.role == Role::Mesh)
            .map(|(&id, _)| id)
            .collect();
        v.sort();
        v
    }

    /// Queues `frame` for `to`, dropping its oldest frames to make room.
    fn enqueue(&mut self, to: ConnId, frame: &Frame<'_>) {
        let limits = self.limits;
        let Some(c) = self.conns.get_mut(&to) else {
            return;
        };
        let Ok(bytes) = frame.to_vec() else {
            return;
        };
        while !c.queue.is_empty()
            && (c.queue.len() >= limits.queue_frames
                || c.queued_bytes + bytes.len() > limits.queue_bytes)
        {
            if let Some(old) = c.queue.pop_front() {
                c.queued_bytes -= old.len();
                self.queued_total -= old.len();
                self.stats.drops.queue_full += 1;
            }
        }
        if self.queued_total + bytes.len() > limits.queue_budget_bytes {
            self.stats.drops.memory_budget += 1;
            return;
        }
        if c.queue.is_empty() {
            self.wake.push(to);
        }
        c.queued_bytes += bytes.len();
        self.queued_total += bytes.len();
        c.queue.push_back(bytes);
    }

    /// An authenticated connection. A client key already connected here
    /// moves to the new connection; the old one is returned for closing.
    pub fn connect(&mut self, now: Instant, id: ConnId, key: Key, role: Role) -> Option<ConnId> {
        let conn = Conn {
            key,
            role,
            queue: VecDeque::new(),
            queued_bytes: 0,
            bucket: TokenBucket {
                tokens: self.limits.burst_bytes as f64,
                last: now,
            },
        };
        if let Some(old) = self.conns.insert(id, conn) {
            self.queued_total -= old.queued_bytes;
        }
        match role {
            Role::Client => {
                let replaced = self.local.insert(key, id);
                if let Some(old) = replaced {
                    if let Some(gone) = self.conns.remove(&old) {
                        self.queued_total -= gone.queued_bytes;
                    }
                } else {
                    for m in self.mesh_conns() {
                        self.enqueue(m, &Frame::PeerPresent(key));
                    }
                }
                replaced
            }
            Role::Mesh => {
                let mut keys: Vec<Key> = self.local.keys().copied().collect();
                keys.sort();
                for k in keys {
                    self.enqueue(id, &Frame::PeerPresent(k));
                }
                None
            }
        }
    }

    /// Tells everyone who sent to `key` that it is gone.
    fn gone(&mut self, key: Key, reason: GoneReason) {
        if let Some(watchers) = self.watchers.remove(&key) {
            let mut w: Vec<ConnId> = watchers.into_iter().collect();
            w.sort();
            for c in w {
                self.enqueue(c, &Frame::PeerGone { key, reason });
            }
        }
    }

    pub fn disconnect(&mut self, id: ConnId) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        self.queued_total -= c.queued_bytes;
        for w in self.watchers.values_mut() {
            w.remove(&id);
        }
        match c.role {
            Role::Client => {
                if self.local.get(&c.key) == Some(&id) {
                    self.local.remove(&c.key);
                    for m in self.mesh_conns() {
                        self.enqueue(m, &Frame::PeerAbsent(c.key));
                    }
                    self.gone(c.key, GoneReason::Disconnected);
                }
            }
            Role::Mesh => {
                let lost: Vec<Key> = self
                    .remote
                    .iter()
                    .filter(|(_, &via)| via == id)
                    .map(|(&k, _)| k)
                    .collect();
                for k in lost {
                    self.remote.remove(&k);
                    self.gone(k, GoneReason::Disconnected);
                }
            }
        }
    }

    fn watch(&mut self, dst: Key, sender: ConnId) {
        let limit = self.limits.watchers_per_key;
        let w = self.watchers.entry(dst).or_default();
        if w.len() < limit {
            w.insert(sender);
        }
    }

    /// A decrypted frame from connection `id`. An error is a protocol
    /// violation: the IO layer closes that connection.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        id: ConnId,
        bytes: &[u8],
    ) -> Result<(), ServerError> {
        let (role, src) = match self.conns.get(&id) {
            Some(c) => (c.role, c.key),
            None => return Err(ServerError::UnknownConn),
        };
        let frame =
            Frame::decode(bytes).inspect_err(|_| self.stats.drops.protocol_violation += 1)?;
        match (role, frame) {
            (_, Frame::KeepAlive | Frame::Pong(_)) => {}
            (_, Frame::Ping(d)) => self.enqueue(id, &Frame::Pong(d)),
            (Role::Client, Frame::SendPacket { dst, packet }) => {
                let limits = self.limits;
                let allowed = self
                    .conns
                    .get_mut(&id)
                    .is_some_and(|c| c.bucket.take(now, packet.len(), &limits));
                if !allowed {
                    self.stats.drops.rate_limited += 1;
                    return Ok(());
                }
                if let Some(&to) = self.local.get(&dst) {
                    self.watch(dst, id);
                    self.deliver(to, src, packet);
                } else if let Some(&via) = self.remote.get(&dst) {
                    self.watch(dst, id);
                    self.stats.packets_to_mesh += 1;
                    self.enqueue(via, &Frame::ForwardPacket { src, dst, packet });
                } else {
                    self.stats.drops.unknown_destination += 1;
                    self.enqueue(
                        id,
                        &Frame::PeerGone {
                            key: dst,
                            reason: GoneReason::NotHere,
                        },
                    );
                }
            }
            (Role::Mesh, Frame::ForwardPacket { src, dst, packet }) => {
                // Never forwarded again: at most one relay-to-relay hop.
                match self.local.get(&dst) {
                    Some(&to) => self.deliver(to, src, packet),
                    None => self.stats.drops.unknown_destination += 1,
                }
            }
            (Role::Mesh, Frame::PeerPresent(key)) => {
                if !self.local.contains_key(&key) {
                    if self.remote.len() >= self.limits.remote_keys
                        && !self.remote.contains_key(&key)
                    {
                        self.stats.drops.remote_table_full += 1;
                    } else {
                        self.remote.insert(key, id);
                    }
                }
            }
            (Role::Mesh, Frame::PeerAbsent(key)) => {
                if self.remote.get(&key) == Some(&id) {
                    self.remote.remove(&key);
                    if !self.local.contains_key(&key) {
                        self.gone(key, GoneReason::Disconnected);
                    }
                }
            }
            _ => {
                self.stats.drops.protocol_violation += 1;
                return Err(ServerError::WrongRole);
            }
        }
        Ok(())
    }

    fn deliver(&mut self, to: ConnId, src: Key, packet: &[u8]) {
        self.stats.packets_forwarded += 1;
        self.stats.bytes_forwarded += packet.len() as u64;
        self.enqueue(to, &Frame::RecvPacket { src, packet });
    }

    /// The next frame to send on `id` (plaintext: the IO layer seals it).
    pub fn poll_send(&mut self, id: ConnId) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&id)?;
        let f = c.queue.pop_front()?;
        c.queued_bytes -= f.len();
        self.queued_total -= f.len();
        Some(f)
    }

    /// A connection whose queue went from empty to not empty.
    pub fn poll_wake(&mut self) -> Option<ConnId> {
        self.wake.pop()
    }

    /// How long a connection may stay silent before it is dropped.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
}
