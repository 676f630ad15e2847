//! Running the gateway: one TUN device per tenant, UDP 500 and 4500 on
//! the listen address, a thread for each input and one for timers, all
//! around one gateway behind a mutex (fine for a first data path; the
//! per-SA locking of cvlan-wg is the next step for throughput). A unix
//! socket (0600) answers `status`, `metrics` and `reload` (SIGHUP also
//! reloads).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netstack::tun::Tun;
use tracing::{info, warn};

use crate::config::Settings;
use crate::gateway::{Gateway, Output, IKE_PORT, NAT_T_PORT};

/// Room for ESP-in-UDP around a tenant's packets on a 1500-byte path.
const TUN_MTU: u32 = 1400;

struct Io {
    gateway: Mutex<Gateway>,
    config: std::path::PathBuf,
    s500: UdpSocket,
    s4500: UdpSocket,
    tuns: Vec<Tun>,
}

impl Io {
    fn lock(&self) -> MutexGuard<'_, Gateway> {
        self.gateway.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the configuration file; a bad file changes nothing.
    fn reload(&self) -> String {
        let settings = match Settings::load(&self.config) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "reload refused");
                return format!("reload refused: {e}\n");
            }
        };
        let mut gw = self.lock();
        let out = gw.reload(Instant::now(), settings);
        self.flush(&mut gw);
        match out {
            Ok(report) => report,
            Err(e) => {
                warn!(error = %e, "reload refused");
                format!("reload refused: {e}\n")
            }
        }
    }

    /// Carries out everything the gateway wants sent.
    fn flush(&self, gw: &mut Gateway) {
        while let Some(o) = gw.poll_output() {
            match o {
                Output::Udp {
                    source,
                    destination,
                    contents,
                } => {
                    let sock = if source.port() == NAT_T_PORT {
                        &self.s4500
                    } else {
                        &self.s500
                    };
                    if let Err(e) = sock.send_to(&contents, destination) {
                        warn!(%destination, error = %e, "send failed");
                    }
                }
                Output::Tun { tenant, packet } => {
                    if let Some(t) = self.tuns.get(tenant) {
                        let _ = t.send(&packet);
                    }
                }
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn seed() -> Result<[u8; 32], String> {
    let mut s = [0u8; 32];
    getrandom::getrandom(&mut s).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(s)
}

fn bind(addr: IpAddr, port: u16) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind((addr, port)).map_err(|e| format!("bind {addr}:{port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn open_tuns(settings: &Settings) -> Result<Vec<Tun>, String> {
    settings
        .tenants
        .iter()
        .map(|t| {
            let err = |e: std::io::Error| format!("tenant {}: TUN {}: {e}", t.name, t.tun);
            let tun = Tun::create_plain(&t.tun).map_err(err)?;
            tun.set_mtu(TUN_MTU).map_err(err)?;
            if let Some((IpAddr::V4(a), len)) = t.address {
                tun.set_ipv4(a, len).map_err(err)?;
            }
            tun.set_up(true).map_err(err)?;
            Ok(tun)
        })
        .collect()
}

fn udp_loop(io: &Io, sock: &UdpSocket, local: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                let mut gw = io.lock();
                gw.handle_udp(Instant::now(), from, local, &buf[..n]);
                io.flush(&mut gw);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => warn!(error = %e, "UDP receive"),
        }
    }
}

fn tun_loop(io: &Io, tenant: usize) -> String {
    let mut buf = vec![0u8; 65536];
    loop {
        match io.tuns[tenant].recv(&mut buf) {
            Ok(n) => {
                let mut gw = io.lock();
                gw.handle_tun(tenant, &buf[..n]);
                io.flush(&mut gw);
            }
            Err(e) => return format!("TUN {}: {e}", io.tuns[tenant].name()),
        }
    }
}

fn timer_loop(io: &Io) {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let mut gw = io.lock();
        gw.set_unix_time(unix_now());
        let now = Instant::now();
        if gw.poll_timeout().is_some_and(|t| t <= now) {
            gw.handle_timeout(now);
        }
        io.flush(&mut gw);
    }
}

fn status_loop(io: &Io, listener: &UnixListener) {
    for conn in listener.incoming().flatten() {
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let answer = match line.trim() {
            "status" => io.lock().status(),
            "metrics" => io.lock().metrics(),
            "reload" => io.reload(),
            other => format!("unknown request {other:?} (status, metrics or reload)\n"),
        };
        let _ = (&conn).write_all(answer.as_bytes());
    }
}

/// A minimal HTTP server: GET /metrics (Prometheus text) and /health.
fn metrics_loop(io: &Io, listener: &std::net::TcpListener) {
    for conn in listener.incoming().flatten() {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let (status, body) = match line.split_whitespace().nth(1) {
            Some("/metrics") => ("200 OK", io.lock().metrics()),
            Some("/health") => ("200 OK", "ok\n".to_string()),
            _ => ("404 Not Found", "not found\n".to_string()),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = (&conn).write_all(reply.as_bytes());
    }
}

/// Runs the vrouter until SIGTERM/SIGINT.
pub fn run(config: &Path) -> Result<(), String> {
    let settings = Settings::load(config)?;
    let tuns = open_tuns(&settings)?;
    let listen = settings.listen;
    let socket = settings.status_socket.clone();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("status socket {}: {e}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let metrics = settings
        .metrics
        .map(|a| std::net::TcpListener::bind(a).map_err(|e| format!("metrics {a}: {e}")))
        .transpose()?;
    let mut gateway = Gateway::new(settings, seed()?);
    gateway.set_unix_time(unix_now());
    let io = Arc::new(Io {
        gateway: Mutex::new(gateway),
        config: config.to_path_buf(),
        s500: bind(listen, IKE_PORT)?,
        s4500: bind(listen, NAT_T_PORT)?,
        tuns,
    });
    info!(%listen, tunnels = io.lock().settings().tunnels.len(), "cvlan-vrouter up");
    {
        let mut gw = io.lock();
        gw.start(Instant::now());
        io.flush(&mut gw);
    }
    let (stop_tx, stop_rx) = mpsc::channel::<String>();
    let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(|e| e.to_string())
    };
    for (port, name) in [(IKE_PORT, "udp500"), (NAT_T_PORT, "udp4500")] {
        let io = io.clone();
        spawn(
            name.into(),
            Box::new(move || {
                let sock = if port == IKE_PORT {
                    &io.s500
                } else {
                    &io.s4500
                };
                udp_loop(&io, sock, SocketAddr::new(listen, port));
            }),
        )?;
    }
    for tenant in 0..io.tuns.len() {
        let (io, tx) = (io.clone(), stop_tx.clone());
        spawn(
            format!("tun{tenant}"),
            Box::new(move || {
                let _ = tx.send(tun_loop(&io, tenant));
            }),
        )?;
    }
    {
        let io = io.clone();
        spawn("timers".into(), Box::new(move || timer_loop(&io)))?;
    }
    {
        let io = io.clone();
        spawn(
            "status".into(),
            Box::new(move || status_loop(&io, &listener)),
        )?;
    }
    if let Some(listener) = metrics {
        let io = io.clone();
        spawn(
            "metrics".into(),
            Box::new(move || metrics_loop(&io, &listener)),
        )?;
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| e.to_string())?;
    {
        let io = io.clone();
        spawn(
            "signals".into(),
            Box::new(move || {
                for sig in signals.forever() {
                    if sig == signal_hook::consts::SIGHUP {
                        io.reload();
                    } else {
                        let _ = stop_tx.send(format!("signal {sig}"));
                        return;
                    }
                }
            }),
        )?;
    }
    let reason = stop_rx
        .recv()
        .unwrap_or_else(|_| "all threads ended".into());
    info!(%reason, "shutting down");
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Asks a running vrouter over its status socket.
pub fn ask(socket: &Path, what: &str) -> Result<String, String> {
    let mut conn = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("no vrouter at {}: {e}", socket.display()))?;
    conn.write_all(format!("{what}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    std::io::Read::read_to_string(&mut conn, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}
