//! The two-party harness the in-memory tests share: a virtual clock, a
//! link that can drop or tamper, an optional NAT, and what each side's
//! owner saw (events, and the ESP SAs it would have installed).
#![allow(dead_code, unreachable_pub)] // each test file uses part of it

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_esp::{InboundSa, OutboundSa};
use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{
    ChildSa, Config, Credentials, DownReason, EspProposal, Event, Identity, IkeProposal, IkeSa,
    Phase, Timers,
};
use zeroize::Zeroizing;

pub const A: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 500);
pub const B: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 500);
/// A's address as B sees it when the NAT is on, and the NAT's port for
/// A's port 4500.
pub const NAT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const NAT_PORT_4500: u16 = 34500;

/// The NAT maps A's port p to 30000 + p mod 10000.
pub fn nat_port(p: u16) -> u16 {
    30000 + p % 10000
}

pub fn subnet(s: &str) -> TrafficSelector {
    let (a, p) = s.split_once('/').unwrap();
    TrafficSelector::subnet(a.parse().unwrap(), p.parse().unwrap())
}

pub fn config(local: &str, remote: &str, psk: &str, ike: &str, esp: &str) -> Config {
    Config {
        local_id: Identity::parse(local),
        remote_id: Some(Identity::parse(remote)),
        credentials: Credentials::Psk(Zeroizing::new(psk.as_bytes().to_vec())),
        ike_proposals: ike
            .split(',')
            .map(|p| IkeProposal::parse(p).unwrap())
            .collect(),
        esp_proposals: esp
            .split(',')
            .map(|p| EspProposal::parse(p).unwrap())
            .collect(),
        local_ts: vec![subnet("10.1.0.0/16")],
        remote_ts: vec![subnet("10.2.0.0/16")],
        force_encap: false,
        fragment_size: Some(proto_ikev2::DEFAULT_FRAGMENT_SIZE),
        timers: Timers::default(),
        child_limits: Default::default(),
    }
}

/// The responder's view: sides swapped.
pub fn mirror(c: &Config) -> Config {
    Config {
        local_id: c.remote_id.clone().unwrap(),
        remote_id: Some(c.local_id.clone()),
        local_ts: c.remote_ts.clone(),
        remote_ts: c.local_ts.clone(),
        ..c.clone()
    }
}

/// The usual initiator configuration: PSK, AES-GCM, ECP-256.
pub fn gcm() -> Config {
    config(
        "10.0.0.1",
        "@gw.example",
        "k",
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
    )
}

#[derive(Default)]
pub struct Seen {
    pub up: Option<(Identity, bool, bool)>,
    pub child: Option<ChildSa>,
    pub child_failed: Option<u16>,
    pub deleted_children: usize,
    pub down: Option<DownReason>,
    pub rekeyed: usize,
    pub ike_rekeyed: usize,
    /// What an owner following the events has installed.
    pub inbound: HashMap<u32, InboundSa>,
    pub outbound: Option<OutboundSa>,
    /// The SA to send on once the one it replaces (by outbound SPI) is
    /// deleted: the peer started that rekey.
    pub next_outbound: HashMap<u32, OutboundSa>,
}

impl Seen {
    pub fn take(&mut self, sa: &mut IkeSa) {
        while let Some(e) = sa.poll_event() {
            match e {
                Event::IkeSaUp {
                    remote_id,
                    nat_local,
                    nat_remote,
                    ..
                } => self.up = Some((remote_id, nat_local, nat_remote)),
                Event::ChildSaUp(c) => self.install(c),
                Event::ChildSaRekeyed {
                    old_spi_in,
                    new,
                    send_now,
                } => {
                    assert!(
                        self.inbound.contains_key(&old_spi_in),
                        "rekeyed an unknown SA"
                    );
                    self.rekeyed += 1;
                    if send_now {
                        self.install(new);
                    } else {
                        // Keep sending on the old SA until it is deleted.
                        let old_out = self.outbound.as_ref().map(|o| o.spi());
                        self.inbound.insert(new.spi_in, new.inbound(4096).unwrap());
                        if let Some(old_out) = old_out {
                            self.next_outbound.insert(old_out, new.outbound().unwrap());
                        }
                        self.child = Some(new);
                    }
                }
                Event::ChildSaFailed { notify } => self.child_failed = Some(notify),
                Event::ChildSaDeleted { spi_in, spi_out } => {
                    self.deleted_children += 1;
                    self.inbound.remove(&spi_in);
                    if self.outbound.as_ref().is_some_and(|o| o.spi() == spi_out) {
                        self.outbound = self.next_outbound.remove(&spi_out);
                    }
                }
                Event::IkeSaRekeyed { .. } => self.ike_rekeyed += 1,
                Event::IkeSaDown(r) => self.down = Some(r),
                _ => {}
            }
        }
    }
}

impl Seen {
    fn install(&mut self, c: ChildSa) {
        self.inbound.insert(c.spi_in, c.inbound(4096).unwrap());
        self.outbound = Some(c.outbound().unwrap());
        self.child = Some(c);
    }
}

/// One ESP packet from one owner to the other, through the SAs each has
/// installed: whether it arrived intact.
pub fn esp_delivers(from: &mut Seen, to: &mut Seen, tag: u8) -> bool {
    let Some(out) = from.outbound.as_mut() else {
        return false;
    };
    let payload = [tag; 64];
    let mut buf = vec![0u8; 256];
    let h = out.headroom();
    buf[h..h + 64].copy_from_slice(&payload);
    let len = out.seal(&mut buf, 64, 4).unwrap();
    let spi = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Some(inb) = to.inbound.get_mut(&spi) else {
        return false;
    };
    match inb.open(&mut buf[..len]) {
        Ok(o) => buf[o.payload] == payload,
        Err(_) => false,
    }
}

pub type Filter = Box<dyn FnMut(bool, &mut Vec<u8>) -> bool>;

/// The wall clock the harness gives both sides (2027-01-15, inside the
/// test certificates' validity).
pub const UNIX_NOW: u64 = 1_800_000_000;

pub struct Pair {
    pub now: Instant,
    pub a: IkeSa,
    pub b: Option<IkeSa>,
    pub b_config: Arc<Config>,
    pub nat: bool,
    /// Called with (from A?, datagram): false drops it; may tamper.
    pub filter: Filter,
    pub ea: Seen,
    pub eb: Seen,
    pub refusals: Vec<Option<u16>>,
    pub datagrams: usize,
    /// Give the responder a wall clock (certificates need one).
    pub clock: bool,
}

pub fn strip_marker(port: u16, contents: &[u8]) -> Option<&[u8]> {
    if port == 4500 {
        contents.strip_prefix(&[0u8; 4][..])
    } else {
        Some(contents)
    }
}

impl Pair {
    pub fn new(a_config: Config, b_config: Config) -> Self {
        // The virtual clock's origin; only handle_timeout moves it on.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let mut a = IkeSa::initiate(now, Arc::new(a_config), A, B, [1; 32]);
        a.set_unix_time(UNIX_NOW);
        Self {
            now,
            a,
            b: None,
            b_config: Arc::new(b_config),
            nat: false,
            filter: Box::new(|_, _| true),
            ea: Seen::default(),
            eb: Seen::default(),
            refusals: vec![],
            datagrams: 0,
            clock: true,
        }
    }

    pub fn with_nat(mut self) -> Self {
        self.nat = true;
        self
    }

    /// A's address after the NAT: one mapping per source port.
    pub fn translate(&self, from: SocketAddr) -> SocketAddr {
        if self.nat {
            SocketAddr::new(NAT_IP.into(), nat_port(from.port()))
        } else {
            from
        }
    }

    /// Moves datagrams until both sides are quiet; no time passes.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.datagrams += 1;
                let mut bytes = t.contents;
                if !(self.filter)(true, &mut bytes) {
                    continue;
                }
                assert_eq!(t.destination.ip(), B.ip());
                let from = self.translate(t.source);
                let Some(msg) = strip_marker(t.destination.port(), &bytes) else {
                    continue;
                };
                match &mut self.b {
                    Some(b) => b.handle_input(self.now, from, t.destination, msg),
                    None => match IkeSa::respond(
                        self.now,
                        self.b_config.clone(),
                        t.destination,
                        from,
                        msg,
                        [2; 32],
                    ) {
                        Ok(mut b) => {
                            if self.clock {
                                b.set_unix_time(UNIX_NOW);
                            }
                            self.b = Some(b);
                        }
                        Err(r) => {
                            self.refusals.push(r.notify);
                            if let Some(reply) = r.reply {
                                // Straight back to A (through the NAT).
                                let m = strip_marker(reply.source.port(), &reply.contents)
                                    .unwrap()
                                    .to_vec();
                                self.a.handle_input(self.now, B, A, &m);
                            }
                        }
                    },
                }
            }
            if let Some(b) = &mut self.b {
                while let Some(t) = b.poll_transmit() {
                    moved = true;
                    self.datagrams += 1;
                    let mut bytes = t.contents;
                    if !(self.filter)(false, &mut bytes) {
                        continue;
                    }
                    // Undo the NAT: the destination maps back to A.
                    let to = if self.nat {
                        assert_eq!(t.destination.ip(), IpAddr::V4(NAT_IP));
                        let port = if t.destination.port() == NAT_PORT_4500 {
                            4500
                        } else {
                            500
                        };
                        SocketAddr::new(A.ip(), port)
                    } else {
                        t.destination
                    };
                    let Some(msg) = strip_marker(to.port(), &bytes) else {
                        continue;
                    };
                    self.a.handle_input(self.now, t.source, to, msg);
                }
            }
            self.ea.take(&mut self.a);
            if let Some(b) = &mut self.b {
                self.eb.take(b);
            }
            if !moved {
                break;
            }
        }
    }

    /// Advances the clock to the next timer of either side, `n` times.
    pub fn run_timers(&mut self, limit: Duration) {
        let end = self.now + limit;
        loop {
            self.pump();
            let next = [
                self.a.poll_timeout(),
                self.b.as_ref().and_then(|b| b.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    if let Some(b) = &mut self.b {
                        b.handle_timeout(self.now);
                    }
                }
                _ => {
                    self.now = end;
                    break;
                }
            }
        }
    }

    pub fn b(&mut self) -> &mut IkeSa {
        self.b.as_mut().unwrap()
    }
}

/// ESP both ways with the Child SAs each side got.
pub fn esp_round_trip(a: &ChildSa, b: &ChildSa) {
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.suite, b.suite);
    for (tx, rx) in [(a, b), (b, a)] {
        let mut out = tx.outbound().unwrap();
        let mut inb = rx.inbound(1024).unwrap();
        for n in 0..3u8 {
            let payload: Vec<u8> = (0..100u8).map(|i| i ^ n).collect();
            let mut buf = vec![0u8; 2048];
            let h = out.headroom();
            buf[h..h + payload.len()].copy_from_slice(&payload);
            let len = out.seal(&mut buf, payload.len(), 4).unwrap();
            let opened = inb.open(&mut buf[..len]).unwrap();
            assert_eq!(&buf[opened.payload.clone()], &payload[..]);
        }
    }
}

pub fn established(ike: &str, esp: &str) -> Pair {
    let ca = config("10.0.0.1", "@gw.example", "s3cret-psk", ike, esp);
    let cb = mirror(&ca);
    let mut p = Pair::new(ca, cb);
    p.pump();
    assert!(p.ea.down.is_none(), "{ike}: {:?}", p.ea.down);
    assert!(p.eb.down.is_none(), "{ike}: {:?}", p.eb.down);
    assert_eq!(p.a.phase(), Phase::Established, "{ike}");
    assert_eq!(p.b().phase(), Phase::Established, "{ike}");
    p
}

pub fn established_from(ca: Config, cb: Config) -> Pair {
    let mut p = Pair::new(ca, cb);
    p.pump();
    assert_eq!(p.a.phase(), Phase::Established);
    p
}

/// Every initiator lives in one endpoint (their addresses differ); all
/// datagrams are delivered until both sides are quiet.
pub fn shuttle(now: Instant, ini: &mut proto_ikev2::Endpoint, gw: &mut proto_ikev2::Endpoint) {
    loop {
        let mut moved = false;
        while let Some(t) = ini.poll_transmit() {
            moved = true;
            gw.handle_input(now, t.source, t.destination, &t.contents);
        }
        while let Some(t) = gw.poll_transmit() {
            moved = true;
            ini.handle_input(now, t.source, t.destination, &t.contents);
        }
        if !moved {
            break;
        }
    }
}
