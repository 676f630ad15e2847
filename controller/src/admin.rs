//! Admin commands (`keys ...`, `nodes ...`): one definition, run either
//! directly on the database or, while `serve` holds it, by the serving
//! process through its admin socket (a Unix socket, 0600). Running them in
//! the server means a removal reaches connected nodes at once.
//!
//! Socket protocol: the command's arguments, one per line, then an empty
//! line; the answer is `ok` or `error` on the first line, then text.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::registry::{NewAuthKey, Registry, RegistryError};
use crate::server::{lock, unix_now, SharedRegistry};

#[derive(Debug, Subcommand, Clone)]
pub enum AdminCommand {
    /// Pre-auth keys: what nodes join with.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Registered nodes.
    #[command(subcommand)]
    Nodes(NodesCommand),
}

#[derive(Debug, Subcommand, Clone)]
pub enum KeysCommand {
    /// Creates a key and prints it (it is shown only this once).
    Create {
        /// Any number of nodes may join with it (default: one).
        #[arg(long)]
        reusable: bool,
        /// Lifetime, like 30m, 24h or 7d (default: never expires).
        #[arg(long, value_parser = parse_duration)]
        expires: Option<Duration>,
        /// Tag given to nodes that join with it (tag:NAME), repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Lists keys (never their secrets).
    List,
    /// Revokes a key: nodes that joined with it stay.
    Revoke { id: String },
}

#[derive(Debug, Subcommand, Clone)]
pub enum NodesCommand {
    List,
    /// Removes a node (by name or id): every peer drops it at once.
    Remove {
        node: String,
    },
    Rename {
        node: String,
        new_name: String,
    },
}

#[derive(Debug, Parser)]
#[command(name = "admin", no_binary_name = true)]
struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, like 24h"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    n.checked_mul(secs)
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?}: out of range"))
}

impl AdminCommand {
    /// The command as arguments again, to send over the admin socket.
    pub fn to_args(&self) -> Vec<String> {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            Self::Keys(KeysCommand::Create {
                reusable,
                expires,
                tags,
            }) => {
                let mut a = words(&["keys", "create"]);
                if *reusable {
                    a.push("--reusable".into());
                }
                if let Some(d) = expires {
                    a.extend(["--expires".into(), format!("{}s", d.as_secs())]);
                }
                for t in tags {
                    a.extend(["--tag".into(), t.clone()]);
                }
                a
            }
            Self::Keys(KeysCommand::List) => words(&["keys", "list"]),
            Self::Keys(KeysCommand::Revoke { id }) => words(&["keys", "revoke", id]),
            Self::Nodes(NodesCommand::List) => words(&["nodes", "list"]),
            Self::Nodes(NodesCommand::Remove { node }) => words(&["nodes", "remove", node]),
            Self::Nodes(NodesCommand::Rename { node, new_name }) => {
                words(&["nodes", "rename", node, new_name])
            }
        }
    }
}

fn when(unix: u64) -> String {
    if unix == 0 {
        return "never".into();
    }
    let now = unix_now();
    if unix <= now {
        format!("expired {}s ago", now - unix)
    } else {
        format!("in {}s", unix - now)
    }
}

/// Runs one command; the text is what the CLI prints.
pub fn execute(reg: &mut Registry, cmd: &AdminCommand) -> Result<String, RegistryError> {
    let mut out = String::new();
    match cmd {
        AdminCommand::Keys(KeysCommand::Create {
            reusable,
            expires,
            tags,
        }) => {
            let spec = NewAuthKey {
                reusable: *reusable,
                expires_in: *expires,
                tags: tags.clone(),
            };
            let (record, text) = reg.create_auth_key(&spec, unix_now())?;
            info!(id = %format!("{:016x}", record.id), reusable, "auth key created");
            let _ = writeln!(out, "{}", text.as_str());
        }
        AdminCommand::Keys(KeysCommand::List) => {
            let _ = writeln!(
                out,
                "{:<16}  {:<8}  {:<5}  {:<7}  {:<20}  TAGS",
                "ID", "REUSABLE", "USES", "REVOKED", "EXPIRES"
            );
            for k in reg.auth_keys() {
                let _ = writeln!(
                    out,
                    "{:016x}  {:<8}  {:<5}  {:<7}  {:<20}  {}",
                    k.id,
                    k.reusable,
                    k.uses,
                    k.revoked,
                    when(k.expires_unix),
                    k.tags.join(",")
                );
            }
        }
        AdminCommand::Keys(KeysCommand::Revoke { id }) => {
            reg.revoke_auth_key(id)?;
            info!(%id, "auth key revoked");
            let _ = writeln!(out, "revoked {id}");
        }
        AdminCommand::Nodes(NodesCommand::List) => {
            let _ = writeln!(
                out,
                "{:<6}  {:<24}  {:<15}  {:<7}  {:<10}  ENDPOINTS",
                "ID", "NAME", "ADDRESS", "ONLINE", "NODE KEY"
            );
            for n in reg.nodes() {
                let endpoints: Vec<String> = n
                    .endpoints
                    .iter()
                    .filter_map(|e| e.socket_addr().map(|a| a.to_string()))
                    .collect();
                let key = hex::encode(n.node_key.get(..4).unwrap_or_default());
                let _ = writeln!(
                    out,
                    "{:<6}  {:<24}  {:<15}  {:<7}  {key:<10}  {}",
                    n.id,
                    n.name,
                    Ipv4Addr::from(n.address),
                    reg.is_online(n.id),
                    endpoints.join(",")
                );
            }
        }
        AdminCommand::Nodes(NodesCommand::Remove { node }) => {
            let n = reg.remove_node(node)?;
            info!(node = n.id, name = %n.name, "node removed");
            let _ = writeln!(out, "removed {} ({})", n.name, Ipv4Addr::from(n.address));
        }
        AdminCommand::Nodes(NodesCommand::Rename { node, new_name }) => {
            let n = reg.rename_node(node, new_name)?;
            let _ = writeln!(out, "renamed node {} to {}", n.id, n.name);
        }
    }
    Ok(out)
}

/// Serves admin commands for the running controller.
pub async fn serve_admin(listener: UnixListener, registry: SharedRegistry) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            let mut args = Vec::new();
            let read_args = async {
                while let Some(line) = lines.next_line().await? {
                    if line.is_empty() {
                        return Ok(true);
                    }
                    if args.len() >= 64 {
                        return Ok(false);
                    }
                    args.push(line);
                }
                Ok::<_, std::io::Error>(false)
            };
            let complete = matches!(
                tokio::time::timeout(Duration::from_secs(10), read_args).await,
                Ok(Ok(true))
            );
            let reply = if !complete {
                "error\nincomplete admin request\n".to_string()
            } else {
                match AdminArgs::try_parse_from(&args) {
                    Err(e) => format!("error\n{e}"),
                    Ok(a) => match execute(&mut lock(&registry), &a.command) {
                        Ok(text) => format!("ok\n{text}"),
                        Err(e) => format!("error\n{e}\n"),
                    },
                }
            };
            if let Err(e) = write.write_all(reply.as_bytes()).await {
                warn!(error = %e, "admin reply failed");
            }
        });
    }
}

/// Sends a command to a running controller. `Ok(None)`: nobody listens on
/// `socket`. `Ok(Some(Err(text)))`: the controller refused the command.
pub fn request(socket: &Path, args: &[String]) -> std::io::Result<Option<Result<String, String>>> {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return Ok(None);
    };
    if args.iter().any(|a| a.contains('\n') || a.is_empty()) {
        return Ok(Some(Err(
            "arguments may not be empty or contain newlines".into()
        )));
    }
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = args.join("\n");
    req.push_str("\n\n");
    stream.write_all(req.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut body = String::new();
    reader.read_to_string(&mut body)?;
    Ok(Some(match status.trim_end() {
        "ok" => Ok(body),
        _ => Err(body.trim_end().to_string()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_survive_the_trip_through_the_socket() {
        let args = [
            "keys",
            "create",
            "--reusable",
            "--expires",
            "2h",
            "--tag",
            "tag:a",
            "--tag",
            "tag:b",
        ];
        let parsed = AdminArgs::try_parse_from(args).unwrap().command;
        let again = AdminArgs::try_parse_from(parsed.to_args()).unwrap().command;
        assert_eq!(format!("{parsed:?}"), format!("{again:?}"));
        for args in [
            &["nodes", "rename", "a", "b"][..],
            &["keys", "revoke", "01"],
            &["nodes", "list"],
        ] {
            let parsed = AdminArgs::try_parse_from(args).unwrap().command;
            assert_eq!(parsed.to_args(), args);
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "h", "5", "5w", "0s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
