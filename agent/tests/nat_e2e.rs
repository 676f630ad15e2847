//! NAT traversal end to end, in the NAT lab (testkit::nat_lab): the
//! controller and the relay (with STUN) on the lab's public side, coturn
//! as a second STUN server on the STUN host, one agent behind each site
//! router. What is asserted is what happens: pings delivered, the
//! relay's own count of packets it forwarded, the device's endpoint.
//!
//! Needs root, iproute2, nftables, conntrack and coturn; `#[ignore]`d
//! with that reason and run by CI with `--include-ignored`.

use std::path::{Path, PathBuf};

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use testkit::daemons::{
    lost, relay_forwarded, spawn_in, start_relay, wait_for, Agent, Controller, Daemon,
};
use testkit::nat_lab::{NatLab, NatType, Site, RELAY_IP, STUN_IP1};

fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cvlan-agent")
}

/// 20 pings a second.
const FLOOD: Duration = Duration::from_millis(50);

fn sibling_bin(name: &str, package: &str) -> PathBuf {
    testkit::daemons::sibling_bin(agent_bin(), name, package)
}

/// The lab with its servers and the two agents, both up.
struct Nat {
    lab: NatLab,
    _relay: Daemon,
    _coturn: Daemon,
    controller: Controller,
    a: Agent,
    b: Agent,
    /// When b's `up` returned (both nodes joined).
    joined: Instant,
}

impl Nat {
    fn new(ta: NatType, tb: NatType) -> Self {
        Self::start(NatLab::new(ta, tb))
    }

    /// The same with miniupnpd on both routers, before the agents start.
    fn with_port_mapping(ta: NatType, tb: NatType) -> Self {
        let mut lab = NatLab::new(ta, tb);
        lab.start_port_mapping(Site::A);
        lab.start_port_mapping(Site::B);
        Self::start(lab)
    }

    fn start(lab: NatLab) -> Self {
        testkit::host::require(&["ip", "nft", "conntrack", "turnserver", "ping"]);
        let dir = lab.dir().to_path_buf();
        let (relay, relay_arg) = start_relay(
            &sibling_bin("cvlan-relay", "relay"),
            &lab.ns("relay"),
            &dir,
            RELAY_IP,
        );
        // A STUN server nobody here wrote, at another address than the
        // relay's: two servers tell a symmetric NAT from a cone.
        let coturn = spawn_in(
            &lab.ns("stun"),
            Path::new("turnserver"),
            &[
                "-n",
                "--no-cli",
                "--stun-only",
                "--no-tls",
                "--no-dtls",
                "--log-file",
                "stdout",
                "-L",
                &STUN_IP1.to_string(),
                "--listening-port",
                "3478",
            ]
            .map(String::from),
            dir.join("coturn.log"),
        );
        let controller = Controller::start(
            &sibling_bin("cvlan-controller", "controller"),
            &lab.ns("ctl"),
            &dir,
            testkit::nat_lab::CTL_IP,
            Some(&relay_arg),
        );
        let config = format!("stun_servers = [\"{STUN_IP1}:3478\"]\n");
        let agent = |name: &str, node: &str| {
            // Unique per lab: the UAPI socket under /var/run/wireguard is
            // named after the interface and shared by every namespace.
            let iface: String = format!("{}{node}", lab.ns("")).chars().take(15).collect();
            Agent::start(
                Path::new(agent_bin()),
                name,
                &lab.ns(node),
                &dir,
                &iface,
                &config,
            )
        };
        let (a, b) = (agent("alpha", "a"), agent("beta", "b"));
        a.up(&controller)
            .unwrap_or_else(|e| panic!("alpha up: {e}\n{}", a.log()));
        b.up(&controller)
            .unwrap_or_else(|e| panic!("beta up: {e}\n{}", b.log()));
        let joined = Instant::now();
        Self {
            lab,
            _relay: relay,
            _coturn: coturn,
            controller,
            a,
            b,
            joined,
        }
    }

    fn both_direct(&self) -> bool {
        self.a.path_to("beta") == "direct" && self.b.path_to("alpha") == "direct"
    }

    fn forwarded(&self) -> u64 {
        relay_forwarded(&self.lab.ns("ctl"), RELAY_IP)
    }

    fn peers(&self) -> String {
        format!(
            "alpha:\n{}\nbeta:\n{}",
            self.a.cli(&["peers"]).unwrap_or_default(),
            self.b.cli(&["peers"]).unwrap_or_default()
        )
    }
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn port_restricted_nats_on_both_sides_go_direct_within_five_seconds() {
    let nat = Nat::new(NatType::Prc, NatType::Prc);
    let (a_ip, b_ip) = (nat.a.overlay(), nat.b.overlay());
    // Traffic works from the first second, through the relay if need be.
    let first = wait_for(Duration::from_secs(3), "alpha -> beta", || nat.a.ping(b_ip));
    eprintln!("first ping answered {first:?} after the join");
    let direct = wait_for(Duration::from_secs(5), "both direct", || nat.both_direct());
    let since_join = nat.joined.elapsed().min(direct + first);
    eprintln!("prc+prc: direct {:?} after the join", nat.joined.elapsed());
    assert!(since_join < Duration::from_secs(5));
    // Direct is what happens: the relay forwards nothing for the pair.
    let before = nat.forwarded();
    let floods = [
        nat.a.ping_flood(b_ip, 60, FLOOD),
        nat.b.ping_flood(a_ip, 60, FLOOD),
    ];
    let lost: u32 = floods.into_iter().map(lost).sum();
    let relayed = nat.forwarded() - before;
    let peers = nat.peers();
    assert_eq!(lost, 0, "{peers}");
    assert_eq!(
        relayed, 0,
        "{relayed} packets went through the relay:\n{peers}"
    );
    // Each side sends to the other's router (its reflexive address).
    assert_eq!(
        nat.a.endpoint_of("beta").map(|e| e.ip()),
        Some(testkit::nat_lab::R2_WAN.into()),
        "{peers}"
    );
    // debug ping: answered through the relay and directly, at beta's
    // router, and done once the direct answer came.
    let out = nat.a.cli(&["debug", "ping", "beta"]).expect("debug ping");
    assert!(
        out.contains(&format!("via {}:", testkit::nat_lab::R2_WAN))
            && out.contains("direct path to beta is"),
        "{out}"
    );
    // netcheck: both STUN servers saw one mapping, the port kept.
    let check = nat.a.cli(&["netcheck"]).expect("netcheck");
    assert!(check.contains("UDP:                 yes"), "{check}");
    assert!(
        check.contains("mapping varies by destination: no"),
        "{check}"
    );
    assert!(
        check.contains(&format!("{}:", testkit::nat_lab::R1_WAN)),
        "{check}"
    );
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn a_symmetric_nat_is_named_by_netcheck_and_met_through_a_peer_reflexive_address() {
    // A full cone facing a symmetric NAT: the full-cone side reaches the
    // other only where its probes came from.
    let nat = Nat::new(NatType::Full, NatType::Sym);
    wait_for(Duration::from_secs(10), "both direct", || nat.both_direct());
    let row = nat.a.peer_row("beta");
    assert_eq!(
        row.last().map(String::as_str),
        Some("peer-reflexive"),
        "{}",
        nat.peers()
    );
    let check = nat.b.cli(&["netcheck"]).expect("netcheck");
    assert!(
        check.contains("mapping varies by destination: yes"),
        "{check}"
    );
    assert!(check.contains("NAT:                 symmetric"), "{check}");
    // Each side's peers names the NAT the other reported (through the
    // controller's map).
    let nat_of = |agent: &Agent, peer: &str| {
        let row = agent.peer_row(peer);
        row.get(row.len().wrapping_sub(2))
            .cloned()
            .unwrap_or_default()
    };
    wait_for(Duration::from_secs(10), "NAT kinds in the map", || {
        nat_of(&nat.a, "beta") == "symmetric" && nat_of(&nat.b, "alpha") == "cone"
    });
}

/// The shared lab's own matrix (`nat-lab.sh matrix`, its Python client
/// punching with peer-reflexive candidates): these pairs stay relayed.
fn lab_punches_directly(a: NatType, b: NatType) -> bool {
    use NatType::*;
    !matches!(
        (a, b),
        (Sym, Sym) | (Prc, Sym) | (Sym, Prc) | (Sym, Fw) | (Fw, Sym)
    )
}

/// Every pair with site A behind `ta`: direct where the lab punches
/// directly, relay where it does not, pings from the start in both.
fn matrix_row(ta: NatType) {
    let mut failures = Vec::new();
    for tb in NatType::ALL {
        let nat = Nat::new(ta, tb);
        let b_ip = nat.b.overlay();
        let pair = format!("{}+{}", ta.name(), tb.name());
        if !wait_for_ok(Duration::from_secs(3), || nat.a.ping(b_ip)) {
            failures.push(format!("{pair}: no ping within 3 s\n{}", nat.peers()));
            continue;
        }
        let want_direct = lab_punches_directly(ta, tb);
        let went_direct = wait_for_ok(Duration::from_secs(8), || nat.both_direct());
        let took = nat.joined.elapsed();
        eprintln!(
            "{pair}: {} ({took:?} after the join), lab: {}",
            if went_direct { "direct" } else { "relay" },
            if want_direct { "direct" } else { "relay" }
        );
        if went_direct != want_direct {
            failures.push(format!(
                "{pair}: direct={went_direct}, want {want_direct}\n{}",
                nat.peers()
            ));
            continue;
        }
        // Whatever the path, traffic flows; on a direct pair the relay
        // carries none of it.
        let before = nat.forwarded();
        let ok = nat.a.ping(b_ip) && nat.b.ping(nat.a.overlay());
        let relayed = nat.forwarded() - before;
        if !ok || (want_direct && relayed > 0) {
            failures.push(format!(
                "{pair}: pings ok={ok}, relayed={relayed}\n{}",
                nat.peers()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn wait_for_ok(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn matrix_from_behind_full_cone() {
    matrix_row(NatType::Full);
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn matrix_from_behind_restricted_cone() {
    matrix_row(NatType::Arc);
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn matrix_from_behind_port_restricted_cone() {
    matrix_row(NatType::Prc);
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn matrix_from_behind_symmetric() {
    matrix_row(NatType::Sym);
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn matrix_from_a_public_address() {
    matrix_row(NatType::None);
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn matrix_from_behind_a_stateful_firewall() {
    matrix_row(NatType::Fw);
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn mappings_flushed_on_both_routers_come_back_direct_within_ten_seconds() {
    let nat = Nat::new(NatType::Prc, NatType::Prc);
    wait_for(Duration::from_secs(5), "both direct", || nat.both_direct());
    nat.lab.flush_conntrack(Site::A);
    nat.lab.flush_conntrack(Site::B);
    let b_ip = nat.b.overlay();
    let back = wait_for(Duration::from_secs(10), "direct pings again", || {
        nat.both_direct() && nat.a.ping(b_ip)
    });
    eprintln!("after conntrack -F: direct and answering within {back:?}");
    let before = nat.forwarded();
    assert!(nat.a.ping(b_ip));
    assert_eq!(nat.forwarded() - before, 0, "{}", nat.peers());
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn switching_paths_under_a_ping_flood_loses_at_most_one_packet() {
    let nat = Nat::new(NatType::Prc, NatType::Prc);
    wait_for(Duration::from_secs(10), "both direct", || nat.both_direct());
    let b_ip = nat.b.overlay();

    // Direct -> relay: the direct path breaks under a 20/s flood. Until
    // the path machine gives up on it (seconds later), the device copies
    // what gets no answer to the relay.
    let flood = nat.a.ping_flood(b_ip, 240, FLOOD);
    std::thread::sleep(Duration::from_secs(2));
    nat.lab.set_direct_blocked(true);
    let before = nat.forwarded();
    let to_relay = wait_for(Duration::from_secs(12), "alpha on the relay", || {
        nat.a.path_to("beta") == "relay"
    });
    let lost_to_relay = lost(flood);
    let relayed = nat.forwarded() - before;
    eprintln!(
        "direct -> relay after {to_relay:?}: {lost_to_relay} of 240 lost, relay forwarded {relayed}"
    );
    assert!(
        relayed > 100,
        "the flood did not cross the relay: {relayed}"
    );
    // Blocked, debug ping hears the peer only through the relay.
    let out = nat
        .a
        .cli(&["debug", "ping", "beta", "--count", "2"])
        .expect("debug ping");
    assert!(
        out.contains(&format!("via relay {RELAY_IP}:8443"))
            && out.contains("no direct path to beta after 2 tries")
            && !out.contains("direct path to beta is"),
        "{out}"
    );

    // Relay -> direct: the path comes back under the flood.
    let flood = nat.a.ping_flood(b_ip, 400, FLOOD);
    std::thread::sleep(Duration::from_secs(2));
    nat.lab.set_direct_blocked(false);
    let to_direct = wait_for(Duration::from_secs(17), "both direct again", || {
        nat.both_direct()
    });
    let lost_to_direct = lost(flood);
    eprintln!("relay -> direct after {to_direct:?}: {lost_to_direct} of 400 lost");
    assert!(
        lost_to_relay <= 1 && lost_to_direct <= 1,
        "lost {lost_to_relay} moving to the relay, {lost_to_direct} moving back\n{}",
        nat.peers()
    );
    // And direct it is: the relay carries nothing of a new exchange.
    let before = nat.forwarded();
    assert!(nat.a.ping(b_ip));
    assert_eq!(nat.forwarded() - before, 0, "{}", nat.peers());
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn a_host_whose_lan_address_changes_reports_it_and_goes_direct_again() {
    let nat = Nat::new(NatType::Prc, NatType::Prc);
    wait_for(Duration::from_secs(10), "both direct", || nat.both_direct());
    let moved = Ipv4Addr::new(192, 168, 1, 77);
    nat.lab.readdress_host(Site::A, moved);
    // The kernel tells the agent (rtnetlink), which reports its new
    // local endpoint to the controller at once, not at the next poll.
    let reported = wait_for(Duration::from_secs(5), "the new address reported", || {
        nat.controller
            .admin(&["nodes", "list"])
            .is_ok_and(|l| l.contains(&format!("{moved}:")))
    });
    eprintln!("new address reported {reported:?} after the change");
    // And the pair is direct again, traffic flowing.
    let b_ip = nat.b.overlay();
    wait_for(Duration::from_secs(10), "direct again", || {
        nat.both_direct() && nat.a.ping(b_ip)
    });
    let before = nat.forwarded();
    assert!(nat.a.ping(b_ip) && nat.b.ping(nat.a.overlay()));
    assert_eq!(nat.forwarded() - before, 0, "{}", nat.peers());
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn, miniupnpd (CI runs it)"]
fn symmetric_nats_on_both_sides_go_direct_through_the_ports_their_routers_map() {
    // Without port mapping this pair stays on the relay (the matrix).
    let nat = Nat::with_port_mapping(NatType::Sym, NatType::Sym);
    let went = wait_for(Duration::from_secs(15), "both direct", || nat.both_direct());
    eprintln!("sym+sym with port mapping: direct {went:?} after the routers mapped");
    // Each sends to the other's router: to the port it maps (learnt from
    // the map), or to where the peer's probes through that port came
    // from (peer-reflexive; the mapping opened that way too).
    let a_mapped = std::net::SocketAddr::from((testkit::nat_lab::R1_WAN, 41641));
    let ip = |e: Option<std::net::SocketAddr>| e.map(|e| e.ip());
    assert_eq!(
        ip(nat.a.endpoint_of("beta")),
        Some(testkit::nat_lab::R2_WAN.into()),
        "{}",
        nat.peers()
    );
    assert_eq!(
        ip(nat.b.endpoint_of("alpha")),
        Some(testkit::nat_lab::R1_WAN.into()),
        "{}",
        nat.peers()
    );
    let before = nat.forwarded();
    assert!(nat.a.ping(nat.b.overlay()) && nat.b.ping(nat.a.overlay()));
    assert_eq!(nat.forwarded() - before, 0, "{}", nat.peers());
    let check = nat.a.cli(&["netcheck"]).expect("netcheck");
    eprintln!("{check}{}", nat.peers());
    assert!(
        check.contains(&format!("by 192.168.1.1: {a_mapped}")),
        "{check}\n{}",
        nat.lab.port_mapping_log(Site::A)
    );
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn, miniupnpd (CI runs it)"]
fn routers_that_speak_only_upnp_map_ports_too() {
    let mut lab = NatLab::new(NatType::Sym, NatType::Sym);
    lab.start_port_mapping_with(Site::A, testkit::nat_lab::PortMapping::Upnp);
    lab.start_port_mapping_with(Site::B, testkit::nat_lab::PortMapping::Upnp);
    let nat = Nat::start(lab);
    // PCP and NAT-PMP go unanswered first (1.75 s each), then UPnP maps.
    let went = wait_for(Duration::from_secs(20), "both direct", || nat.both_direct());
    eprintln!("sym+sym with UPnP: direct {went:?} after the join");
    let check = nat.a.cli(&["netcheck"]).expect("netcheck");
    eprintln!("{check}{}", nat.peers());
    assert!(
        check.contains("port mapping:        UPnP by 192.168.1.1: 11.0.0.11:"),
        "{check}\n{}",
        nat.lab.port_mapping_log(Site::A)
    );
    let before = nat.forwarded();
    assert!(nat.a.ping(nat.b.overlay()) && nat.b.ping(nat.a.overlay()));
    assert_eq!(nat.forwarded() - before, 0, "{}", nat.peers());
}

/// `name` of `debug counters`'s line, as a number.
fn counter(agent: &Agent, name: &str) -> u64 {
    let text = agent.cli(&["debug", "counters"]).expect("counters");
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in\n{text}"))
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn junk_forgeries_and_answers_to_nothing_from_the_internet_are_dropped_and_counted() {
    // Alpha has a public address: anyone on the internet reaches its
    // WireGuard port.
    let nat = Nat::new(NatType::None, NatType::Prc);
    wait_for(Duration::from_secs(10), "both direct", || nat.both_direct());
    let before = nat.a.cli(&["netcheck"]).expect("netcheck");
    let learnt = counter(&nat.a, "peer-reflexive addresses learnt");
    let beta_key = nat.a.wg(&["show", "IFACE", "peers"]).trim().to_string();
    // From the STUN host (its second address, where no server runs): a
    // Binding success for a transaction alpha never started, a probe
    // from a key nobody has, a probe in beta's name it did not seal, and
    // NAT-PMP and PCP answers from a host that is not alpha's gateway.
    let script = format!(
        r#"
import base64, socket, os
def send(src_port, data):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{stun}", src_port)); s.sendto(data, ("{host}", 41641)); s.close()
stun = bytes([1, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42]) + os.urandom(12) + bytes([0, 0x20, 0, 8, 0, 1, 0xa2, 0xa9, 1, 2, 3, 4])
send(3478, stun)
send(40000, b"\xffCVP" + os.urandom(32) + os.urandom(60))
send(40001, b"\xffCVP" + base64.b64decode("{beta}") + os.urandom(60))
send(5351, bytes([0, 129, 0, 0, 0, 0, 0, 9, 0xa2, 0xa9, 0xa2, 0xa9, 0, 0, 0x1c, 0x20]))
send(5351, bytes([2, 0x81, 0, 0]) + bytes(56))
"#,
        stun = testkit::nat_lab::STUN_IP2,
        host = nat.lab.host_ip(Site::A),
        beta = beta_key,
    );
    nat.lab.exec("stun", &["python3", "-c", &script]);
    wait_for(Duration::from_secs(3), "all five counted", || {
        counter(&nat.a, "STUN answers to nothing we asked") >= 1
            && counter(&nat.a, "probes from unknown keys") >= 1
            && counter(&nat.a, "probes not sealed by their sender") >= 1
            && counter(&nat.a, "port mapping: not from the gateway") >= 2
    });
    eprintln!("{}", nat.a.cli(&["debug", "counters"]).unwrap_or_default());
    // Nothing changed: the same reflexive view, the same direct path and
    // candidates (no address learnt from a forgery).
    let after = nat.a.cli(&["netcheck"]).expect("netcheck");
    let reflexive = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("reflexive addresses:"))
            .map(str::to_string)
    };
    assert_eq!(reflexive(&after), reflexive(&before), "{before}\n{after}");
    assert!(nat.both_direct(), "{}", nat.peers());
    assert_eq!(
        counter(&nat.a, "peer-reflexive addresses learnt"),
        learnt,
        "a forgery taught an address"
    );
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, coturn (CI runs it)"]
fn port_guesses_toward_the_labs_random_symmetric_nat_stay_within_budget_and_are_measured() {
    // Site B hands out random ports (masquerade random): guessing the
    // next ports past those its STUN servers saw finds nothing, as the
    // matrix says; what it costs is bounded and counted.
    let nat = Nat::new(NatType::Prc, NatType::Sym);
    std::thread::sleep(Duration::from_secs(20));
    let sent = counter(&nat.a, "port guesses sent (hard NATs)");
    let answered = counter(&nat.a, "port guesses answered");
    let calls = counter(&nat.a, "calls sent") + counter(&nat.a, "calls received");
    eprintln!(
        "prc facing the lab's sym: {sent} port guesses in {calls} bursts, {answered} answered"
    );
    assert!(sent > 0, "no guesses toward a symmetric peer");
    assert!(sent <= 16 * calls, "{sent} guesses in {calls} bursts");
    assert_eq!(answered, 0);
    assert_eq!(nat.a.path_to("beta"), "relay");
}

#[test]
#[ignore = "needs root, iproute2, nftables, conntrack, miniupnpd (CI runs it)"]
fn the_nat_pmp_client_maps_a_port_on_miniupnpd_that_the_internet_reaches() {
    use proto_path::portmap::{Event, PortMapper, Protocol};
    // miniupnpd answers PCP first, which is what agents use; here the
    // client speaks NAT-PMP alone, as it does with a router without PCP.
    let mut lab = NatLab::new(NatType::Sym, NatType::Prc);
    lab.start_port_mapping(Site::A);
    let (host_ns, port) = (lab.ns("a"), 41700u16);
    let mapped = std::thread::spawn(move || {
        netstack::netns::enter(&host_ns).expect("enter the host's namespace");
        let sock = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let gateway = std::net::Ipv4Addr::new(192, 168, 1, 1);
        let client = std::net::Ipv4Addr::new(192, 168, 1, 10);
        let mut m = PortMapper::new(Instant::now(), gateway, client, port, [9; 12]).without_pcp();
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        let mapping = loop {
            assert!(start.elapsed() < Duration::from_secs(5), "no mapping");
            m.handle_timeout(Instant::now());
            while let Some(t) = m.poll_transmit() {
                sock.send_to(&t.contents, t.destination).expect("send");
            }
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                m.handle_input(Instant::now(), from, &buf[..n]);
            }
            if let Some(Event::Mapped(mapping)) = m.poll_event() {
                break mapping;
            }
        };
        // The internet's datagram to the mapped port reaches this socket.
        let (n, from) = loop {
            assert!(start.elapsed() < Duration::from_secs(10), "nothing came");
            if let Ok(got) = sock.recv_from(&mut buf) {
                break got;
            }
        };
        (mapping, buf[..n].to_vec(), from)
    });
    // Send from the public side until it arrives (the mapping comes first).
    let sent = std::thread::spawn({
        let ns = lab.ns("stun");
        move || {
            netstack::netns::enter(&ns).expect("enter");
            let sock = std::net::UdpSocket::bind("203.0.113.11:0").expect("bind");
            for _ in 0..100 {
                let _ = sock.send_to(b"through the mapping", (testkit::nat_lab::R1_WAN, 41700));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let (mapping, bytes, from) = mapped.join().expect("mapper");
    let _ = sent.join();
    assert_eq!(mapping.protocol, Protocol::NatPmp);
    assert_eq!(*mapping.external.ip(), testkit::nat_lab::R1_WAN);
    assert_eq!(mapping.external.port(), 41700);
    assert_eq!(bytes, b"through the mapping");
    assert_eq!(from.ip(), std::net::IpAddr::from([203, 0, 113, 11]));
    assert!(
        lab.port_mapping_log(Site::A)
            .contains("NAT-PMP port mapping request"),
        "{}",
        lab.port_mapping_log(Site::A)
    );
}
