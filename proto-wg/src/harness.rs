//! A deterministic two-device harness: a virtual clock, a seeded lossy,
//! duplicating, reordering link, and IPv4 packets to push through it.
//! Used by this crate's tests and by fuzz targets; no IO, no real time.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::{
    Device, Encapsulated, Event, IpPrefix, PeerId, PrivateKey, Received, RecvError, SendError,
    Transmit,
};

/// Room for any packet the harness sends, sealed.
const BUF_LEN: usize = 2048;

/// One side of the pair.
#[derive(Debug)]
pub struct Node {
    pub device: Device,
    pub addr: SocketAddr,
    pub overlay: Ipv4Addr,
    /// This node's handle for the other node.
    pub peer: PeerId,
    /// IP packets delivered to this node's "TUN", in order.
    pub delivered: Vec<Vec<u8>>,
    pub keepalives: usize,
    pub events: Vec<Event>,
    pub errors: Vec<RecvError>,
    /// Every datagram this node sent, as the wire saw it.
    pub sent: Vec<Transmit>,
}

/// Link impairments, each a probability in percent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairments {
    pub loss: u32,
    pub duplicate: u32,
    pub reorder: bool,
    /// Datagrams addressed to a node's own address vanish (a broken
    /// direct path); those sent to an [`Pair::add_detour`] still arrive.
    pub direct_broken: bool,
}

/// Two devices, A (index 0) and B (index 1), each the other's only peer.
#[derive(Debug)]
pub struct Pair {
    pub nodes: [Node; 2],
    pub now: Instant,
    pub link: Impairments,
    rng: ChaCha20Rng,
    /// (destination node, source address, bytes)
    in_flight: Vec<(usize, SocketAddr, Vec<u8>)>,
    /// Other ways to a node: (address, node, the source it sees).
    detours: Vec<(SocketAddr, usize, SocketAddr)>,
}

/// A minimal IPv4 packet (protocol 253, "experimental") carrying `payload`.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    p[8] = 64;
    p[9] = 253;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(payload);
    p
}

impl Pair {
    /// A configured pair: keys from `seed`, overlay 10.0.0.1 and 10.0.0.2
    /// (each peer's allowed IP is the other's /32), endpoints known both ways.
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        // The virtual clock needs an origin; after this only `advance` moves it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let unix = Duration::from_secs(1_700_000_000);
        let keys = [
            PrivateKey::generate(&mut rng),
            PrivateKey::generate(&mut rng),
        ];
        let addrs: [SocketAddr; 2] = [
            SocketAddr::from(([192, 0, 2, 1], 51820)),
            SocketAddr::from(([192, 0, 2, 2], 51820)),
        ];
        let overlays = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
        let make = |me: usize, rng: &mut ChaCha20Rng| {
            let other = 1 - me;
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            let mut device = Device::new(seed, now, unix);
            device.set_private_key(Some(keys[me].clone()));
            let peer = device
                .add_peer(keys[other].public_key())
                .unwrap_or_else(|| unreachable!("distinct keys"));
            device.set_endpoint(peer, addrs[other]);
            let net = IpPrefix::new(overlays[other].into(), 32)
                .unwrap_or_else(|_| unreachable!("/32 is valid"));
            device.add_allowed_ip(peer, net);
            Node {
                device,
                addr: addrs[me],
                overlay: overlays[me],
                peer,
                delivered: Vec::new(),
                keepalives: 0,
                events: Vec::new(),
                errors: Vec::new(),
                sent: Vec::new(),
            }
        };
        let a = make(0, &mut rng);
        let b = make(1, &mut rng);
        Self {
            nodes: [a, b],
            now,
            link: Impairments::default(),
            rng,
            in_flight: Vec::new(),
            detours: Vec::new(),
        }
    }

    /// Sends `payload` in an IPv4 packet from node `from` to the other node.
    pub fn send(&mut self, from: usize, payload: &[u8]) -> Result<Encapsulated, SendError> {
        let (src, dst) = (self.nodes[from].overlay, self.nodes[1 - from].overlay);
        self.send_ip(from, &ipv4_packet(src, dst, payload))
    }

    /// Sends a raw packet into node `from`'s device as if read from its TUN.
    pub fn send_ip(&mut self, from: usize, packet: &[u8]) -> Result<Encapsulated, SendError> {
        let mut buf = vec![0u8; BUF_LEN.max(packet.len() + 64)];
        buf[crate::DATA_HEADER_LEN..crate::DATA_HEADER_LEN + packet.len()].copy_from_slice(packet);
        let now = self.now;
        let node = &mut self.nodes[from];
        let out = node.device.encapsulate(now, &mut buf, packet.len())?;
        if let Encapsulated::Send { to, also_to, len } = out {
            buf.truncate(len);
            node.sent.push(Transmit::to(to, buf.clone()));
            if let Some(also) = also_to {
                node.sent.push(Transmit::to(also, buf.clone()));
                self.put_on_link(from, also, buf.clone());
            }
            self.put_on_link(from, to, buf);
        }
        Ok(out)
    }

    /// Datagrams sent to `addr` reach node `to` as if from `seen_from`
    /// (a relay between them).
    pub fn add_detour(&mut self, addr: SocketAddr, to: usize, seen_from: SocketAddr) {
        self.detours.push((addr, to, seen_from));
    }

    fn put_on_link(&mut self, from: usize, to: SocketAddr, bytes: Vec<u8>) {
        let direct = self.nodes.iter().position(|n| n.addr == to);
        let detour = self.detours.iter().find(|d| d.0 == to).copied();
        let (dest, src) = match (direct, detour) {
            (Some(_), _) if self.link.direct_broken => return,
            (Some(dest), _) => (dest, self.nodes[from].addr),
            (None, Some((_, dest, seen_from))) => (dest, seen_from),
            (None, None) => return,
        };
        if self.chance(self.link.loss) {
            return;
        }
        if self.chance(self.link.duplicate) {
            self.in_flight.push((dest, src, bytes.clone()));
        }
        self.in_flight.push((dest, src, bytes));
    }

    fn chance(&mut self, percent: u32) -> bool {
        percent > 0 && self.rng.next_u32() % 100 < percent
    }

    /// Collects every node's transmits onto the link.
    fn collect(&mut self) {
        for i in 0..2 {
            while let Some(t) = self.nodes[i].device.poll_transmit() {
                self.nodes[i].sent.push(t.clone());
                self.put_on_link(i, t.destination, t.contents);
            }
            while let Some(e) = self.nodes[i].device.poll_event() {
                self.nodes[i].events.push(e);
            }
        }
    }

    /// Delivers one datagram to node `dest` as if from `src`.
    pub fn deliver(
        &mut self,
        dest: usize,
        src: SocketAddr,
        mut bytes: Vec<u8>,
    ) -> Result<Received, RecvError> {
        let now = self.now;
        let node = &mut self.nodes[dest];
        let r = node.device.handle_datagram(now, src, &mut bytes);
        match &r {
            Ok(Received::Packet { range, .. }) => {
                node.delivered.push(bytes[range.clone()].to_vec())
            }
            Ok(Received::Keepalive { .. }) => node.keepalives += 1,
            Ok(Received::Handshake) => {}
            Err(e) => node.errors.push(*e),
        }
        r
    }

    /// Moves datagrams until the link is quiet (bounded, in case of a bug
    /// that ping-pongs forever).
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            self.collect();
            if self.in_flight.is_empty() {
                return;
            }
            let mut batch = std::mem::take(&mut self.in_flight);
            if self.link.reorder {
                for i in (1..batch.len()).rev() {
                    let j = (self.rng.next_u32() as usize) % (i + 1);
                    batch.swap(i, j);
                }
            }
            for (dest, src, bytes) in batch {
                let _ = self.deliver(dest, src, bytes);
            }
        }
        panic!("link never went quiet");
    }

    /// Advances the virtual clock by `d`, firing every timer on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.device.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in &mut self.nodes {
                        n.device.handle_timeout(now);
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
        self.pump();
    }

    /// Events of `kind` seen so far on node `i`.
    pub fn count_events(&self, i: usize, pred: impl Fn(&Event) -> bool) -> usize {
        self.nodes[i].events.iter().filter(|e| pred(e)).count()
    }
}
