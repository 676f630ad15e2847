//! A two-namespace lab for tests against real WireGuard peers: each side
//! runs cvlan-wg or wireguard-go, configured with `wg`.
//!
//! Needs root, iproute2, wireguard-tools (`wg`) and, for the peer,
//! wireguard-go: tests using it are `#[ignore]`d with that reason and run
//! by CI with `--include-ignored`. Every name is unique per process and
//! per lab, and `Drop` tears everything down even when a test fails.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::host::run;
use crate::transfer::transfer;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Which implementation runs a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Cvlan,
    WireguardGo,
}

#[derive(Debug)]
pub struct Side {
    pub ns: String,
    pub ifname: String,
    pub underlay: Ipv4Addr,
    pub overlay: Ipv4Addr,
    pub overlay6: Ipv6Addr,
    pub public_b64: String,
    key_file: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
}

#[derive(Debug)]
pub struct Lab {
    pub sides: [Side; 2],
    dir: PathBuf,
    /// The cvlan-wg binary (`env!("CARGO_BIN_EXE_cvlan-wg")` in its crate).
    cvlan_wg: PathBuf,
}

fn genkey(path: &Path) -> String {
    let mut sk = [0u8; 32];
    cvlan_core::seed::fill(&mut sk).expect("random");
    let key = proto_wg::PrivateKey::from_bytes(sk);
    let b64 = base64::engine::general_purpose::STANDARD;
    std::fs::write(path, b64.encode(*key.to_bytes())).expect("write key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    b64.encode(key.public_key().as_bytes())
}

impl Lab {
    /// Two namespaces on a veth pair, underlay 10.x.y.1/.2, no devices
    /// yet; `cvlan_wg` runs the sides started as [`Impl::Cvlan`].
    pub fn new(cvlan_wg: impl Into<PathBuf>) -> Self {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 100_000, n);
        let dir = std::env::temp_dir().join(format!("cvlan-lab-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab dir");
        // Underlay/overlay subnets differ per lab so parallel labs never meet.
        let octet = 100 + (n % 100) as u8;
        let make = |side: &str, host: u8| Side {
            ns: format!("cvt{tag}{side}"),
            ifname: format!("cw{tag}{side}"),
            underlay: Ipv4Addr::new(10, 201, octet, host),
            overlay: Ipv4Addr::new(10, 202, octet, host),
            overlay6: Ipv6Addr::new(
                0xfd00,
                0xcafe,
                0,
                u16::from(octet),
                0,
                0,
                0,
                u16::from(host),
            ),
            public_b64: genkey(&dir.join(format!("{side}.key"))),
            key_file: dir.join(format!("{side}.key")),
            child: None,
            log: dir.join(format!("{side}.log")),
        };
        let lab = Self {
            sides: [make("a", 1), make("b", 2)],
            dir,
            cvlan_wg: cvlan_wg.into(),
        };
        let (va, vb) = (format!("cv{tag}va"), format!("cv{tag}vb"));
        for s in &lab.sides {
            let _ = Command::new("ip").args(["netns", "del", &s.ns]).output();
            run(&["ip", "netns", "add", &s.ns]);
            run(&["ip", "-n", &s.ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
        ]);
        for (s, v) in lab.sides.iter().zip([&va, &vb]) {
            run(&["ip", "link", "set", v, "netns", &s.ns]);
            run(&[
                "ip",
                "-n",
                &s.ns,
                "addr",
                "add",
                &format!("{}/24", s.underlay),
                "dev",
                v,
            ]);
            run(&["ip", "-n", &s.ns, "link", "set", v, "up"]);
        }
        lab
    }

    pub fn socket_path(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/var/run/wireguard/{}.sock", self.sides[i].ifname))
    }

    /// Starts implementation `which` on side `i` and waits for its socket.
    pub fn start(&mut self, i: usize, which: Impl) {
        let s = &self.sides[i];
        let log = std::fs::File::create(&s.log).expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &s.ns]);
        match which {
            Impl::Cvlan => cmd.arg(&self.cvlan_wg).args(["-f", &s.ifname]),
            Impl::WireguardGo => cmd.args(["wireguard-go", "-f", &s.ifname]),
        };
        cmd.env("WG_PROCESS_FOREGROUND", "1")
            .env("LOG_LEVEL", "debug");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn");
        self.sides[i].child = Some(child);
        let sock = self.socket_path(i);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "{which:?} did not come up: {}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Side `i`'s private key, base64, as `wg` and wg-quick configs take it.
    pub fn private_b64(&self, i: usize) -> String {
        std::fs::read_to_string(&self.sides[i].key_file)
            .expect("key file")
            .trim()
            .to_owned()
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.sides[i].log).unwrap_or_default()
    }

    /// Configures side `i` with `wg` only: key, port, the other side as peer
    /// (with its endpoint only if `with_endpoint`), and the overlay address.
    pub fn configure(&self, i: usize, with_endpoint: bool) {
        let (me, other) = (&self.sides[i], &self.sides[1 - i]);
        let key = me.key_file.to_string_lossy().into_owned();
        let allowed = format!("{}/32,{}/128", other.overlay, other.overlay6);
        let endpoint = format!("{}:51820", other.underlay);
        let mut args = vec![
            "ip",
            "netns",
            "exec",
            &me.ns,
            "wg",
            "set",
            &me.ifname,
            "private-key",
            &key,
            "listen-port",
            "51820",
        ];
        args.extend(["peer", &other.public_b64, "allowed-ips", &allowed]);
        if with_endpoint {
            args.extend(["endpoint", &endpoint]);
        }
        run(&args);
        let addr = format!("{}/24", me.overlay);
        run(&["ip", "-n", &me.ns, "addr", "add", &addr, "dev", &me.ifname]);
        let addr6 = format!("{}/64", me.overlay6);
        run(&[
            "ip", "-n", &me.ns, "-6", "addr", "add", &addr6, "dev", &me.ifname, "nodad",
        ]);
        run(&[
            "ip", "-n", &me.ns, "link", "set", &me.ifname, "mtu", "1420", "up",
        ]);
    }

    pub fn wg(&self, i: usize, args: &[&str]) -> String {
        let s = &self.sides[i];
        let mut full = vec!["ip", "netns", "exec", &s.ns, "wg"];
        full.extend_from_slice(args);
        run(&full)
    }

    pub fn ping(&self, from: usize, count: u32) -> Result<String, String> {
        self.ping_addr(from, self.sides[1 - from].overlay.into(), count)
    }

    pub fn ping_addr(&self, from: usize, to: IpAddr, count: u32) -> Result<String, String> {
        let me = &self.sides[from];
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &me.ns,
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "3",
            ])
            .arg(to.to_string())
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "{text}\n--- a ---\n{}\n--- b ---\n{}",
                self.log(0),
                self.log(1)
            ))
        }
    }

    /// Sends `len` pseudo-random bytes over TCP from side `from` to the
    /// other side's overlay address; the receiver checks every byte.
    /// Returns the throughput in Mbit/s.
    pub fn tcp_transfer(&self, from: usize, len: usize, port: u16) -> f64 {
        self.tcp_transfer_to(
            from,
            SocketAddr::from((self.sides[1 - from].overlay, port)),
            len,
        )
    }

    /// As `tcp_transfer`, to a given address of the other side.
    pub fn tcp_transfer_to(&self, from: usize, dst: SocketAddr, len: usize) -> f64 {
        let (src_ns, dst_ns) = (self.sides[from].ns.clone(), self.sides[1 - from].ns.clone());
        transfer(src_ns, dst_ns, dst, len)
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.sides[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..2 {
            self.stop(i);
            let _ = std::fs::remove_file(self.socket_path(i));
            let _ = Command::new("ip")
                .args(["netns", "del", &self.sides[i].ns])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
