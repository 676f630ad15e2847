//! `cvlan-vrouter run --config FILE | check --config FILE | status | metrics | reload
//! | down TUNNEL | up TUNNEL`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vrouter::config::{Settings, DEFAULT_STATUS_SOCKET};

#[derive(Parser)]
#[command(
    name = "cvlan-vrouter",
    about = "IPsec gateway on our own IKEv2 and ESP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the vrouter in the foreground.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Reads and checks a configuration, then says what it would serve.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Tunnels, SAs and traffic of the running vrouter.
    Status {
        #[arg(long, default_value = DEFAULT_STATUS_SOCKET)]
        socket: PathBuf,
    },
    /// The running vrouter's metrics, in Prometheus text format.
    Metrics {
        #[arg(long, default_value = DEFAULT_STATUS_SOCKET)]
        socket: PathBuf,
    },
    /// Re-reads the configuration; unchanged tunnels are not touched.
    Reload {
        #[arg(long, default_value = DEFAULT_STATUS_SOCKET)]
        socket: PathBuf,
    },
    /// Takes a tunnel down: its SAs are deleted (the peer is told) and it
    /// is neither answered nor initiated until `up` (or a restart).
    Down {
        tunnel: String,
        #[arg(long, default_value = DEFAULT_STATUS_SOCKET)]
        socket: PathBuf,
    },
    /// Brings a tunnel taken down back (initiating it if configured to).
    Up {
        tunnel: String,
        #[arg(long, default_value = DEFAULT_STATUS_SOCKET)]
        socket: PathBuf,
    },
}

/// Prints the vrouter's answer; a refusal is an error.
fn answered(s: String) -> Result<(), String> {
    match s.strip_prefix("refused: ") {
        Some(why) => Err(why.trim_end().to_string()),
        None => {
            print!("{s}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    cvlan_core::logging::init();
    let result = match Cli::parse().command {
        Command::Run { config } => vrouter::daemon::run(&config),
        Command::Check { config } => Settings::load(&config).map(|s| {
            for t in &s.tunnels {
                println!(
                    "tunnel {} (tenant {}): peer {}/{}, {}",
                    t.id,
                    s.tenants[t.tenant].name,
                    t.remote.0,
                    t.remote.1,
                    if t.initiate_to.is_some() {
                        "we initiate"
                    } else {
                        "we respond"
                    }
                );
            }
        }),
        Command::Status { socket } => {
            vrouter::daemon::ask(&socket, "status").map(|s| print!("{s}"))
        }
        Command::Metrics { socket } => {
            vrouter::daemon::ask(&socket, "metrics").map(|s| print!("{s}"))
        }
        Command::Reload { socket } => vrouter::daemon::ask(&socket, "reload").and_then(|s| {
            print!("{s}");
            if s.starts_with("reload refused") {
                Err("the running configuration is unchanged".into())
            } else {
                Ok(())
            }
        }),
        Command::Down { tunnel, socket } => {
            vrouter::daemon::ask(&socket, &format!("down {tunnel}")).and_then(answered)
        }
        Command::Up { tunnel, socket } => {
            vrouter::daemon::ask(&socket, &format!("up {tunnel}")).and_then(answered)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cvlan-vrouter: {e}");
            ExitCode::FAILURE
        }
    }
}
