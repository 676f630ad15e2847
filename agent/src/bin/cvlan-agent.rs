//! `cvlan-agent`: a node of the CloudVLAN mesh.
//!
//! `cvlan-agent up --controller URL --controller-key KEY --auth-key KEY`
//! starts the daemon if it is not running and connects; `down`, `status`,
//! `peers` and `routes` ask the running daemon; `daemon` runs it in the
//! foreground (for service managers).
#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use agent::daemon::{self, DaemonOptions};
use agent::local_api;
use agent::settings::{self, ConfigFile, Saved};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cvlan-agent", version, about = "CloudVLAN node agent")]
struct Cli {
    /// TOML config file (same settings as the flags; flags win).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// The daemon's control socket.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Keys, settings and the cached map.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// The WireGuard interface to create.
    #[arg(long, global = true)]
    interface: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Connects the node (starting the daemon if needed) and waits until it runs.
    Up {
        /// The controller, like http://10.0.0.1:7443.
        #[arg(long)]
        controller: Option<String>,
        /// The controller's public key (`cvlan-controller key`).
        #[arg(long)]
        controller_key: Option<String>,
        /// A pre-auth key (only needed to join).
        #[arg(long)]
        auth_key: Option<String>,
        /// The name to ask for (default: the host name).
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Disconnects and removes every peer (the node stays registered).
    Down,
    /// Replaces the node's WireGuard key; peers learn the new one at once.
    RotateKey,
    Status,
    /// Each peer: its path (direct or relay), the endpoint in use, and
    /// where that endpoint was learnt.
    Peers,
    Routes,
    /// What STUN from the WireGuard socket says about our NAT: UDP, the
    /// reflexive addresses, whether the mapping varies by destination,
    /// each STUN server's round trip, the home relay.
    Netcheck,
    /// Looks into the node's paths.
    Debug {
        #[command(subcommand)]
        what: DebugCmd,
    },
    /// Runs the daemon in the foreground.
    Daemon {
        /// UDP port for WireGuard (0: any).
        #[arg(long)]
        listen_port: Option<u16>,
    },
}

#[derive(Subcommand)]
enum DebugCmd {
    /// Path probes to PEER (a name or overlay address) once a second,
    /// directly to each of its endpoints and through the relay: each
    /// answer, the way it came and its round trip; stops once a direct
    /// path answers.
    Ping {
        peer: String,
        /// Tries, 1 to 30.
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// What arrived and was dropped (strangers, forgeries, answers to
    /// nothing we asked), and what the path machine learnt.
    Counters,
}

struct Resolved {
    config: ConfigFile,
    socket: PathBuf,
    state_dir: PathBuf,
    interface: String,
}

fn resolve(cli: &Cli) -> Result<Resolved, String> {
    let config = match &cli.config {
        Some(p) => ConfigFile::load(p)?,
        None => ConfigFile::default(),
    };
    Ok(Resolved {
        socket: cli
            .socket
            .clone()
            .or_else(|| config.socket.clone())
            .unwrap_or_else(|| settings::DEFAULT_SOCKET.into()),
        state_dir: cli
            .state_dir
            .clone()
            .or_else(|| config.state_dir.clone())
            .unwrap_or_else(|| settings::DEFAULT_STATE_DIR.into()),
        interface: cli
            .interface
            .clone()
            .or_else(|| config.interface.clone())
            .unwrap_or_else(|| settings::DEFAULT_INTERFACE.into()),
        config,
    })
}

fn init_logging() {
    cvlan_core::logging::init();
}

/// Starts `cvlan-agent daemon` in the background, logging to the state
/// directory, and waits for its socket.
fn spawn_daemon(cli: &Cli, r: &Resolved) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    std::fs::create_dir_all(&r.state_dir).map_err(|e| format!("{}: {e}", r.state_dir.display()))?;
    let log_path = r.state_dir.join("agent.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    if let Some(c) = &cli.config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("--socket")
        .arg(&r.socket)
        .arg("--state-dir")
        .arg(&r.state_dir)
        .arg("--interface")
        .arg(&r.interface)
        .arg("daemon");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.try_clone().map_err(|e| e.to_string())?)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if local_api::call(&r.socket, "status", &[])?.is_some() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the daemon exited ({status}); see {}",
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "the daemon did not answer on {} in time; see {}",
        r.socket.display(),
        log_path.display()
    ))
}

fn ask(socket: &Path, command: &str, params: &[(&str, &str)]) -> Result<String, String> {
    match local_api::call(socket, command, params)? {
        None => Err(format!(
            "no daemon at {} (start it with `cvlan-agent up` or `cvlan-agent daemon`)",
            socket.display()
        )),
        Some(reply) if reply.ok => Ok(reply.text),
        Some(reply) => Err(reply.text.trim_end().to_string()),
    }
}

fn run(cli: &Cli) -> Result<String, String> {
    let r = resolve(cli)?;
    match &cli.command {
        Cmd::Daemon { listen_port } => {
            init_logging();
            let defaults = Saved {
                controller: r.config.controller.clone(),
                controller_key: r.config.controller_key.clone(),
                hostname: r.config.hostname.clone(),
                up: false,
            };
            daemon::run(DaemonOptions {
                listen_port: listen_port
                    .or(r.config.listen_port)
                    .unwrap_or(settings::DEFAULT_LISTEN_PORT),
                auth_key: r.config.auth_key()?,
                relay_tls: match &r.config.relay_ca_file {
                    Some(ca) => Some(transport::connector(Some(ca)).map_err(|e| e.to_string())?),
                    None => None,
                },
                controller_ca: r.config.controller_ca_file.clone(),
                stun_servers: r.config.stun_servers()?,
                port_mapping: r.config.port_mapping.unwrap_or(true),
                defaults,
                state_dir: r.state_dir,
                socket: r.socket,
                interface: r.interface,
            })?;
            Ok(String::new())
        }
        Cmd::Up {
            controller,
            controller_key,
            auth_key,
            hostname,
        } => {
            if local_api::call(&r.socket, "status", &[])?.is_none() {
                spawn_daemon(cli, &r)?;
            }
            let config_key = r.config.auth_key()?;
            let auth_key = auth_key.clone().map(zeroize::Zeroizing::new).or(config_key);
            let mut params: Vec<(&str, &str)> = Vec::new();
            let controller = controller.as_ref().or(r.config.controller.as_ref());
            let controller_key = controller_key.as_ref().or(r.config.controller_key.as_ref());
            let hostname = hostname.as_ref().or(r.config.hostname.as_ref());
            for (k, v) in [
                ("controller", controller),
                ("controller_key", controller_key),
                ("hostname", hostname),
            ] {
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            if let Some(k) = &auth_key {
                params.push(("auth_key", k.as_str()));
            }
            ask(&r.socket, "up", &params)
        }
        Cmd::Down => ask(&r.socket, "down", &[]),
        Cmd::RotateKey => ask(&r.socket, "rotate-key", &[]),
        Cmd::Status => ask(&r.socket, "status", &[]),
        Cmd::Peers => ask(&r.socket, "peers", &[]),
        Cmd::Netcheck => ask(&r.socket, "netcheck", &[]),
        Cmd::Debug {
            what: DebugCmd::Ping { peer, count },
        } => ask(
            &r.socket,
            "debug-ping",
            &[("peer", peer), ("count", &count.to_string())],
        ),
        Cmd::Debug {
            what: DebugCmd::Counters,
        } => ask(&r.socket, "debug-counters", &[]),
        Cmd::Routes => ask(&r.socket, "routes", &[]),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cvlan-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
