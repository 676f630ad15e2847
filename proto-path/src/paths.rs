//! Which path each peer's traffic takes: through the relay, or direct to
//! one of its endpoints. Sans-IO, with time passed in.
//!
//! Traffic starts on the relay at once (when there is one), so a new peer
//! never waits for a direct path. The node sends sealed pings to each of
//! the peer's endpoints over the WireGuard socket; the first endpoint to
//! answer becomes the path. When a direct path stops answering for
//! [`DIRECT_TIMEOUT`], traffic moves back to the relay, and moves direct
//! again as soon as a probe is answered.
//!
//! An endpoint that answers is probed every [`PROBE_INTERVAL`]; one that
//! does not, after [`STEADY_PROBES`] tries, ever less often (the interval
//! doubles up to [`MAX_PROBE_INTERVAL`] for an endpoint that never
//! answered, [`MAX_RETRY_INTERVAL`] for one that did), so a node that
//! advertises someone else's addresses cannot make the mesh flood them:
//! every other node sends each such address a probe a minute after its
//! first few. A ping from the peer at an endpoint proves it again and
//! ends its backoff.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cvlan_core::Transmit;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use crate::crypto;
use crate::wire::{self, Key, Kind};

pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered probes of an endpoint before its probes back off.
pub const STEADY_PROBES: u32 = 4;
/// The longest wait between probes of an endpoint that never answered.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(64);
/// The longest wait for one that answered before (a path that went away
/// is looked for again sooner).
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(16);
/// Three probes unanswered.
pub const DIRECT_TIMEOUT: Duration = Duration::from_millis(6500);
/// Probes waiting for an answer, per peer.
const MAX_OUTSTANDING: usize = 32;
/// Datagrams and events not yet taken by the caller (it drains them after
/// every call; this only bounds a caller that does not).
const MAX_QUEUED: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Relay,
    Direct(SocketAddr),
    /// No relay and no proven direct path: the first endpoint, untested.
    Unproven(SocketAddr),
    None,
}

/// What the caller must act on. Probes to send come out of
/// [`PathManager::poll_transmit`] (from the WireGuard socket).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Point the peer's WireGuard endpoint at `endpoint` (a direct
    /// address, or the relay's entry into the device).
    UseEndpoint { peer: Key, endpoint: SocketAddr },
}

/// One endpoint of a peer and when to probe it next.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    addr: SocketAddr,
    next_probe: Instant,
    interval: Duration,
    /// Probes sent since the last answer.
    unanswered: u32,
    /// It answered at least once.
    answered: bool,
}

impl Candidate {
    fn new(addr: SocketAddr, now: Instant) -> Self {
        Self {
            addr,
            next_probe: now,
            interval: PROBE_INTERVAL,
            unanswered: 0,
            answered: false,
        }
    }

    /// A probe goes out now: when the next is due.
    fn sent(&mut self, now: Instant, active: bool) {
        self.unanswered = self.unanswered.saturating_add(1);
        self.next_probe = now + self.interval;
        // The path in use keeps the steady rate: it carries our traffic.
        if !active && self.unanswered >= STEADY_PROBES {
            let cap = if self.answered {
                MAX_RETRY_INTERVAL
            } else {
                MAX_PROBE_INTERVAL
            };
            self.interval = (self.interval * 2).min(cap);
        }
    }

    /// The peer proved this endpoint (its answer, or its own ping from it).
    fn proven(&mut self, next_probe: Instant, answered: bool) {
        self.unanswered = 0;
        self.interval = PROBE_INTERVAL;
        self.next_probe = next_probe;
        self.answered |= answered;
    }
}

#[derive(Debug)]
struct PeerPath {
    shared: Zeroizing<[u8; 32]>,
    candidates: Vec<Candidate>,
    /// Where the relay path enters the device (the peer's proxy socket).
    relay: Option<SocketAddr>,
    path: Path,
    last_pong: Option<Instant>,
    outstanding: HashMap<u64, SocketAddr>,
}

impl PeerPath {
    /// When something is next due: a probe, or the direct path going stale.
    fn next_due(&self) -> Option<Instant> {
        let probe = self.candidates.iter().map(|c| c.next_probe).min();
        let stale = match (self.path, self.last_pong) {
            (Path::Direct(_), Some(t)) if self.relay.is_some() => Some(t + DIRECT_TIMEOUT),
            _ => None,
        };
        probe.into_iter().chain(stale).min()
    }
}

pub struct PathManager {
    our_secret: Zeroizing<[u8; 32]>,
    our_public: Key,
    peers: HashMap<Key, PeerPath>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Nonces and transaction ids: a CSPRNG (ChaCha20) from the caller's
    /// seed, which must come from the OS. A probe nonce repeated under one
    /// key would let anyone forge probes, and a guessable transaction id
    /// would let an off-path sender answer pings it never saw.
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for PathManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PathManager")
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl PathManager {
    /// `seed`: 32 bytes from the OS (`getrandom`), never from a key or a
    /// process id.
    pub fn new(our_secret: Zeroizing<[u8; 32]>, our_public: Key, seed: [u8; 32]) -> Self {
        Self {
            our_secret,
            our_public,
            peers: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    fn send(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        if self.transmits.len() < MAX_QUEUED {
            self.transmits.push_back(Transmit::to(to, datagram));
        }
    }

    fn use_endpoint(&mut self, peer: Key, endpoint: SocketAddr) {
        if self.events.len() >= MAX_QUEUED {
            self.events.pop_front(); // a later choice supersedes it
        }
        self.events.push_back(Event::UseEndpoint { peer, endpoint });
    }

    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        self.rng.fill_bytes(&mut n);
        n
    }

    pub fn path(&self, peer: &Key) -> Option<Path> {
        self.peers.get(peer).map(|p| p.path)
    }

    /// Adds or updates a peer; returns the endpoint to configure now.
    pub fn set_peer(
        &mut self,
        now: Instant,
        peer: Key,
        candidates: Vec<SocketAddr>,
        relay: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        let shared = crypto::shared_key(&self.our_secret, &peer)?;
        let entry = self.peers.entry(peer).or_insert_with(|| PeerPath {
            shared,
            candidates: Vec::new(),
            relay: None,
            path: Path::None,
            last_pong: None,
            outstanding: HashMap::new(),
        });
        // An endpoint seen before keeps its backoff (so re-announcing an
        // address does not restart a flood); a new one is probed at once.
        entry.candidates = candidates
            .into_iter()
            .map(|addr| {
                entry
                    .candidates
                    .iter()
                    .find(|c| c.addr == addr)
                    .copied()
                    .unwrap_or_else(|| Candidate::new(addr, now))
            })
            .collect();
        entry.relay = relay;
        // Keep a proven direct path that is still a candidate.
        let keep =
            matches!(entry.path, Path::Direct(a) if entry.candidates.iter().any(|c| c.addr == a));
        if !keep {
            entry.path = match (relay, entry.candidates.first()) {
                (Some(_), _) => Path::Relay,
                (None, Some(c)) => Path::Unproven(c.addr),
                (None, None) => Path::None,
            };
        }
        endpoint_of(entry)
    }

    pub fn remove_peer(&mut self, peer: &Key) {
        self.peers.remove(peer);
    }

    /// A probe datagram that arrived on the WireGuard socket (anything
    /// else is ignored).
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(sender) = wire::sender(datagram) else {
            return;
        };
        let Some(p) = self.peers.get(&sender) else {
            return; // not a peer of ours: ignored
        };
        let Some((kind, tx)) = crypto::open(&p.shared, datagram) else {
            return;
        };
        match kind {
            Kind::Ping => {
                // The peer is there: probe that endpoint again at once.
                if let Some(c) = self
                    .peers
                    .get_mut(&sender)
                    .and_then(|p| p.candidates.iter_mut().find(|c| c.addr == from))
                {
                    if c.unanswered > 0 {
                        c.proven(now, false);
                    }
                }
                let Some(p) = self.peers.get(&sender) else {
                    return;
                };
                let shared = p.shared.clone();
                let nonce = self.nonce();
                let datagram = crypto::seal(&shared, &self.our_public, nonce, Kind::Pong, tx);
                self.send(from, datagram);
            }
            Kind::Pong => {
                let Some(p) = self.peers.get_mut(&sender) else {
                    return;
                };
                // Only an answer to a ping we sent to exactly that address.
                if p.outstanding.remove(&tx) != Some(from) {
                    return;
                }
                p.last_pong = Some(now);
                if let Some(c) = p.candidates.iter_mut().find(|c| c.addr == from) {
                    c.proven(now + PROBE_INTERVAL, true);
                }
                if p.path != Path::Direct(from) && !matches!(p.path, Path::Direct(_)) {
                    p.path = Path::Direct(from);
                    self.use_endpoint(sender, from);
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut keys: Vec<Key> = self.peers.keys().copied().collect();
        keys.sort();
        for key in keys {
            let fallback = {
                let Some(p) = self.peers.get_mut(&key) else {
                    continue;
                };
                let stale = p
                    .last_pong
                    .is_none_or(|t| now.saturating_duration_since(t) >= DIRECT_TIMEOUT);
                match (p.path, p.relay) {
                    (Path::Direct(_), Some(relay)) if stale => {
                        p.path = Path::Relay;
                        Some(relay)
                    }
                    _ => None,
                }
            };
            if let Some(relay) = fallback {
                self.use_endpoint(key, relay);
            }
            let due: Vec<SocketAddr> = self
                .peers
                .get(&key)
                .map(|p| {
                    p.candidates
                        .iter()
                        .filter(|c| now >= c.next_probe)
                        .map(|c| c.addr)
                        .collect()
                })
                .unwrap_or_default();
            for to in due {
                let (tx, nonce) = (self.next_u64(), self.nonce());
                let Some(p) = self.peers.get_mut(&key) else {
                    break;
                };
                if p.outstanding.len() >= MAX_OUTSTANDING {
                    p.outstanding.clear(); // old pings will never be answered now
                }
                p.outstanding.insert(tx, to);
                let active = p.path == Path::Direct(to);
                if let Some(c) = p.candidates.iter_mut().find(|c| c.addr == to) {
                    c.sent(now, active);
                }
                let datagram = crypto::seal(&p.shared, &self.our_public, nonce, Kind::Ping, tx);
                self.send(to, datagram);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(PeerPath::next_due).min()
    }

    /// The next probe to send from the WireGuard socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

fn endpoint_of(p: &PeerPath) -> Option<SocketAddr> {
    match p.path {
        Path::Relay => p.relay,
        Path::Direct(a) | Path::Unproven(a) => Some(a),
        Path::None => None,
    }
}
