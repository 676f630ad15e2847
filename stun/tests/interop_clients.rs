//! STUN clients nobody here wrote, against our server: coturn's
//! `turnutils_stunclient` (RFC 5389) and Debian's `stun` (RFC 3489). Each
//! must learn its reflexive address. Needs root (a private network
//! namespace, since `stun` only talks to port 3478) and the Debian packages
//! coturn and stun-client: ignored by default, run by CI.
// The crate is sans-IO; its interop tests are where real sockets belong.
#![allow(clippy::disallowed_methods)]

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stun::server::{answer, Answer};

struct Namespace(String);

impl Namespace {
    /// A fresh namespace with loopback up, named `prefix` + our pid.
    fn new(prefix: &str) -> Self {
        let ns = Self(format!("{prefix}{}", std::process::id()));
        let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
        assert!(Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .expect("ip")
            .success());
        assert!(Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .expect("ip")
            .success());
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn require(tools: &[&str]) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(root, "needs root (network namespace)");
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "needs `{t}` (apt-get install coturn stun-client)");
    }
}

/// Runs our server on 127.0.0.1:3478 inside `ns` until `stop`.
fn serve(ns: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        netstack::netns::enter(&ns).expect("enter namespace");
        let sock = UdpSocket::bind("127.0.0.1:3478").expect("bind 3478");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        ready_tx.send(()).expect("ready");
        let (mut buf, mut out, mut answered) = ([0u8; 1500], [0u8; 1500], 0);
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if let Answer::Reply(len) = answer(&buf[..n], from, &mut out) {
                sock.send_to(&out[..len], from).expect("send");
                answered += 1;
            }
        }
        answered
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server ready");
    handle
}

fn run_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("run client");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "needs root, coturn (turnutils_stunclient), stun-client (CI runs it)"]
fn real_clients_learn_their_reflexive_address_from_our_server() {
    require(&["ip", "turnutils_stunclient", "stun"]);
    let ns = Namespace::new("cvstun");
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(ns.0.clone(), stop.clone());

    // coturn's client: RFC 5389 Binding, XOR-MAPPED-ADDRESS.
    let coturn = run_in(
        &ns.0,
        &[
            "timeout",
            "10",
            "turnutils_stunclient",
            "-p",
            "3478",
            "127.0.0.1",
        ],
    );
    // Debian's classic client from a fixed source port: RFC 3489, MAPPED-ADDRESS.
    let classic = run_in(
        &ns.0,
        &[
            "timeout",
            "10",
            "stun",
            "127.0.0.1",
            "1",
            "-v",
            "-p",
            "40010",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let answered = server.join().expect("server thread");
    eprintln!("--- turnutils_stunclient ---\n{coturn}\n--- stun ---\n{classic}");
    assert!(
        coturn.contains("UDP reflexive addr: 127.0.0.1:"),
        "turnutils_stunclient got no reflexive address:\n{coturn}"
    );
    assert!(
        classic.contains("127.0.0.1:40010"),
        "stun did not report 127.0.0.1:40010:\n{classic}"
    );
    assert!(answered >= 2, "server answered {answered} requests");
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Drives our client over a real socket until every transaction ends.
fn resolve(sock: &UdpSocket, servers: &[std::net::SocketAddr]) -> Vec<stun::Event> {
    use std::time::Instant;
    use stun::{BindingClient, ClientConfig, TransactionId};
    // Short retransmission timer: coturn may still be starting up.
    let config = ClientConfig {
        rto: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let mut client = BindingClient::new(config);
    for (i, s) in servers.iter().enumerate() {
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&std::process::id().to_be_bytes());
        id[11] = i as u8;
        client
            .query(Instant::now(), *s, TransactionId(id))
            .expect("query");
    }
    let mut events = Vec::new();
    let mut buf = [0u8; 1500];
    while client.in_flight() > 0 {
        while let Some(t) = client.poll_transmit() {
            sock.send_to(&t.contents, t.destination).expect("send");
        }
        let wait = client
            .poll_timeout()
            .map_or(Duration::from_millis(50), |t| {
                t.saturating_duration_since(Instant::now())
            });
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .expect("timeout");
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = client.handle_input(Instant::now(), from, &buf[..n]);
        }
        client.handle_timeout(Instant::now());
        events.extend(std::iter::from_fn(|| client.poll_event()));
    }
    events.extend(std::iter::from_fn(|| client.poll_event()));
    events
}

#[test]
#[ignore = "needs root, coturn (turnserver) (CI runs it)"]
fn our_client_learns_its_address_from_coturn() {
    require(&["ip", "turnserver"]);
    let ns = Namespace::new("cvturn");
    // Two coturn instances: two servers to ask, so the mapping verdict runs.
    let mut servers = Vec::new();
    let mut children = Vec::new();
    for port in ["3478", "3479"] {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "turnserver",
                "-n",
                "--stun-only",
                "--listening-ip=127.0.0.1",
            ])
            .arg(format!("--listening-port={port}"))
            .args([
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--log-file=stdout",
                "--simple-log",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start turnserver");
        children.push(Child(child));
        servers.push(format!("127.0.0.1:{port}").parse().expect("addr"));
    }
    let name = ns.0.clone();
    let (local, events) = std::thread::spawn(move || {
        netstack::netns::enter(&name).expect("enter namespace");
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        (sock.local_addr().expect("addr"), resolve(&sock, &servers))
    })
    .join()
    .expect("client thread");
    drop(children);
    eprintln!("{events:?}");
    let mapped: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            stun::Event::Mapped { reflexive, .. } => Some(*reflexive),
            _ => None,
        })
        .collect();
    assert_eq!(
        mapped,
        vec![local, local],
        "both coturn instances report our address"
    );
    assert!(events.contains(&stun::Event::Mapping(
        stun::MappingBehavior::EndpointIndependent { reflexive: local }
    )));
}
