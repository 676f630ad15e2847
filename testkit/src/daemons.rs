//! The project's daemons run inside a lab's namespaces: a controller, a
//! relay (with STUN) and agents, each with its own state directory and
//! log under the test's directory, each killed on drop. The binaries'
//! paths come from the test (`env!("CARGO_BIN_EXE_cvlan-agent")` and its
//! siblings).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// stdout if the command succeeds, stderr if it fails.
pub fn output(mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Polls `f` every 10 ms until it holds; how long that took. Panics
/// with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Polls `f` every 100 ms until it gives a value. Panics with `what`
/// after `limit`.
pub fn wait_for_value<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Another binary of the workspace, built next to the test's own
/// (`bin` is its `env!("CARGO_BIN_EXE_...")`).
pub fn sibling_bin(bin: &str, name: &str, package: &str) -> PathBuf {
    let sibling = Path::new(bin).with_file_name(name);
    assert!(
        sibling.exists(),
        "{} is missing: build it with `cargo build -p {package}` (cargo test --workspace does)",
        sibling.display()
    );
    sibling
}

/// A process started in a namespace, killed on drop.
#[derive(Debug)]
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it the way a service manager does: SIGTERM, 5 s to exit,
    /// then SIGKILL.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `bin args` in namespace `ns`, its output appended to `log`.
pub fn spawn_in(ns: &str, bin: &Path, args: &[String], log: PathBuf) -> Daemon {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    Daemon { child, log }
}

/// `cvlan-relay` on `ip`: relay protocol on 8443, STUN on 3478. Returns
/// the daemon and the `--relay` value the controller announces it by.
pub fn start_relay(relay_bin: &Path, ns: &str, dir: &Path, ip: Ipv4Addr) -> (Daemon, String) {
    let key_file = dir.join("relay.key");
    let out = Command::new(relay_bin)
        .arg("--key")
        .arg(&key_file)
        .arg("--print-key")
        .output()
        .expect("relay key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let args = vec![
        "--key".into(),
        key_file.to_string_lossy().into_owned(),
        "--listen".into(),
        format!("{ip}:8443"),
        "--stun".into(),
        format!("{ip}:3478"),
    ];
    let d = spawn_in(ns, relay_bin, &args, dir.join("relay.log"));
    (d, format!("{ip}:8443#{key}#{ip}:3478"))
}

/// The controller's certificate and key, when it serves only inside TLS.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running controller and what agents need to join it.
#[derive(Debug)]
pub struct Controller {
    pub daemon: Option<Daemon>,
    pub url: String,
    pub key: String,
    pub auth_key: String,
    bin: PathBuf,
    ns: String,
    args: Vec<String>,
    log: PathBuf,
    state: PathBuf,
}

impl Controller {
    /// `cvlan-controller serve` on `ip:7443`, announcing `relay`.
    pub fn start(bin: &Path, ns: &str, dir: &Path, ip: Ipv4Addr, relay: Option<&str>) -> Self {
        Self::start_with(bin, ns, dir, ip, relay, None)
    }

    /// The same, serving only inside TLS when `tls` is given.
    pub fn start_with(
        bin: &Path,
        ns: &str,
        dir: &Path,
        ip: Ipv4Addr,
        relay: Option<&str>,
        tls: Option<Tls>,
    ) -> Self {
        let state = dir.join("controller");
        let mut args = vec![
            "--state-dir".to_string(),
            state.to_string_lossy().into_owned(),
            "serve".into(),
            "--listen".into(),
            format!("{ip}:7443"),
        ];
        if let Some(r) = relay {
            args.extend(["--relay".to_string(), r.to_string()]);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(t) = tls {
            args.extend([
                "--tls-cert".to_string(),
                t.cert.to_string_lossy().into_owned(),
                "--tls-key".into(),
                t.key.to_string_lossy().into_owned(),
            ]);
        }
        let mut c = Self {
            daemon: None,
            url: format!("{scheme}://{ip}:7443"),
            key: String::new(),
            auth_key: String::new(),
            bin: bin.to_path_buf(),
            ns: ns.into(),
            args,
            log: dir.join("controller.log"),
            state,
        };
        c.restart();
        c.key = c.admin(&["key"]).expect("key").trim().to_string();
        c.auth_key = c
            .admin(&["keys", "create", "--reusable", "--expires", "1h"])
            .expect("auth key")
            .trim()
            .to_string();
        c
    }

    /// Kills the controller (as a crash would).
    pub fn kill(&mut self) {
        self.daemon = None;
    }

    /// Starts it again (a first start too) on the same state, and waits
    /// until it answers admin commands.
    pub fn restart(&mut self) {
        self.kill();
        // A killed controller leaves its socket file behind.
        let _ = std::fs::remove_file(self.state.join("admin.sock"));
        self.daemon = Some(spawn_in(&self.ns, &self.bin, &self.args, self.log.clone()));
        wait_for(Duration::from_secs(10), "controller up", || {
            self.state.join("admin.sock").exists() && self.admin(&["nodes", "list"]).is_ok()
        });
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// An admin command (over the controller's local socket).
    pub fn admin(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--state-dir").arg(&self.state).args(args);
        output(cmd)
    }
}

/// A `cvlan-agent daemon` in a namespace and its CLI.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub ns: String,
    pub iface: String,
    /// Its state directory (and local API socket).
    pub dir: PathBuf,
    /// Where its configuration and log are written.
    lab_dir: PathBuf,
    bin: PathBuf,
    pub daemon: Option<Daemon>,
}

impl Agent {
    /// Starts the daemon with `config` (TOML) and waits for its socket.
    pub fn start(bin: &Path, name: &str, ns: &str, dir: &Path, iface: &str, config: &str) -> Self {
        let mut a = Self {
            name: name.into(),
            ns: ns.into(),
            iface: iface.into(),
            dir: dir.join(name),
            lab_dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            daemon: None,
        };
        std::fs::create_dir_all(&a.dir).expect("agent dir");
        a.restart(config);
        a
    }

    /// Stops the daemon the way a service manager does (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.terminate();
        }
    }

    /// Starts the daemon (again) with `config`, on the same state.
    pub fn restart(&mut self, config: &str) {
        self.stop();
        let config_file = self.lab_dir.join(format!("{}.toml", self.name));
        std::fs::write(&config_file, config).expect("agent config");
        let args: Vec<String> = vec![
            "--config".into(),
            config_file.to_string_lossy().into_owned(),
            "--state-dir".into(),
            self.dir.to_string_lossy().into_owned(),
            "--socket".into(),
            self.dir.join("agent.sock").to_string_lossy().into_owned(),
            "--interface".into(),
            self.iface.clone(),
            "daemon".into(),
        ];
        self.daemon = Some(spawn_in(&self.ns, &self.bin, &args, self.log_file()));
        wait_for(Duration::from_secs(10), "agent daemon up", || {
            self.cli(&["status"]).is_ok()
        });
    }

    fn log_file(&self) -> PathBuf {
        self.lab_dir.join(format!("{}.log", self.name))
    }

    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("--socket")
            .arg(self.dir.join("agent.sock"))
            .args(args);
        output(cmd)
    }

    /// `up` against `c`, under the agent's own name.
    pub fn up(&self, c: &Controller) -> Result<String, String> {
        self.up_url(&c.url, &c.key, &c.auth_key)
    }

    /// `up` against the controller at `url` with these keys.
    pub fn up_url(
        &self,
        url: &str,
        controller_key: &str,
        auth_key: &str,
    ) -> Result<String, String> {
        self.cli(&[
            "up",
            "--controller",
            url,
            "--controller-key",
            controller_key,
            "--auth-key",
            auth_key,
            "--hostname",
            &self.name,
        ])
    }

    /// The overlay address `status` reports.
    pub fn overlay(&self) -> Ipv4Addr {
        let status = self.cli(&["status"]).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("node:"))
            .and_then(|l| l.rsplit(", ").next())
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in status of {}:\n{status}", self.name))
    }

    /// The `peers` row for `peer`, split into columns.
    pub fn peer_row(&self, peer: &str) -> Vec<String> {
        let peers = self.cli(&["peers"]).unwrap_or_default();
        peers
            .lines()
            .find(|l| l.starts_with(peer))
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The PATH column for `peer` (`-` if it is not listed).
    pub fn path_to(&self, peer: &str) -> String {
        self.peer_row(peer)
            .get(2)
            .cloned()
            .unwrap_or_else(|| "-".into())
    }

    /// The device's endpoint for `peer`.
    pub fn endpoint_of(&self, peer: &str) -> Option<SocketAddr> {
        self.peer_row(peer).get(3).and_then(|e| e.parse().ok())
    }

    /// One ping over the overlay, 1 s to answer.
    pub fn ping(&self, to: Ipv4Addr) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "ping", "-c", "1", "-W", "1"])
            .arg(to.to_string())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Pings `to` every `interval` for `count` packets in the background;
    /// [`lost`] reads what did not come back.
    pub fn ping_flood(&self, to: Ipv4Addr, count: u32, interval: Duration) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "ping", "-q", "-W", "1"])
            .args(["-i", &format!("{}", interval.as_secs_f64())])
            .args(["-c", &count.to_string(), &to.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ping")
    }

    /// `wg` in the agent's namespace; `IFACE` in `args` is its interface.
    pub fn wg(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "wg"])
            .args(args.iter().map(|x| x.replace("IFACE", &self.iface)));
        output(cmd).unwrap_or_else(|e| panic!("wg {args:?}: {e}"))
    }

    /// Its log so far (also after it stopped).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }
}

/// How many of a [`Agent::ping_flood`]'s pings got no answer.
pub fn lost(flood: Child) -> u32 {
    let out = flood.wait_with_output().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let nums: Vec<u32> = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    nums[0] - nums[1]
}

/// The relay's count of packets it delivered, from its /metrics (read
/// from namespace `ns`, which must reach `relay_ip`).
pub fn relay_forwarded(ns: &str, relay_ip: Ipv4Addr) -> u64 {
    let mut get = Command::new("ip");
    get.args(["netns", "exec", ns, "bash", "-c"]).arg(format!(
        "exec 3<>/dev/tcp/{relay_ip}/8443; printf 'GET /metrics HTTP/1.1\\r\\n\\r\\n' >&3; timeout 2 cat <&3"
    ));
    let text = output(get).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("cvlan_relay_packets_forwarded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no forwarded counter in the relay's metrics: {text}"))
}
