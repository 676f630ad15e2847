//! The text `cvlan-agent peers` and `routes` print.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use wg_device::PeerInfo;

use crate::mesh::Mesh;

/// `path` names the path each peer's traffic takes (relay or direct) and
/// where the direct endpoint in use was learnt (`-` on the relay).
pub fn peers(
    mesh: &Mesh,
    device: &[PeerInfo],
    path: impl Fn(&[u8; 32]) -> (String, String),
) -> String {
    let stats: HashMap<[u8; 32], &PeerInfo> = device.iter().map(|p| (p.public_key.0, p)).collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24}  {:<15}  {:<7}  {:<22}  {:<14}  {:>12}  {:>12}  {:<9}  LEARNT FROM",
        "NAME", "ADDRESS", "PATH", "ENDPOINT", "HANDSHAKE", "RX", "TX", "NAT"
    );
    for p in mesh.peers.values() {
        let s = stats.get(&p.node_key);
        let endpoint = s
            .and_then(|s| s.endpoint)
            .map_or_else(|| "-".into(), |e| e.to_string());
        let handshake = match s.and_then(|s| s.last_handshake) {
            None => "never".to_string(),
            Some(t) => format!("{}s ago", now.saturating_sub(t.as_secs())),
        };
        let (path, learnt) = path(&p.node_key);
        let _ = writeln!(
            out,
            "{:<24}  {:<15}  {:<7}  {:<22}  {:<14}  {:>12}  {:>12}  {:<9}  {}",
            p.name,
            p.address,
            path,
            endpoint,
            handshake,
            s.map_or(0, |s| s.rx_bytes),
            s.map_or(0, |s| s.tx_bytes),
            proto_control::messages::NatKind::word(p.nat),
            learnt
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
    use crate::mesh::MeshPeer;
    use std::time::{Duration, Instant};

    fn mesh_peer(id: u64, key: u8) -> MeshPeer {
        MeshPeer {
            node_id: id,
            name: format!("node-{id}"),
            node_key: [key; 32],
            address: Ipv4Addr::new(100, 64, 0, id as u8),
            endpoints: vec![],
            nat: if id == 1 { 3 } else { 0 },
        }
    }

    #[test]
    fn each_row_shows_the_devices_own_view_of_that_peer() {
        let mut device = proto_wg::Device::new([0; 32], Instant::now(), Duration::from_secs(1));
        let id = device.add_peer(proto_wg::PublicKey([1; 32])).unwrap();
        device.set_endpoint(id, "10.0.0.1:5".parse().unwrap());
        let mut mesh = Mesh::default();
        mesh.peers.insert(1, mesh_peer(1, 1));
        mesh.peers.insert(2, mesh_peer(2, 2)); // not (yet) on the device
        let view: Vec<PeerInfo> = device.peers().collect();
        let text = peers(&mesh, &view, |k| {
            if k[0] == 1 {
                ("direct".into(), "peer-reflexive".into())
            } else {
                ("relay".into(), "-".into())
            }
        });
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert_eq!(
            rows[1],
            [
                "node-1",
                "100.64.0.1",
                "direct",
                "10.0.0.1:5",
                "never",
                "0",
                "0",
                "symmetric",
                "peer-reflexive"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "node-2",
                "100.64.0.2",
                "relay",
                "-",
                "never",
                "0",
                "0",
                "unknown",
                "-"
            ]
        );
    }
}
