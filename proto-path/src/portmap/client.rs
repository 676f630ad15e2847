//! The port-mapping client: one mapping of the WireGuard port, asked of
//! the gateway with PCP and, if it does not speak PCP, NAT-PMP; kept by
//! refreshing at half its lifetime; given back on `release`. Sans-IO: the
//! caller sends what `poll_transmit` gives (to the gateway's port 5351,
//! from the WireGuard socket) and feeds back what the gateway answers.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use cvlan_core::Transmit;

use super::{natpmp, pcp, SERVER_PORT};

/// The lifetime asked for (RFC 6886 §3.3 recommends two hours).
pub const LIFETIME: u32 = 7200;
/// The first retransmission wait; it doubles (RFC 6886 §3.1, RFC 6887
/// §8.1.1 both start at 250 ms)...
const FIRST_WAIT: Duration = Duration::from_millis(250);
/// ...for this many sends per protocol (1.75 s in all: a router on the
/// LAN that answers, answers at once; UPnP is asked after both, and the
/// next round comes later anyway).
const TRIES: u32 = 3;
/// After neither protocol answered, or the router refused, ask again
/// this much later (a router may get port mapping switched on).
pub const RETRY_LATER: Duration = Duration::from_secs(300);
/// Lifetimes shorter than this are refreshed as if this long (a router
/// granting seconds must not make us flood it).
const MIN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pcp,
    NatPmp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
        }
    }
}

/// A public address the gateway forwards to our port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub external: SocketAddrV4,
    pub protocol: Protocol,
    pub lifetime: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new or changed mapping (a refresh that changes nothing is quiet).
    Mapped(Mapping),
    /// The mapping we had is gone (refused, or expired unrefreshed).
    Lost,
}

/// What came from the gateway's port and was not acted on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// From anyone but the gateway's port 5351.
    pub not_from_gateway: u64,
    /// Not an answer of the protocol being asked.
    pub malformed: u64,
    /// An answer to nothing we asked (no request in flight, another
    /// nonce or port).
    pub unexpected: u64,
    /// Answers refusing the mapping.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing in flight; the next round at `next`.
    Idle { next: Instant },
    /// Requests in flight.
    Asking {
        protocol: Protocol,
        sent: u32,
        retransmit_at: Instant,
        /// NAT-PMP answers the address and the port separately.
        address: Option<Ipv4Addr>,
        port: Option<(u16, u32)>,
    },
}

/// Where a round stands, for `netcheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not answered yet.
    Asking,
    Mapped(Mapping),
    /// Neither protocol got a mapping (`refused`: the router said no).
    Unavailable {
        refused: bool,
    },
}

#[derive(Debug)]
pub struct PortMapper {
    gateway: SocketAddr,
    /// Our address toward the gateway (PCP checks it).
    client: Ipv4Addr,
    internal_port: u16,
    /// One nonce for the mapping's whole life (RFC 6887 §11.1: refreshes
    /// repeat it).
    nonce: [u8; 12],
    state: State,
    mapping: Option<(Mapping, Instant)>,
    unavailable: Option<bool>,
    /// The protocol each round starts with.
    first: Protocol,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
}

impl PortMapper {
    /// Maps UDP `internal_port` on `client` through `gateway`; `nonce`
    /// from the OS's randomness (it is what makes an off-path answer
    /// fail). The first round starts at `now`.
    pub fn new(
        now: Instant,
        gateway: Ipv4Addr,
        client: Ipv4Addr,
        internal_port: u16,
        nonce: [u8; 12],
    ) -> Self {
        Self {
            gateway: SocketAddr::from((gateway, SERVER_PORT)),
            client,
            internal_port,
            nonce,
            state: State::Idle { next: now },
            mapping: None,
            unavailable: None,
            first: Protocol::Pcp,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// Asks by NAT-PMP alone (for a router whose PCP misbehaves).
    pub fn without_pcp(mut self) -> Self {
        self.first = Protocol::NatPmp;
        self
    }

    pub fn gateway(&self) -> SocketAddr {
        self.gateway
    }

    /// Our address toward the gateway, and the port mapped.
    pub fn client(&self) -> Ipv4Addr {
        self.client
    }

    pub fn internal_port(&self) -> u16 {
        self.internal_port
    }

    pub fn mapping(&self) -> Option<Mapping> {
        self.mapping.map(|(m, _)| m)
    }

    pub fn status(&self) -> Status {
        match (self.mapping(), self.unavailable) {
            (Some(m), _) => Status::Mapped(m),
            (None, Some(refused)) => Status::Unavailable { refused },
            (None, None) => Status::Asking,
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn send(&mut self, datagram: &[u8]) {
        // At most one round's requests are queued (the caller drains
        // after every call).
        if self.transmits.len() < 4 {
            self.transmits
                .push_back(Transmit::to(self.gateway, datagram.to_vec()));
        }
    }

    fn send_requests(&mut self, protocol: Protocol, lifetime: u32) {
        let suggested = self
            .mapping
            .map_or(self.internal_port, |(m, _)| m.external.port());
        match protocol {
            Protocol::Pcp => {
                let r = pcp::map_request(
                    self.client,
                    self.nonce,
                    self.internal_port,
                    suggested,
                    lifetime,
                );
                self.send(&r);
            }
            Protocol::NatPmp => {
                if lifetime > 0 {
                    self.send(&natpmp::external_address_request());
                }
                self.send(&natpmp::map_request(
                    self.internal_port,
                    suggested,
                    lifetime,
                ));
            }
        }
    }

    fn ask(&mut self, now: Instant, protocol: Protocol) {
        self.send_requests(protocol, LIFETIME);
        self.state = State::Asking {
            protocol,
            sent: 1,
            retransmit_at: now + FIRST_WAIT,
            address: None,
            port: None,
        };
    }

    fn give_up(&mut self, now: Instant, refused: bool) {
        self.state = State::Idle {
            next: now + RETRY_LATER,
        };
        if refused {
            self.counters.refused += 1;
        }
        self.unavailable = Some(refused);
        if self.mapping.take().is_some() {
            self.events.push_back(Event::Lost);
        }
    }

    fn mapped(&mut self, now: Instant, m: Mapping) {
        let refresh = m.lifetime.max(MIN_LIFETIME) / 2;
        let changed = self.mapping.map(|(old, _)| old) != Some(m);
        self.mapping = Some((m, now + m.lifetime));
        self.unavailable = None;
        self.state = State::Idle {
            next: now + refresh,
        };
        if changed {
            self.events.push_back(Event::Mapped(m));
        }
    }

    /// An answer from `from` (anything that came to the WireGuard socket
    /// from the gateway's port mapping port; the rest is counted).
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if from != self.gateway {
            self.counters.not_from_gateway += 1;
            return;
        }
        let State::Asking {
            protocol,
            address,
            port,
            ..
        } = self.state
        else {
            self.counters.unexpected += 1;
            return;
        };
        match (protocol, datagram.first()) {
            (Protocol::Pcp, Some(&pcp::VERSION)) => self.on_pcp(now, datagram),
            // A NAT-PMP-only router answers PCP with "unsupported
            // version" in its own format.
            (Protocol::Pcp, Some(&natpmp::VERSION)) => match natpmp::parse(datagram) {
                Ok(a) if a.result() == natpmp::UNSUPPORTED_VERSION => {
                    self.ask(now, Protocol::NatPmp)
                }
                Ok(_) => self.counters.unexpected += 1,
                Err(_) => self.counters.malformed += 1,
            },
            (Protocol::NatPmp, _) => self.on_natpmp(now, datagram, address, port),
            _ => self.counters.malformed += 1,
        }
    }

    fn on_pcp(&mut self, now: Instant, datagram: &[u8]) {
        let Ok(a) = pcp::parse(datagram) else {
            self.counters.malformed += 1;
            return;
        };
        if a.result != pcp::SUCCESS {
            if a.nonce != self.nonce && a.nonce != [0; 12] {
                self.counters.unexpected += 1;
                return;
            }
            // Not this way: NAT-PMP may still work.
            self.counters.refused += 1;
            self.ask(now, Protocol::NatPmp);
            return;
        }
        if a.nonce != self.nonce || a.protocol != 17 || a.internal_port != self.internal_port {
            self.counters.unexpected += 1;
            return;
        }
        let Some(ip) = a.external.filter(|ip| !ip.is_unspecified()) else {
            self.counters.malformed += 1;
            return;
        };
        if a.lifetime == 0 || a.external_port == 0 {
            self.give_up(now, true);
            return;
        }
        self.mapped(
            now,
            Mapping {
                external: SocketAddrV4::new(ip, a.external_port),
                protocol: Protocol::Pcp,
                lifetime: Duration::from_secs(u64::from(a.lifetime)),
            },
        );
    }

    fn on_natpmp(
        &mut self,
        now: Instant,
        datagram: &[u8],
        mut address: Option<Ipv4Addr>,
        mut port: Option<(u16, u32)>,
    ) {
        match natpmp::parse(datagram) {
            Ok(natpmp::Answer::ExternalAddress { address: a, .. }) => address = Some(a),
            Ok(natpmp::Answer::MapUdp {
                internal_port,
                external_port,
                lifetime,
                ..
            }) if internal_port == self.internal_port => {
                if lifetime == 0 || external_port == 0 {
                    self.give_up(now, true);
                    return;
                }
                port = Some((external_port, lifetime));
            }
            Ok(natpmp::Answer::MapUdp { .. }) => {
                self.counters.unexpected += 1;
                return;
            }
            Ok(natpmp::Answer::Other { result, .. }) if result != natpmp::SUCCESS => {
                self.give_up(now, true);
                return;
            }
            Ok(natpmp::Answer::Other { .. }) => {
                self.counters.unexpected += 1;
                return;
            }
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        }
        match (address, port) {
            (Some(ip), Some((p, lifetime))) if !ip.is_unspecified() => self.mapped(
                now,
                Mapping {
                    external: SocketAddrV4::new(ip, p),
                    protocol: Protocol::NatPmp,
                    lifetime: Duration::from_secs(u64::from(lifetime)),
                },
            ),
            _ => {
                if let State::Asking {
                    address: a,
                    port: p,
                    ..
                } = &mut self.state
                {
                    *a = address;
                    *p = port;
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, expires)) = self.mapping {
            if now >= expires {
                self.mapping = None;
                self.events.push_back(Event::Lost);
            }
        }
        match self.state {
            State::Idle { next } if now >= next => self.ask(now, self.first),
            State::Asking {
                protocol,
                sent,
                retransmit_at,
                ..
            } if now >= retransmit_at => {
                if sent < TRIES {
                    self.send_requests(protocol, LIFETIME);
                    if let State::Asking {
                        sent: s,
                        retransmit_at: r,
                        ..
                    } = &mut self.state
                    {
                        *s = sent + 1;
                        *r = now + FIRST_WAIT * 2u32.pow(sent);
                    }
                } else if protocol == Protocol::Pcp {
                    self.ask(now, Protocol::NatPmp);
                } else {
                    self.give_up(now, false);
                }
            }
            _ => {}
        }
    }

    /// Gives the mapping back (lifetime 0), for a clean shutdown or a
    /// gateway we are leaving.
    pub fn release(&mut self) {
        if let Some((m, _)) = self.mapping.take() {
            self.send_requests(m.protocol, 0);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match self.state {
            State::Idle { next } => next,
            State::Asking { retransmit_at, .. } => retransmit_at,
        };
        let expiry = self.mapping.map(|(_, e)| e);
        Some(expiry.map_or(state, |e| e.min(state)))
    }
}
