//! The node's view of the network: its own registration and its peers, as
//! the controller's map says. Applying a map (full or delta) yields the
//! exact changes, and those become the WireGuard device's peer changes,
//! so a new map never disturbs tunnels to peers that did not change.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use cvlan_core::IpPrefix;
use proto_control::messages::{key32, MapUpdate, Peer, Registered};
use thiserror::Error;
use wg_device::{PeerChange, PeerConfig};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapError {
    #[error("delta from version {base} does not follow our version {have}")]
    Gap { base: u64, have: u64 },
}

/// A peer as the device is configured for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPeer {
    pub node_id: u64,
    pub name: String,
    pub node_key: [u8; 32],
    pub address: Ipv4Addr,
    pub endpoints: Vec<SocketAddr>,
    /// What the peer said of its NAT (proto-control's NatKind).
    pub nat: i32,
}

impl MeshPeer {
    /// A peer from the map, if its key and address are usable.
    pub fn from_wire(p: &Peer) -> Option<Self> {
        Some(Self {
            node_id: p.node_id,
            name: p.name.clone(),
            node_key: key32(&p.node_key)?,
            address: Ipv4Addr::from(<[u8; 4]>::try_from(p.address.as_slice()).ok()?),
            endpoints: p.endpoints.iter().filter_map(|e| e.socket_addr()).collect(),
            nat: p.nat,
        })
    }

    pub fn to_wire(&self) -> Peer {
        Peer {
            node_id: self.node_id,
            name: self.name.clone(),
            node_key: self.node_key.to_vec(),
            address: self.address.octets().to_vec(),
            endpoints: self.endpoints.iter().map(|&a| a.into()).collect(),
            tags: Vec::new(),
            nat: self.nat,
        }
    }

    /// Where to send: the first endpoint the peer reported (it reports its
    /// route toward the controller first). NAT traversal picks better ones
    /// in a later version.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoints.first().copied()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(MeshPeer),
    Update { old: MeshPeer, new: MeshPeer },
    Remove(MeshPeer),
}

#[derive(Debug, Default, Clone)]
pub struct Mesh {
    pub me: Option<Registered>,
    pub version: u64,
    pub peers: BTreeMap<u64, MeshPeer>,
}

impl Mesh {
    /// Applies a complete update. Peers with unusable keys or addresses
    /// are left out (counted in the second value), never fatal.
    pub fn apply(&mut self, update: &MapUpdate) -> Result<(Vec<Change>, usize), MapError> {
        if !update.full && update.base_version != self.version {
            return Err(MapError::Gap {
                base: update.base_version,
                have: self.version,
            });
        }
        let mut invalid = 0;
        let mut next = if update.full {
            BTreeMap::new()
        } else {
            self.peers.clone()
        };
        for id in &update.removed {
            next.remove(id);
        }
        for p in &update.upserts {
            match MeshPeer::from_wire(p) {
                Some(peer) => {
                    next.insert(peer.node_id, peer);
                }
                None => {
                    invalid += 1;
                    next.remove(&p.node_id);
                }
            }
        }
        let mut changes = Vec::new();
        for (id, old) in &self.peers {
            match next.get(id) {
                None => changes.push(Change::Remove(old.clone())),
                Some(new) if new != old => changes.push(Change::Update {
                    old: old.clone(),
                    new: new.clone(),
                }),
                Some(_) => {}
            }
        }
        for (id, new) in &next {
            if !self.peers.contains_key(id) {
                changes.push(Change::Add(new.clone()));
            }
        }
        self.peers = next;
        self.version = update.version;
        Ok((changes, invalid))
    }

    /// The whole map as one full update (for the cache on disk).
    pub fn as_full_update(&self) -> MapUpdate {
        MapUpdate {
            version: self.version,
            full: true,
            upserts: self.peers.values().map(MeshPeer::to_wire).collect(),
            ..Default::default()
        }
    }
}

/// Where the device sends a peer's packets: the endpoint the path
/// machine chose, and the relay's entry as the fallback that data also
/// takes while a direct endpoint is silent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerRoute {
    pub endpoint: Option<SocketAddr>,
    pub fallback: Option<SocketAddr>,
}

fn configure_peer(p: &MeshPeer, route: PeerRoute) -> PeerChange {
    PeerChange::Upsert(PeerConfig {
        public_key: p.node_key,
        allowed_ips: vec![IpPrefix::host(p.address.into())],
        endpoint: route.endpoint,
        // Keeps NAT mappings open, and (being new to the device) sends a
        // keepalive at once: a restarted node handshakes with every peer
        // right away instead of waiting for the peers' rekey timeout.
        persistent_keepalive: PERSISTENT_KEEPALIVE,
        preshared_key: None,
        // The path machine alone moves it: a relayed packet that arrives
        // after the move to a direct path must not take us back.
        endpoint_pinned: true,
        fallback: route.fallback,
    })
}

/// Seconds, as WireGuard's own recommendation for peers behind NAT.
const PERSISTENT_KEEPALIVE: u16 = 25;

/// The device changes that carry `changes` out, with each peer's route
/// as `route` picks it (the path manager's choice). A peer whose key
/// rotated is removed under its old key and added under the new one.
pub fn peer_changes_with(
    changes: &[Change],
    mut route: impl FnMut(&MeshPeer) -> PeerRoute,
) -> Vec<PeerChange> {
    let mut out = Vec::new();
    for c in changes {
        match c {
            Change::Add(p) => out.push(configure_peer(p, route(p))),
            Change::Remove(p) => out.push(PeerChange::Remove(p.node_key)),
            Change::Update { old, new } => {
                if old.node_key != new.node_key {
                    out.push(PeerChange::Remove(old.node_key));
                }
                out.push(configure_peer(new, route(new)));
            }
        }
    }
    out
}

/// As [`peer_changes_with`], each peer at its first reported endpoint.
pub fn peer_changes(changes: &[Change]) -> Vec<PeerChange> {
    peer_changes_with(changes, |p| PeerRoute {
        endpoint: p.endpoint(),
        fallback: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_control::messages::Endpoint;

    fn peer(id: u64, key: u8) -> Peer {
        Peer {
            node_id: id,
            name: format!("n{id}"),
            node_key: vec![key; 32],
            address: vec![100, 64, 0, id as u8],
            endpoints: vec![Endpoint::from(SocketAddr::from((
                [10, 0, 0, id as u8],
                41641,
            )))],
            tags: vec![],
            nat: 0,
        }
    }

    fn full(version: u64, peers: Vec<Peer>) -> MapUpdate {
        MapUpdate {
            version,
            full: true,
            upserts: peers,
            ..Default::default()
        }
    }

    #[test]
    fn a_full_map_after_another_changes_only_what_differs() {
        let mut m = Mesh::default();
        let (c, _) = m.apply(&full(5, vec![peer(1, 1), peer(2, 2)])).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| matches!(c, Change::Add(_))));
        // Same map again (a reconnect to a restarted controller): nothing to do.
        let (c, _) = m.apply(&full(5, vec![peer(2, 2), peer(1, 1)])).unwrap();
        assert!(c.is_empty(), "{c:?}");
        let (c, _) = m.apply(&full(6, vec![peer(1, 1), peer(3, 3)])).unwrap();
        assert_eq!(c.len(), 2);
        assert!(matches!(&c[0], Change::Remove(p) if p.node_id == 2));
        assert!(matches!(&c[1], Change::Add(p) if p.node_id == 3));
    }

    #[test]
    fn deltas_apply_in_order_and_gaps_are_refused() {
        let mut m = Mesh::default();
        m.apply(&full(5, vec![peer(1, 1), peer(2, 2)])).unwrap();
        let delta = MapUpdate {
            version: 7,
            base_version: 5,
            upserts: vec![peer(1, 9)],
            removed: vec![2],
            ..Default::default()
        };
        let (c, _) = m.apply(&delta).unwrap();
        assert_eq!(c.len(), 2);
        let device_changes = peer_changes(&c);
        assert_eq!(
            device_changes,
            [
                PeerChange::Remove([1; 32]),
                PeerChange::Upsert(PeerConfig {
                    public_key: [9; 32],
                    allowed_ips: vec!["100.64.0.1/32".parse().unwrap()],
                    endpoint: Some("10.0.0.1:41641".parse().unwrap()),
                    persistent_keepalive: 25,
                    preshared_key: None,
                    endpoint_pinned: true,
                    fallback: None,
                }),
                PeerChange::Remove([2; 32]),
            ]
        );
        assert_eq!(m.version, 7);
        let stale = MapUpdate {
            version: 9,
            base_version: 8,
            ..Default::default()
        };
        assert_eq!(m.apply(&stale), Err(MapError::Gap { base: 8, have: 7 }));
        assert_eq!(m.version, 7, "a refused delta changes nothing");
    }

    #[test]
    fn unusable_peers_are_skipped_not_fatal() {
        let mut m = Mesh::default();
        let mut bad = peer(2, 2);
        bad.node_key.pop();
        let (c, invalid) = m.apply(&full(1, vec![peer(1, 1), bad])).unwrap();
        assert_eq!((c.len(), invalid), (1, 1));
        let cached = m.as_full_update();
        let mut again = Mesh::default();
        again.apply(&cached).unwrap();
        assert_eq!(again.peers, m.peers);
    }
}
