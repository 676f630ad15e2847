//! The text `cvlan-agent peers` and `routes` print.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::mesh::Mesh;

#[derive(Debug, Default)]
struct PeerStats {
    endpoint: Option<String>,
    last_handshake: u64,
    rx: u64,
    tx: u64,
}

/// Per-peer counters from the device's UAPI `get` text, by public key (hex).
fn stats(uapi: &str) -> HashMap<String, PeerStats> {
    let mut out: HashMap<String, PeerStats> = HashMap::new();
    let mut current: Option<String> = None;
    for line in uapi.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k == "public_key" {
            out.entry(v.to_string()).or_default();
            current = Some(v.to_string());
            continue;
        }
        let Some(entry) = current.as_ref().map(|c| out.entry(c.clone()).or_default()) else {
            continue; // the device section (it holds the private key)
        };
        match k {
            "endpoint" => entry.endpoint = Some(v.to_string()),
            "last_handshake_time_sec" => entry.last_handshake = v.parse().unwrap_or(0),
            "rx_bytes" => entry.rx = v.parse().unwrap_or(0),
            "tx_bytes" => entry.tx = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    out
}

/// `path` names the path each peer's traffic takes (relay or direct).
pub fn peers(mesh: &Mesh, uapi: &str, path: impl Fn(&[u8; 32]) -> String) -> String {
    let stats = stats(uapi);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24}  {:<15}  {:<7}  {:<22}  {:<14}  {:>12}  {:>12}",
        "NAME", "ADDRESS", "PATH", "ENDPOINT", "HANDSHAKE", "RX", "TX"
    );
    for p in mesh.peers.values() {
        let s = stats.get(&hex::encode(p.node_key));
        let endpoint = s
            .and_then(|s| s.endpoint.clone())
            .unwrap_or_else(|| "-".into());
        let handshake = match s.map_or(0, |s| s.last_handshake) {
            0 => "never".to_string(),
            t => format!("{}s ago", now.saturating_sub(t)),
        };
        let _ = writeln!(
            out,
            "{:<24}  {:<15}  {:<7}  {:<22}  {:<14}  {:>12}  {:>12}",
            p.name,
            p.address,
            path(&p.node_key),
            endpoint,
            handshake,
            s.map_or(0, |s| s.rx),
            s.map_or(0, |s| s.tx)
        );
    }
    out
}

pub fn routes(mesh: &Mesh, address: Option<(Ipv4Addr, u8)>, interface: &str) -> String {
    let mut out = String::new();
    let Some((a, len)) = address else {
        return "no routes: the node is not up\n".into();
    };
    let network = cvlan_core::prefix::masked(a.into(), len);
    let _ = writeln!(out, "{network}/{len} dev {interface} src {a}");
    for p in mesh.peers.values() {
        let _ = writeln!(out, "{}/32 via peer {} ({})", p.address, p.name, interface);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_counters_are_read_per_peer_and_never_the_private_key() {
        let text = "private_key=aa\nlisten_port=1\npublic_key=bb\nendpoint=10.0.0.1:5\nrx_bytes=10\ntx_bytes=20\nlast_handshake_time_sec=7\npublic_key=cc\n";
        let s = stats(text);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s["bb"].rx, s["bb"].tx, s["bb"].last_handshake),
            (10, 20, 7)
        );
        assert_eq!(s["bb"].endpoint.as_deref(), Some("10.0.0.1:5"));
        assert!(!s.contains_key("aa"));
    }
}
