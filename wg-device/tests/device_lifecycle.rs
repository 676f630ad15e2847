//! cvlan-wg as a process: UAPI errors, clean shutdown, wg-quick. Needs root,
//! wireguard-tools and iproute2 (wg-quick also needs wireguard-go for the
//! peer): ignored by default, run by CI with `--include-ignored`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::host as lab;
use testkit::wg_lab::{Impl, Lab};

const CVLAN_WG: &str = env!("CARGO_BIN_EXE_cvlan-wg");

fn uapi(lab: &Lab, request: &str) -> String {
    let mut s = UnixStream::connect(lab.socket_path(0)).expect("connect uapi");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut reader = BufReader::new(s);
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read") == 0 {
            return out;
        }
        out.push_str(&line);
        if out.ends_with("\n\n") {
            return out;
        }
    }
}

fn wait_gone(path: &std::path::Path, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if !path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
#[ignore = "needs root, wireguard-tools, iproute2 (CI runs it)"]
fn bad_uapi_lines_get_an_errno_and_the_device_keeps_running() {
    lab::require(&["wg", "ip"]);
    let mut lab = Lab::new(CVLAN_WG);
    lab.start(0, Impl::Cvlan);
    lab.configure(0, false);
    assert_eq!(uapi(&lab, "set=1\nbogus=1\n\n"), "errno=-22\n\n");
    assert_eq!(
        uapi(&lab, "set=1\nlisten_port=notaport\n\n"),
        "errno=-22\n\n"
    );
    assert_eq!(
        uapi(&lab, &format!("set=1\npublic_key={}\n\n", "zz".repeat(32))),
        "errno=-22\n\n"
    );
    assert_eq!(uapi(&lab, "set=1\nno equals sign\n\n"), "errno=-71\n\n");
    assert_eq!(uapi(&lab, "hello=1\n\n"), "errno=-71\n\n");
    // An over-long line ends that connection only.
    let mut s = UnixStream::connect(lab.socket_path(0)).expect("connect");
    s.write_all(format!("set=1\nprivate_key={}\n\n", "a".repeat(10_000)).as_bytes())
        .expect("write");
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    // Still serving, still configured.
    let got = uapi(&lab, "get=1\n\n");
    assert!(
        got.contains("listen_port=51820\n") && got.ends_with("errno=0\n\n"),
        "{got}"
    );
    let show = lab.wg(0, &["show", &lab.sides[0].ifname, "peers"]);
    assert_eq!(show.trim(), lab.sides[1].public_b64);
    // showconf round-trips through setconf.
    let conf = lab.wg(0, &["showconf", &lab.sides[0].ifname]);
    assert!(
        conf.contains(&format!("PublicKey = {}", lab.sides[1].public_b64)),
        "{conf}"
    );
    assert!(conf.contains("ListenPort = 51820"), "{conf}");
}

#[test]
#[ignore = "needs root, iproute2 (CI runs it)"]
fn sigterm_removes_socket_and_interface() {
    lab::require(&["ip"]);
    let mut lab = Lab::new(CVLAN_WG);
    lab.start(0, Impl::Cvlan);
    let ns = lab.sides[0].ns.clone();
    let ifname = lab.sides[0].ifname.clone();
    let mut child = lab.sides[0].child.take().expect("child");
    // `ip netns exec` execs the daemon, so this pid is cvlan-wg itself.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}: {}", lab.log(0));
    assert!(!lab.socket_path(0).exists(), "socket left behind");
    let link = Command::new("ip")
        .args(["-n", &ns, "link", "show", &ifname])
        .output()
        .expect("ip");
    assert!(!link.status.success(), "interface still exists");
}

#[test]
#[ignore = "needs root, wireguard-tools (wg-quick), wireguard-go, iproute2 (CI runs it)"]
fn wg_quick_brings_cvlan_wg_up_and_down() {
    lab::require(&["wg", "wg-quick", "wireguard-go", "ip", "ping"]);
    let mut lab = Lab::new(CVLAN_WG);
    // Side b: wireguard-go configured with wg, no endpoint for a.
    lab.start(1, Impl::WireguardGo);
    lab.configure(1, false);
    // Side a: cvlan-wg started by wg-quick (daemonized, as wg-quick expects).
    let a = &lab.sides[0];
    let b = &lab.sides[1];
    let dir = std::env::temp_dir().join(format!("cvlan-wgq-{}", a.ifname));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf_path = dir.join(format!("{}.conf", a.ifname));
    let private = lab.private_b64(0);
    let conf = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {}/24\nListenPort = 51820\n\n[Peer]\nPublicKey = {}\nAllowedIPs = {}/32\nEndpoint = {}:51820\n",
        private,
        a.overlay,
        b.public_b64,
        b.overlay,
        b.underlay
    );
    std::fs::write(&conf_path, conf).expect("conf");
    let up = Command::new("ip")
        .args(["netns", "exec", &a.ns, "wg-quick", "up"])
        .arg(&conf_path)
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", CVLAN_WG)
        .output()
        .expect("wg-quick up");
    assert!(
        up.status.success(),
        "wg-quick up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let ping = lab
        .ping(0, 3)
        .unwrap_or_else(|e| panic!("ping after wg-quick up failed:\n{e}"));
    assert!(ping.contains("3 received"), "{ping}");
    let down = Command::new("ip")
        .args(["netns", "exec", &a.ns, "wg-quick", "down"])
        .arg(&conf_path)
        .output()
        .expect("wg-quick down");
    assert!(
        down.status.success(),
        "wg-quick down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    // Deleting the interface ends the daemon, which removes its socket.
    assert!(
        wait_gone(&lab.socket_path(0), 5),
        "socket still there after wg-quick down"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
#[ignore = "needs root, wireguard-tools, iproute2 (CI runs it)"]
fn idle_device_stays_under_10_mb_rss() {
    lab::require(&["wg", "ip"]);
    let mut lab = Lab::new(CVLAN_WG);
    lab.start(0, Impl::Cvlan);
    lab.configure(0, true);
    std::thread::sleep(Duration::from_millis(500));
    let pid = lab.sides[0].child.as_ref().expect("child").id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    eprintln!("idle cvlan-wg RSS: {rss_kb} kB");
    assert!(rss_kb < 10 * 1024, "idle RSS {rss_kb} kB");
}
