//! Many IKE SAs behind one pair of UDP ports: demultiplexing by SPI,
//! choosing a responder configuration by the peer's address, stateless
//! cookies when half-open SAs pile up (RFC 7296 §2.6), and hard bounds on
//! how many SAs unauthenticated peers can make us hold.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use cvlan_core::IpPrefix;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

use crate::child_slots::SpiTable;
use crate::config::Config;
use crate::crypto::cookie::CookieJar;
use crate::ike_sa::{Event, IkeSa, Phase, Role, Transmit, NAT_T_PORT};
use crate::wire::consts::{exchange, flags, notify, payload as pt};
use crate::wire::{Header, Message, Notify, Payload, Writer, HEADER_LEN};

/// Our SPI of an IKE SA: its handle in the endpoint.
pub type SaHandle = u64;

/// Limits and thresholds.
#[derive(Debug, Clone, Copy)]
pub struct EndpointConfig {
    /// Half-open responder SAs at which new IKE_SA_INIT requests must
    /// return a cookie first.
    pub cookie_threshold: usize,
    /// Half-open responder SAs at which new requests are dropped.
    pub max_half_open: usize,
    /// Half-open responder SAs one source address may hold (strongSwan's
    /// `block_threshold`): cookies prove an address is real, not that it
    /// is one peer, so a real host is bounded here.
    pub max_half_open_per_source: usize,
    /// All SAs, any state.
    pub max_sas: usize,
    /// Bytes of IKE fragments (RFC 7383) waiting for the rest of their
    /// message, over all SAs (each SA also holds at most 64 KiB).
    pub max_fragment_bytes: usize,
    /// How often the cookie secret changes (the previous one stays valid).
    pub cookie_rotation: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            cookie_threshold: 64,
            max_half_open: 4096,
            // strongSwan's default block_threshold.
            max_half_open_per_source: 5,
            max_sas: 65536,
            max_fragment_bytes: 8 << 20,
            cookie_rotation: Duration::from_secs(120),
        }
    }
}

/// Counters of what the endpoint refused or dropped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    pub malformed: u64,
    pub unknown_spi: u64,
    pub no_config: u64,
    pub refused: u64,
    pub cookies_sent: u64,
    pub bad_cookie: u64,
    pub half_open_limit: u64,
    /// One source address already had its share of half-open SAs.
    pub half_open_per_source: u64,
    pub sa_limit: u64,
    /// A reassembly dropped because fragments over all SAs hit their bound.
    pub fragment_budget: u64,
}

/// An IKE_SA_INIT that made no SA, kept for the operator's log.
#[derive(Debug, Clone)]
pub struct Refused {
    pub peer: SocketAddr,
    /// The configuration the peer was matched to.
    pub config: Arc<Config>,
    pub reason: &'static str,
    /// The notify the peer was answered with, if any.
    pub notify: Option<u16>,
}

/// Refusals kept until polled; a flood only ever overwrites the oldest.
const MAX_REFUSALS: usize = 64;

/// A responder configuration and the peer addresses it serves.
#[derive(Debug)]
struct Responder {
    peers: Option<(IpAddr, u8)>,
    config: Arc<Config>,
}

fn in_prefix(addr: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    let max = if net.is_ipv4() { 32 } else { 128 };
    IpPrefix::new(net, len.min(max)).is_ok_and(|p| p.contains(addr))
}

#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: ChaCha20Rng,
    responders: Vec<Responder>,
    sas: HashMap<SaHandle, IkeSa>,
    /// Inbound ESP SPIs in use by any SA here (and held by the owner).
    spis: SpiTable,
    /// Responder SAs by (SPIi, peer): to find them for IKE_SA_INIT
    /// retransmissions, which carry SPIr = 0.
    by_initiator: HashMap<(u64, SocketAddr), SaHandle>,
    /// Our SPIs of SAs rekeyed since they were made, to their handles.
    aliases: HashMap<u64, SaHandle>,
    /// Responder SAs still half-open, with the address they came from:
    /// counted as they come and go, never by scanning every SA.
    half_open: HashMap<SaHandle, IpAddr>,
    half_open_by_source: HashMap<IpAddr, usize>,
    /// Bytes each SA holds in fragments, and their sum.
    fragment_bytes: HashMap<SaHandle, usize>,
    fragment_total: usize,
    cookies: CookieJar,
    rotate_at: Option<Instant>,
    drops: Drops,
    unix_time: Option<u64>,
    refusals: VecDeque<Refused>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<(SaHandle, Event)>,
}

impl Endpoint {
    pub fn new(config: EndpointConfig, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        Self {
            config,
            rng,
            responders: Vec::new(),
            sas: HashMap::new(),
            spis: SpiTable::default(),
            by_initiator: HashMap::new(),
            aliases: HashMap::new(),
            half_open: HashMap::new(),
            half_open_by_source: HashMap::new(),
            fragment_bytes: HashMap::new(),
            fragment_total: 0,
            cookies: CookieJar::new(secret),
            rotate_at: None,
            drops: Drops::default(),
            unix_time: None,
            refusals: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Answers IKE_SA_INIT from peers inside `peers` (any peer if `None`)
    /// with `config`. The first matching entry wins.
    pub fn add_responder(&mut self, peers: Option<(IpAddr, u8)>, config: Arc<Config>) {
        self.responders.push(Responder { peers, config });
    }

    /// Removes every responder configuration (a reload adds them back);
    /// established SAs are not touched.
    pub fn clear_responders(&mut self) {
        self.responders.clear();
    }

    /// The wall-clock time (unix seconds) every SA checks certificates
    /// against; the owner keeps it current.
    pub fn set_unix_time(&mut self, secs: u64) {
        self.unix_time = Some(secs);
        for sa in self.sas.values_mut() {
            sa.set_unix_time(secs);
        }
    }

    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Draw inbound SPIs from `table` (before any SA exists: SAs made
    /// earlier keep the old one).
    pub fn set_spi_table(&mut self, table: SpiTable) {
        self.spis = table;
    }

    /// The inbound ESP SPIs in use by this endpoint's SAs: an owner that
    /// keeps an SA beyond its delete holds its SPI here meanwhile.
    pub fn spi_table(&self) -> &SpiTable {
        &self.spis
    }

    pub fn sa(&self, h: SaHandle) -> Option<&IkeSa> {
        self.sas.get(&h)
    }

    pub fn sa_mut(&mut self, h: SaHandle) -> Option<&mut IkeSa> {
        self.sas.get_mut(&h)
    }

    pub fn sas(&self) -> impl Iterator<Item = (SaHandle, &IkeSa)> {
        self.sas.iter().map(|(h, sa)| (*h, sa))
    }

    /// Half-open responder SAs now.
    pub fn half_open(&self) -> usize {
        self.half_open.len()
    }

    /// Bytes of fragments waiting for the rest of their message.
    pub fn fragment_bytes(&self) -> usize {
        self.fragment_total
    }

    /// New limits (a reload); SAs beyond them stay, new ones wait.
    pub fn set_limits(&mut self, config: EndpointConfig) {
        self.config = config;
    }

    /// `h` is no longer half-open (authenticated, or gone).
    fn leave_half_open(&mut self, h: SaHandle) {
        if let Some(ip) = self.half_open.remove(&h) {
            if let Some(n) = self.half_open_by_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.half_open_by_source.remove(&ip);
                }
            }
        }
    }

    /// Forgets everything counted for `h` (it was removed).
    fn forget(&mut self, h: SaHandle) {
        self.leave_half_open(h);
        if let Some(b) = self.fragment_bytes.remove(&h) {
            self.fragment_total -= b;
        }
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut s = [0u8; 32];
        self.rng.fill_bytes(&mut s);
        s
    }

    /// Starts an IKE SA to `remote` as initiator.
    pub fn connect(
        &mut self,
        now: Instant,
        config: Arc<Config>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> SaHandle {
        let seed = self.seed();
        let mut sa = IkeSa::initiate(now, config, local, remote, seed);
        sa.set_spi_table(self.spis.clone());
        if let Some(t) = self.unix_time {
            sa.set_unix_time(t);
        }
        let h = sa.spis().0;
        self.sas.insert(h, sa);
        self.drain(h);
        h
    }

    /// Feeds one IKE message (without the non-ESP marker).
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, msg: &[u8]) {
        let Ok(header) = Header::parse(msg) else {
            self.drops.malformed += 1;
            return;
        };
        let ours = if header.from_initiator() {
            header.spi_r
        } else {
            header.spi_i
        };
        let h = self.aliases.get(&ours).copied().unwrap_or(ours);
        if let Some(sa) = self.sas.get_mut(&h) {
            sa.handle_input(now, from, to, msg);
            self.drain(h);
            return;
        }
        let is_init_request = header.exchange == exchange::IKE_SA_INIT
            && !header.is_response()
            && header.spi_r == 0
            && header.flags & flags::INITIATOR != 0;
        if !is_init_request {
            self.drops.unknown_spi += 1;
            return;
        }
        if let Some(&h) = self.by_initiator.get(&(header.spi_i, from)) {
            if let Some(sa) = self.sas.get_mut(&h) {
                sa.handle_input(now, from, to, msg);
            }
            self.drain(h);
            return;
        }
        self.new_responder(now, from, to, header, msg);
    }

    fn new_responder(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: Header,
        msg: &[u8],
    ) {
        // The first configuration for the peer's address answers; the
        // others may take over at IKE_AUTH, chosen by its identity.
        let mut matching = self
            .responders
            .iter()
            .filter(|r| r.peers.is_none_or(|p| in_prefix(from.ip(), p)))
            .map(|r| r.config.clone());
        let Some(config) = matching.next() else {
            self.drops.no_config += 1;
            return;
        };
        let alternatives: Vec<Arc<Config>> = matching.collect();
        if self.sas.len() >= self.config.max_sas {
            self.drops.sa_limit += 1;
            return;
        }
        let half_open = self.half_open();
        if half_open >= self.config.max_half_open {
            self.drops.half_open_limit += 1;
            return;
        }
        let from_source = self
            .half_open_by_source
            .get(&from.ip())
            .copied()
            .unwrap_or(0);
        if from_source >= self.config.max_half_open_per_source {
            self.drops.half_open_per_source += 1;
            return;
        }
        if half_open >= self.config.cookie_threshold {
            self.rotate_secret(now);
            match self.check_cookie(from, msg) {
                CookieCheck::Valid => {}
                CookieCheck::Missing => {
                    self.send_cookie(from, to, header, msg);
                    return;
                }
                CookieCheck::Invalid => {
                    self.drops.bad_cookie += 1;
                    return;
                }
            }
        }
        let seed = self.seed();
        match IkeSa::respond_among(now, config.clone(), alternatives, to, from, msg, seed) {
            Ok(mut sa) => {
                sa.set_spi_table(self.spis.clone());
                if let Some(t) = self.unix_time {
                    sa.set_unix_time(t);
                }
                let h = sa.spis().1;
                self.by_initiator.insert((header.spi_i, from), h);
                self.sas.insert(h, sa);
                self.half_open.insert(h, from.ip());
                *self.half_open_by_source.entry(from.ip()).or_default() += 1;
                self.drain(h);
            }
            Err(refusal) => {
                self.drops.refused += 1;
                if self.refusals.len() == MAX_REFUSALS {
                    self.refusals.pop_front();
                }
                self.refusals.push_back(Refused {
                    peer: from,
                    config,
                    reason: refusal.reason,
                    notify: refusal.notify,
                });
                if let Some(t) = refusal.reply {
                    self.transmits.push_back(*t);
                }
            }
        }
    }

    fn check_cookie(&self, from: SocketAddr, msg: &[u8]) -> CookieCheck {
        let Ok(m) = Message::parse(msg) else {
            return CookieCheck::Invalid;
        };
        // RFC 7296 §2.6: the cookie notify comes first.
        let Some(Payload::Notify(n)) = m.payloads.first() else {
            return CookieCheck::Missing;
        };
        if n.kind != notify::COOKIE {
            return CookieCheck::Missing;
        }
        let Some(Payload::Nonce(ni)) = m.find(pt::NONCE) else {
            return CookieCheck::Invalid;
        };
        if self.cookies.verify(n.data, ni, from.ip(), m.header.spi_i) {
            CookieCheck::Valid
        } else {
            CookieCheck::Invalid
        }
    }

    fn send_cookie(&mut self, from: SocketAddr, to: SocketAddr, header: Header, msg: &[u8]) {
        let Ok(m) = Message::parse(msg) else {
            return;
        };
        let Some(Payload::Nonce(ni)) = m.find(pt::NONCE) else {
            self.drops.malformed += 1;
            return;
        };
        let cookie = self.cookies.make(ni, from.ip(), header.spi_i);
        let mut w = Writer::message(Header {
            spi_r: 0,
            flags: flags::RESPONSE,
            next_payload: 0,
            length: 0,
            ..header
        });
        w.push(&Payload::Notify(Notify {
            protocol: 0,
            spi: &[],
            kind: notify::COOKIE,
            data: &cookie,
        }));
        let reply = w.finish();
        debug_assert!(reply.len() <= HEADER_LEN + 8 + cookie.len());
        self.drops.cookies_sent += 1;
        let contents = if to.port() == NAT_T_PORT {
            [&[0u8; 4][..], &reply].concat()
        } else {
            reply
        };
        self.transmits
            .push_back(Transmit::from_to(to, from, contents));
    }

    fn rotate_secret(&mut self, now: Instant) {
        match self.rotate_at {
            None => self.rotate_at = Some(now + self.config.cookie_rotation),
            Some(t) if now >= t => {
                let mut fresh = Zeroizing::new([0u8; 32]);
                self.rng.fill_bytes(&mut fresh[..]);
                self.cookies.rotate(fresh);
                self.rotate_at = Some(now + self.config.cookie_rotation);
            }
            Some(_) => {}
        }
    }

    /// Moves an SA's output into the endpoint's queues, and keeps what is
    /// counted of it current.
    fn drain(&mut self, h: SaHandle) {
        let Some(sa) = self.sas.get_mut(&h) else {
            return;
        };
        // Fragments over all SAs are bounded: the SA whose reassembly
        // pushed the total over gives it up.
        let mut held = sa.fragment_bytes();
        let before = self.fragment_bytes.get(&h).copied().unwrap_or(0);
        if self.fragment_total - before + held > self.config.max_fragment_bytes && held > before {
            sa.drop_fragments();
            held = 0;
            self.drops.fragment_budget += 1;
        }
        self.fragment_total = self.fragment_total - before + held;
        if held == 0 {
            self.fragment_bytes.remove(&h);
        } else {
            self.fragment_bytes.insert(h, held);
        }
        let still_half_open = sa.role() == Role::Responder && sa.phase() == Phase::Connecting;
        while let Some(t) = sa.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(e) = sa.poll_event() {
            self.events.push_back((h, e));
        }
        // An IKE rekey gives the SA a new SPI: keep finding it.
        let own = sa.own_spi();
        if own != h {
            self.aliases.insert(own, h);
        }
        if !still_half_open {
            self.leave_half_open(h);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<SaHandle> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.poll_timeout().is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            if let Some(sa) = self.sas.get_mut(&h) {
                sa.handle_timeout(now);
            }
            self.drain(h);
        }
        let gone: Vec<SaHandle> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.is_drained(now))
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            self.forget(h);
            if let Some(sa) = self.sas.remove(&h) {
                let key = (sa.spis().0, sa.remote());
                if self.by_initiator.get(&key) == Some(&h) {
                    self.by_initiator.remove(&key);
                }
            }
        }
        self.by_initiator.retain(|_, h| self.sas.contains_key(h));
        self.aliases.retain(|_, h| self.sas.contains_key(h));
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.values().filter_map(IkeSa::poll_timeout).min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next IKE_SA_INIT refused since the last call.
    pub fn poll_refusal(&mut self) -> Option<Refused> {
        self.refusals.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<(SaHandle, Event)> {
        self.events.pop_front()
    }

    /// Rekeys one Child SA (by its inbound SPI) of an SA now.
    pub fn rekey_child(&mut self, now: Instant, h: SaHandle, spi_in: u32) {
        if let Some(sa) = self.sas.get_mut(&h) {
            sa.rekey_child(now, spi_in);
        }
        self.drain(h);
    }

    /// Closes an SA a newer one of the same peer replaced (see
    /// [`IkeSa::replaced`]).
    pub fn replace(&mut self, now: Instant, h: SaHandle) {
        if let Some(sa) = self.sas.get_mut(&h) {
            sa.replaced(now);
        }
        self.drain(h);
    }

    /// Deletes an SA (with its Child SAs).
    pub fn delete(&mut self, now: Instant, h: SaHandle) {
        if let Some(sa) = self.sas.get_mut(&h) {
            sa.delete(now);
        }
        self.drain(h);
    }
}

enum CookieCheck {
    Valid,
    Missing,
    Invalid,
}
