//! A small real-network driver for the sans-IO IKE SA: brings up a tunnel
//! with a peer over UDP 500/4500 (as initiator, or as responder with
//! `--respond`), then pings through ESP from one protected address to
//! another and checks the echo replies. For trying the machine against
//! other implementations (strongSwan in `../shared/lab/ike-lab.sh`); the
//! vrouter daemon is the product, this is a probe.
//!
//! ```text
//! ike_probe --local 10.77.0.2 --remote 10.77.0.1 --id gw-b.ike.lab \
//!   --remote-id gw-a.ike.lab --psk ike-lab-psk-0123456789abcdef \
//!   --ike aes256gcm16-prfsha256-ecp256 --esp aes256gcm16 \
//!   --local-ts 10.77.2.0/24 --remote-ts 10.77.1.0/24 \
//!   --ping 10.77.2.1:10.77.1.1 [--encap] [--respond] [--count 5] [--stay 30] \
//!   [--child-rekey SECS] [--ike-rekey SECS]
//! ```
// A driver: the one place here with sockets and a clock.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_esp::udp_encap::{classify, Udp4500};
use proto_esp::{InboundSa, OutboundSa};
use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{
    Config, Credentials, EspProposal, Event, Identity, IkeProposal, IkeSa, Timers, Transmit,
};

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> Self {
        let mut m = HashMap::new();
        let mut it = std::env::args().skip(1).peekable();
        while let Some(k) = it.next() {
            let k = k.trim_start_matches("--").to_string();
            let v = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "yes".to_string(),
            };
            m.insert(k, v);
        }
        Self(m)
    }

    fn get(&self, k: &str) -> Result<&str, String> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("--{k} is required"))
    }

    fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

fn subnet(s: &str) -> Result<TrafficSelector, String> {
    let (a, p) = s.split_once('/').ok_or(format!("{s}: not a prefix"))?;
    let a: IpAddr = a.parse().map_err(|e| format!("{s}: {e}"))?;
    let p: u8 = p.parse().map_err(|e| format!("{s}: {e}"))?;
    Ok(TrafficSelector::subnet(a, p))
}

fn secs(a: &Args, k: &str) -> Option<Duration> {
    a.0.get(k)
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request.
fn echo(src: Ipv4Addr, dst: Ipv4Addr, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(&[0xab; 56]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = 20 + icmp.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ip
}

struct Io {
    s500: UdpSocket,
    s4500: UdpSocket,
}

impl Io {
    fn send(&self, t: &Transmit) {
        let sock = if t.source.port() == 4500 {
            &self.s4500
        } else {
            &self.s500
        };
        if let Err(e) = sock.send_to(&t.contents, t.destination) {
            eprintln!("send to {}: {e}", t.destination);
        }
    }
}

fn run() -> Result<(), String> {
    let a = Args::parse();
    let local: Ipv4Addr = a
        .get("local")?
        .parse()
        .map_err(|e| format!("--local: {e}"))?;
    let remote: Ipv4Addr = a
        .get("remote")?
        .parse()
        .map_err(|e| format!("--remote: {e}"))?;
    let config = Arc::new(Config {
        local_id: Identity::parse(a.get("id")?),
        remote_id: a.0.get("remote-id").map(|s| Identity::parse(s)),
        credentials: Credentials::Psk(a.get("psk")?.as_bytes().to_vec().into()),
        ike_proposals: vec![IkeProposal::parse(a.get("ike")?).map_err(|e| e.to_string())?],
        esp_proposals: vec![EspProposal::parse(a.get("esp")?).map_err(|e| e.to_string())?],
        local_ts: vec![subnet(a.get("local-ts")?)?],
        remote_ts: vec![subnet(a.get("remote-ts")?)?],
        force_encap: a.has("encap"),
        timers: Timers {
            child_rekey: secs(&a, "child-rekey").or(Timers::default().child_rekey),
            ike_rekey: secs(&a, "ike-rekey").or(Timers::default().ike_rekey),
            ..Timers::default()
        },
    });
    let (ping_src, ping_dst) = a.get("ping")?.split_once(':').ok_or("--ping SRC:DST")?;
    let ping_src: Ipv4Addr = ping_src.parse().map_err(|e| format!("--ping: {e}"))?;
    let ping_dst: Ipv4Addr = ping_dst.parse().map_err(|e| format!("--ping: {e}"))?;
    let count: u16 = a.0.get("count").and_then(|c| c.parse().ok()).unwrap_or(5);
    let stay = Duration::from_secs(a.0.get("stay").and_then(|c| c.parse().ok()).unwrap_or(0));

    let l500 = SocketAddr::new(local.into(), 500);
    let l4500 = SocketAddr::new(local.into(), 4500);
    let io = Io {
        s500: UdpSocket::bind(l500).map_err(|e| format!("bind {l500}: {e}"))?,
        s4500: UdpSocket::bind(l4500).map_err(|e| format!("bind {l4500}: {e}"))?,
    };
    for s in [&io.s500, &io.s4500] {
        s.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| e.to_string())?;
    }
    let mut seed = [0u8; 32];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    seed[..16].copy_from_slice(&t.to_le_bytes());
    seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());

    let start = Instant::now();
    let mut sa: Option<IkeSa> = if a.has("respond") {
        None
    } else {
        Some(IkeSa::initiate(
            start,
            config.clone(),
            l500,
            SocketAddr::new(remote.into(), 500),
            seed,
        ))
    };
    let mut outbound: Option<OutboundSa> = None;
    let mut inbound: HashMap<u32, InboundSa> = HashMap::new();
    let mut sent = 0u16;
    let mut replies = 0u16;
    let mut next_ping = start;
    let deadline = start + Duration::from_secs(30) + stay;
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now > deadline {
            break;
        }
        if let Some(sa) = sa.as_mut() {
            if sa.poll_timeout().is_some_and(|t| t <= now) {
                sa.handle_timeout(now);
            }
            while let Some(t) = sa.poll_transmit() {
                io.send(&t);
            }
            while let Some(e) = sa.poll_event() {
                match e {
                    Event::ChildSaUp(c) | Event::ChildSaRekeyed { new: c, .. } => {
                        println!("child SA up: {c:?}");
                        inbound.insert(c.spi_in, c.inbound(1024).map_err(|e| e.to_string())?);
                        outbound = Some(c.outbound().map_err(|e| e.to_string())?);
                    }
                    Event::ChildSaDeleted { spi_in, .. } => {
                        println!("child SA deleted: in {spi_in:08x}");
                        inbound.remove(&spi_in);
                    }
                    Event::IkeSaDown(r) => return Err(format!("IKE SA down: {r:?}")),
                    other => println!("{other:?}"),
                }
            }
        }
        if let Some(out) = outbound.as_mut() {
            if sent < count && now >= next_ping {
                sent += 1;
                next_ping = now + Duration::from_millis(200);
                let packet = echo(ping_src, ping_dst, sent);
                let mut esp = vec![0u8; out.sealed_len(packet.len())];
                let h = out.headroom();
                esp[h..h + packet.len()].copy_from_slice(&packet);
                let len = out
                    .seal(&mut esp, packet.len(), 4)
                    .map_err(|e| e.to_string())?;
                if let Some(sa) = &sa {
                    let _ = io.s4500.send_to(&esp[..len], sa.remote());
                }
            }
        }
        if sent == count && replies == count && Instant::now() > start + stay {
            println!("{replies}/{count} echo replies through ESP");
            return Ok(());
        }
        for (sock, port) in [(&io.s500, 500u16), (&io.s4500, 4500)] {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let to = SocketAddr::new(local.into(), port);
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
                        if let Some(inb) = inbound.get_mut(&spi) {
                            match inb.open(datagram) {
                                Ok(o) => {
                                    let p = &datagram[o.payload];
                                    if p.len() > 20 && p[9] == 1 && p[20] == 0 {
                                        replies += 1;
                                        println!("echo reply {replies} via ESP spi {spi:08x}");
                                    }
                                }
                                Err(e) => eprintln!("ESP from {from}: {e}"),
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
                None => match IkeSa::respond(now, config.clone(), to, from, &msg, seed) {
                    Ok(new) => sa = Some(new),
                    Err(r) => {
                        eprintln!("refused IKE_SA_INIT from {from}: {}", r.reason);
                        if let Some(t) = r.reply {
                            io.send(&t);
                        }
                    }
                },
            }
        }
    }
    Err(format!(
        "timed out: {replies}/{count} echo replies (sent {sent})"
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ike_probe: {e}");
            ExitCode::FAILURE
        }
    }
}
