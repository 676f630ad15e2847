//! `cvlan-controller`: the control plane daemon (`serve`) and its admin
//! CLI (`keys`, `nodes`, `key`). Admin commands go to a running server
//! through its admin socket, or straight to the database when none runs.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use controller::admin::{self, AdminCommand};
use controller::ipam::Ipv4Prefix;
use controller::registry::{Registry, RegistryError};
use controller::server::{Limits, ServeOptions};
use controller::store::StoreError;
use proto_control::messages::RelayInfo;
use tracing::info;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(name = "cvlan-controller", version, about = "CloudVLAN control plane")]
struct Cli {
    /// Where the database, the controller key and the admin socket live.
    #[arg(long, global = true, default_value = "/var/lib/cvlan-controller")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the controller.
    Serve {
        /// Address nodes connect to.
        #[arg(long, default_value = "0.0.0.0:7443")]
        listen: SocketAddr,
        /// Overlay prefix for a new network (an existing one keeps its own).
        #[arg(long)]
        prefix: Option<Ipv4Prefix>,
        /// A relay of this network: [tls://]HOST:PORT#PUBLICKEY[#STUNHOST:PORT]
        /// (repeatable; STUN defaults to the relay's host, port 3478).
        #[arg(long = "relay", value_parser = parse_relay)]
        relays: Vec<RelayInfo>,
        /// Serve inside TLS with this PEM certificate chain (and --tls-key):
        /// nodes then dial https://. Noise inside stays the authentication.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key for --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Prints the controller's public key (nodes need it to connect).
    Key,
    #[command(flatten)]
    Admin(AdminCommand),
}

/// `[tls://]HOST:PORT#PUBLICKEY[#STUNHOST:PORT]` (`tls://` stays in the
/// address: nodes then dial with TLS).
fn parse_relay(s: &str) -> Result<RelayInfo, String> {
    let r: cvlan_core::RelayAddr = s.parse().map_err(|e| format!("{e}"))?;
    Ok(RelayInfo {
        stun: r.stun_or_default(),
        public_key: r.key.0.to_vec(),
        address: r.address,
    })
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("controller.redb"),
        dir.join("controller.key"),
        dir.join("admin.sock"),
    )
}

fn controller_key(dir: &Path) -> Result<Zeroizing<[u8; 32]>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let path = paths(dir).1;
    cvlan_core::keyfile::load_or_create(&path, || {
        let mut k = [0u8; 32];
        cvlan_core::seed::fill(&mut k).map_err(std::io::Error::other)?;
        Ok(k)
    })
    .map_err(|e| format!("controller key {}: {e}", path.display()))
}

/// Opens the registry; an admin command holding the database for a moment
/// (run while no server was up) is waited for, not treated as fatal.
fn open_waiting(db: &Path, prefix: Option<Ipv4Prefix>) -> Result<Registry, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Registry::open(db, prefix) {
            Ok(r) => return Ok(r),
            Err(RegistryError::Store(StoreError::InUse(_)))
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

struct ServeArgs {
    listen: SocketAddr,
    prefix: Option<Ipv4Prefix>,
    relays: Vec<RelayInfo>,
    tls: Option<(PathBuf, PathBuf)>,
}

fn serve(dir: &Path, args: ServeArgs) -> Result<(), String> {
    let ServeArgs {
        listen,
        prefix,
        relays,
        tls,
    } = args;
    let tls = match tls {
        Some((cert, key)) => Some(transport::acceptor(&cert, &key).map_err(|e| e.to_string())?),
        None => None,
    };
    let key = controller_key(dir)?;
    let (db, _, admin_sock) = paths(dir);
    let registry = open_waiting(&db, prefix)?;
    let prefix = registry.prefix();
    let registry = Arc::new(Mutex::new(registry));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        // 0600 from the start: it mints auth keys and removes nodes.
        let admin = cvlan_core::local_socket::bind_private(&admin_sock)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)
            })
            .map_err(|e| format!("cannot bind {}: {e}", admin_sock.display()))?;
        info!(
            %listen,
            %prefix,
            tls = tls.is_some(),
            public_key = %hex::encode(proto_control::public_key(&key)),
            "cvlan-controller serving"
        );
        tokio::spawn(admin::serve_admin(admin, registry.clone()));
        let key = Arc::new(key);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        let options = ServeOptions {
            limits: Limits::default(),
            relays: Arc::new(relays),
            tls,
        };
        let result = tokio::select! {
            r = controller::server::serve_with(listener, registry, key, options) => r.map_err(|e| e.to_string()),
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        };
        let _ = std::fs::remove_file(&admin_sock);
        info!("cvlan-controller stopped");
        result
    })
}

fn run_admin(dir: &Path, cmd: &AdminCommand) -> Result<String, String> {
    let (db, _, sock) = paths(dir);
    // The running server owns the database: ask it.
    let args: Vec<String> = std::env::args()
        .skip_while(|a| a != "keys" && a != "nodes")
        .collect();
    if let Some(answer) =
        admin::request(&sock, &args).map_err(|e| format!("admin socket {}: {e}", sock.display()))?
    {
        return answer;
    }
    if !db.exists() {
        return Err(format!(
            "no database at {} (run `cvlan-controller serve` once, or pass --state-dir)",
            db.display()
        ));
    }
    let mut registry = Registry::open(&db, None).map_err(|e| e.to_string())?;
    admin::execute(&mut registry, cmd).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cvlan_core::logging::init();
    let result = match &cli.command {
        Command::Serve {
            listen,
            prefix,
            relays,
            tls_cert,
            tls_key,
        } => serve(
            &cli.state_dir,
            ServeArgs {
                listen: *listen,
                prefix: *prefix,
                relays: relays.clone(),
                tls: tls_cert.clone().zip(tls_key.clone()),
            },
        ),
        Command::Key => controller_key(&cli.state_dir)
            .map(|k| println!("{}", hex::encode(proto_control::public_key(&k)))),
        Command::Admin(cmd) => run_admin(&cli.state_dir, cmd).map(|text| print!("{text}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvlan-controller: {e}");
            ExitCode::FAILURE
        }
    }
}
