//! A small internet in namespaces, after `../shared/lab/nat/nat-lab.sh`:
//! servers on a public bridge (a STUN host with two addresses, the relay,
//! the controller) and two sites, each a LAN host behind an nftables
//! router whose NAT type is chosen per site and can change while up.
//!
//! ```text
//!                      inet (router: two bridges)
//!   br0 203.0.113.1/24                         br1 11.0.0.1/25
//!   stun .10 + .11   relay .20   ctl .30       r1 wan .11        r2 wan .12
//!                                               lan 192.168.1.1   lan 192.168.2.1
//!                                               a   192.168.1.10  b   192.168.2.10
//!   NAT none/fw: the site LAN is a routed public /28 instead
//!   (a 11.0.0.130 behind .129, b 11.0.0.146 behind .145).
//! ```
//!
//! The routers' side is 11.0.0.0/24, not a documentation range like
//! the rest: miniupnpd (the router's port mapping) refuses to forward
//! anything on an external interface whose address is reserved, and
//! TEST-NET-2 is. Nothing leaves the lab's namespaces, so no real host
//! of that range is ever reached.
//!
//! Every namespace name is unique per process and per lab; interfaces
//! are made inside the namespaces, so nothing lands in the host's own.
//! `Drop` ends every process left in the lab's namespaces and deletes
//! them, even when the test failed. Needs root, iproute2, nftables and
//! conntrack.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::AtomicU32;

use crate::host::run;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

pub const STUN_IP1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const STUN_IP2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
pub const CTL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 30);
pub const R1_WAN: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 11);
pub const R2_WAN: Ipv4Addr = Ipv4Addr::new(11, 0, 0, 12);

/// A site router's behaviour (RFC 4787 terms), as the shared lab's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatType {
    /// Endpoint-independent mapping and filtering ("full cone").
    Full,
    /// Endpoint-independent mapping, address-dependent filtering.
    Arc,
    /// Endpoint-independent mapping, address-and-port-dependent
    /// filtering: plain masquerade, the Linux (and home router) default.
    Prc,
    /// A random port per flow ("symmetric"): masquerade random.
    Sym,
    /// A routed public address, no filter.
    None,
    /// A public address behind a stateful firewall.
    Fw,
}

impl NatType {
    pub const ALL: [NatType; 6] = [
        Self::Full,
        Self::Arc,
        Self::Prc,
        Self::Sym,
        Self::None,
        Self::Fw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Arc => "arc",
            Self::Prc => "prc",
            Self::Sym => "sym",
            Self::None => "none",
            Self::Fw => "fw",
        }
    }

    fn public_lan(self) -> bool {
        matches!(self, Self::None | Self::Fw)
    }
}

/// Site A or B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    A,
    B,
}

/// The nftables ruleset of a site router (wan = `wan`, lan = `lan`),
/// the same rules as the shared lab's `gen_rules`.
pub fn router_rules(t: NatType) -> String {
    let timeout = 120;
    let mut r = String::from("table ip natlab {\n");
    match t {
        NatType::Full => r += &format!("  map fcone {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout {timeout}s; }}\n"),
        NatType::Arc => r += &format!("  map arc {{ type inet_service . ipv4_addr : ipv4_addr . inet_service; flags dynamic,timeout; timeout {timeout}s; }}\n"),
        _ => {}
    }
    r += "  chain input_f { type filter hook input priority filter; policy accept;\n";
    r += "    iifname \"wan\" ct state established,related accept\n";
    r += "    iifname \"wan\" icmp type echo-request accept\n";
    r += "    iifname \"wan\" drop\n  }\n";
    r += "  chain forward_f { type filter hook forward priority filter; policy drop;\n";
    r += "    iifname \"lan\" accept\n    ct state established,related accept\n";
    match t {
        NatType::Full | NatType::Arc => r += "    ct status dnat accept\n",
        NatType::None => r += "    accept\n",
        _ => {}
    }
    r += "  }\n";
    if !t.public_lan() {
        let flag = if t == NatType::Sym { " random" } else { "" };
        r += "  chain postrouting_n { type nat hook postrouting priority srcnat; policy accept;\n";
        r += &format!("    oifname \"wan\" masquerade{flag}\n  }}\n");
    }
    match t {
        NatType::Full => {
            r += "  chain postrouting_rec { type filter hook postrouting priority srcnat + 10; policy accept;\n";
            r += "    oifname \"wan\" meta l4proto udp ct direction original update @fcone { udp sport : ct original ip saddr . ct original proto-src }\n  }\n";
            r +=
                "  chain prerouting_n { type nat hook prerouting priority dstnat; policy accept;\n";
            r += "    iifname \"wan\" meta l4proto udp dnat ip addr . port to udp dport map @fcone\n  }\n";
        }
        NatType::Arc => {
            r += "  chain postrouting_rec { type filter hook postrouting priority srcnat + 10; policy accept;\n";
            r += "    oifname \"wan\" meta l4proto udp ct direction original update @arc { udp sport . ip daddr : ct original ip saddr . ct original proto-src }\n  }\n";
            r +=
                "  chain prerouting_n { type nat hook prerouting priority dstnat; policy accept;\n";
            r += "    iifname \"wan\" meta l4proto udp dnat ip addr . port to udp dport . ip saddr map @arc\n  }\n";
        }
        _ => {}
    }
    r += "}\n";
    r
}

/// Sets a kernel parameter inside namespace `ns`.
fn sysctl(ns: &str, setting: &str) {
    run(&["ip", "netns", "exec", ns, "sysctl", "-qw", setting]);
}

/// What a lab router's miniupnpd speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMapping {
    PcpAndNatPmp,
    Upnp,
}

#[derive(Debug)]
pub struct NatLab {
    tag: String,
    namespaces: Vec<String>,
    dir: std::path::PathBuf,
    types: [NatType; 2],
    /// Servers the lab runs itself (miniupnpd), ended on drop.
    children: Vec<std::process::Child>,
}

impl NatLab {
    /// The whole lab, site A behind `a`, site B behind `b`.
    pub fn new(a: NatType, b: NatType) -> Self {
        crate::host::require(&["ip", "nft", "conntrack"]);
        let (tag, dir) = crate::host::fresh_dir("cvlan-natlab", &NEXT_LAB);
        let mut lab = Self {
            tag,
            namespaces: Vec::new(),
            dir,
            types: [a, b],
            children: Vec::new(),
        };
        lab.build();
        lab.set_nat(Site::A, a);
        lab.set_nat(Site::B, b);
        lab
    }

    /// The namespace of `node`: inet, stun, relay, ctl, r1, r2, a, b.
    pub fn ns(&self, node: &str) -> String {
        format!("cvn{}{node}", self.tag)
    }

    /// A directory for the test's files (kept when the test fails).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn nat(&self, site: Site) -> NatType {
        self.types[site as usize]
    }

    /// Where the LAN host of `site` is now.
    pub fn host_ip(&self, site: Site) -> Ipv4Addr {
        match (site, self.nat(site).public_lan()) {
            (Site::A, false) => Ipv4Addr::new(192, 168, 1, 10),
            (Site::B, false) => Ipv4Addr::new(192, 168, 2, 10),
            (Site::A, true) => Ipv4Addr::new(11, 0, 0, 130),
            (Site::B, true) => Ipv4Addr::new(11, 0, 0, 146),
        }
    }

    fn add_ns(&mut self, node: &str) -> String {
        let ns = self.ns(node);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sysctl(&ns, "net.ipv6.conf.all.disable_ipv6=1");
        ns
    }

    /// A veth from `ns1` (named `if1`) to `ns2` (named `if2`), both up.
    fn veth(ns1: &str, if1: &str, ns2: &str, if2: &str) {
        run(&[
            "ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2,
        ]);
        run(&["ip", "-n", ns1, "link", "set", if1, "up"]);
        run(&["ip", "-n", ns2, "link", "set", if2, "up"]);
    }

    fn server(&mut self, node: &str, port: &str, addrs: &[Ipv4Addr]) {
        let inet = self.ns("inet");
        let ns = self.add_ns(node);
        Self::veth(&inet, port, &ns, "eth0");
        run(&["ip", "-n", &inet, "link", "set", port, "master", "br0"]);
        for a in addrs {
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "eth0",
            ]);
        }
        run(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            "203.0.113.1",
        ]);
    }

    fn build(&mut self) {
        let inet = self.add_ns("inet");
        sysctl(&inet, "net.ipv4.ip_forward=1");
        for br in ["br0", "br1"] {
            run(&["ip", "-n", &inet, "link", "add", br, "type", "bridge"]);
            run(&["ip", "-n", &inet, "link", "set", br, "up"]);
        }
        run(&[
            "ip",
            "-n",
            &inet,
            "addr",
            "add",
            "203.0.113.1/24",
            "dev",
            "br0",
        ]);
        run(&[
            "ip",
            "-n",
            &inet,
            "addr",
            "add",
            "11.0.0.1/25",
            "dev",
            "br1",
        ]);
        self.server("stun", "p-stun", &[STUN_IP1, STUN_IP2]);
        self.server("relay", "p-relay", &[RELAY_IP]);
        self.server("ctl", "p-ctl", &[CTL_IP]);
        for (r, wan, host) in [("r1", R1_WAN, "a"), ("r2", R2_WAN, "b")] {
            let ns = self.add_ns(r);
            let port = format!("p-{r}");
            Self::veth(&inet, &port, &ns, "wan");
            run(&["ip", "-n", &inet, "link", "set", &port, "master", "br1"]);
            run(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{wan}/25"),
                "dev",
                "wan",
            ]);
            run(&[
                "ip", "-n", &ns, "route", "add", "default", "via", "11.0.0.1",
            ]);
            sysctl(&ns, "net.ipv4.ip_forward=1");
            let h = self.add_ns(host);
            Self::veth(&ns, "lan", &h, "eth0");
        }
        run(&[
            "ip",
            "-n",
            &inet,
            "route",
            "add",
            "11.0.0.128/28",
            "via",
            &R1_WAN.to_string(),
        ]);
        run(&[
            "ip",
            "-n",
            &inet,
            "route",
            "add",
            "11.0.0.144/28",
            "via",
            &R2_WAN.to_string(),
        ]);
    }

    /// Gives `site`'s router another NAT type (and the host the address
    /// that goes with it); the router's conntrack is flushed.
    pub fn set_nat(&mut self, site: Site, t: NatType) {
        self.types[site as usize] = t;
        let (router, host, n) = match site {
            Site::A => (self.ns("r1"), self.ns("a"), 1),
            Site::B => (self.ns("r2"), self.ns("b"), 2),
        };
        let rules = self.dir.join(format!("rules-{n}.nft"));
        std::fs::write(&rules, router_rules(t)).expect("rules");
        run(&["ip", "netns", "exec", &router, "nft", "flush", "ruleset"]);
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "nft",
            "-f",
            &rules.to_string_lossy(),
        ]);
        run(&["ip", "-n", &router, "addr", "flush", "dev", "lan"]);
        let (gw, len) = if t.public_lan() {
            (format!("11.0.0.{}", if n == 1 { 129 } else { 145 }), 28)
        } else {
            (format!("192.168.{n}.1"), 24)
        };
        run(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gw}/{len}"),
            "dev",
            "lan",
        ]);
        Self::address_host(&host, self.host_ip(site), len, &gw);
        self.flush_conntrack(site);
    }

    /// The host's only address `ip/len` and its default route via `gw`.
    fn address_host(host: &str, ip: Ipv4Addr, len: u8, gw: &str) {
        run(&["ip", "-n", host, "addr", "flush", "dev", "eth0"]);
        run(&[
            "ip",
            "-n",
            host,
            "addr",
            "add",
            &format!("{ip}/{len}"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", host, "route", "add", "default", "via", gw]);
    }

    /// Moves `site`'s host to `ip` on its LAN (the DHCP lease changed):
    /// the old address goes, the new one and the default route come, and
    /// the router forgets the old mappings.
    pub fn readdress_host(&self, site: Site, ip: Ipv4Addr) {
        let (host, gw) = match site {
            Site::A => (self.ns("a"), "192.168.1.1"),
            Site::B => (self.ns("b"), "192.168.2.1"),
        };
        assert!(
            !self.nat(site).public_lan(),
            "readdressing is for a private LAN"
        );
        Self::address_host(&host, ip, 24, gw);
        self.flush_conntrack(site);
    }

    /// Starts miniupnpd (Debian's, nftables backend) on `site`'s router
    /// speaking NAT-PMP and PCP: see [`NatLab::start_port_mapping_with`].
    pub fn start_port_mapping(&mut self, site: Site) {
        self.start_port_mapping_with(site, PortMapping::PcpAndNatPmp);
    }

    /// Starts miniupnpd on `site`'s router speaking `protocols` on the
    /// LAN side, mappings only for the LAN host's own address and
    /// unprivileged ports; the router's filter lets forwarded ports
    /// through, as a home router's does. Waits until it listens; its log
    /// is `miniupnpd-{n}.log`. Call after `set_nat` (a new NAT type
    /// flushes the router's rules, these too).
    pub fn start_port_mapping_with(&mut self, site: Site, protocols: PortMapping) {
        crate::host::require(&["miniupnpd"]);
        let (router, n) = match site {
            Site::A => ("r1", 1),
            Site::B => ("r2", 2),
        };
        assert!(
            !self.nat(site).public_lan(),
            "port mapping is for a NAT router"
        );
        // The chains miniupnpd fills (its nft_init.sh's layout, in the
        // table it uses by default).
        let chains = "table inet filter {\n  chain miniupnpd {\n  }\n  chain prerouting_miniupnpd {\n  }\n  chain postrouting_miniupnpd {\n  }\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    jump miniupnpd\n  }\n  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n    jump prerouting_miniupnpd\n  }\n  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n    jump postrouting_miniupnpd\n  }\n}\n";
        let file = self.dir.join(format!("miniupnpd-{n}.nft"));
        std::fs::write(&file, chains).expect("miniupnpd chains");
        self.exec(router, &["nft", "-f", &file.to_string_lossy()]);
        self.exec(
            router,
            &[
                "nft",
                "insert",
                "rule",
                "ip",
                "natlab",
                "forward_f",
                "ct",
                "status",
                "dnat",
                "accept",
            ],
        );
        let conf = self.dir.join(format!("miniupnpd-{n}.conf"));
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=wan\nlistening_ip=lan\nenable_natpmp={}\nenable_upnp={}\nuuid=3b7c1e5a-0000-4000-8000-00000000000{n}\nsecure_mode=yes\nsystem_uptime=yes\nlease_file={}\nallow 1024-65535 192.168.{n}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                if protocols == PortMapping::PcpAndNatPmp { "yes" } else { "no" },
                if protocols == PortMapping::Upnp { "yes" } else { "no" },
                self.dir.join(format!("miniupnpd-{n}.leases")).display()
            ),
        )
        .expect("miniupnpd config");
        let log_path = self.dir.join(format!("miniupnpd-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(router), "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(self.dir.join(format!("miniupnpd-{n}.pid")))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("miniupnpd");
        self.children.push(child);
        let ready = match protocols {
            PortMapping::PcpAndNatPmp => "Listening for NAT-PMP/PCP traffic",
            PortMapping::Upnp => "HTTP listening on port",
        };
        let start = std::time::Instant::now();
        while !std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains(ready)
        {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "miniupnpd did not start: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// miniupnpd's log on `site`'s router.
    pub fn port_mapping_log(&self, site: Site) -> String {
        let n = if site == Site::A { 1 } else { 2 };
        std::fs::read_to_string(self.dir.join(format!("miniupnpd-{n}.log"))).unwrap_or_default()
    }

    /// Forgets every mapping `site`'s router holds (as when they expire).
    pub fn flush_conntrack(&self, site: Site) {
        let router = self.ns(if site == Site::A { "r1" } else { "r2" });
        let _ = Command::new("ip")
            .args(["netns", "exec", &router, "conntrack", "-F"])
            .output();
    }

    /// Site A's router drops all UDP to and from site B's public address
    /// (`false` lifts it): the direct path is gone, while the relay
    /// (TCP) and STUN (other addresses) still work.
    pub fn set_direct_blocked(&self, blocked: bool) {
        if blocked {
            let rules = format!(
                "table inet cvlan_block {{\n  chain forward {{\n    type filter hook forward priority -10;\n    ip daddr {R2_WAN} meta l4proto udp drop\n    ip saddr {R2_WAN} meta l4proto udp drop\n  }}\n}}\n"
            );
            let file = self.dir.join("block.nft");
            std::fs::write(&file, rules).expect("block rules");
            self.exec("r1", &["nft", "-f", &file.to_string_lossy()]);
        } else {
            self.exec("r1", &["nft", "delete", "table", "inet", "cvlan_block"]);
        }
    }

    /// Runs a command in `node`'s namespace; its stdout, or a panic.
    pub fn exec(&self, node: &str, args: &[&str]) -> String {
        let ns = self.ns(node);
        let mut all = vec!["ip", "netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Whatever still runs in one of our namespaces was started by
            // the test: end it by PID.
            let pids = Command::new("ip").args(["netns", "pids", ns]).output();
            if let Ok(out) = pids {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).output();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("NAT lab files kept in {}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_the_shared_labs_shape() {
        let prc = router_rules(NatType::Prc);
        assert!(prc.contains("masquerade\n"), "{prc}");
        assert!(!prc.contains("fcone"));
        assert!(router_rules(NatType::Sym).contains("masquerade random"));
        let full = router_rules(NatType::Full);
        assert!(full.contains("map fcone") && full.contains("ct status dnat accept"));
        assert!(!router_rules(NatType::None).contains("masquerade"));
        assert!(router_rules(NatType::None).contains("    accept\n"));
        assert!(!router_rules(NatType::Fw).contains("masquerade"));
    }

    #[test]
    #[ignore = "needs root, iproute2, nftables, conntrack (CI runs it)"]
    fn a_lan_host_reaches_the_servers_through_its_nat() {
        let lab = NatLab::new(NatType::Prc, NatType::None);
        lab.exec("a", &["ping", "-c", "1", "-W", "2", &RELAY_IP.to_string()]);
        lab.exec("b", &["ping", "-c", "1", "-W", "2", &CTL_IP.to_string()]);
        // Behind masquerade: the servers see the router's address.
        let conntrack = lab.exec("r1", &["conntrack", "-L"]);
        assert!(conntrack.contains("192.168.1.10"), "{conntrack}");
    }
}
