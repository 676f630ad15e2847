//! `cvlan-wg IFNAME`: a userspace WireGuard device, drop-in for
//! wireguard-go. Configure it with `wg`, `wg-quick`
//! (WG_QUICK_USERSPACE_IMPLEMENTATION=cvlan-wg) or any UAPI client.
#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cvlan-wg",
    version,
    about = "Userspace WireGuard device (wireguard-go compatible)"
)]
struct Cli {
    /// Stay in the foreground (also: WG_PROCESS_FOREGROUND=1).
    #[arg(short, long)]
    foreground: bool,
    /// Interface to create.
    interface: String,
}

const SOCKET_DIR: &str = "/var/run/wireguard";

fn init_logging() {
    // LOG_LEVEL takes wireguard-go's values too.
    cvlan_core::logging::init();
}

/// Like wireguard-go: re-run ourselves in the foreground, detached, and
/// return once the interface's UAPI socket exists.
fn daemonize(interface: &str) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cvlan-wg: cannot find own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut child = match Command::new(exe)
        .arg("--foreground")
        .arg(interface)
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cvlan-wg: cannot start daemon: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = PathBuf::from(SOCKET_DIR).join(format!("{interface}.sock"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if socket.exists() {
            return ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("cvlan-wg: daemon exited early ({status}); run with -f to see why");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "cvlan-wg: daemon did not create {} in time",
        socket.display()
    );
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let foreground = cli.foreground || std::env::var("WG_PROCESS_FOREGROUND").as_deref() == Ok("1");
    if !foreground {
        return daemonize(&cli.interface);
    }
    init_logging();
    let opts = wg_device::Options {
        ifname: cli.interface.clone(),
        socket_dir: PathBuf::from(SOCKET_DIR),
        other_datagrams: None,
    };
    match wg_device::run(&opts, || {}) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvlan-wg: {}: {e}", cli.interface);
            ExitCode::FAILURE
        }
    }
}
