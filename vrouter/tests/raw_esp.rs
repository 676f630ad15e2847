//! Raw ESP (IP protocol 50) between two cvlan-vrouters in network
//! namespaces, with `encap = false` and no NAT between them: strongSwan's
//! userspace ESP speaks only ESP in UDP, so this path is shown against
//! ourselves. An nftables counter on the responder proves the packets
//! were raw ESP and none went in UDP 4500; ping both ways and 10 MiB of
//! TCP byte for byte cross the tunnel.
//!
//! Needs root and nftables (CI installs it): ignored by default.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::vrouter_config::{tenant, tunnel, VrouterConfig};

const BIN: &str = env!("CARGO_BIN_EXE_cvlan-vrouter");
const PSK: &str = "raw-esp-test-psk-41c7";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces on one veth (10.89.0.1 and .2), each with a vrouter
/// whose tenant TUN holds the protected host (10.89.1.1 and 10.89.2.1).
struct Pair {
    ns: [String; 2],
    dir: PathBuf,
    vrouters: Vec<Child>,
}

const OUTER: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 89, 0, 1), Ipv4Addr::new(10, 89, 0, 2)];
const HOST: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 89, 1, 1), Ipv4Addr::new(10, 89, 2, 1)];
const NET: [&str; 2] = ["10.89.1.0/24", "10.89.2.0/24"];

impl Pair {
    fn new() -> Self {
        let tag = std::process::id() % 100_000;
        let ns = [format!("rawA{tag}"), format!("rawB{tag}")];
        let dir = std::env::temp_dir().join(format!("cvlan-raw-esp-{tag}"));
        let pair = Self {
            ns,
            dir,
            vrouters: vec![],
        };
        for ns in &pair.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (a, b) = (format!("rA{tag}"), format!("rB{tag}"));
        sh(&[
            "ip",
            "link",
            "add",
            &a,
            "netns",
            &pair.ns[0],
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &pair.ns[1],
        ]);
        for (i, dev) in [&a, &b].into_iter().enumerate() {
            let cidr = format!("{}/24", OUTER[i]);
            sh(&["ip", "-n", &pair.ns[i], "addr", "add", &cidr, "dev", dev]);
            sh(&["ip", "-n", &pair.ns[i], "link", "set", dev, "up"]);
        }
        let _ = std::fs::remove_dir_all(&pair.dir);
        std::fs::create_dir_all(&pair.dir).unwrap();
        pair
    }

    /// Starts side `i`'s vrouter (side 0 initiates).
    fn start(&mut self, i: usize) {
        let j = 1 - i;
        let socket = self.dir.join(format!("v{i}.sock"));
        let config = VrouterConfig::new(OUTER[i])
            .set("local_id", format!("side-{i}.raw"))
            .set("status_socket", socket.display())
            .tenant(tenant("t", &format!("vr-raw{i}")).set("address", format!("{}/24", HOST[i])))
            .tunnel(
                tunnel(&format!("to-{j}"), "t", OUTER[j])
                    .set("remote_id", format!("side-{j}.raw"))
                    .psk(PSK)
                    .subnets(&[NET[i]], &[NET[j]])
                    .raw("encap", false)
                    .raw("initiate", i == 0),
            );
        let path = self.dir.join(format!("v{i}.toml"));
        config.write(&path);
        let log = std::fs::File::create(self.dir.join(format!("v{i}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[i], BIN, "run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.vrouters.push(child);
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&self, i: usize) -> String {
        let out = Command::new(BIN)
            .args(["status", "--socket"])
            .arg(self.dir.join(format!("v{i}.sock")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> String {
        (0..2)
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("v{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    fn ping(&self, i: usize) -> bool {
        let (from, to) = (HOST[i].to_string(), HOST[1 - i].to_string());
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns[i],
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
            ])
            .args(["-I", &from, &to])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in &mut self.vrouters {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
#[ignore = "needs root and nftables (CI installs it)"]
fn two_vrouters_speak_raw_esp_without_a_nat() {
    let mut p = Pair::new();
    // Count what reaches side 1: raw ESP, and anything on UDP 4500.
    let rules = "table ip count {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    \
                 ip protocol esp counter\n    udp dport 4500 counter\n  }\n}\n";
    let file = p.dir.join("count.nft");
    std::fs::write(&file, rules).unwrap();
    sh(&[
        "ip",
        "netns",
        "exec",
        &p.ns[1],
        "nft",
        "-f",
        &file.to_string_lossy(),
    ]);
    p.start(1);
    p.start(0);
    let start = Instant::now();
    while !(p.status(0).contains(" up ") && p.status(1).contains(" up ")) {
        assert!(start.elapsed() < Duration::from_secs(15), "{}", p.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(p.ping(0) && p.ping(1), "{}", p.logs());

    let mbps = testkit::transfer::transfer(
        p.ns[0].clone(),
        p.ns[1].clone(),
        SocketAddr::from((HOST[1], 5301)),
        10 << 20,
    );
    eprintln!("10 MiB over raw ESP at {mbps:.0} Mbit/s");

    let counters = sh(&[
        "ip", "netns", "exec", &p.ns[1], "nft", "list", "table", "ip", "count",
    ]);
    let packets = |what: &str| -> u64 {
        counters
            .lines()
            .find(|l| l.contains(what))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (esp, udp4500) = (packets("ip protocol esp"), packets("udp dport 4500"));
    assert!(
        esp > 7000,
        "10 MiB arrived as {esp} raw ESP packets?\n{counters}"
    );
    assert_eq!(udp4500, 0, "nothing in UDP 4500 without a NAT\n{counters}");
}
