//! `cvlan-relay`: forwards sealed packets between nodes by node key, links
//! with the other relays of its region, and answers STUN.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use proto_relay::frame::Key;
use proto_relay::server::Limits;
use relay::node::{self, RelayNode};
use serde::Deserialize;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "cvlan-relay",
    version,
    about = "CloudVLAN relay (and STUN server)"
)]
struct Cli {
    /// TOML config (listen, stun, key, mesh_with); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// TCP address for nodes, other relays, /metrics and /health.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// UDP address for STUN.
    #[arg(long)]
    stun: Option<SocketAddr>,
    /// The relay's private key file (created, 0600, if missing).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Another relay of the region: HOST:PORT#PUBLICKEY (repeatable).
    #[arg(long = "mesh-with")]
    mesh_with: Vec<String>,
    /// Serve inside TLS with this PEM certificate chain (and --tls-key).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates trusted for `tls://` mesh peers.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Serve only the node keys the controller registered (it must list
    /// this relay with --relay; needs --controller and --controller-key).
    #[arg(long)]
    verify_clients: bool,
    /// The controller to follow for --verify-clients: HOST:PORT or http://HOST:PORT.
    #[arg(long)]
    controller: Option<String>,
    /// The controller's public key (`cvlan-controller key`).
    #[arg(long)]
    controller_key: Option<String>,
    /// Print the public key (creating the key file if needed) and exit.
    #[arg(long)]
    print_key: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    listen: Option<SocketAddr>,
    stun: Option<SocketAddr>,
    key: Option<PathBuf>,
    #[serde(default)]
    mesh_with: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    #[serde(default)]
    verify_clients: bool,
    controller: Option<String>,
    controller_key: Option<String>,
}

/// `HOST:PORT#PUBLICKEY` (or `tls://HOST:PORT#PUBLICKEY`) -> (address, key).
fn parse_mesh(s: &str) -> Result<(String, Key), String> {
    let r: cvlan_core::RelayAddr = s.parse().map_err(|e| format!("--mesh-with {e}"))?;
    Ok((r.address, r.key.0))
}

fn run(cli: Cli) -> Result<(), String> {
    let config = match &cli.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            toml::from_str::<Config>(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => Config::default(),
    };
    let key_path = cli
        .key
        .or(config.key)
        .unwrap_or_else(|| "/var/lib/cvlan-relay/relay.key".into());
    if let Some(dir) = key_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let key = cvlan_core::keyfile::load_or_create(&key_path, || {
        let mut k = [0u8; 32];
        cvlan_core::seed::fill(&mut k).map_err(std::io::Error::other)?;
        Ok(k)
    })
    .map_err(|e| format!("relay key {}: {e}", key_path.display()))?;
    if cli.print_key {
        println!("{}", hex::encode(proto_control::public_key(&key)));
        return Ok(());
    }
    let listen = cli
        .listen
        .or(config.listen)
        .unwrap_or_else(|| ([0, 0, 0, 0], 8443).into());
    let stun = cli
        .stun
        .or(config.stun)
        .unwrap_or_else(|| ([0, 0, 0, 0], 3478).into());
    let mut mesh = Vec::new();
    for m in config.mesh_with.iter().chain(&cli.mesh_with) {
        mesh.push(parse_mesh(m)?);
    }
    let mesh_keys: HashSet<Key> = mesh.iter().map(|(_, k)| *k).collect();
    let acceptor = match (
        cli.tls_cert.or(config.tls_cert),
        cli.tls_key.or(config.tls_key),
    ) {
        (Some(cert), Some(key)) => {
            Some(relay::tls::acceptor(&cert, &key).map_err(|e| e.to_string())?)
        }
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let connector = match cli.tls_ca.or(config.tls_ca) {
        Some(ca) => Some(relay::tls::connector(Some(&ca)).map_err(|e| e.to_string())?),
        None => None,
    };
    let feed = if cli.verify_clients || config.verify_clients {
        let controller = cli
            .controller
            .or(config.controller)
            .ok_or("--verify-clients needs --controller")?;
        let hex_key = cli
            .controller_key
            .or(config.controller_key)
            .ok_or("--verify-clients needs --controller-key")?;
        let controller_key = cvlan_core::Key32::parse(&hex_key)
            .map_err(|_| "--controller-key must be 64 hex digits")?
            .0;
        Some(relay::admission::ControllerFeed {
            controller,
            controller_key,
            relay_key: std::sync::Arc::new(key.clone()),
            cache: key_path.with_extension("allowed-nodes"),
        })
    } else {
        None
    };
    let node = RelayNode::new(key, mesh_keys, Limits::default());
    if let Some(feed) = &feed {
        node.verify_clients(relay::admission::load_cache(&feed.cache));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let tcp = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let udp = tokio::net::UdpSocket::bind(stun).await.map_err(|e| format!("cannot bind STUN on {stun}: {e}"))?;
        info!(%listen, %stun, tls = acceptor.is_some(), public_key = %hex::encode(node.public_key()), mesh = mesh.len(), "cvlan-relay serving");
        for (addr, peer) in mesh {
            tokio::spawn(node::mesh_with(addr, peer, node.clone(), connector.clone()));
        }
        if let Some(feed) = feed {
            info!(controller = %feed.controller, "serving only the nodes the controller registered");
            tokio::spawn(relay::admission::follow(feed, node.clone()));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            r = node::serve_tcp(tcp, node.clone(), acceptor) => r.map_err(|e| e.to_string()),
            r = node::serve_stun(udp, node.clone()) => r.map_err(|e| e.to_string()),
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

fn main() -> ExitCode {
    cvlan_core::logging::init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvlan-relay: {e}");
            ExitCode::FAILURE
        }
    }
}
