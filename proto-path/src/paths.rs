//! Which path each peer's traffic takes: through the relay, or direct to
//! one of its endpoints. Sans-IO, with time passed in.
//!
//! Traffic starts on the relay at once (when there is one), so a new peer
//! never waits for a direct path. The node sends sealed pings to each of
//! the peer's candidate endpoints over the WireGuard socket; the first
//! endpoint to answer becomes the path. When a direct path stops
//! answering for [`DIRECT_TIMEOUT`], traffic moves back to the relay, and
//! moves direct again as soon as a probe is answered.
//!
//! NAT traversal: while a peer is on the relay, the node *calls* it
//! through the relay (a sealed "probe me now" naming our own candidates,
//! [`PathManager::set_local_candidates`]) and both sides then probe all of
//! each other's candidates at once, every [`BURST_INTERVAL`] for
//! [`BURST_DURATION`], so each NAT has opened its mapping toward the
//! other when the other's probe arrives. A ping from an address we did
//! not know is a peer-reflexive candidate: what a symmetric NAT chose
//! for the peer, probed at once. Calls repeat, ever less often, while the
//! peer stays on the relay: never sticky on the relay, never a flood.
//!
//! An endpoint that answers is probed every [`PROBE_INTERVAL`] (which
//! also holds the NAT mappings open); one that does not, after
//! [`STEADY_PROBES`] tries, ever less often (the interval doubles up to
//! [`MAX_PROBE_INTERVAL`] for an endpoint that never answered,
//! [`MAX_RETRY_INTERVAL`] for one that did), so a node that advertises
//! someone else's addresses cannot make the mesh flood them. A ping from
//! the peer at an endpoint proves it again and ends its backoff.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cvlan_core::Transmit;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use crate::candidate::Candidate;
pub use crate::candidate::{
    Source, BURST_INTERVAL, MAX_PROBE_INTERVAL, MAX_RETRY_INTERVAL, PROBE_INTERVAL, STEADY_PROBES,
};
use crate::crypto;
use crate::wire::{self, Key, Message, MAX_CALL_CANDIDATES};

/// Three probes unanswered.
pub const DIRECT_TIMEOUT: Duration = Duration::from_millis(6500);
/// How long both sides probe fast after a call.
pub const BURST_DURATION: Duration = Duration::from_secs(3);
/// A peer's call starts a burst at most this often (a replayed or
/// repeated call cannot keep us bursting), and we call back at most
/// this often.
pub const BURST_COOLDOWN: Duration = Duration::from_secs(4);
/// The first wait between calls of a peer on the relay; it doubles...
pub const CALL_INTERVAL: Duration = Duration::from_secs(5);
/// ...up to this.
pub const MAX_CALL_INTERVAL: Duration = Duration::from_secs(120);
/// Peer-reflexive candidates kept per peer (the newest).
pub const MAX_SEEN: usize = 4;
/// Probes waiting for an answer, per peer.
const MAX_OUTSTANDING: usize = 128;
/// Ports guessed past the highest one a symmetric NAT showed for a peer,
/// per address and burst: a NAT that hands out ports in order gives the
/// mapping toward us one of the next few. At most two addresses a burst,
/// and bursts come only after calls (backed off to one per 2 min).
pub const PORT_GUESSES: u16 = 16;
const GUESSED_ADDRESSES: usize = 2;
/// The operator's pings waiting for an answer, per peer.
const MAX_DEBUG_PINGS: usize = 64;
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
    /// An answer to one of [`PathManager::debug_ping`]'s pings: from
    /// `from` (the relay's entry when `via_relay`), `rtt` after it left.
    DebugPong {
        peer: Key,
        from: SocketAddr,
        via_relay: bool,
        rtt: Duration,
    },
}

/// What the machine dropped or learnt, for metrics and `debug`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Probe-shaped datagrams from a key that is no peer of ours.
    pub unknown_sender: u64,
    /// From a peer's key, but not sealed by it (forged or damaged).
    pub not_sealed: u64,
    /// Pongs for no ping of ours to that address.
    pub unsolicited_pongs: u64,
    pub calls_received: u64,
    pub calls_sent: u64,
    /// Peer-reflexive candidates learnt.
    pub seen_learnt: u64,
    /// Probes to guessed ports (hard NATs), and guesses that answered.
    pub guesses_sent: u64,
    pub guesses_answered: u64,
}

/// The direct path of a peer in use, and how we learnt its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Winner {
    pub addr: SocketAddr,
    pub source: Source,
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
    /// The operator's pings: where each went and when.
    debug: HashMap<u64, (SocketAddr, Instant)>,
    /// The end of the burst under way.
    burst_until: Option<Instant>,
    last_burst: Option<Instant>,
    next_call: Instant,
    call_interval: Duration,
    last_call_sent: Option<Instant>,
}

impl PeerPath {
    fn is_direct(&self) -> bool {
        matches!(self.path, Path::Direct(_))
    }

    /// Calls go to peers on the relay, through the relay.
    fn wants_call(&self, have_candidates: bool) -> bool {
        have_candidates && self.relay.is_some() && !self.is_direct()
    }

    fn bursting(&self, now: Instant) -> Option<Instant> {
        self.burst_until.filter(|end| now < *end)
    }

    fn start_burst(&mut self, now: Instant) {
        self.burst_until = Some(now + BURST_DURATION);
        self.last_burst = Some(now);
        for c in &mut self.candidates {
            c.restart(now);
        }
    }

    fn may_burst(&self, now: Instant) -> bool {
        self.last_burst
            .is_none_or(|t| now.saturating_duration_since(t) >= BURST_COOLDOWN)
    }

    /// When something is next due: a probe, a call, or the direct path
    /// going stale.
    fn next_due(&self, have_candidates: bool) -> Option<Instant> {
        let probe = self.candidates.iter().map(|c| c.next_probe).min();
        let stale = match (self.path, self.last_pong) {
            (Path::Direct(_), Some(t)) if self.relay.is_some() => Some(t + DIRECT_TIMEOUT),
            _ => None,
        };
        let call = self.wants_call(have_candidates).then_some(self.next_call);
        probe.into_iter().chain(stale).chain(call).min()
    }

    /// Takes a call's endpoints, keeping each one's backoff if known.
    fn take_called(&mut self, now: Instant, called: &[SocketAddr]) {
        let mut kept: Vec<Candidate> = self
            .candidates
            .iter()
            .filter(|c| c.source != Source::Call)
            .copied()
            .collect();
        for &addr in called.iter().take(MAX_CALL_CANDIDATES) {
            if kept.iter().any(|c| c.addr == addr) {
                continue;
            }
            let old = self.candidates.iter().find(|c| c.addr == addr).copied();
            kept.push(old.unwrap_or_else(|| Candidate::new(addr, Source::Call, now)));
        }
        self.candidates = kept;
    }

    /// A ping arrived from `from`, which no candidate names: the peer's
    /// address as its NAT maps it toward us.
    fn learn_seen(&mut self, now: Instant, from: SocketAddr) -> bool {
        if self.relay == Some(from) || self.candidates.iter().any(|c| c.addr == from) {
            return false;
        }
        let seen = self
            .candidates
            .iter()
            .filter(|c| c.source == Source::Seen)
            .count();
        if seen >= MAX_SEEN {
            let active = self.path;
            if let Some(i) = self
                .candidates
                .iter()
                .position(|c| c.source == Source::Seen && active != Path::Direct(c.addr))
            {
                self.candidates.remove(i);
            }
        }
        self.candidates
            .push(Candidate::new(from, Source::Seen, now));
        true
    }
}

/// The path machine of one node, for all its peers.
pub struct PathManager {
    our_secret: Zeroizing<[u8; 32]>,
    our_public: Key,
    peers: HashMap<Key, PeerPath>,
    /// Our own endpoints, named in our calls.
    local: Vec<SocketAddr>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
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
            local: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    fn send(&mut self, to: SocketAddr, datagram: Vec<u8>) {
        if self.transmits.len() < MAX_QUEUED {
            self.transmits.push_back(Transmit::to(to, datagram));
        }
    }

    fn use_endpoint(&mut self, peer: Key, endpoint: SocketAddr) {
        self.push_event(Event::UseEndpoint { peer, endpoint });
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_QUEUED {
            self.events.pop_front(); // a later choice supersedes it
        }
        self.events.push_back(event);
    }

    fn nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        self.rng.fill_bytes(&mut n);
        n
    }

    fn seal_to(&mut self, peer: &Key, message: &Message) -> Option<Vec<u8>> {
        let nonce = self.nonce();
        let p = self.peers.get(peer)?;
        Some(crypto::seal(&p.shared, &self.our_public, nonce, message))
    }

    /// A fresh ping to `peer` and its transaction id.
    fn new_ping(&mut self, peer: &Key) -> Option<(u64, Vec<u8>)> {
        let tx = self.rng.next_u64();
        Some((tx, self.seal_to(peer, &Message::Ping { tx })?))
    }

    pub fn path(&self, peer: &Key) -> Option<Path> {
        self.peers.get(peer).map(|p| p.path)
    }

    /// The direct path in use for `peer` and where its address came from.
    pub fn winner(&self, peer: &Key) -> Option<Winner> {
        let p = self.peers.get(peer)?;
        let Path::Direct(addr) = p.path else {
            return None;
        };
        let source = p.candidates.iter().find(|c| c.addr == addr)?.source;
        Some(Winner { addr, source })
    }

    /// Every candidate of `peer` and where it came from.
    pub fn candidates(&self, peer: &Key) -> Vec<(SocketAddr, Source)> {
        self.peers
            .get(peer)
            .map(|p| p.candidates.iter().map(|c| (c.addr, c.source)).collect())
            .unwrap_or_default()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Our own endpoints (local, reflexive, mapped), named in calls. A
    /// change calls every peer still on the relay at once: they learn
    /// where we are now without waiting for the map.
    pub fn set_local_candidates(&mut self, now: Instant, mut local: Vec<SocketAddr>) {
        local.truncate(MAX_CALL_CANDIDATES);
        if local == self.local {
            return;
        }
        self.local = local;
        for p in self.peers.values_mut() {
            p.next_call = now;
            p.call_interval = CALL_INTERVAL;
        }
    }

    /// Adds or updates a peer (its endpoints from the map); returns the
    /// endpoint to configure now.
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
            debug: HashMap::new(),
            burst_until: None,
            last_burst: None,
            next_call: now,
            call_interval: CALL_INTERVAL,
            last_call_sent: None,
        });
        // An endpoint seen before keeps its backoff (so re-announcing an
        // address does not restart a flood); a new one is probed at once.
        // Endpoints the peer's call named or its pings came from stay.
        let mut next: Vec<Candidate> = Vec::new();
        for addr in candidates {
            if next.iter().any(|c| c.addr == addr) {
                continue;
            }
            let known = entry.candidates.iter().find(|c| c.addr == addr).copied();
            let mut c = known.unwrap_or_else(|| Candidate::new(addr, Source::Map, now));
            c.source = Source::Map;
            next.push(c);
        }
        for c in &entry.candidates {
            if c.source != Source::Map && !next.iter().any(|n| n.addr == c.addr) {
                next.push(*c);
            }
        }
        entry.candidates = next;
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

    /// A probe datagram that arrived on the WireGuard socket, directly or
    /// through the relay (anything else is ignored).
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(sender) = wire::sender(datagram) else {
            return;
        };
        let Some(p) = self.peers.get(&sender) else {
            self.counters.unknown_sender += 1;
            return; // not a peer of ours: ignored
        };
        let Some(message) = crypto::open(&p.shared, datagram) else {
            self.counters.not_sealed += 1;
            return;
        };
        match message {
            Message::Ping { tx } => self.on_ping(now, sender, from, tx),
            Message::Pong { tx } => self.on_pong(now, sender, from, tx),
            Message::Call { candidates, .. } => self.on_call(now, sender, &candidates),
        }
    }

    fn on_ping(&mut self, now: Instant, sender: Key, from: SocketAddr, tx: u64) {
        let Some(p) = self.peers.get_mut(&sender) else {
            return;
        };
        // The peer is there: probe that endpoint again at once (or for
        // the first time: it is where the peer's NAT maps it toward us).
        if p.learn_seen(now, from) {
            self.counters.seen_learnt += 1;
        } else if let Some(c) = p.candidates.iter_mut().find(|c| c.addr == from) {
            if c.unanswered > 0 {
                c.proven(now, false);
            }
        }
        if let Some(pong) = self.seal_to(&sender, &Message::Pong { tx }) {
            self.send(from, pong);
        }
    }

    fn on_pong(&mut self, now: Instant, sender: Key, from: SocketAddr, tx: u64) {
        let Some(p) = self.peers.get_mut(&sender) else {
            return;
        };
        // Only an answer to a ping we sent to exactly that address.
        let debug = p.debug.remove(&tx).filter(|(to, _)| *to == from);
        let via_relay = p.relay == Some(from);
        let proof = !via_relay && p.outstanding.get(&tx) == Some(&from);
        if let Some((_, sent)) = debug {
            let rtt = now.saturating_duration_since(sent);
            self.push_event(Event::DebugPong {
                peer: sender,
                from,
                via_relay,
                rtt,
            });
        } else if !proof {
            self.counters.unsolicited_pongs += 1;
        }
        // An answer through the relay proves no direct path.
        let Some(p) = self.peers.get_mut(&sender) else {
            return;
        };
        if !proof {
            return;
        }
        p.outstanding.remove(&tx);
        p.last_pong = Some(now);
        if let Some(c) = p.candidates.iter_mut().find(|c| c.addr == from) {
            c.proven(now + PROBE_INTERVAL, true);
        } else {
            // A guessed port answered: it is a candidate from now on.
            let mut c = Candidate::new(from, Source::Guessed, now);
            c.proven(now + PROBE_INTERVAL, true);
            p.candidates.push(c);
            self.counters.guesses_answered += 1;
        }
        if !p.is_direct() {
            p.path = Path::Direct(from);
            p.burst_until = None; // found: the others go back to their pace
            p.call_interval = CALL_INTERVAL;
            self.use_endpoint(sender, from);
        }
    }

    fn on_call(&mut self, now: Instant, sender: Key, called: &[SocketAddr]) {
        self.counters.calls_received += 1;
        let have_local = !self.local.is_empty();
        let Some(p) = self.peers.get_mut(&sender) else {
            return;
        };
        p.take_called(now, called);
        let burst = p.may_burst(now);
        if burst {
            p.start_burst(now);
        }
        // Call back with our endpoints (once per cooldown): the caller
        // may not know them yet, and its own burst is under way.
        let recently = p
            .last_call_sent
            .is_some_and(|t| now.saturating_duration_since(t) < BURST_COOLDOWN);
        if p.wants_call(have_local) && !recently {
            p.next_call = now;
        }
        if burst {
            self.guess_ports(now, sender);
        }
    }

    /// Behind a symmetric NAT (its candidates show one address with
    /// several ports) the peer's mapping toward us is a port we were
    /// never told: probe the next few past the highest, once a burst.
    fn guess_ports(&mut self, _now: Instant, key: Key) {
        let Some(p) = self.peers.get(&key) else {
            return;
        };
        if p.is_direct() {
            return;
        }
        let mut ips: Vec<(std::net::IpAddr, u16, usize)> = Vec::new();
        for c in p.candidates.iter().filter(|c| c.source != Source::Guessed) {
            match ips.iter_mut().find(|(ip, _, _)| *ip == c.addr.ip()) {
                Some((_, max, n)) => {
                    *max = (*max).max(c.addr.port());
                    *n += 1;
                }
                None => ips.push((c.addr.ip(), c.addr.port(), 1)),
            }
        }
        let targets: Vec<SocketAddr> = ips
            .into_iter()
            .filter(|(_, _, n)| *n >= 2)
            .take(GUESSED_ADDRESSES)
            .flat_map(|(ip, max, _)| {
                (1..=PORT_GUESSES)
                    .filter_map(move |d| max.checked_add(d).map(|port| SocketAddr::new(ip, port)))
            })
            .filter(|a| !p.candidates.iter().any(|c| c.addr == *a))
            .collect();
        for to in targets {
            let Some((tx, ping)) = self.new_ping(&key) else {
                return;
            };
            let Some(p) = self.peers.get_mut(&key) else {
                return;
            };
            if p.outstanding.len() >= MAX_OUTSTANDING {
                return; // the budget is what is in flight
            }
            p.outstanding.insert(tx, to);
            self.counters.guesses_sent += 1;
            self.send(to, ping);
        }
    }

    /// `cvlan-agent debug ping`: one ping at once to every candidate of
    /// `peer` and one through the relay, each answer reported as
    /// [`Event::DebugPong`]. A direct answer proves that path as any probe
    /// does; the candidates' own pace is left alone. How many were sent.
    pub fn debug_ping(&mut self, now: Instant, peer: &Key) -> usize {
        let Some(p) = self.peers.get(peer) else {
            return 0;
        };
        let direct: Vec<SocketAddr> = p.candidates.iter().map(|c| c.addr).collect();
        let targets: Vec<SocketAddr> = direct.iter().copied().chain(p.relay).collect();
        let mut sent = 0;
        for to in targets {
            let Some((tx, ping)) = self.new_ping(peer) else {
                return sent;
            };
            let Some(p) = self.peers.get_mut(peer) else {
                return sent;
            };
            if p.debug.len() >= MAX_DEBUG_PINGS {
                p.debug.clear(); // old ones will never be answered now
            }
            p.debug.insert(tx, (to, now));
            if direct.contains(&to) {
                if p.outstanding.len() >= MAX_OUTSTANDING {
                    p.outstanding.clear();
                }
                p.outstanding.insert(tx, to);
            }
            self.send(to, ping);
            sent += 1;
        }
        sent
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut keys: Vec<Key> = self.peers.keys().copied().collect();
        keys.sort();
        for key in keys {
            self.fall_back_if_stale(now, key);
            self.call_if_due(now, key);
            self.probe_due(now, key);
        }
    }

    fn fall_back_if_stale(&mut self, now: Instant, key: Key) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let stale = p
            .last_pong
            .is_none_or(|t| now.saturating_duration_since(t) >= DIRECT_TIMEOUT);
        if let (Path::Direct(_), Some(relay)) = (p.path, p.relay) {
            if stale {
                p.path = Path::Relay;
                // Look for a direct path again with the peer, at once.
                p.next_call = now;
                p.call_interval = CALL_INTERVAL;
                self.use_endpoint(key, relay);
            }
        }
    }

    fn call_if_due(&mut self, now: Instant, key: Key) {
        let have_local = !self.local.is_empty();
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        if !p.wants_call(have_local) || now < p.next_call {
            return;
        }
        let Some(relay) = p.relay else { return };
        p.next_call = now + p.call_interval;
        p.call_interval = (p.call_interval * 2).min(MAX_CALL_INTERVAL);
        p.last_call_sent = Some(now);
        let burst = p.may_burst(now);
        if burst {
            p.start_burst(now);
        }
        let (tx, candidates) = (self.rng.next_u64(), self.local.clone());
        if let Some(call) = self.seal_to(&key, &Message::Call { tx, candidates }) {
            self.counters.calls_sent += 1;
            self.send(relay, call);
        }
        if burst {
            self.guess_ports(now, key);
        }
    }

    fn probe_due(&mut self, now: Instant, key: Key) {
        let due: Vec<SocketAddr> = match self.peers.get_mut(&key) {
            Some(p) => {
                // A peer-reflexive address that never answered is dropped
                // (the NAT's mapping it came from is gone).
                let active = p.path;
                p.candidates.retain(|c| {
                    c.source != Source::Seen
                        || c.answered
                        || c.unanswered < STEADY_PROBES
                        || active == Path::Direct(c.addr)
                });
                p.candidates
                    .iter()
                    .filter(|c| now >= c.next_probe)
                    .map(|c| c.addr)
                    .collect()
            }
            None => return,
        };
        for to in due {
            let Some((tx, ping)) = self.new_ping(&key) else {
                return;
            };
            let Some(p) = self.peers.get_mut(&key) else {
                return;
            };
            if p.outstanding.len() >= MAX_OUTSTANDING {
                p.outstanding.clear(); // old pings will never be answered now
            }
            p.outstanding.insert(tx, to);
            let (active, burst) = (p.path == Path::Direct(to), p.bursting(now));
            if let Some(c) = p.candidates.iter_mut().find(|c| c.addr == to) {
                c.sent(now, active, burst);
            }
            self.send(to, ping);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let have_local = !self.local.is_empty();
        self.peers
            .values()
            .filter_map(|p| p.next_due(have_local))
            .min()
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
