//! Clients and the relay core joined by in-memory byte pipes, fake time:
//! authentication, a wrong relay key, keepalives, relayed packets.

#![allow(clippy::disallowed_methods)] // Instant::now() is only the fake clock's origin

use std::time::{Duration, Instant};

use proto_control::public_key;

use crate::client::{ClientEvent, RelayClient};
use crate::frame::{GoneReason, Key};
use crate::link::ServerLink;
use crate::server::{ConnId, Limits, RelayServer, Role};

const RELAY: [u8; 32] = [0x99; 32];

struct Net {
    server: RelayServer,
    links: Vec<ServerLink>,
    clients: Vec<RelayClient>,
    now: Instant,
}

impl Net {
    fn new() -> Self {
        Self {
            server: RelayServer::new(Limits::default()),
            links: vec![],
            clients: vec![],
            now: Instant::now(),
        }
    }

    fn add(&mut self, node_key: [u8; 32], relay_pub: Key) -> usize {
        let i = self.clients.len();
        let seed = [i as u8 + 1; 32];
        self.clients.push(
            RelayClient::new(self.now, Role::Client, &node_key, &relay_pub, seed, 1).unwrap(),
        );
        self.links
            .push(ServerLink::new(&RELAY, [0x40 + i as u8; 32]).unwrap());
        i
    }

    /// Moves bytes both ways until nothing moves; a failing link is
    /// reported as the error of that side.
    fn settle(&mut self) -> Result<(), String> {
        loop {
            let mut moved = false;
            for i in 0..self.clients.len() {
                while let Some(b) = self.clients[i].poll_transmit() {
                    moved = true;
                    let mut frames = Vec::new();
                    let auth = self.links[i]
                        .handle_input(&b, &mut frames, |_, _| true)
                        .map_err(|e| format!("server side {i}: {e}"))?;
                    if let Some(a) = auth {
                        self.server
                            .connect(self.now, ConnId(i as u64), a.key, a.role);
                    }
                    for f in frames {
                        let _ = self.server.handle_frame(self.now, ConnId(i as u64), &f);
                    }
                }
                while let Some(f) = self.server.poll_send(ConnId(i as u64)) {
                    self.links[i].send(&f).unwrap();
                }
                while let Some(b) = self.links[i].poll_transmit() {
                    moved = true;
                    self.clients[i]
                        .handle_input(self.now, &b)
                        .map_err(|e| format!("client {i}: {e}"))?;
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }

    fn events(&mut self, i: usize) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.clients[i].poll_event()).collect()
    }
}

#[test]
fn nodes_authenticate_with_their_key_and_exchange_packets() {
    let mut net = Net::new();
    let relay_pub = public_key(&RELAY);
    let a = net.add([1; 32], relay_pub);
    let b = net.add([2; 32], relay_pub);
    net.settle().unwrap();
    assert_eq!(net.events(a), [ClientEvent::Connected]);
    assert_eq!(net.events(b), [ClientEvent::Connected]);
    assert_eq!(
        net.links[a].peer(),
        Some((public_key(&[1; 32]), Role::Client)),
        "the relay knows A by its proven key"
    );

    let now = net.now;
    net.clients[a]
        .send_packet(now, &public_key(&[2; 32]), b"sealed")
        .unwrap();
    net.settle().unwrap();
    assert_eq!(
        net.events(b),
        [ClientEvent::Packet {
            src: public_key(&[1; 32]),
            packet: b"sealed".to_vec()
        }]
    );

    net.clients[a].ping(now, [5; 8]).unwrap();
    net.clients[a]
        .send_packet(now, &[7; 32], b"to nobody")
        .unwrap();
    net.settle().unwrap();
    assert_eq!(
        net.events(a),
        [
            ClientEvent::Pong([5; 8]),
            ClientEvent::PeerGone {
                key: [7; 32],
                reason: GoneReason::NotHere
            }
        ]
    );
}

#[test]
fn a_wrong_relay_key_fails_the_handshake() {
    let mut net = Net::new();
    net.add([1; 32], public_key(&[0x55; 32]));
    let err = net.settle().unwrap_err();
    assert!(err.starts_with("server side 0"), "{err}");
    assert_eq!(net.server.clients(), 0);
}

#[test]
fn quiet_links_send_keepalives() {
    let mut net = Net::new();
    let a = net.add([1; 32], public_key(&RELAY));
    net.settle().unwrap();
    let due = net.clients[a].poll_timeout();
    assert!(due > net.now);
    net.clients[a]
        .handle_timeout(due - Duration::from_millis(1))
        .unwrap();
    assert!(
        net.clients[a].poll_transmit().is_none(),
        "nothing before it is due"
    );
    net.now = due;
    net.clients[a].handle_timeout(due).unwrap();
    assert!(net.clients[a].poll_transmit().is_some(), "a keepalive");
    assert!(net.clients[a].poll_timeout() > due);
}
