//! Our IKEv2 and ESP against strongSwan's charon (5.9, kernel-libipsec
//! for userspace ESP, which only speaks ESP-in-UDP on 4500), each test in
//! its own pair of network namespaces with its own charon: we initiate
//! with every proposal set the vrouter must speak, charon initiates to
//! us, both sides rekey Child and IKE SAs while a ping runs and loses
//! nothing, a wrong PSK is refused, and a dead peer is found by liveness
//! checks. Every case pings through ESP and checks the echo replies.
//!
//! Needs root and the Debian packages strongswan-charon,
//! strongswan-swanctl, libstrongswan-standard-plugins,
//! libstrongswan-extra-plugins and libcharon-extra-plugins
//! (kernel-libipsec): ignored by default, run by CI (`.ci/install-deps`
//! installs them).
// Interop tests are where real sockets, clocks and threads belong.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod interop;
use interop::driver::{self, Outcome, Plan};

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{Config, Credentials, DownReason, EspProposal, Identity, IkeProposal, Timers};

const CHARON: &str = "/usr/lib/ipsec/charon";
const PSK: &str = "interop-psk-5b1f0e7d";
const THEM: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const US: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 2);
const THEIR_HOST: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 1);
const OUR_HOST: Ipv4Addr = Ipv4Addr::new(10, 88, 2, 1);
const IKE_PROPOSALS: &str = "aes256gcm16-prfsha256-ecp256, aes128gcm16-prfsha256-x25519, \
    chacha20poly1305-prfsha256-x25519, aes256-sha256-modp2048, aes256gcm16-prfsha384-ecp384";
const ESP_PROPOSALS: &str = "aes256gcm16, aes128gcm16, chacha20poly1305, aes256-sha256, \
    aes256gcm16-x25519, aes128gcm16-x25519";

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root_and_strongswan() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    assert!(root, "needs root (network namespaces)");
    assert!(
        std::path::Path::new(CHARON).exists()
            && std::path::Path::new("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
                .exists(),
        "needs strongSwan: bash .ci/install-deps (strongswan-charon, strongswan-swanctl, \
         libstrongswan-standard-plugins, libstrongswan-extra-plugins, libcharon-extra-plugins)"
    );
}

/// strongSwan's side of the tunnel.
struct Charon {
    rekey_child: &'static str,
    life_child: &'static str,
    rekey_ike: &'static str,
    dpd: &'static str,
    /// Authenticate with this certificate of the test PKI (and demand
    /// one from us) instead of the PSK.
    cert: Option<&'static str>,
    /// charon's fragment_size (RFC 7383), bytes.
    fragment_size: u32,
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
        }
    }
}

fn pki(name: &str) -> String {
    format!("{}/tests/data/pki/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Two namespaces joined by a veth pair, charon running in one of them.
struct Lab {
    theirs: String,
    ours: String,
    dir: PathBuf,
    charon: Option<Child>,
}

impl Lab {
    fn new(c: &Charon) -> Self {
        require_root_and_strongswan();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let lab = Self {
            theirs: format!("ikS{tag}"),
            ours: format!("ikO{tag}"),
            dir: std::env::temp_dir().join(format!("cvlan-ike-interop-{tag}")),
            charon: None,
        };
        for ns in [&lab.theirs, &lab.ours] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (vs, vo) = (format!("vS{tag}"), format!("vO{tag}"));
        sh(&[
            "ip",
            "link",
            "add",
            &vs,
            "netns",
            &lab.theirs,
            "type",
            "veth",
            "peer",
            "name",
            &vo,
            "netns",
            &lab.ours,
        ]);
        for (ns, dev, addr) in [(&lab.theirs, &vs, THEM), (&lab.ours, &vo, US)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        sh(&[
            "ip",
            "-n",
            &lab.theirs,
            "addr",
            "add",
            &format!("{THEIR_HOST}/32"),
            "dev",
            "lo",
        ]);
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(lab.dir.join("run")).unwrap();
        std::fs::create_dir_all(lab.dir.join("swanctl")).unwrap();
        lab.write_config(c);
        let mut lab = lab;
        lab.start_charon();
        lab
    }

    fn write_config(&self, c: &Charon) {
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
    remote_addrs = {US}
    proposals = {IKE_PROPOSALS}
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
        esp_proposals = {ESP_PROPOSALS}
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
            dpd = c.dpd,
            rekey_child = c.rekey_child,
            life_child = c.life_child,
        );
        std::fs::write(self.dir.join("swanctl/swanctl.conf"), swanctl).unwrap();
    }

    fn start_charon(&mut self) {
        let d = self.dir.display().to_string();
        // A private /run per charon: its pid file and TUN state stay apart.
        let script = format!(
            "mount --bind {d}/run /run && STRONGSWAN_CONF={d}/strongswan.conf exec {CHARON}"
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.theirs,
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
        self.charon = Some(child);
        let vici = self.dir.join("charon.vici");
        let start = Instant::now();
        while !vici.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "charon did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.swanctl(&["--load-all", "--noprompt"]);
    }

    fn swanctl(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.theirs, "swanctl"])
            .args(args)
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .env("SWANCTL_DIR", self.dir.join("swanctl"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    fn kill_charon(&mut self) {
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
    }

    /// Runs our side in our namespace.
    fn run(&self, plan: Plan) -> Outcome {
        let ns = self.ours.clone();
        std::thread::spawn(move || {
            netstack::netns::enter(&ns).unwrap();
            driver::run(&plan).unwrap()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_charon();
        for ns in [&self.theirs, &self.ours] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("charon's log kept in {}", self.dir.display());
        }
    }
}

/// Our certificate credentials from the test PKI.
fn cert_creds(name: &str, rsa_pss: bool) -> Credentials {
    use proto_ikev2::cert::{Certificate, TrustStore};
    use proto_ikev2::sig::PrivateKey;
    let read = |f: String| std::fs::read_to_string(f).unwrap();
    Credentials::Certificate {
        cert: Arc::new(Certificate::from_pem(&read(pki(&format!("{name}.pem")))).unwrap()),
        key: Arc::new(PrivateKey::from_pem(&read(pki(&format!("{name}.key")))).unwrap()),
        trust: Arc::new(TrustStore::new(vec![Certificate::from_pem(&read(pki(
            "ca.pem",
        )))
        .unwrap()])),
        rsa_pss,
    }
}

fn config(ike: &str, esp: &str, psk: &str, timers: Timers) -> Arc<Config> {
    let net = |a: &str| TrafficSelector::subnet(a.parse().unwrap(), 24);
    Arc::new(Config {
        local_id: Identity::parse("gw-o.interop"),
        remote_id: Some(Identity::parse("gw-s.interop")),
        credentials: Credentials::Psk(psk.as_bytes().to_vec().into()),
        ike_proposals: vec![IkeProposal::parse(ike).unwrap()],
        esp_proposals: vec![EspProposal::parse(esp).unwrap()],
        local_ts: vec![net("10.88.2.0")],
        remote_ts: vec![net("10.88.1.0")],
        force_encap: false,
        fragment_size: Some(proto_ikev2::DEFAULT_FRAGMENT_SIZE),
        timers,
    })
}

fn plan(config: Arc<Config>, count: u16, timeout: u64) -> Plan {
    Plan {
        local: US,
        remote: THEM,
        config,
        respond: false,
        ping: (OUR_HOST, THEIR_HOST),
        count,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(timeout),
        delete_at_end: true,
        seed: [NEXT.fetch_add(1, Ordering::Relaxed) as u8 ^ 0x5a; 32],
    }
}

fn no_rekeys() -> Timers {
    Timers {
        child_rekey: None,
        ike_rekey: None,
        ..Timers::default()
    }
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn we_initiate_with_every_proposal_and_ping_through_esp() {
    let lab = Lab::new(&Charon::default());
    for (ike, esp) in [
        ("aes256gcm16-prfsha256-ecp256", "aes256gcm16"),
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
        ("chacha20poly1305-prfsha256-x25519", "chacha20poly1305"),
        ("aes256-sha256-modp2048", "aes256-sha256"),
        ("aes256gcm16-prfsha384-ecp384", "aes256gcm16"),
    ] {
        let out = lab.run(plan(config(ike, esp, PSK, no_rekeys()), 5, 20));
        assert!(out.established, "{ike}: {:?}\n{}", out.log, lab.log());
        assert_eq!(out.replies, 5, "{ike}/{esp}: {:?}", out.log);
        assert!(
            out.deleted,
            "{ike}: our delete was answered: {:?}",
            out.down
        );
        let sas = lab.swanctl(&["--list-sas"]);
        assert!(
            !sas.contains("ESTABLISHED"),
            "strongSwan still holds an SA:\n{sas}"
        );
    }
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn strongswan_initiates_and_we_respond() {
    let lab = Lab::new(&Charon::default());
    let mut p = plan(
        config(
            "aes256gcm16-prfsha256-ecp256",
            "aes256gcm16",
            PSK,
            no_rekeys(),
        ),
        5,
        20,
    );
    p.respond = true;
    let ns = lab.ours.clone();
    let ours = std::thread::spawn(move || {
        netstack::netns::enter(&ns).unwrap();
        driver::run(&p).unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let initiated = lab.swanctl(&[
        "--initiate",
        "--ike",
        "gw",
        "--child",
        "net",
        "--timeout",
        "10",
    ]);
    assert!(
        initiated.contains("initiate completed successfully"),
        "{initiated}"
    );
    let out = ours.join().unwrap();
    assert_eq!(out.replies, 5, "{:?}", out.log);
    assert!(out.deleted, "{:?}", out.down);
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn rekeys_from_both_sides_lose_no_ping() {
    // strongSwan rekeys its Child SA every 5 s and the IKE SA every 9 s;
    // we rekey the Child SA every 4 s and the IKE SA every 7 s.
    let lab = Lab::new(&Charon {
        rekey_child: "5s",
        life_child: "30s",
        rekey_ike: "9s",
        ..Charon::default()
    });
    let timers = Timers {
        child_rekey: Some(Duration::from_secs(4)),
        ike_rekey: Some(Duration::from_secs(7)),
        ..Timers::default()
    };
    let out = lab.run(plan(
        config(
            "aes128gcm16-prfsha256-x25519",
            "aes128gcm16-x25519",
            PSK,
            timers,
        ),
        200,
        40,
    ));
    assert_eq!(
        out.replies,
        200,
        "pings lost across rekeys: {:?}\n{}",
        out.log,
        lab.log()
    );
    assert!(
        out.child_rekeys >= 4,
        "{} Child SA rekeys",
        out.child_rekeys
    );
    assert!(out.ike_rekeys >= 2, "{} IKE SA rekeys", out.ike_rekeys);
    let log = lab.log();
    assert!(log.contains("rekeyed"), "strongSwan saw no rekey:\n{log}");
    eprintln!(
        "200/200 echo replies across {} Child SA and {} IKE SA rekeys",
        out.child_rekeys, out.ike_rekeys
    );
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn a_wrong_psk_is_refused_on_both_sides() {
    let lab = Lab::new(&Charon::default());
    let out = lab.run(plan(
        config(
            "aes256gcm16-prfsha256-ecp256",
            "aes256gcm16",
            "not-the-psk",
            no_rekeys(),
        ),
        1,
        15,
    ));
    assert!(!out.established);
    assert!(
        matches!(out.down, Some(DownReason::AuthenticationFailed(_))),
        "{:?}",
        out.down
    );
    let log = lab.log();
    assert!(
        log.contains("MAC mismatched") && log.contains("N(AUTH_FAILED)"),
        "strongSwan should refuse our AUTH:\n{log}"
    );
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn liveness_checks_find_a_dead_peer() {
    let mut lab = Lab::new(&Charon::default());
    let timers = Timers {
        dpd: Some(Duration::from_secs(2)),
        retransmit: Duration::from_millis(500),
        retransmit_tries: 2,
        ..no_rekeys()
    };
    let mut p = plan(
        config("aes256gcm16-prfsha256-ecp256", "aes256gcm16", PSK, timers),
        3,
        30,
    );
    p.delete_at_end = false;
    let out = lab.run(p.clone());
    assert_eq!(out.replies, 3);
    // Up again, then charon dies: our liveness checks must notice.
    let ns = lab.ours.clone();
    p.count = u16::MAX;
    p.seed[0] ^= 1;
    let ours = std::thread::spawn(move || {
        netstack::netns::enter(&ns).unwrap();
        driver::run(&p).unwrap()
    });
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    lab.kill_charon();
    let out = ours.join().unwrap();
    assert!(out.established);
    assert_eq!(out.down, Some(DownReason::NoResponse), "{:?}", out.log);
    assert!(
        killed.elapsed() < Duration::from_secs(12),
        "{:?}",
        killed.elapsed()
    );
}

fn with_cert(c: &Config, name: &str, rsa_pss: bool) -> Arc<Config> {
    Arc::new(Config {
        credentials: cert_creds(name, rsa_pss),
        ..c.clone()
    })
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn certificates_ecdsa_and_rsa_both_ways() {
    for (ours, theirs, pss) in [
        ("gw-o-p256", "gw-s-p384", false),
        ("gw-o-rsa", "gw-s-rsa", false),
        ("gw-o-rsa", "gw-s-p384", true),
    ] {
        let lab = Lab::new(&Charon {
            cert: Some(theirs),
            ..Charon::default()
        });
        let psk_config = config(
            "aes256gcm16-prfsha256-ecp256",
            "aes256gcm16",
            PSK,
            no_rekeys(),
        );
        let cfg = with_cert(&psk_config, ours, pss);
        let out = lab.run(plan(cfg.clone(), 3, 20));
        assert!(
            out.established,
            "{ours} -> {theirs}: {:?}\n{}",
            out.log,
            lab.log()
        );
        assert_eq!(out.replies, 3, "{ours} -> {theirs}: {:?}", out.log);
        assert!(out.deleted);
        let log = lab.log();
        assert!(
            log.contains("authentication of 'gw-o.interop' with"),
            "{log}"
        );
        // And strongSwan initiating with its certificate.
        let mut p = plan(cfg, 3, 20);
        p.respond = true;
        let ns = lab.ours.clone();
        let ours_side = std::thread::spawn(move || {
            netstack::netns::enter(&ns).unwrap();
            driver::run(&p).unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        let initiated = lab.swanctl(&[
            "--initiate",
            "--ike",
            "gw",
            "--child",
            "net",
            "--timeout",
            "10",
        ]);
        assert!(
            initiated.contains("initiate completed successfully"),
            "{initiated}"
        );
        let out = ours_side.join().unwrap();
        assert_eq!(out.replies, 3, "{theirs} -> {ours}: {:?}", out.log);
    }
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn strongswan_refuses_our_expired_certificate() {
    let lab = Lab::new(&Charon {
        cert: Some("gw-s-p384"),
        ..Charon::default()
    });
    let psk_config = config(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        PSK,
        no_rekeys(),
    );
    let out = lab.run(plan(with_cert(&psk_config, "gw-o-expired", false), 1, 15));
    assert!(!out.established);
    assert!(
        matches!(&out.down, Some(DownReason::AuthenticationFailed(w)) if w.contains("refused")),
        "{:?}",
        out.down
    );
    let log = lab.log();
    assert!(log.contains("N(AUTH_FAILED)"), "{log}");
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn rsa_certificates_in_fragments_both_ways() {
    let lab = Lab::new(&Charon {
        cert: Some("gw-s-rsa"),
        fragment_size: 600,
        ..Charon::default()
    });
    let psk_config = config(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        PSK,
        no_rekeys(),
    );
    let cfg = Arc::new(Config {
        fragment_size: Some(500),
        ..(*with_cert(&psk_config, "gw-o-rsa", false)).clone()
    });
    let out = lab.run(plan(cfg, 3, 20));
    assert_eq!(out.replies, 3, "{:?}\n{}", out.log, lab.log());
    let log = lab.log();
    assert!(
        log.contains("received fragment #1"),
        "strongSwan reassembled ours:\n{log}"
    );
    assert!(
        log.contains("splitting IKE message"),
        "strongSwan fragmented its own:\n{log}"
    );
}
