//! Our addresses as the internet sees them, learnt from the WireGuard
//! socket itself: STUN Binding requests go out of the device's UDP port
//! to the relays' STUN servers (and any configured), so the mapping a NAT
//! gives them is the one it gives our WireGuard traffic. The answers come
//! back on that socket, told from WireGuard and probes by STUN's magic
//! cookie (`stun::wire::is_stun`), and end up here.
//!
//! Sans-IO like the crates below it: time comes in, datagrams go out
//! through `poll_transmit`. A round queries every server; rounds repeat
//! every [`REFRESH`] (a NAT's mapping can change under us) and at once
//! when our local addresses change. From the last round's answers:
//! the reflexive addresses (reported as endpoints), whether the mapping
//! depends on the destination (a symmetric NAT), whether the port is
//! kept, and each server's round trip: what `netcheck` prints.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto_control::messages::NatKind;
use stun::client::{BindingClient, ClientConfig, Event};
use stun::wire::TransactionId;

/// Between rounds. Below the 30 s a home router keeps an idle UDP
/// mapping, so the STUN flow also holds it.
pub const REFRESH: Duration = Duration::from_secs(25);
/// An answer older than this is forgotten (three rounds missed).
const STALE: Duration = Duration::from_secs(80);
/// Servers queried at most (a map naming more is cut).
const MAX_SERVERS: usize = 8;

/// One server's last answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub reflexive: SocketAddr,
    pub rtt: Duration,
    at: Instant,
}

/// What the last rounds say about our NAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Some server answered: UDP leaves this host and comes back.
    pub udp: bool,
    /// Every distinct reflexive address, in server order.
    pub addresses: Vec<SocketAddr>,
    /// Servers at different addresses saw different mappings: the NAT
    /// maps per destination (symmetric); `None` with fewer than two.
    pub mapping_varies: Option<bool>,
    /// The reflexive port is our listening port.
    pub port_preserved: Option<bool>,
    /// Each server and its answer, if it gave one.
    pub servers: Vec<(SocketAddr, Option<Answer>)>,
    /// A whole round has had its time to be answered.
    pub settled: bool,
}

impl Report {
    /// The NAT's kind as the map carries it; `local` are our own
    /// addresses (a reflexive address among them: no NAT).
    pub fn nat_kind(&self, local: &[SocketAddr]) -> NatKind {
        if self.servers.is_empty() {
            return NatKind::NatUnknown;
        }
        if !self.udp {
            return if self.settled {
                NatKind::NatNoUdp
            } else {
                NatKind::NatUnknown
            };
        }
        if self.addresses.iter().any(|a| local.contains(a)) {
            return NatKind::NatNone;
        }
        match self.mapping_varies {
            Some(true) => NatKind::NatSymmetric,
            Some(false) => NatKind::NatCone,
            None => NatKind::NatUnknown,
        }
    }
}

#[derive(Debug)]
pub struct Reflexive {
    client: BindingClient,
    servers: Vec<SocketAddr>,
    answers: HashMap<SocketAddr, Answer>,
    next_round: Instant,
    listen_port: u16,
    /// Rounds started since the servers last changed.
    rounds: u32,
    /// STUN datagrams that answered nothing we asked (or from elsewhere).
    pub unsolicited: u64,
}

impl Reflexive {
    pub fn new(now: Instant, listen_port: u16) -> Self {
        Self {
            client: BindingClient::new(ClientConfig {
                // A round is short: the next one comes in 25 s anyway.
                rc: 3,
                rm: 4,
                ..ClientConfig::default()
            }),
            servers: Vec::new(),
            answers: HashMap::new(),
            next_round: now,
            listen_port,
            rounds: 0,
            unsolicited: 0,
        }
    }

    /// The STUN servers to ask; a change starts a round at once.
    pub fn set_servers(&mut self, now: Instant, mut servers: Vec<SocketAddr>) {
        servers.dedup();
        servers.truncate(MAX_SERVERS);
        if servers != self.servers {
            self.answers.retain(|s, _| servers.contains(s));
            self.servers = servers;
            self.next_round = now;
            self.rounds = 0;
        }
    }

    pub fn set_listen_port(&mut self, port: u16) {
        self.listen_port = port;
    }

    /// Asks again now (our local addresses changed).
    pub fn refresh(&mut self, now: Instant) {
        self.next_round = now;
    }

    /// Starts a round when one is due; retransmits and expires.
    pub fn handle_timeout(&mut self, now: Instant, ids: &mut impl FnMut() -> Option<[u8; 12]>) {
        self.client.handle_timeout(now);
        while self.client.poll_event().is_some() {} // timeouts: nothing to do
        if now < self.next_round || self.servers.is_empty() {
            return;
        }
        self.next_round = now + REFRESH;
        self.rounds = self.rounds.saturating_add(1);
        self.answers
            .retain(|_, a| now.saturating_duration_since(a.at) < STALE);
        for &server in &self.servers {
            // No id without the OS's randomness: no query (a guessable id
            // would let an off-path sender feed us a false address).
            let Some(id) = ids() else { return };
            // A server still in flight from the last round keeps going.
            let _ = self.client.query(now, server, TransactionId(id));
        }
    }

    /// A STUN datagram from the WireGuard socket. Whether the set of
    /// reflexive addresses changed (then endpoints are reported again).
    /// Answers for transactions we never started are dropped.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> bool {
        let before = self.report().addresses;
        if self.client.handle_input(now, from, datagram).is_err() {
            self.unsolicited += 1;
            return false;
        }
        while let Some(event) = self.client.poll_event() {
            if let Event::Mapped {
                server,
                reflexive,
                rtt,
            } = event
            {
                self.answers.insert(
                    server,
                    Answer {
                        reflexive,
                        rtt,
                        at: now,
                    },
                );
            }
        }
        self.report().addresses != before
    }

    pub fn poll_transmit(&mut self) -> Option<cvlan_core::Transmit> {
        self.client.poll_transmit()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let round = (!self.servers.is_empty()).then_some(self.next_round);
        round.into_iter().chain(self.client.poll_timeout()).min()
    }

    pub fn report(&self) -> Report {
        let servers: Vec<(SocketAddr, Option<Answer>)> = self
            .servers
            .iter()
            .map(|s| (*s, self.answers.get(s).copied()))
            .collect();
        let mut addresses: Vec<SocketAddr> = Vec::new();
        for a in servers.iter().filter_map(|(_, a)| a.as_ref()) {
            if !addresses.contains(&a.reflexive) {
                addresses.push(a.reflexive);
            }
        }
        let answered = servers.iter().filter(|(_, a)| a.is_some()).count();
        Report {
            udp: answered > 0,
            mapping_varies: (answered >= 2).then_some(addresses.len() > 1),
            port_preserved: (!addresses.is_empty())
                .then(|| addresses.iter().all(|a| a.port() == self.listen_port)),
            addresses,
            servers,
            settled: self.rounds >= 2,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // Instant::now() is the fake clock's origin
    use super::*;
    use stun::server::{answer, Answer as ServerAnswer};

    fn ids() -> impl FnMut() -> Option<[u8; 12]> {
        let mut n = 0u8;
        move || {
            n += 1;
            Some([n; 12])
        }
    }

    /// Runs a round in which each server sees us as `seen(server)`.
    fn round(r: &mut Reflexive, now: Instant, seen: impl Fn(SocketAddr) -> SocketAddr) -> bool {
        r.handle_timeout(now, &mut ids());
        let mut changed = false;
        while let Some(t) = r.poll_transmit() {
            let mut out = [0u8; 128];
            let ServerAnswer::Reply(n) = answer(&t.contents, seen(t.destination), &mut out) else {
                panic!("not a binding request")
            };
            changed |= r.handle_input(now, t.destination, &out[..n]);
        }
        changed
    }

    #[test]
    fn two_servers_tell_a_cone_from_a_symmetric_nat() {
        let now = Instant::now();
        let (s1, s2): (SocketAddr, SocketAddr) = (
            "203.0.113.10:3478".parse().unwrap(),
            "203.0.113.11:3478".parse().unwrap(),
        );
        let mut r = Reflexive::new(now, 41641);
        r.set_servers(now, vec![s1, s2]);
        let cone: SocketAddr = "198.51.100.11:41641".parse().unwrap();
        assert!(round(&mut r, now, |_| cone), "addresses learnt");
        let rep = r.report();
        assert_eq!(rep.addresses, [cone]);
        assert_eq!(
            (rep.udp, rep.mapping_varies, rep.port_preserved),
            (true, Some(false), Some(true))
        );
        assert_eq!(rep.nat_kind(&[]), NatKind::NatCone);
        assert_eq!(rep.nat_kind(&[cone]), NatKind::NatNone, "our own address");

        // Next round: each server sees another port.
        let later = now + REFRESH;
        let changed = round(&mut r, later, |s| {
            SocketAddr::new(cone.ip(), if s == s1 { 30001 } else { 30002 })
        });
        assert!(changed);
        let rep = r.report();
        assert_eq!(rep.addresses.len(), 2);
        assert_eq!(rep.mapping_varies, Some(true));
        assert_eq!(rep.port_preserved, Some(false));
        assert_eq!(rep.nat_kind(&[]), NatKind::NatSymmetric);
    }

    #[test]
    fn answers_nobody_asked_for_change_nothing() {
        let now = Instant::now();
        let s1: SocketAddr = "203.0.113.10:3478".parse().unwrap();
        let mut r = Reflexive::new(now, 41641);
        r.set_servers(now, vec![s1]);
        r.handle_timeout(now, &mut ids());
        let request = r.poll_transmit().expect("request").contents;
        let mut out = [0u8; 128];
        let ServerAnswer::Reply(n) = answer(&request, "198.51.100.66:1".parse().unwrap(), &mut out)
        else {
            panic!()
        };
        let reply = &out[..n];
        // The right transaction from the wrong address, and garbage.
        assert!(!r.handle_input(now, "203.0.113.99:3478".parse().unwrap(), reply));
        assert!(!r.handle_input(now, s1, &[0u8; 20]));
        assert!(!r.report().udp);
        assert!(r.handle_input(now, s1, reply), "the genuine answer");
        // Nothing at all answers for long: the address is forgotten.
        let mut t = now;
        for _ in 0..4 {
            t += REFRESH;
            r.handle_timeout(t, &mut ids());
            while r.poll_transmit().is_some() {}
        }
        assert!(!r.report().udp, "stale answers dropped");
    }
}
