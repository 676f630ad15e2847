//! A real-network driver for one IKE SA: UDP 500/4500 sockets, a clock,
//! and an "owner" that installs the Child SAs it is given into proto-esp
//! and pings through them (ICMP echo from one protected address to
//! another, sealed and opened by us, answered by the peer's kernel).
//! Shared by the strongSwan interop test and the `ike_probe` example.
// A driver: the one place here with sockets and a clock.
#![allow(clippy::disallowed_methods, dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_esp::udp_encap::{classify, Udp4500};
use proto_esp::{InboundSa, OutboundSa};
use proto_ikev2::{Config, DownReason, Event, IkeSa, Phase, Transmit};

/// What to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub local: Ipv4Addr,
    pub remote: Ipv4Addr,
    pub config: Arc<Config>,
    /// Wait for the peer to initiate instead of initiating.
    pub respond: bool,
    /// Echo requests from `.0` to `.1`, through the tunnel.
    pub ping: (Ipv4Addr, Ipv4Addr),
    pub count: u16,
    pub interval: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    /// Delete the IKE SA at the end and wait for the peer's answer.
    pub delete_at_end: bool,
    pub seed: [u8; 32],
}

/// What happened.
#[derive(Debug, Default)]
pub struct Outcome {
    pub established: bool,
    pub sent: u16,
    pub replies: u16,
    pub child_ups: usize,
    pub child_rekeys: usize,
    pub child_deletes: usize,
    pub ike_rekeys: usize,
    pub down: Option<DownReason>,
    /// The IKE SA was deleted at the end and the peer confirmed.
    pub deleted: bool,
    pub log: Vec<String>,
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request with a 56-byte body.
pub fn echo(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(&[0xab; 56]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

/// Whether `p` is an echo reply from `from` to `to`.
fn is_reply(p: &[u8], from: Ipv4Addr, to: Ipv4Addr) -> bool {
    p.len() >= 28
        && p[9] == 1
        && p[12..16] == from.octets()
        && p[16..20] == to.octets()
        && p[20] == 0
}

struct Sockets {
    s500: UdpSocket,
    s4500: UdpSocket,
}

impl Sockets {
    fn send(&self, t: &Transmit) {
        let sock = if t.source.port() == 4500 {
            &self.s4500
        } else {
            &self.s500
        };
        let _ = sock.send_to(&t.contents, t.destination);
    }
}

struct Owner {
    outbound: Option<OutboundSa>,
    inbound: HashMap<u32, InboundSa>,
    /// SAs to send on once the one they replace (by outbound SPI) goes.
    next: HashMap<u32, OutboundSa>,
}

/// Runs the plan on the calling thread (which must already be in the
/// right network namespace).
pub fn run(plan: &Plan) -> Result<Outcome, String> {
    let l500 = SocketAddr::new(plan.local.into(), 500);
    let l4500 = SocketAddr::new(plan.local.into(), 4500);
    let io = Sockets {
        s500: UdpSocket::bind(l500).map_err(|e| format!("bind {l500}: {e}"))?,
        s4500: UdpSocket::bind(l4500).map_err(|e| format!("bind {l4500}: {e}"))?,
    };
    for s in [&io.s500, &io.s4500] {
        s.set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    let mut out = Outcome::default();
    let unix_now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let mut sa: Option<IkeSa> = (!plan.respond).then(|| {
        let mut sa = IkeSa::initiate(
            start,
            plan.config.clone(),
            l500,
            SocketAddr::new(plan.remote.into(), 500),
            plan.seed,
        );
        sa.set_unix_time(unix_now());
        sa
    });
    let mut owner = Owner {
        outbound: None,
        inbound: HashMap::new(),
        next: HashMap::new(),
    };
    let mut next_ping = start;
    let mut deleting = false;
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now > start + plan.timeout {
            out.log.push("timed out".into());
            return Ok(out);
        }
        if let Some(sa) = sa.as_mut() {
            if sa.poll_timeout().is_some_and(|t| t <= now) {
                sa.handle_timeout(now);
            }
            while let Some(t) = sa.poll_transmit() {
                io.send(&t);
            }
            while let Some(e) = sa.poll_event() {
                out.log.push(format!("{e:?}"));
                match e {
                    Event::IkeSaUp { .. } => out.established = true,
                    Event::ChildSaRekeyed {
                        new: c,
                        send_now: false,
                        ..
                    } => {
                        // The peer started it: keep sending on the old SA
                        // until it is deleted (RFC 7296 §2.8).
                        owner
                            .inbound
                            .insert(c.spi_in, c.inbound(4096).map_err(|e| e.to_string())?);
                        if let Some(old) = owner.outbound.as_ref().map(|o| o.spi()) {
                            owner
                                .next
                                .insert(old, c.outbound().map_err(|e| e.to_string())?);
                        }
                        out.child_ups += 1;
                    }
                    Event::ChildSaUp(c) | Event::ChildSaRekeyed { new: c, .. } => {
                        if plan.respond && out.child_ups == 0 {
                            // The initiator installs the SA once it reads
                            // our IKE_AUTH answer; ESP sent at once can
                            // race that (RFC 7296 leaves it open).
                            next_ping = now + Duration::from_millis(300);
                        }
                        owner
                            .inbound
                            .insert(c.spi_in, c.inbound(4096).map_err(|e| e.to_string())?);
                        owner.outbound = Some(c.outbound().map_err(|e| e.to_string())?);
                        out.child_ups += 1;
                    }
                    Event::ChildSaDeleted { spi_out, .. } => {
                        if owner.outbound.as_ref().is_some_and(|o| o.spi() == spi_out) {
                            if let Some(next) = owner.next.remove(&spi_out) {
                                owner.outbound = Some(next);
                            }
                        }
                        // Inbound SAs are kept: the peer may have sealed
                        // packets with a rekeyed SA just before its delete
                        // (a gateway keeps them a few seconds, as the
                        // vrouter does; a test run is short).
                        out.child_deletes += 1;
                    }
                    Event::IkeSaRekeyed { .. } => out.ike_rekeys += 1,
                    Event::IkeSaDown(r) => {
                        out.deleted = deleting && r == DownReason::Deleted;
                        out.down = Some(r);
                        return Ok(out);
                    }
                    _ => {}
                }
            }
            out.child_rekeys = out.child_ups.saturating_sub(1);
            let pinged = out.sent == plan.count && out.replies == plan.count;
            let late = now > start + plan.timeout.saturating_sub(Duration::from_secs(3));
            if plan.delete_at_end && !deleting && (pinged || (late && out.established)) {
                deleting = true;
                sa.delete(now);
                continue;
            }
            if !plan.delete_at_end && pinged {
                return Ok(out);
            }
            if sa.phase() == Phase::Closed {
                return Ok(out);
            }
            if let (Some(o), false) = (owner.outbound.as_mut(), deleting) {
                if out.sent < plan.count && now >= next_ping {
                    out.sent += 1;
                    next_ping = now + plan.interval;
                    let packet = echo(plan.ping.0, plan.ping.1, out.sent);
                    let mut esp = vec![0u8; o.sealed_len(packet.len())];
                    let h = o.headroom();
                    esp[h..h + packet.len()].copy_from_slice(&packet);
                    let len = o
                        .seal(&mut esp, packet.len(), 4)
                        .map_err(|e| e.to_string())?;
                    let _ = io.s4500.send_to(&esp[..len], sa.remote());
                }
            }
        }
        for (sock, port) in [(&io.s500, 500u16), (&io.s4500, 4500)] {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let to = SocketAddr::new(plan.local.into(), port);
            let datagram = &mut buf[..n];
            let ike = if port == 4500 {
                match classify(datagram) {
                    Udp4500::Ike(m) => Some(m.to_vec()),
                    Udp4500::Esp(_) => {
                        let spi = u32::from_be_bytes([
                            datagram[0],
                            datagram[1],
                            datagram[2],
                            datagram[3],
                        ]);
                        if let Some(inb) = owner.inbound.get_mut(&spi) {
                            if let Ok(o) = inb.open(datagram) {
                                if is_reply(&datagram[o.payload], plan.ping.1, plan.ping.0) {
                                    out.replies += 1;
                                }
                            }
                        }
                        None
                    }
                    _ => None,
                }
            } else {
                Some(datagram.to_vec())
            };
            let Some(msg) = ike else { continue };
            let now = Instant::now();
            match sa.as_mut() {
                Some(sa) => sa.handle_input(now, from, to, &msg),
                None => match IkeSa::respond(now, plan.config.clone(), to, from, &msg, plan.seed) {
                    Ok(mut new) => {
                        new.set_unix_time(unix_now());
                        sa = Some(new);
                    }
                    Err(r) => {
                        out.log.push(format!("refused IKE_SA_INIT: {}", r.reason));
                        if let Some(t) = r.reply {
                            io.send(&t);
                        }
                    }
                },
            }
        }
    }
}
