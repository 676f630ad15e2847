//! The typed configuration an in-process owner (the agent) gives the
//! device, instead of writing UAPI text and having it parsed back. Same
//! effects as the UAPI `set` lines they stand for, applied under one
//! lock; the UAPI socket stays for `wg` and other outside tools.

use std::net::SocketAddr;
use std::time::Instant;

use proto_wg::{Device, IpPrefix, PeerId, PresharedKey, PublicKey};
use thiserror::Error;
use zeroize::Zeroizing;

/// A peer as its owner wants it: its allowed IPs replace the ones it had.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: [u8; 32],
    pub allowed_ips: Vec<IpPrefix>,
    /// `None` keeps the endpoint the device has (or learns one).
    pub endpoint: Option<SocketAddr>,
    /// Seconds; 0 is off. Turning it on sends a keepalive at once.
    pub persistent_keepalive: u16,
    /// `None` keeps the preshared key the peer has (none, for a new one).
    pub preshared_key: Option<Zeroizing<[u8; 32]>>,
    /// The owner alone moves the endpoint: the device does not roam to
    /// wherever the peer's last packet came from (for an owner that
    /// chooses paths itself; the UAPI's peers roam, as WireGuard's do).
    pub endpoint_pinned: bool,
    /// A second path (the relay's entry) that data also takes while the
    /// endpoint is silent, so a path that breaks loses almost nothing
    /// before its owner moves the endpoint. `None`: no fallback.
    pub fallback: Option<SocketAddr>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("public_key", &hex::encode(self.public_key))
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("endpoint_pinned", &self.endpoint_pinned)
            .field("fallback", &self.fallback)
            .field(
                "preshared_key",
                &self.preshared_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerChange {
    /// Adds the peer, or brings it to this configuration.
    Upsert(PeerConfig),
    /// Removes the peer with this public key (nothing if there is none).
    Remove([u8; 32]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("a peer cannot have the device's own public key")]
    OwnKey,
    #[error("UDP port {0} is in use")]
    PortInUse(u16),
    #[error("the UDP socket could not be configured")]
    Socket,
}

/// Applies `changes` in order; a change that fails is skipped and the
/// first failure returned once the others are applied.
pub fn apply(device: &mut Device, now: Instant, changes: &[PeerChange]) -> Result<(), ConfigError> {
    let mut first_error = None;
    for change in changes {
        let result = match change {
            PeerChange::Upsert(peer) => upsert(device, now, peer),
            PeerChange::Remove(key) => {
                if let Some(id) = device.peer_id(&PublicKey(*key)) {
                    device.remove_peer(id);
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn upsert(device: &mut Device, now: Instant, peer: &PeerConfig) -> Result<(), ConfigError> {
    let id: PeerId = device
        .add_peer(PublicKey(peer.public_key))
        .ok_or(ConfigError::OwnKey)?;
    device.clear_allowed_ips(id);
    for net in &peer.allowed_ips {
        device.add_allowed_ip(id, *net);
    }
    if let Some(endpoint) = peer.endpoint {
        device.move_endpoint(now, id, endpoint);
    }
    device.set_endpoint_pinned(id, peer.endpoint_pinned);
    device.set_fallback(id, peer.fallback);
    if let Some(psk) = &peer.preshared_key {
        device.set_preshared_key(id, PresharedKey::from_bytes(**psk));
    }
    device.set_persistent_keepalive(now, id, peer.persistent_keepalive);
    Ok(())
}

/// Points a peer the device has at `endpoint`; false if it has no such peer.
pub fn set_endpoint(
    device: &mut Device,
    now: Instant,
    peer: &[u8; 32],
    endpoint: SocketAddr,
) -> bool {
    match device.peer_id(&PublicKey(*peer)) {
        Some(id) => {
            device.move_endpoint(now, id, endpoint);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn device() -> Device {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Device::new([7; 32], now, Duration::from_secs(1_700_000_000))
    }

    fn peer(key: u8, net: &str) -> PeerConfig {
        PeerConfig {
            public_key: [key; 32],
            allowed_ips: vec![net.parse().unwrap()],
            endpoint: Some(SocketAddr::from(([192, 0, 2, key], 51820))),
            persistent_keepalive: 25,
            preshared_key: None,
            endpoint_pinned: false,
            fallback: None,
        }
    }

    #[test]
    fn upserts_replace_allowed_ips_and_removes_remove() {
        let mut d = device();
        let now = Instant::now();
        apply(
            &mut d,
            now,
            &[
                PeerChange::Upsert(peer(1, "10.0.0.1/32")),
                PeerChange::Upsert(peer(2, "10.0.0.2/32")),
            ],
        )
        .unwrap();
        assert_eq!(d.peers().count(), 2);
        // The same peer again with other allowed IPs: replaced, not added.
        apply(&mut d, now, &[PeerChange::Upsert(peer(1, "10.9.0.0/16"))]).unwrap();
        let one = d.peers().find(|p| p.public_key.0 == [1; 32]).unwrap();
        assert_eq!(one.allowed_ips, vec!["10.9.0.0/16".parse().unwrap()]);
        assert_eq!(
            one.endpoint,
            Some(SocketAddr::from(([192, 0, 2, 1], 51820)))
        );
        assert_eq!(one.persistent_keepalive, 25);
        apply(
            &mut d,
            now,
            &[PeerChange::Remove([2; 32]), PeerChange::Remove([3; 32])],
        )
        .unwrap();
        assert_eq!(d.peers().count(), 1);
        let moved = SocketAddr::from(([198, 51, 100, 1], 4));
        assert!(set_endpoint(&mut d, now, &[1; 32], moved));
        assert!(
            !set_endpoint(&mut d, now, &[2; 32], moved),
            "a removed peer is not recreated"
        );
        assert_eq!(d.peers().count(), 1);
        assert_eq!(d.peers().next().unwrap().endpoint, Some(moved));
    }

    #[test]
    fn a_peer_with_our_own_key_is_refused_and_the_rest_applied() {
        let mut d = device();
        d.set_private_key(Some(proto_wg::PrivateKey::from_bytes([5; 32])));
        let own = *d.public_key().unwrap().as_bytes();
        let mut me = peer(0, "10.0.0.9/32");
        me.public_key = own;
        let r = apply(
            &mut d,
            Instant::now(),
            &[
                PeerChange::Upsert(me),
                PeerChange::Upsert(peer(1, "10.0.0.1/32")),
            ],
        );
        assert_eq!(r, Err(ConfigError::OwnKey));
        assert_eq!(d.peers().count(), 1);
    }
}
