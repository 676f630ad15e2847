//! IKE_SA setups per second with many concurrent initiators: one load
//! generator (our proto-ikev2 initiators, 32 exchanges in flight, each SA
//! deleted as soon as its Child SA is up, as strongSwan's load-tester
//! does with delete_after_established) against strongSwan's charon as
//! responder, then against cvlan-vrouter in its place, interleaved, same
//! proposal (aes256gcm16-prfsha256-ecp256, PSK, one Child SA each). The
//! figures go to target/ike-setups.txt for CI to print.
//!
//! Needs root and strongSwan (CI installs it): ignored by default.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use testkit::strongswan::*;
use testkit::vrouter_config::{tenant, tunnel, VrouterConfig};

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto_esp::udp_encap::{classify, Udp4500};
use proto_ikev2::{Endpoint, EndpointConfig, Event};
use vrouter::config::Settings;

const BIN: &str = env!("CARGO_BIN_EXE_cvlan-vrouter");
/// Exchanges kept in flight by the generator.
const IN_FLIGHT: usize = 32;
/// Setups counted per measurement (after a warm-up of `IN_FLIGHT`).
const SETUPS: usize = 2000;

/// What one measurement saw.
#[derive(Debug)]
struct Load {
    established: usize,
    failed: usize,
    secs: f64,
    /// Why the first few failed setups failed.
    reasons: Vec<String>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.established as f64 / self.secs
    }
}

/// A vrouter configuration for one side of the measured tunnel: ours
/// (the generator, 10.88.2.0/24 behind US) or theirs (THEM, 10.88.1.0/24).
fn side_toml(ours: bool, status_socket: &std::path::Path) -> String {
    let (listen, id, remote, remote_id, local_net, remote_net) = if ours {
        (US, "gw-o", THEM, "gw-s", "10.88.2.0/24", "10.88.1.0/24")
    } else {
        (THEM, "gw-s", US, "gw-o", "10.88.1.0/24", "10.88.2.0/24")
    };
    VrouterConfig::new(listen)
        .set("local_id", format!("{id}.interop"))
        .set("status_socket", status_socket.display())
        // One generator (one address) keeps 32 setups in flight: allow it,
        // as charon's block_threshold is lifted for it.
        .raw("max_half_open_per_source", 64)
        .tenant(tenant("load", "vr-load"))
        .tunnel(
            tunnel("load", "load", remote)
                .set("remote_id", format!("{remote_id}.interop"))
                .psk(PSK)
                .subnets(&[local_net], &[remote_net])
                .list("proposals", &["aes256gcm16-prfsha256-ecp256"])
                .list("esp_proposals", &["aes256gcm16"])
                .raw("max_child_sas", 1024),
        )
        .to_toml()
}

/// The generator's side of the tunnel, as the vrouter's own config reader
/// builds it (so it is exactly what an operator's TOML gives).
fn initiator_config() -> Arc<proto_ikev2::Config> {
    let toml = side_toml(true, std::path::Path::new("/nonexistent"));
    Settings::parse(&toml).unwrap().tunnels[0].ike.clone()
}

struct Generator {
    endpoint: Endpoint,
    started: usize,
    established: usize,
    failed: usize,
    up: HashSet<u64>,
    /// When the warm-up ended (the clock starts then).
    t0: Option<Instant>,
    reasons: Vec<String>,
}

/// Runs the generator from our namespace against THEM until `SETUPS`
/// more setups completed after the warm-up (or 60 s passed).
fn generate(ns: &str) -> Load {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        netstack::netns::enter(&ns).unwrap();
        let config = initiator_config();
        let s500 = UdpSocket::bind((US, 500)).unwrap();
        let s4500 = UdpSocket::bind((US, 4500)).unwrap();
        for s in [&s500, &s4500] {
            s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        }
        let gen = Arc::new(Mutex::new(Generator {
            endpoint: Endpoint::new(EndpointConfig::default(), [7; 32]),
            started: 0,
            established: 0,
            failed: 0,
            up: HashSet::new(),
            t0: None,
            reasons: vec![],
        }));
        let socks = Arc::new((s500, s4500));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flush = |g: &mut Generator, socks: &(UdpSocket, UdpSocket), now: Instant| {
            while let Some((h, e)) = g.endpoint.poll_event() {
                match e {
                    Event::ChildSaUp(_) => {
                        g.established += 1;
                        g.up.insert(h);
                        if g.t0.is_none() && g.established >= IN_FLIGHT {
                            g.t0 = Some(now);
                            g.established = 0;
                        }
                        g.endpoint.delete(now, h);
                    }
                    Event::IkeSaDown(reason) if !g.up.remove(&h) => {
                        g.failed += 1;
                        if g.reasons.len() < 5 {
                            g.reasons.push(format!("{reason:?}"));
                        }
                    }
                    _ => {}
                }
            }
            while let Some(t) = g.endpoint.poll_transmit() {
                let sock = if t.source.port() == 4500 {
                    &socks.1
                } else {
                    &socks.0
                };
                let _ = sock.send_to(&t.contents, t.destination);
            }
        };
        let receivers: Vec<_> = [500u16, 4500]
            .into_iter()
            .map(|port| {
                let (gen, socks, done) = (gen.clone(), socks.clone(), done.clone());
                std::thread::spawn(move || {
                    let sock = if port == 4500 { &socks.1 } else { &socks.0 };
                    let local = SocketAddr::new(US.into(), port);
                    let mut buf = vec![0u8; 65536];
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let Ok((n, from)) = sock.recv_from(&mut buf) else {
                            continue;
                        };
                        let msg = match (port, classify(&buf[..n])) {
                            (500, _) => &buf[..n],
                            (_, Udp4500::Ike(m)) => m,
                            _ => continue,
                        };
                        let now = Instant::now();
                        let mut g = gen.lock().unwrap();
                        g.endpoint.handle_input(now, from, local, msg);
                        flush(&mut g, &socks, now);
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let remote = SocketAddr::new(THEM.into(), 500);
        let local = SocketAddr::new(US.into(), 500);
        let load = loop {
            std::thread::sleep(Duration::from_millis(1));
            let now = Instant::now();
            let mut g = gen.lock().unwrap();
            // A responder refusing everything would make this spin: stop.
            if g.t0.is_some() && g.established >= SETUPS || g.failed > 1000 || now > deadline {
                break Load {
                    established: g.established,
                    failed: g.failed,
                    secs: g.t0.map_or(1.0, |t| (now - t).as_secs_f64()),
                    reasons: g.reasons.clone(),
                };
            }
            g.endpoint.handle_timeout(now);
            // Keep IN_FLIGHT exchanges going: started minus finished.
            let finished = g.established + g.failed + if g.t0.is_some() { IN_FLIGHT } else { 0 };
            while g.started - finished.min(g.started) < IN_FLIGHT {
                g.started += 1;
                g.endpoint.connect(now, config.clone(), local, remote);
            }
            flush(&mut g, &socks, now);
        };
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in receivers {
            r.join().unwrap();
        }
        load
    })
    .join()
    .unwrap()
}

/// charon as the lab starts it, but tuned as strongSwan's own load tests
/// are (the lab's `ike-lab.sh loadtest`): no DoS protection, no cookies,
/// quiet logs, 16 threads.
fn tune_charon(lab: &mut Lab) {
    lab.kill_charon();
    let path = lab.dir.join("strongswan.conf");
    let conf = std::fs::read_to_string(&path)
        .unwrap()
        .replacen(
            "charon {\n",
            "charon {\n  dos_protection = no\n  cookie_threshold = 1000000\n  block_threshold = 1000000\n  init_limit_half_open = 0\n  ikesa_table_size = 4096\n  ikesa_table_segments = 16\n  threads = 16\n",
            1,
        )
        .replace("      default = 1\n      ike = 2\n      cfg = 1\n", "      default = 0\n");
    std::fs::write(&path, conf).unwrap();
    lab.start_charon();
}

/// cvlan-vrouter in charon's place (their namespace, their address),
/// answering the generator with the same identities, PSK and subnets.
fn vrouter_responder(lab: &Lab) -> Child {
    let socket = lab.dir.join("vrouter.sock");
    let config = side_toml(false, &socket);
    let path = lab.dir.join("vrouter-responder.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.theirs, BIN, "run", "--config"])
        .arg(&path)
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "vrouter did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn ike_sa_setups_per_second_next_to_strongswan() {
    let runs = 3;
    let (mut ours, mut theirs) = (vec![], vec![]);
    let mut lines = String::new();
    for run in 1..=runs {
        let mut lab = Lab::new(&Charon::default());
        tune_charon(&mut lab);
        let s = generate(&lab.ours);
        lab.kill_charon();
        let mut v = vrouter_responder(&lab);
        let c = generate(&lab.ours);
        let _ = v.kill();
        let _ = v.wait();
        lines += &format!(
            "run {run}: cvlan-vrouter={:.0}/s ({} failed {:?})  charon={:.0}/s ({} failed {:?})\n",
            c.rate(),
            c.failed,
            c.reasons,
            s.rate(),
            s.failed,
            s.reasons
        );
        assert_eq!(c.failed, 0, "setups to the vrouter failed: {lines}");
        assert!(
            c.established >= SETUPS && s.established >= SETUPS,
            "{lines}"
        );
        ours.push(c.rate());
        theirs.push(s.rate());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, s) = (median(ours), median(theirs));
    lines += &format!(
        "median IKE_SA setups/s ({IN_FLIGHT} in flight, aes256gcm16-prfsha256-ecp256, PSK, one Child SA each, deleted once up; same generator): cvlan-vrouter={c:.0}/s  charon={s:.0}/s  ratio={:.2}\n",
        c / s
    );
    eprint!("{lines}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ike-setups.txt");
    let _ = std::fs::write(path, &lines);
}
