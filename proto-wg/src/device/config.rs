//! Configuration: the static key, peers, their keys, endpoints, keepalives
//! and allowed IPs, and what the device reports about them.

use super::*;

impl Device {
    /// Sets (or with `None` removes) the static private key. Sessions made
    /// under the old key are dropped; a peer with our own public key is
    /// removed, as wireguard-go does.
    pub fn set_private_key(&mut self, key: Option<PrivateKey>) {
        let same = match (&self.identity, &key) {
            (Some(a), Some(b)) => a.public == b.public_key(),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.identity = key.map(|private| {
            let public = private.public_key();
            Arc::new(Identity {
                mac_keys: MacKeys::new(&public),
                initial_hash: initial_hash(&public),
                private,
                public,
            })
        });
        if let Some(own) = self.identity.as_ref().map(|i| i.public) {
            if let Some(id) = self.by_key.get(&own).copied() {
                self.remove_peer(id);
            }
        }
        let local = self.identity.as_ref().map(|i| &i.private);
        for peer in self.peers.values_mut() {
            peer.set_local_key(local);
            peer.zero_keys(&mut self.by_index);
            peer.retransmit_handshake = None;
            // As wireguard-go's ExpireCurrentKeypairs: the next packet may
            // start a handshake under the new key at once.
            peer.last_initiation_sent = None;
        }
    }

    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.identity.as_ref().map(|i| &i.private)
    }

    pub fn public_key(&self) -> Option<PublicKey> {
        self.identity.as_ref().map(|i| i.public)
    }

    /// The TUN MTU, which bounds padding.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }

    /// Under load, handshake messages need a valid MAC2 (a cookie) or get a
    /// cookie reply instead of an answer.
    pub fn set_under_load(&mut self, on: bool) {
        self.under_load = on;
    }

    /// Adds a peer, or returns the existing one with that key. Our own
    /// public key is refused.
    pub fn add_peer(&mut self, key: PublicKey) -> Option<PeerId> {
        if self.public_key() == Some(key) {
            return None;
        }
        if let Some(id) = self.by_key.get(&key) {
            return Some(*id);
        }
        let id = PeerId(self.next_peer);
        self.next_peer += 1;
        self.peers.insert(
            id,
            Peer::new(key, self.identity.as_ref().map(|i| &i.private)),
        );
        self.by_key.insert(key, id);
        Some(id)
    }

    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    pub fn remove_peer(&mut self, id: PeerId) {
        if let Some(mut peer) = self.peers.remove(&id) {
            peer.zero_keys(&mut self.by_index);
            self.by_key.remove(&peer.public_key);
            self.routes.remove_value(id);
        }
    }

    pub fn remove_all_peers(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id);
        }
    }

    pub fn set_preshared_key(&mut self, id: PeerId, psk: PresharedKey) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.psk = psk;
        }
    }

    pub fn set_endpoint(&mut self, id: PeerId, endpoint: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.set_endpoint(endpoint);
        }
    }

    /// A second path to the peer (the relay's entry into the device) that
    /// data also takes while its endpoint is silent (see
    /// [`SUSPECT_AFTER`](crate::peer::SUSPECT_AFTER)); `None` for none.
    pub fn set_fallback(&mut self, id: PeerId, fallback: Option<SocketAddr>) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.fallback = fallback;
        }
    }

    /// Moves the peer to `endpoint` (its owner chose another path). A
    /// handshake still waiting for its answer went to the old endpoint,
    /// where nothing may answer: it is sent again at once, to the new one,
    /// rather than after `REKEY_TIMEOUT`. Endpoint moves are the owner's
    /// (never the network's), so this adds no initiations anyone else
    /// can cause.
    pub fn move_endpoint(&mut self, now: Instant, id: PeerId, endpoint: SocketAddr) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let moved = p.endpoint != Some(endpoint);
        p.set_endpoint(endpoint);
        if moved && p.pending.is_some() && p.current.is_none() {
            p.last_initiation_sent = None;
            self.send_initiation(now, id, true);
        }
    }

    /// Pinned, the endpoint moves only by [`set_endpoint`](Self::set_endpoint):
    /// the device does not follow the peer's packets (WireGuard's roaming).
    /// A peer without an endpoint still learns one from its first packet.
    pub fn set_endpoint_pinned(&mut self, id: PeerId, pinned: bool) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.endpoint_pinned = pinned;
        }
    }

    /// Sets the persistent keepalive interval (0 = off). Turning it on sends
    /// a keepalive now, which starts a handshake if there is no session.
    pub fn set_persistent_keepalive(&mut self, now: Instant, id: PeerId, secs: u16) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let was = p.persistent_keepalive;
        p.persistent_keepalive = secs;
        if secs == 0 {
            p.persistent_keepalive_at = None;
        } else if was != secs {
            self.send_keepalive(now, id);
        }
    }

    pub fn add_allowed_ip(&mut self, id: PeerId, net: IpPrefix) {
        if self.peers.contains_key(&id) {
            self.routes.insert(net, id);
        }
    }

    pub fn clear_allowed_ips(&mut self, id: PeerId) {
        self.routes.remove_value(id);
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        let mut ids: Vec<&PeerId> = self.peers.keys().collect();
        ids.sort();
        ids.into_iter().filter_map(|id| self.peer_info(*id))
    }

    pub fn peer_info(&self, id: PeerId) -> Option<PeerInfo> {
        let p = self.peers.get(&id)?;
        Some(PeerInfo {
            id,
            public_key: p.public_key,
            preshared_key: p.psk.clone(),
            endpoint: p.endpoint,
            persistent_keepalive: p.persistent_keepalive,
            allowed_ips: self.routes.nets_of(id),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            last_handshake: p.last_handshake,
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
