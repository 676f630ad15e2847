//! The network map carried out: peers onto the device, our address onto
//! the interface, the map cached on disk and restored from it.

use super::*;
use std::net::IpAddr;

use proto_control::messages::{ip_from_bytes, key32};
use tracing::{info, warn};

use crate::mesh::{peer_changes_with, Change, PeerRoute};
use crate::settings::CachedMap;

impl Daemon {
    pub(super) fn apply_changes(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        for c in changes {
            match c {
                Change::Remove(p) => self.forget_path(&p.node_key),
                Change::Update { old, new } if old.node_key != new.node_key => {
                    self.forget_path(&old.node_key)
                }
                _ => {}
            }
        }
        let (paths, relay) = (&mut self.paths, &self.relay);
        let device_changes = peer_changes_with(changes, |p| {
            let proxy = relay.as_ref().and_then(|r| r.proxy_for(p.node_key).ok());
            PeerRoute {
                endpoint: paths.set_peer(now, p.node_key, p.endpoints.clone(), proxy),
                // While a direct endpoint is unusually silent, data also
                // goes through the relay: a path that breaks costs
                // (almost) nothing before the path machine gives it up.
                fallback: proxy,
            }
        });
        if let Err(e) = self.device.configure(&device_changes) {
            warn!(error = %e, "device refused peer configuration");
        }
        for c in changes {
            match c {
                Change::Add(p) => info!(peer = %p.name, address = %p.address, "peer added"),
                Change::Update { new, .. } => info!(peer = %new.name, "peer updated"),
                Change::Remove(p) => info!(peer = %p.name, "peer removed"),
            }
        }
    }

    pub(super) fn set_address(&mut self, r: &proto_control::messages::Registered) {
        let Some(IpAddr::V4(a)) = ip_from_bytes(&r.address) else {
            warn!("controller gave no IPv4 address");
            return;
        };
        let len = u8::try_from(r.prefix_len).unwrap_or(32).min(32);
        if self.address == Some((a, len)) {
            return;
        }
        let tun = self.device.tun();
        match tun.set_ipv4(a, len).and_then(|()| tun.set_up(true)) {
            Ok(()) => {
                info!(address = %a, prefix_len = len, "overlay address set");
                self.address = Some((a, len));
            }
            Err(e) => warn!(error = %e, "could not set the overlay address"),
        }
    }

    pub(super) fn save_cache(&self) {
        let cache = CachedMap {
            registered: self.mesh.me.clone(),
            map: Some(self.mesh.as_full_update()),
            controller_key: self.mesh_controller.map(|k| k.to_vec()).unwrap_or_default(),
        };
        if let Err(e) = self.state.save_map(&cache) {
            warn!(error = %e, "could not cache the map");
        }
    }

    /// A restarted node brings its tunnels back from the last map at once,
    /// before (or without) reaching the controller.
    pub(super) fn restore_from_cache(&mut self) {
        if !self.saved.up {
            return;
        }
        let Some(cache) = self.state.cached_map() else {
            return;
        };
        let (Some(me), Some(map)) = (cache.registered, cache.map) else {
            return;
        };
        if key32(&cache.controller_key) != self.controller_key() {
            return;
        }
        self.mesh_controller = key32(&cache.controller_key);
        self.set_address(&me);
        self.on_relays(&me.relays);
        self.mesh.me = Some(me);
        if let Ok((changes, _)) = self.mesh.apply(&map) {
            info!(
                peers = changes.len(),
                version = map.version,
                "restored the cached map"
            );
            self.apply_changes(&changes);
        }
    }

    /// Takes every peer of the map off the device (and the path machine).
    pub(super) fn remove_all_peers(&mut self) {
        let removals: Vec<Change> = self
            .mesh
            .peers
            .values()
            .cloned()
            .map(Change::Remove)
            .collect();
        self.apply_changes(&removals);
    }
}
