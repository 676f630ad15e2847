//! A fake-time harness for path discovery: two nodes' machines, each
//! behind a NAT of its own kind, joined by an internet the test can cut,
//! with the relay as the fallback (it carries the nodes' calls). Nothing
//! runs on its own: the test moves the clock and calls [`Pair::step`],
//! which carries every datagram across (translated and filtered by both
//! NATs, or dropped) and records every endpoint change each side asks for.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use zeroize::Zeroizing;

use crate::paths::{Event, PathManager};
use crate::wire::Key;

/// Node A's and B's own addresses (public ones when not behind a NAT).
pub const A_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 41641);
pub const B_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 41641);
/// Each NAT's public address.
pub const A_NAT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
pub const B_NAT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 12);
/// Where the nodes' STUN queries go (what their reflexive address is for).
pub const STUN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 3478);
pub const STUN2: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 11)), 3478);
pub const RELAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);
/// The two nodes' private keys.
pub const A_SECRET: [u8; 32] = [1; 32];
pub const B_SECRET: [u8; 32] = [2; 32];

/// The public key of a private one.
pub fn public(secret: &[u8; 32]) -> Key {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

/// What stands between a node and the internet (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// A public address, no filter.
    Open,
    /// Endpoint-independent mapping and filtering ("full cone").
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering
    /// ("restricted cone").
    AddressRestricted,
    /// Endpoint-independent mapping (the port kept), address-and-port
    /// dependent filtering: plain Linux masquerade, most home routers.
    PortRestricted,
    /// A new port for every destination, the next one each time (as
    /// many CGNATs), filtered the same way.
    Symmetric,
    /// A new, random port for every destination (Linux `masquerade
    /// random`, the lab's symmetric NAT).
    SymmetricRandom,
}

#[derive(Debug)]
pub struct Nat {
    pub kind: NatKind,
    public_ip: Ipv4Addr,
    next_port: u16,
    /// (inside source, remote, public port): one per flow, as conntrack.
    flows: Vec<(SocketAddr, SocketAddr, u16)>,
}

impl Nat {
    fn new(kind: NatKind, public_ip: Ipv4Addr) -> Self {
        Self {
            kind,
            public_ip,
            next_port: 30_000,
            flows: Vec::new(),
        }
    }

    /// The source the remote sees for a datagram from `inside` to it.
    pub fn outbound(&mut self, inside: SocketAddr, remote: SocketAddr) -> SocketAddr {
        if self.kind == NatKind::Open {
            return inside;
        }
        let independent = !matches!(self.kind, NatKind::Symmetric | NatKind::SymmetricRandom);
        let existing = self
            .flows
            .iter()
            .find(|(i, r, _)| *i == inside && (independent || *r == remote));
        let port = match existing {
            Some(&(_, _, port)) => port,
            None if independent => inside.port(),
            None if self.kind == NatKind::Symmetric => {
                self.next_port += 1;
                self.next_port
            }
            None => {
                // A fixed LCG: random-looking, the same every run.
                self.next_port = self.next_port.wrapping_mul(25_173).wrapping_add(13_849);
                1024 + self.next_port % 64_000
            }
        };
        if !self.flows.contains(&(inside, remote, port)) {
            self.flows.push((inside, remote, port));
        }
        SocketAddr::new(IpAddr::V4(self.public_ip), port)
    }

    /// Where a datagram from `remote` to `to` goes inside, if it may pass.
    pub fn inbound(
        &self,
        to: SocketAddr,
        remote: SocketAddr,
        own: SocketAddr,
    ) -> Option<SocketAddr> {
        if self.kind == NatKind::Open {
            return (to == own).then_some(own);
        }
        if to.ip() != IpAddr::V4(self.public_ip) {
            return None;
        }
        let passes = |r: &SocketAddr| match self.kind {
            NatKind::FullCone => true,
            NatKind::AddressRestricted => r.ip() == remote.ip(),
            _ => *r == remote,
        };
        self.flows
            .iter()
            .find(|(_, r, p)| *p == to.port() && passes(r))
            .map(|(i, _, _)| *i)
    }

    /// The conntrack table is flushed (or the mappings time out).
    pub fn forget(&mut self) {
        self.flows.clear();
    }
}

#[derive(Debug)]
pub struct Pair {
    pub a: PathManager,
    pub b: PathManager,
    pub nat_a: Nat,
    pub nat_b: Nat,
    /// Whether datagrams cross the internet between the two NATs.
    pub link_up: bool,
    /// Whether the relay carries calls.
    pub relay_up: bool,
    /// The endpoints each side set for the other, in order.
    pub a_endpoints: Vec<SocketAddr>,
    pub b_endpoints: Vec<SocketAddr>,
    /// Every other event, in order.
    pub a_events: Vec<Event>,
    pub b_events: Vec<Event>,
    /// What each side's first `set_peer` returned (the relay, if all is well).
    pub first: (Option<SocketAddr>, Option<SocketAddr>),
    /// Datagrams each side sent toward the other's NAT (not the relay).
    pub sent: (usize, usize),
}

impl Pair {
    /// A and B, each the other's peer with one direct endpoint and the
    /// relay, no NAT between them, and no calls (no own candidates).
    pub fn new(now: Instant) -> Self {
        let mut a = PathManager::new(Zeroizing::new(A_SECRET), public(&A_SECRET), [1; 32]);
        let mut b = PathManager::new(Zeroizing::new(B_SECRET), public(&B_SECRET), [2; 32]);
        let first_a = a.set_peer(now, public(&B_SECRET), vec![B_ADDR], Some(RELAY));
        let first_b = b.set_peer(now, public(&A_SECRET), vec![A_ADDR], Some(RELAY));
        Self {
            a,
            b,
            nat_a: Nat::new(NatKind::Open, A_NAT_IP),
            nat_b: Nat::new(NatKind::Open, B_NAT_IP),
            link_up: true,
            relay_up: true,
            a_endpoints: vec![],
            b_endpoints: vec![],
            a_events: vec![],
            b_events: vec![],
            first: (first_a, first_b),
            sent: (0, 0),
        }
    }

    /// A behind `nat_a`, B behind `nat_b`. Each reports what an agent
    /// reports: its own address and the reflexive one its STUN query
    /// learnt, in the map and in its calls.
    pub fn behind(now: Instant, nat_a: NatKind, nat_b: NatKind) -> Self {
        let mut pair = Self::new(now);
        pair.nat_a = Nat::new(nat_a, A_NAT_IP);
        pair.nat_b = Nat::new(nat_b, B_NAT_IP);
        let a_eps = endpoints(&mut pair.nat_a, A_ADDR);
        let b_eps = endpoints(&mut pair.nat_b, B_ADDR);
        pair.first.0 = pair
            .a
            .set_peer(now, public(&B_SECRET), b_eps.clone(), Some(RELAY));
        pair.first.1 = pair
            .b
            .set_peer(now, public(&A_SECRET), a_eps.clone(), Some(RELAY));
        pair.a.set_local_candidates(now, a_eps);
        pair.b.set_local_candidates(now, b_eps);
        pair
    }

    /// When either side next has something due (never before `now`).
    pub fn next_due(&self, now: Instant) -> Instant {
        [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now)
            .max(now)
    }

    /// Both sides' timers at `now`, then every datagram across until
    /// neither has more to say.
    pub fn step(&mut self, now: Instant) {
        self.a.handle_timeout(now);
        self.b.handle_timeout(now);
        for _ in 0..4 {
            while let Some(t) = self.a.poll_transmit() {
                if let Some(from) = self.carry(true, t.destination) {
                    self.b.handle_input(now, from, &t.contents);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                if let Some(from) = self.carry(false, t.destination) {
                    self.a.handle_input(now, from, &t.contents);
                }
            }
            while let Some(e) = self.a.poll_event() {
                match e {
                    Event::UseEndpoint { endpoint, .. } => self.a_endpoints.push(endpoint),
                    other => self.a_events.push(other),
                }
            }
            while let Some(e) = self.b.poll_event() {
                match e {
                    Event::UseEndpoint { endpoint, .. } => self.b_endpoints.push(endpoint),
                    other => self.b_events.push(other),
                }
            }
        }
    }

    /// A datagram from A (or B) to `to`: where the other side sees it
    /// come from, if it arrives.
    fn carry(&mut self, from_a: bool, to: SocketAddr) -> Option<SocketAddr> {
        if to == RELAY {
            return self.relay_up.then_some(RELAY);
        }
        let (src, nat_out, nat_in, dst_own) = if from_a {
            self.sent.0 += 1;
            (A_ADDR, &mut self.nat_a, &self.nat_b, B_ADDR)
        } else {
            self.sent.1 += 1;
            (B_ADDR, &mut self.nat_b, &self.nat_a, A_ADDR)
        };
        // A private address across the internet goes nowhere.
        let outside = nat_out.outbound(src, to);
        if !self.link_up {
            return None;
        }
        nat_in.inbound(to, outside, dst_own).map(|_| outside)
    }
}

/// What a node behind `nat` reports: its own address and, behind a NAT,
/// the reflexive ones its two STUN servers saw (one for a cone, two
/// ports for a symmetric NAT).
fn endpoints(nat: &mut Nat, own: SocketAddr) -> Vec<SocketAddr> {
    let mut out = vec![own];
    for server in [STUN, STUN2] {
        let reflexive = nat.outbound(own, server);
        if !out.contains(&reflexive) {
            out.push(reflexive);
        }
    }
    out
}
