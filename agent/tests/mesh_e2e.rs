//! The whole control plane end to end: `cvlan-controller` and several
//! `cvlan-agent`s, each in its own network namespace on one bridge.
//!
//! Needs root and iproute2 (namespaces, veth, bridge, TUN); `#[ignore]`d
//! with that reason and run by CI with `--include-ignored`. Uses the
//! `cvlan-controller` binary next to `cvlan-agent` in the target directory
//! (`cargo test --workspace` builds it; `cargo build -p controller` does too).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use testkit::daemons::{output, wait_for, wait_for_value, Agent, Controller, Daemon, Tls};
use testkit::host::{require, run};
use testkit::transfer::transfer;

static NEXT_MESH: AtomicU32 = AtomicU32::new(0);

fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cvlan-agent")
}

fn sibling_bin(name: &str, package: &str) -> PathBuf {
    testkit::daemons::sibling_bin(agent_bin(), name, package)
}

/// A bridge, a controller and agents, all torn down on drop.
struct Mesh {
    tag: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    controller: Option<Controller>,
    agents: Vec<Agent>,
    controller_key: String,
    auth_key: String,
    relay: Option<Daemon>,
    /// The controller serves inside TLS (the test certificate).
    tls: bool,
}

/// The throwaway test CA and the certificate it signed for the lab's
/// controller address (`transport/tests/data`).
fn tls_data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../transport/tests/data")
        .join(file)
}

const CONTROLLER_IP: Ipv4Addr = Ipv4Addr::new(10, 150, 0, 1);
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(10, 150, 0, 2);

impl Mesh {
    fn new() -> Self {
        Self::build(false, false)
    }

    /// A mesh whose controller announces one relay (in its own namespace).
    fn with_relay() -> Self {
        Self::build(true, false)
    }

    /// A mesh whose controller serves only inside TLS.
    fn with_tls() -> Self {
        Self::build(false, true)
    }

    fn build(with_relay: bool, tls: bool) -> Self {
        require(&["ip", "ping"]);
        let (tag, dir) = testkit::host::fresh_dir("cvlan-mesh", &NEXT_MESH);
        let mut mesh = Self {
            namespaces: Vec::new(),
            dir,
            controller: None,
            agents: Vec::new(),
            controller_key: String::new(),
            auth_key: String::new(),
            relay: None,
            tls,
            tag,
        };
        let br = mesh.add_ns("br");
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        let ctl_ns = mesh.attach("ctl", CONTROLLER_IP);
        let relay_arg = with_relay.then(|| {
            let ns = mesh.attach("rly", RELAY_IP);
            let (relay, arg) = testkit::daemons::start_relay(
                &sibling_bin("cvlan-relay", "relay"),
                &ns,
                &mesh.dir,
                RELAY_IP,
            );
            mesh.relay = Some(relay);
            arg
        });
        let certificate = tls.then(|| Tls {
            cert: tls_data("relay.pem"),
            key: tls_data("relay.key"),
        });
        let controller = Controller::start_with(
            &sibling_bin("cvlan-controller", "controller"),
            &ctl_ns,
            &mesh.dir,
            CONTROLLER_IP,
            relay_arg.as_deref(),
            certificate,
        );
        mesh.controller_key = controller.key.clone();
        mesh.auth_key = controller.auth_key.clone();
        mesh.controller = Some(controller);
        mesh
    }

    fn add_ns(&mut self, role: &str) -> String {
        let ns = format!("cvm{}{role}", self.tag);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// A namespace for `role` with a veth into the bridge at `ip`/24.
    fn attach(&mut self, role: &str, ip: Ipv4Addr) -> String {
        let ns = self.add_ns(role);
        let br = &self.namespaces[0];
        let outer = format!("cvm{}{role}", self.tag);
        let outer = &outer[..outer.len().min(15)];
        run(&[
            "ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        run(&["ip", "link", "set", outer, "netns", br]);
        run(&["ip", "-n", br, "link", "set", outer, "master", "br0", "up"]);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        ns
    }

    fn controller(&mut self) -> &mut Controller {
        self.controller.as_mut().expect("controller")
    }

    fn ctl_dir(&self) -> PathBuf {
        self.controller
            .as_ref()
            .expect("controller")
            .state_dir()
            .to_path_buf()
    }

    fn kill_controller(&mut self) {
        self.controller().kill();
    }

    fn start_controller(&mut self) {
        self.controller().restart();
    }

    fn ctl(&self, args: &[&str]) -> Result<String, String> {
        self.controller.as_ref().expect("controller").admin(args)
    }

    fn agent(&self, name: &str) -> &Agent {
        self.agents.iter().find(|a| a.name == name).expect("agent")
    }

    fn agent_mut(&mut self, name: &str) -> &mut Agent {
        self.agents
            .iter_mut()
            .find(|a| a.name == name)
            .expect("agent")
    }

    /// A namespace and a running daemon for `name` (not joined yet).
    fn add_agent(&mut self, name: &str) {
        let ip = Ipv4Addr::new(10, 150, 0, 10 + self.agents.len() as u8);
        let ns = self.attach(name, ip);
        let iface: String = format!("cvm{}{name}", self.tag).chars().take(15).collect();
        let config = self.default_config();
        let agent = Agent::start(
            Path::new(agent_bin()),
            name,
            &ns,
            &self.dir,
            &iface,
            &config,
        );
        self.agents.push(agent);
    }

    /// Agents of a TLS mesh trust the test CA (not the system's CAs).
    fn default_config(&self) -> String {
        if self.tls {
            format!("controller_ca_file = {:?}\n", tls_data("ca.pem"))
        } else {
            String::new()
        }
    }

    fn start_daemon(&mut self, name: &str) {
        let config = self.default_config();
        self.start_daemon_with_config(name, &config);
    }

    fn start_daemon_with_config(&mut self, name: &str, config_text: &str) {
        self.agent_mut(name).restart(config_text);
    }

    /// Stops an agent the way a service manager does (SIGTERM).
    fn stop_daemon(&mut self, name: &str) {
        self.agent_mut(name).stop();
    }

    fn cli(&self, name: &str, args: &[&str]) -> Result<String, String> {
        self.agent(name).cli(args)
    }

    fn up(&self, name: &str) -> Result<String, String> {
        self.up_with(name, &self.controller_key, &self.auth_key)
    }

    fn up_with(&self, name: &str, controller_key: &str, auth_key: &str) -> Result<String, String> {
        let scheme = if self.tls { "https" } else { "http" };
        self.up_url(
            name,
            &format!("{scheme}://{CONTROLLER_IP}:7443"),
            controller_key,
            auth_key,
        )
    }

    fn up_url(
        &self,
        name: &str,
        controller: &str,
        controller_key: &str,
        auth_key: &str,
    ) -> Result<String, String> {
        self.agent(name)
            .up_url(controller, controller_key, auth_key)
    }

    /// The overlay address `name` reports.
    fn overlay(&self, name: &str) -> Ipv4Addr {
        self.agent(name).overlay()
    }

    fn ping(&self, from: &str, to: Ipv4Addr) -> bool {
        self.agent(from).ping(to)
    }

    fn log(&self, name: &str) -> String {
        self.agent(name).log()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // The processes first: a namespace outlives its deletion while
        // anything still runs in it.
        self.agents.clear();
        self.controller = None;
        self.relay = None;
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("mesh logs kept in {}", self.dir.display());
        }
    }
}

#[test]
#[ignore = "needs root: network namespaces, veth, bridge, TUN (CI runs it)"]
fn agents_mesh_through_the_controller_and_survive_restarts() {
    let mut mesh = Mesh::new();
    let names = ["alpha", "beta", "gamma"];
    for n in names {
        mesh.add_agent(n);
        let out = mesh
            .up(n)
            .unwrap_or_else(|e| panic!("{n} up: {e}\n{}", mesh.log(n)));
        assert!(out.contains(&format!("{n} is up as 100.64.")), "{out}");
    }
    let addr: Vec<Ipv4Addr> = names.iter().map(|n| mesh.overlay(n)).collect();
    assert!(
        addr[0] != addr[1] && addr[1] != addr[2] && addr[0] != addr[2],
        "{addr:?}"
    );
    // Control sockets only their owner may use.
    let mode = |p: PathBuf| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(mesh.agent("alpha").dir.join("agent.sock")), 0o600);
    assert_eq!(mode(mesh.ctl_dir().join("admin.sock")), 0o600);

    // Everyone reaches everyone by overlay address.
    for (i, from) in names.iter().enumerate() {
        for (j, to) in addr.iter().enumerate() {
            if i != j {
                wait_for(Duration::from_secs(5), &format!("{from} -> {to}"), || {
                    mesh.ping(from, *to)
                });
            }
        }
    }
    // 10 MiB byte for byte through the mesh.
    let dst = SocketAddr::from((addr[1], 5201));
    let mbps = transfer(
        mesh.agent("alpha").ns.clone(),
        mesh.agent("beta").ns.clone(),
        dst,
        10 << 20,
    );
    eprintln!("alpha -> beta: 10 MiB at {mbps:.0} Mbit/s");

    // A new node: every other node reaches it within 1 s of joining.
    mesh.add_agent("delta");
    let joined = Instant::now();
    mesh.up("delta").expect("delta up");
    let delta = mesh.overlay("delta");
    for from in names {
        wait_for(
            Duration::from_secs(1).saturating_sub(joined.elapsed()),
            &format!("{from} reaching the new node"),
            || mesh.ping(from, delta),
        );
    }
    eprintln!(
        "new node reachable from all within {:?} of `up`",
        joined.elapsed()
    );

    // A removed node: cut off at the next delta, and told so.
    mesh.ctl(&["nodes", "remove", "gamma"]).expect("remove");
    let removed = Instant::now();
    for from in ["alpha", "beta", "delta"] {
        wait_for(
            Duration::from_secs(1).saturating_sub(removed.elapsed()),
            &format!("{from} dropping gamma"),
            || !mesh.cli(from, &["peers"]).expect("peers").contains("gamma"),
        );
    }
    eprintln!("removal applied everywhere within {:?}", removed.elapsed());
    for from in ["alpha", "beta", "delta"] {
        assert!(
            !mesh.ping(from, addr[2]),
            "{from} still reaches removed gamma"
        );
    }
    wait_for(Duration::from_secs(2), "gamma told it was removed", || {
        mesh.cli("gamma", &["status"])
            .is_ok_and(|s| s.contains("disconnected") && s.contains("removed"))
    });
    assert!(
        !mesh.ping("gamma", addr[0]),
        "removed gamma still reaches alpha"
    );

    // The controller dies: tunnels keep carrying traffic, and an agent
    // restarted meanwhile comes back from its cached map.
    let before_nodes = mesh.ctl(&["nodes", "list"]).expect("nodes");
    mesh.kill_controller();
    let pinger = Command::new("ip")
        .args([
            "netns",
            "exec",
            &mesh.agent("alpha").ns,
            "ping",
            "-c",
            "30",
            "-i",
            "0.1",
            "-W",
            "1",
            &addr[1].to_string(),
        ])
        .output()
        .expect("ping");
    let summary = String::from_utf8_lossy(&pinger.stdout).into_owned();
    assert!(
        summary.contains(" 0% packet loss"),
        "traffic lost while the controller was down:\n{summary}"
    );
    mesh.stop_daemon("beta");
    mesh.start_daemon("beta");
    assert_eq!(
        mesh.overlay("beta"),
        addr[1],
        "restarted agent keeps its address"
    );
    wait_for(
        Duration::from_secs(5),
        "alpha -> restarted beta, controller down",
        || mesh.ping("alpha", addr[1]),
    );
    wait_for(
        Duration::from_secs(5),
        "restarted beta -> delta, controller down",
        || mesh.ping("beta", delta),
    );

    // The controller comes back: agents reconnect and deltas flow again.
    mesh.start_controller();
    for n in ["alpha", "beta", "delta"] {
        wait_for(Duration::from_secs(10), &format!("{n} reconnected"), || {
            mesh.cli(n, &["status"])
                .is_ok_and(|s| s.contains("state:       running"))
        });
    }
    assert_eq!(
        mesh.ctl(&["nodes", "list"]).expect("nodes").lines().count(),
        before_nodes.lines().count(),
        "nothing lost"
    );
    assert_eq!(mesh.overlay("beta"), addr[1]);
    mesh.ctl(&["nodes", "rename", "beta", "bravo"])
        .expect("rename");
    wait_for(Duration::from_secs(1), "rename reaching alpha", || {
        mesh.cli("alpha", &["peers"])
            .is_ok_and(|p| p.contains("bravo"))
    });
    wait_for(Duration::from_secs(5), "alpha -> beta after all", || {
        mesh.ping("alpha", addr[1])
    });
}

#[test]
#[ignore = "needs root: network namespaces, veth, bridge, TUN (CI runs it)"]
fn bad_keys_get_clear_errors_and_disturb_nobody() {
    let mut mesh = Mesh::new();
    mesh.add_agent("good");
    mesh.up("good").expect("good up");
    let nodes_before = mesh.ctl(&["nodes", "list"]).expect("nodes");

    mesh.add_agent("bad");
    let e = mesh
        .up_with(
            "bad",
            &mesh.controller_key,
            "cvlan-auth-0000000000000001-00",
        )
        .unwrap_err();
    assert!(
        e.contains("auth key not recognised") && e.contains("AUTH_KEY_INVALID"),
        "{e}"
    );
    let wrong_controller = "11".repeat(32);
    let e = mesh
        .up_with("bad", &wrong_controller, &mesh.auth_key)
        .unwrap_err();
    assert!(e.contains("wrong controller key"), "{e}");
    let e = mesh.up_with("bad", "not-hex", &mesh.auth_key).unwrap_err();
    assert!(e.contains("64 hex digits"), "{e}");
    let single = mesh
        .ctl(&["keys", "create", "--expires", "1s"])
        .expect("key");
    std::thread::sleep(Duration::from_millis(2100));
    let e = mesh
        .up_with("bad", &mesh.controller_key, single.trim())
        .unwrap_err();
    assert!(e.contains("expired"), "{e}");

    // Nothing changed for the good node or in the database.
    assert_eq!(
        mesh.ctl(&["nodes", "list"]).expect("nodes").lines().count(),
        nodes_before.lines().count()
    );
    assert!(mesh
        .cli("good", &["status"])
        .expect("status")
        .contains("state:       running"));

    // With a right key the same machine joins.
    let out = mesh.up("bad").expect("bad joins with a good key");
    assert!(out.contains("is up as"), "{out}");
    let good = mesh.overlay("good");
    wait_for(Duration::from_secs(5), "bad -> good", || {
        mesh.ping("bad", good)
    });
    // The good node rotates its WireGuard key: the controller records it,
    // the other node is told, and traffic flows under the new key.
    let key_of = |mesh: &Mesh| {
        let list = mesh.ctl(&["nodes", "list"]).expect("nodes");
        let line = list
            .lines()
            .find(|l| l.contains(" good "))
            .expect("good listed")
            .to_string();
        line.split_whitespace()
            .nth(4)
            .expect("key column")
            .to_string()
    };
    let old_key = key_of(&mesh);
    // WireGuard ignores a peer's handshake initiations less than 20 ms
    // apart (flood protection): let the join's handshake age first.
    std::thread::sleep(Duration::from_millis(100));
    let out = mesh.cli("good", &["rotate-key"]).expect("rotate");
    assert!(out.contains("good is up as"), "{out}");
    assert_ne!(key_of(&mesh), old_key, "controller has the new key");
    assert_eq!(mesh.overlay("good"), good, "rotation keeps the address");
    wait_for(
        Duration::from_secs(5),
        "bad -> good under the new key",
        || mesh.ping("bad", good),
    );
}

/// `name`'s path to `peer` as `cvlan-agent peers` reports it.
fn path_to(mesh: &Mesh, name: &str, peer: &str) -> String {
    mesh.agent(name).path_to(peer)
}

#[test]
#[ignore = "needs root: network namespaces, veth, bridge, TUN, nftables (CI runs it)"]
fn blocked_direct_udp_falls_back_to_the_relay_and_returns_when_unblocked() {
    require(&["nft"]);
    let mut mesh = Mesh::with_relay();
    mesh.add_agent("alpha");
    mesh.add_agent("beta");
    // Alpha's host drops every UDP datagram to or from beta's: no direct
    // path exists, TCP (controller, relay) still works.
    let beta_underlay = "10.150.0.11";
    let alpha_ns = mesh.agent("alpha").ns.clone();
    let rules = format!(
        "table inet cvlan_block {{\n  chain out {{\n    type filter hook output priority 0;\n    ip daddr {beta_underlay} meta l4proto udp drop\n  }}\n  chain in {{\n    type filter hook input priority 0;\n    ip saddr {beta_underlay} meta l4proto udp drop\n  }}\n}}\n"
    );
    let rules_file = mesh.dir.join("block.nft");
    std::fs::write(&rules_file, rules).expect("rules");
    let block = || {
        let file = rules_file.to_string_lossy();
        run(&["ip", "netns", "exec", &alpha_ns, "nft", "-f", &file]);
    };
    block();
    for n in ["alpha", "beta"] {
        mesh.up(n)
            .unwrap_or_else(|e| panic!("{n} up: {e}\n{}", mesh.log(n)));
    }
    let beta = mesh.overlay("beta");
    let alpha = mesh.overlay("alpha");
    wait_for(
        Duration::from_secs(10),
        "alpha -> beta through the relay",
        || mesh.ping("alpha", beta),
    );
    assert!(mesh.ping("beta", alpha));
    assert_eq!(
        path_to(&mesh, "alpha", "beta"),
        "relay",
        "{}",
        mesh.cli("alpha", &["peers"]).unwrap_or_default()
    );
    let mbps = transfer(
        alpha_ns.clone(),
        mesh.agent("beta").ns.clone(),
        SocketAddr::from((beta, 5201)),
        10 << 20,
    );
    eprintln!("through the relay: 10 MiB at {mbps:.0} Mbit/s");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        path_to(&mesh, "alpha", "beta"),
        "relay",
        "still blocked: still relayed"
    );

    // The block is lifted: probes get answers and traffic goes direct.
    run(&[
        "ip",
        "netns",
        "exec",
        &alpha_ns,
        "nft",
        "delete",
        "table",
        "inet",
        "cvlan_block",
    ]);
    let direct = wait_for(Duration::from_secs(10), "alpha going direct", || {
        path_to(&mesh, "alpha", "beta") == "direct"
    });
    wait_for(Duration::from_secs(10), "beta going direct", || {
        path_to(&mesh, "beta", "alpha") == "direct"
    });
    eprintln!("direct path taken {direct:?} after the block was lifted");
    wait_for(Duration::from_secs(5), "alpha -> beta direct", || {
        mesh.ping("alpha", beta)
    });
    let mbps = transfer(
        mesh.agent("beta").ns.clone(),
        alpha_ns.clone(),
        SocketAddr::from((alpha, 5202)),
        10 << 20,
    );
    eprintln!("direct: 10 MiB at {mbps:.0} Mbit/s");
    let endpoint_line = mesh.cli("alpha", &["peers"]).unwrap_or_default();
    assert!(
        endpoint_line.contains(&format!("{beta_underlay}:")),
        "alpha's endpoint for beta is beta's address: {endpoint_line}"
    );

    // Blocked again: the direct path stops answering, traffic goes back to
    // the relay by itself and keeps flowing.
    block();
    let back = wait_for(Duration::from_secs(15), "alpha back on the relay", || {
        path_to(&mesh, "alpha", "beta") == "relay"
    });
    eprintln!("back on the relay {back:?} after the block");
    wait_for(
        Duration::from_secs(10),
        "alpha -> beta through the relay again",
        || mesh.ping("alpha", beta),
    );
}

/// The relay's count of packets it delivered (its /metrics, read from
/// `from`'s namespace).
fn relay_forwarded(mesh: &Mesh, from: &str) -> u64 {
    testkit::daemons::relay_forwarded(&mesh.agent(from).ns, RELAY_IP)
}

/// Pings `to` from `from` every 20 ms for `count` packets, in the background.
fn ping_flood(mesh: &Mesh, from: &str, to: Ipv4Addr, count: u32) -> Child {
    mesh.agent(from)
        .ping_flood(to, count, Duration::from_millis(20))
}

/// `wg` in `name`'s namespace, on its interface (`IFACE` in `args`).
fn wg(mesh: &Mesh, name: &str, args: &[&str]) -> String {
    mesh.agent(name).wg(args)
}

#[test]
#[ignore = "needs root: network namespaces, veth, bridge, TUN (CI runs it)"]
fn a_direct_path_the_device_left_for_the_relay_is_put_back() {
    let mut mesh = Mesh::with_relay();
    mesh.add_agent("alpha");
    mesh.add_agent("beta");
    for n in ["alpha", "beta"] {
        mesh.up(n)
            .unwrap_or_else(|e| panic!("{n} up: {e}\n{}", mesh.log(n)));
    }
    let (alpha, beta) = (mesh.overlay("alpha"), mesh.overlay("beta"));
    // Beta's relay proxy on alpha's loopback (the only UDP socket bound
    // there): the endpoint alpha's device uses for beta on the relay.
    let proxy = wait_for_value(Duration::from_secs(10), "beta's proxy on alpha", || {
        let mut ss = Command::new("ip");
        ss.args(["netns", "exec", &mesh.agent("alpha").ns, "ss", "-Hnua"]);
        let out = output(ss).unwrap_or_default();
        out.split_whitespace()
            .find(|w| w.starts_with("127.0.0.1:"))
            .map(str::to_string)
    });
    let beta_key = wg(&mesh, "alpha", &["show", "IFACE", "peers"])
        .trim()
        .to_string();
    wait_for(Duration::from_secs(10), "alpha direct", || {
        path_to(&mesh, "alpha", "beta") == "direct"
    });
    wait_for(Duration::from_secs(10), "beta direct", || {
        path_to(&mesh, "beta", "alpha") == "direct"
    });
    // What roaming does when a packet that was on the relay arrives after
    // the switch: the device follows it back to the proxy. Its next
    // packets then go through the relay, and make beta follow too.
    wg(
        &mesh,
        "alpha",
        &["set", "IFACE", "peer", &beta_key, "endpoint", &proxy],
    );
    for _ in 0..3 {
        assert!(mesh.ping("alpha", beta));
    }
    // Within a probe interval or two both are back on the direct path:
    // the relay delivers (nearly) none of 400 packets now.
    std::thread::sleep(Duration::from_secs(5));
    let before = relay_forwarded(&mesh, "alpha");
    let floods = [
        ping_flood(&mesh, "alpha", beta, 100),
        ping_flood(&mesh, "beta", alpha, 100),
    ];
    for mut f in floods {
        assert!(f.wait().expect("ping").success(), "pings lost");
    }
    let relayed = relay_forwarded(&mesh, "alpha") - before;
    let peers = mesh.cli("alpha", &["peers"]).unwrap_or_default();
    assert!(
        relayed < 10,
        "{relayed} of 400 packets went through the relay after both paths were proven direct:\n{peers}"
    );
    assert!(
        peers.contains("10.150.0.11:"),
        "alpha sends to beta's own address: {peers}"
    );
    assert_eq!(path_to(&mesh, "alpha", "beta"), "direct", "{peers}");
}

#[test]
#[ignore = "needs root: network namespaces, veth, bridge, TUN (CI runs it)"]
fn agents_reach_a_controller_that_speaks_only_tls() {
    let mut mesh = Mesh::with_tls();
    mesh.add_agent("a");
    mesh.add_agent("b");
    let out = mesh.up("a").expect("a up over https");
    assert!(out.contains("is up as"), "{out}");
    mesh.up("b").expect("b up over https");
    let (a, b) = (mesh.overlay("a"), mesh.overlay("b"));
    wait_for(Duration::from_secs(10), "a -> b", || mesh.ping("a", b));
    wait_for(Duration::from_secs(10), "b -> a", || mesh.ping("b", a));

    // What crosses the wire is TLS: an HTTP request gets no HTTP answer.
    let mut probe = Command::new("ip");
    probe.args(["netns", "exec", &mesh.agent("a").ns, "bash", "-c"]).arg(format!(
        "exec 3<>/dev/tcp/{CONTROLLER_IP}/7443; printf 'GET /key HTTP/1.1\\r\\n\\r\\n' >&3; timeout 2 head -c 64 <&3 | od -An -tx1 | head -1"
    ));
    let first = output(probe).unwrap_or_default();
    eprintln!("first bytes answering plain HTTP: {first:?}");
    assert!(
        !first.contains("48 54 54 50"),
        "plain HTTP answered: {first}"
    );

    // Plain http:// to it, or TLS without trusting its CA, fail clearly.
    mesh.add_agent("c");
    let e = mesh
        .up_url(
            "c",
            &format!("http://{CONTROLLER_IP}:7443"),
            &mesh.controller_key,
            &mesh.auth_key,
        )
        .unwrap_err();
    eprintln!("plain http:// to the TLS controller: {e}");
    assert!(e.contains("not connected"), "{e}");
    mesh.stop_daemon("c");
    let other = format!("controller_ca_file = {:?}\n", tls_data("other-ca.pem"));
    mesh.start_daemon_with_config("c", &other);
    let e = mesh
        .up_url(
            "c",
            &format!("https://{CONTROLLER_IP}:7443"),
            &mesh.controller_key,
            &mesh.auth_key,
        )
        .unwrap_err();
    eprintln!("https:// without its CA: {e}");
    assert!(e.contains("certificate"), "{e}");
    assert_eq!(
        mesh.ctl(&["nodes", "list"])
            .expect("nodes")
            .lines()
            .filter(|l| l.contains(" c "))
            .count(),
        0,
        "c joined without TLS"
    );
}
