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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use crate::probe::{self, Key, Kind};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Relay,
    Direct(SocketAddr),
    /// No relay and no proven direct path: the first endpoint, untested.
    Unproven(SocketAddr),
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this datagram from the WireGuard socket.
    Send { to: SocketAddr, datagram: Vec<u8> },
    /// Point the peer's WireGuard endpoint at `endpoint`.
    SetEndpoint { peer: Key, endpoint: SocketAddr },
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
    actions: Vec<Action>,
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
            actions: Vec::new(),
            rng: ChaCha20Rng::from_seed(seed),
        }
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
        let shared = probe::shared_key(&self.our_secret, &peer)?;
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

    /// A probe datagram that arrived on the WireGuard socket.
    pub fn handle_probe(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(sender) = probe::sender(datagram) else {
            return;
        };
        let Some(p) = self.peers.get(&sender) else {
            return; // not a peer of ours: ignored
        };
        let Some((kind, tx)) = probe::open(&p.shared, datagram) else {
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
                let datagram = probe::seal(&shared, &self.our_public, nonce, Kind::Pong, tx);
                self.actions.push(Action::Send { to: from, datagram });
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
                    self.actions.push(Action::SetEndpoint {
                        peer: sender,
                        endpoint: from,
                    });
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
                self.actions.push(Action::SetEndpoint {
                    peer: key,
                    endpoint: relay,
                });
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
                let datagram = probe::seal(&p.shared, &self.our_public, nonce, Kind::Ping, tx);
                self.actions.push(Action::Send { to, datagram });
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(PeerPath::next_due).min()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            None
        } else {
            Some(self.actions.remove(0))
        }
    }
}

fn endpoint_of(p: &PeerPath) -> Option<SocketAddr> {
    match p.path {
        Path::Relay => p.relay,
        Path::Direct(a) | Path::Unproven(a) => Some(a),
        Path::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(k: &[u8; 32]) -> Key {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*k)).to_bytes()
    }

    const A_ADDR: &str = "10.0.0.1:41641";
    const B_ADDR: &str = "10.0.0.2:41641";

    /// Two managers with a link that can be cut; actions are carried out
    /// by hand. Returns the endpoints each side set, in order.
    struct Pair {
        a: PathManager,
        b: PathManager,
        link_up: bool,
        a_endpoints: Vec<SocketAddr>,
        b_endpoints: Vec<SocketAddr>,
    }

    impl Pair {
        fn new(now: Instant) -> Self {
            let (ka, kb) = ([1u8; 32], [2u8; 32]);
            let mut a = PathManager::new(Zeroizing::new(ka), public(&ka), [1; 32]);
            let mut b = PathManager::new(Zeroizing::new(kb), public(&kb), [2; 32]);
            let relay: SocketAddr = "127.0.0.1:5000".parse().unwrap();
            let first_a = a.set_peer(now, public(&kb), vec![B_ADDR.parse().unwrap()], Some(relay));
            let first_b = b.set_peer(now, public(&ka), vec![A_ADDR.parse().unwrap()], Some(relay));
            assert_eq!(
                (first_a, first_b),
                (Some(relay), Some(relay)),
                "traffic starts on the relay"
            );
            Self {
                a,
                b,
                link_up: true,
                a_endpoints: vec![],
                b_endpoints: vec![],
            }
        }

        /// When either side next has something due.
        fn next_due(&self, now: Instant) -> Instant {
            [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now)
                .max(now)
        }

        fn step(&mut self, now: Instant) {
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            for _ in 0..4 {
                while let Some(act) = self.a.poll_action() {
                    match act {
                        Action::Send { datagram, .. } if self.link_up => {
                            self.b.handle_probe(now, A_ADDR.parse().unwrap(), &datagram)
                        }
                        Action::Send { .. } => {}
                        Action::SetEndpoint { endpoint, .. } => self.a_endpoints.push(endpoint),
                    }
                }
                while let Some(act) = self.b.poll_action() {
                    match act {
                        Action::Send { datagram, .. } if self.link_up => {
                            self.a.handle_probe(now, B_ADDR.parse().unwrap(), &datagram)
                        }
                        Action::Send { .. } => {}
                        Action::SetEndpoint { endpoint, .. } => self.b_endpoints.push(endpoint),
                    }
                }
            }
        }
    }

    #[test]
    fn traffic_moves_direct_when_probes_answer_and_back_to_the_relay_when_they_stop() {
        let mut now = Instant::now();
        let mut pair = Pair::new(now);
        let relay: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        pair.link_up = false;
        for _ in 0..5 {
            pair.step(now);
            now += PROBE_INTERVAL;
        }
        assert!(
            pair.a_endpoints.is_empty(),
            "no direct path proven: stays on the relay"
        );
        assert_eq!(pair.a.path(&public(&[2; 32])), Some(Path::Relay));

        // The link comes back: the next probe (backed off by now) finds it.
        pair.link_up = true;
        let back = now;
        while pair.a_endpoints.is_empty() {
            now = pair.next_due(now);
            assert!(now - back <= MAX_PROBE_INTERVAL, "not found again");
            pair.step(now);
        }
        assert_eq!(pair.a_endpoints, [B_ADDR.parse::<SocketAddr>().unwrap()]);
        assert_eq!(pair.b_endpoints, [A_ADDR.parse::<SocketAddr>().unwrap()]);

        // The direct path dies: after the timeout, back to the relay.
        pair.link_up = false;
        let cut = now;
        while now < cut + DIRECT_TIMEOUT + PROBE_INTERVAL {
            now += PROBE_INTERVAL;
            pair.step(now);
        }
        assert_eq!(pair.a_endpoints.last(), Some(&relay));
        // And direct again when it comes back, sooner: it answered before.
        pair.link_up = true;
        let back = now;
        while pair.a_endpoints.last() != Some(&B_ADDR.parse().unwrap()) {
            now = pair.next_due(now);
            assert!(now - back <= MAX_RETRY_INTERVAL, "not found again");
            pair.step(now);
        }
    }

    #[test]
    fn an_endpoint_that_never_answers_is_probed_ever_less_often() {
        // A peer that advertises someone else's addresses: nothing there
        // answers. Ten minutes of probing each of them:
        let mut now = Instant::now();
        let start = now;
        let mut m = PathManager::new(Zeroizing::new([1; 32]), public(&[1; 32]), [4; 32]);
        let victims: Vec<SocketAddr> = (1..=3)
            .map(|i| format!("198.51.100.{i}:443").parse().unwrap())
            .collect();
        m.set_peer(now, public(&[2; 32]), victims.clone(), None);
        let mut sent = std::collections::HashMap::<SocketAddr, usize>::new();
        while now - start < Duration::from_secs(600) {
            m.handle_timeout(now);
            while let Some(a) = m.poll_action() {
                if let Action::Send { to, .. } = a {
                    *sent.entry(to).or_default() += 1;
                }
            }
            now = m.poll_timeout().unwrap().max(now);
        }
        for v in &victims {
            let n = sent[v];
            // 300 each at a steady 2 s; backed off: the first few, then one
            // a minute.
            assert!((10..=20).contains(&n), "{v}: {n} probes");
        }
        // Whatever was due at the end goes out; then the peer shows up at
        // one of them: its ping ends that backoff.
        m.handle_timeout(now);
        while m.poll_action().is_some() {}
        let theirs = probe::shared_key(&Zeroizing::new([2; 32]), &public(&[1; 32])).unwrap();
        let ping = probe::seal(&theirs, &public(&[2; 32]), [7; 12], Kind::Ping, 99);
        m.handle_probe(now, victims[0], &ping);
        let _ = m.poll_action(); // our pong
        m.handle_timeout(now);
        let probed: Vec<SocketAddr> = std::iter::from_fn(|| m.poll_action())
            .filter_map(|a| match a {
                Action::Send { to, .. } => Some(to),
                Action::SetEndpoint { .. } => None,
            })
            .collect();
        assert_eq!(probed, [victims[0]], "probed again at once, the others not");
    }

    #[test]
    fn strangers_forged_and_unsolicited_probes_change_nothing() {
        let now = Instant::now();
        let mut pair = Pair::new(now);
        let stranger_key = Zeroizing::new([9u8; 32]);
        let shared = probe::shared_key(&stranger_key, &public(&[1; 32])).unwrap();
        let ping = probe::seal(&shared, &public(&[9; 32]), [0; 12], Kind::Ping, 1);
        pair.a
            .handle_probe(now, "10.9.9.9:1".parse().unwrap(), &ping);
        assert!(pair.a.poll_action().is_none(), "strangers get no answer");
        // A pong nobody asked for, from B's real key but an unprobed address.
        let ab = probe::shared_key(&Zeroizing::new([2u8; 32]), &public(&[1; 32])).unwrap();
        let pong = probe::seal(&ab, &public(&[2; 32]), [0; 12], Kind::Pong, 12345);
        pair.a
            .handle_probe(now, "10.6.6.6:1".parse().unwrap(), &pong);
        assert!(pair.a.poll_action().is_none());
        assert_eq!(pair.a.path(&public(&[2; 32])), Some(Path::Relay));
    }

    #[test]
    fn without_a_relay_the_first_endpoint_is_used_at_once() {
        let now = Instant::now();
        let mut m = PathManager::new(Zeroizing::new([1; 32]), public(&[1; 32]), [3; 32]);
        let e = m.set_peer(now, public(&[2; 32]), vec![B_ADDR.parse().unwrap()], None);
        assert_eq!(e, Some(B_ADDR.parse().unwrap()));
        assert!(matches!(m.path(&public(&[2; 32])), Some(Path::Unproven(_))));
    }
}
