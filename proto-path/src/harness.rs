//! A fake-time harness for path discovery: two nodes' managers joined by
//! a link the test can cut, with the relay as the fallback. Nothing runs
//! on its own: the test moves the clock and calls [`Pair::step`], which
//! carries every probe across (or drops it, link down) and records every
//! endpoint change each side asks for. NAT behaviour grows here next.

use std::net::SocketAddr;
use std::time::Instant;

use zeroize::Zeroizing;

use crate::paths::{Event, PathManager};
use crate::wire::Key;

/// Node A's and B's addresses on the direct link, and the relay's entry.
pub const A_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    41641,
);
pub const B_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    41641,
);
pub const RELAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
/// The two nodes' private keys.
pub const A_SECRET: [u8; 32] = [1; 32];
pub const B_SECRET: [u8; 32] = [2; 32];

/// The public key of a private one.
pub fn public(secret: &[u8; 32]) -> Key {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes()
}

#[derive(Debug)]
pub struct Pair {
    pub a: PathManager,
    pub b: PathManager,
    /// Whether probes cross the direct link.
    pub link_up: bool,
    /// The endpoints each side set for the other, in order.
    pub a_endpoints: Vec<SocketAddr>,
    pub b_endpoints: Vec<SocketAddr>,
    /// What each side's first `set_peer` returned (the relay, if all is well).
    pub first: (Option<SocketAddr>, Option<SocketAddr>),
}

impl Pair {
    /// A and B, each the other's peer with one direct endpoint and the relay.
    pub fn new(now: Instant) -> Self {
        let mut a = PathManager::new(Zeroizing::new(A_SECRET), public(&A_SECRET), [1; 32]);
        let mut b = PathManager::new(Zeroizing::new(B_SECRET), public(&B_SECRET), [2; 32]);
        let first_a = a.set_peer(now, public(&B_SECRET), vec![B_ADDR], Some(RELAY));
        let first_b = b.set_peer(now, public(&A_SECRET), vec![A_ADDR], Some(RELAY));
        Self {
            a,
            b,
            link_up: true,
            a_endpoints: vec![],
            b_endpoints: vec![],
            first: (first_a, first_b),
        }
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
                if self.link_up {
                    self.b.handle_input(now, A_ADDR, &t.contents);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                if self.link_up {
                    self.a.handle_input(now, B_ADDR, &t.contents);
                }
            }
            while let Some(Event::UseEndpoint { endpoint, .. }) = self.a.poll_event() {
                self.a_endpoints.push(endpoint);
            }
            while let Some(Event::UseEndpoint { endpoint, .. }) = self.b.poll_event() {
                self.b_endpoints.push(endpoint);
            }
        }
    }
}
