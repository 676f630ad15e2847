//! A strongSwan peer for tests: two network namespaces joined by a veth
//! pair (10.88.0.1 theirs, 10.88.0.2 ours; their protected host
//! 10.88.1.1), charon 5.9 with kernel-libipsec in theirs, configured
//! per test (PSK or a certificate of the test PKI, rekey and DPD timers,
//! fragment size). Unique names; everything is removed on drop. Needs
//! root and strongSwan.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const CHARON: &str = "/usr/lib/ipsec/charon";
pub const PSK: &str = "interop-psk-5b1f0e7d";
pub const THEM: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
pub const US: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
pub const THEIR_HOST: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 1);
pub const OUR_HOST: Ipv4Addr = Ipv4Addr::new(10, 88, 2, 1);
/// Our address behind the NAT router of the lab.
pub const OUR_BEHIND_NAT: Ipv4Addr = Ipv4Addr::new(10, 88, 3, 2);
pub const IKE_PROPOSALS: &str = "aes256gcm16-prfsha256-ecp256, aes128gcm16-prfsha256-x25519, \
    chacha20poly1305-prfsha256-x25519, aes256-sha256-modp2048, aes256gcm16-prfsha384-ecp384";
pub const ESP_PROPOSALS: &str = "aes256gcm16, aes128gcm16, chacha20poly1305, aes256-sha256, \
    aes256gcm16-x25519, aes128gcm16-x25519";

/// swanctl arguments that bring the lab's tunnel up.
pub const INITIATE: &[&str] = &[
    "--initiate",
    "--ike",
    "gw",
    "--child",
    "net",
    "--timeout",
    "10",
];

pub static NEXT: AtomicU32 = AtomicU32::new(0);

/// Starts charon in namespace `ns` on `dir`/strongswan.conf, with a
/// private /run (`dir`/run) so several charons keep their pid files and
/// TUN state apart; returns once its control socket answers.
pub fn spawn_charon(ns: &str, dir: &std::path::Path) -> Child {
    let d = dir.display().to_string();
    let script =
        format!("mount --bind {d}/run /run && STRONGSWAN_CONF={d}/strongswan.conf exec {CHARON}");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "unshare",
            "-m",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let vici = dir.join("charon.vici");
    let start = Instant::now();
    while !vici.exists() {
        let log = std::fs::read_to_string(dir.join("charon.log")).unwrap_or_default();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "charon did not start:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// swanctl against the charon of `dir`, in namespace `ns`: its output.
pub fn swanctl_in(ns: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "swanctl"])
        .args(args)
        .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
        .env("SWANCTL_DIR", dir.join("swanctl"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

pub use crate::host::sh;

pub fn require_root_and_strongswan() {
    crate::host::require_root("network namespaces");
    assert!(
        std::path::Path::new(CHARON).exists()
            && std::path::Path::new("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
                .exists(),
        "needs strongSwan: bash .ci/install-deps (strongswan-charon, strongswan-swanctl, \
         libstrongswan-standard-plugins, libstrongswan-extra-plugins, libcharon-extra-plugins)"
    );
}

/// strongSwan's side of the tunnel.
#[derive(Debug)]
pub struct Charon {
    pub rekey_child: &'static str,
    pub life_child: &'static str,
    pub rekey_ike: &'static str,
    pub dpd: &'static str,
    /// Authenticate with this certificate of the test PKI (and demand
    /// one from us) instead of the PSK.
    pub cert: Option<&'static str>,
    /// charon's fragment_size (RFC 7383), bytes.
    pub fragment_size: u32,
    /// `encap = yes`: charon forces UDP encapsulation.
    pub encap: bool,
    /// Overrides charon's IKE proposals.
    pub proposals: Option<&'static str>,
    /// Overrides charon's ESP proposals.
    pub esp_proposals: Option<&'static str>,
    /// Put our namespace behind a masquerading NAT router (UDP source
    /// ports remapped); charon then accepts us from any address.
    pub behind_nat: bool,
}

impl Default for Charon {
    fn default() -> Self {
        Self {
            rekey_child: "1h",
            life_child: "66m",
            rekey_ike: "4h",
            dpd: "30s",
            cert: None,
            fragment_size: 1280,
            encap: false,
            proposals: None,
            esp_proposals: None,
            behind_nat: false,
        }
    }
}

pub fn pki(name: &str) -> String {
    // The test PKI lives with the IKEv2 crate's test data.
    format!(
        "{}/../proto-ikev2/tests/data/pki/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Two namespaces joined by a veth pair, charon running in one of them.
#[derive(Debug)]
pub struct Lab {
    pub theirs: String,
    pub ours: String,
    /// The NAT router's namespace, if any.
    pub nat: Option<String>,
    /// Our address on our own link (US, or behind the NAT).
    pub our_address: Ipv4Addr,
    pub dir: PathBuf,
    pub charon: Option<Child>,
}

impl Lab {
    pub fn new(c: &Charon) -> Self {
        require_root_and_strongswan();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let lab = Self {
            theirs: format!("ikS{tag}"),
            ours: format!("ikO{tag}"),
            nat: c.behind_nat.then(|| format!("ikN{tag}")),
            our_address: if c.behind_nat { OUR_BEHIND_NAT } else { US },
            dir: std::env::temp_dir().join(format!("cvlan-ike-interop-{tag}")),
            charon: None,
        };
        match &lab.nat {
            Some(nat) => lab.wire_nat(&tag, nat),
            None => lab.wire_direct(&tag),
        }
        let host = format!("{THEIR_HOST}/32");
        sh(&["ip", "-n", &lab.theirs, "addr", "add", &host, "dev", "lo"]);
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(lab.dir.join("run")).unwrap();
        std::fs::create_dir_all(lab.dir.join("swanctl")).unwrap();
        lab.write_config(c);
        let mut lab = lab;
        lab.start_charon();
        lab
    }

    fn add_ns(ns: &str) {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }

    fn veth(a: &str, ns_a: &str, b: &str, ns_b: &str) {
        sh(&[
            "ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b,
        ]);
    }

    fn addr(ns: &str, dev: &str, cidr: &str) {
        sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", dev]);
        sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }

    /// Theirs (10.88.0.1) on one veth with ours (10.88.0.2).
    fn wire_direct(&self, tag: &str) {
        Self::add_ns(&self.theirs);
        Self::add_ns(&self.ours);
        let (vs, vo) = (format!("vS{tag}"), format!("vO{tag}"));
        Self::veth(&vs, &self.theirs, &vo, &self.ours);
        Self::addr(&self.theirs, &vs, &format!("{THEM}/24"));
        Self::addr(&self.ours, &vo, &format!("{US}/24"));
    }

    /// Theirs (10.88.0.1) | NAT router (10.88.0.254 / 10.88.3.1,
    /// masquerading UDP to ports 30000-40000) | ours (10.88.3.2).
    fn wire_nat(&self, tag: &str, nat: &str) {
        Self::add_ns(&self.theirs);
        Self::add_ns(&self.ours);
        Self::add_ns(nat);
        let (vs, vn0) = (format!("vS{tag}"), format!("vA{tag}"));
        let (vn1, vo) = (format!("vB{tag}"), format!("vO{tag}"));
        Self::veth(&vs, &self.theirs, &vn0, nat);
        Self::veth(&vo, &self.ours, &vn1, nat);
        Self::addr(&self.theirs, &vs, &format!("{THEM}/24"));
        Self::addr(nat, &vn0, "10.88.0.254/24");
        Self::addr(nat, &vn1, "10.88.3.1/24");
        Self::addr(&self.ours, &vo, &format!("{OUR_BEHIND_NAT}/24"));
        sh(&[
            "ip",
            "-n",
            &self.ours,
            "route",
            "add",
            "10.88.0.0/24",
            "via",
            "10.88.3.1",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            nat,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let rules = format!(
            "table ip labnat {{\n chain post {{\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"{vn0}\" ip saddr 10.88.3.0/24 meta l4proto udp masquerade to :30000-40000\n  oifname \"{vn0}\" ip saddr 10.88.3.0/24 masquerade\n }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("cvlan-lab-nat-{tag}.nft"));
        std::fs::write(&file, rules).unwrap();
        sh(&[
            "ip",
            "netns",
            "exec",
            nat,
            "nft",
            "-f",
            &file.to_string_lossy(),
        ]);
        let _ = std::fs::remove_file(file);
    }

    pub fn write_config(&self, c: &Charon) {
        let d = self.dir.display();
        let conf = format!(
            "charon {{
  load_modular = no
  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey constraints sha1 sha2 hmac gcm aes kdf curve25519 chapoly kernel-libipsec kernel-netlink socket-default vici
  install_virtual_ip = no
  fragment_size = {fragment_size}
  retransmit_timeout = 1.0
  retransmit_tries = 3
  filelog {{
    main {{
      path = {d}/charon.log
      time_format = %H:%M:%S
      flush_line = yes
      default = 1
      ike = 2
      cfg = 1
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
}}
swanctl {{
  socket = unix://{d}/charon.vici
}}
",
            fragment_size = c.fragment_size,
        );
        std::fs::write(self.dir.join("strongswan.conf"), conf).unwrap();
        let (local_auth, remote_auth) = match c.cert {
            None => ("auth = psk".to_string(), "auth = psk".to_string()),
            Some(name) => {
                let sw = self.dir.join("swanctl");
                for sub in ["x509", "x509ca", "ecdsa", "rsa"] {
                    std::fs::create_dir_all(sw.join(sub)).unwrap();
                }
                let key = std::fs::read_to_string(pki(&format!("{name}.key"))).unwrap();
                let kdir = if key.contains("RSA PRIVATE KEY") {
                    "rsa"
                } else {
                    "ecdsa"
                };
                std::fs::write(sw.join(kdir).join("gw-s.key"), key).unwrap();
                std::fs::copy(pki(&format!("{name}.pem")), sw.join("x509/gw-s.pem")).unwrap();
                std::fs::copy(pki("ca.pem"), sw.join("x509ca/ca.pem")).unwrap();
                (
                    "auth = pubkey\n      certs = gw-s.pem".to_string(),
                    "auth = pubkey\n      cacerts = ca.pem".to_string(),
                )
            }
        };
        let swanctl = format!(
            "connections {{
  gw {{
    version = 2
    local_addrs = {THEM}
    remote_addrs = {remote_addrs}
    proposals = {ike_proposals}
    encap = {encap}
    rekey_time = {rekey_ike}
    dpd_delay = {dpd}
    send_certreq = yes
    local {{
      {local_auth}
      id = gw-s.interop
    }}
    remote {{
      {remote_auth}
      id = gw-o.interop
    }}
    children {{
      net {{
        local_ts = 10.88.1.0/24
        remote_ts = 10.88.2.0/24
        esp_proposals = {esp_proposals}
        rekey_time = {rekey_child}
        life_time = {life_child}
        rand_time = 0s
        dpd_action = clear
      }}
    }}
  }}
}}
secrets {{
  ike-gw {{
    id-s = gw-s.interop
    id-o = gw-o.interop
    secret = \"{PSK}\"
  }}
}}
",
            rekey_ike = c.rekey_ike,
            ike_proposals = c.proposals.unwrap_or(IKE_PROPOSALS),
            esp_proposals = c.esp_proposals.unwrap_or(ESP_PROPOSALS),
            remote_addrs = if c.behind_nat {
                "0.0.0.0/0".to_string()
            } else {
                US.to_string()
            },
            encap = if c.encap { "yes" } else { "no" },
            dpd = c.dpd,
            rekey_child = c.rekey_child,
            life_child = c.life_child,
        );
        std::fs::write(self.dir.join("swanctl/swanctl.conf"), swanctl).unwrap();
    }

    pub fn start_charon(&mut self) {
        self.charon = Some(spawn_charon(&self.theirs, &self.dir));
        let out = self.swanctl(&["--load-all", "--noprompt"]);
        assert!(out.contains("loaded connection 'gw'"), "swanctl: {out}");
    }

    pub fn swanctl(&self, args: &[&str]) -> String {
        swanctl_in(&self.theirs, &self.dir, args)
    }

    /// Makes charon initiate the tunnel; returns what swanctl said.
    pub fn initiate(&self) -> String {
        self.swanctl(INITIATE)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    pub fn kill_charon(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("run/charon.pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut c) = self.charon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A dead charon leaves its control socket behind: a new one must
        // not be taken as started before it made its own.
        let _ = std::fs::remove_file(self.dir.join("charon.vici"));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_charon();
        for ns in [Some(&self.theirs), Some(&self.ours), self.nat.as_ref()]
            .into_iter()
            .flatten()
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("charon's log kept in {}", self.dir.display());
        }
    }
}
