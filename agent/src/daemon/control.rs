//! The daemon's control connection: dialing the controller (plain or
//! TLS), what it says, and forgetting a network we left.

use super::*;

use proto_control::messages::{ClientHello, Endpoint, RefusedReason, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::control_client::{self, controller_address, ConnectParams, ControlEvent};
use crate::lifecycle::Input;
use crate::mesh::{Change, Mesh};

impl Daemon {
    pub(super) fn controller_key(&self) -> Option<[u8; 32]> {
        self.saved
            .controller_key
            .as_deref()
            .and_then(|k| hex_key(k).ok())
    }

    pub(super) fn connect(&mut self) {
        if let Some(c) = self.conn.take() {
            c.task.abort();
        }
        self.generation += 1;
        let (Some(controller), Some(controller_key)) =
            (self.saved.controller.clone(), self.controller_key())
        else {
            self.lifecycle.handle(
                std::time::Instant::now(),
                Input::Refused("no controller configured".into()),
            );
            return;
        };
        self.endpoints = self.all_endpoints();
        self.paths
            .set_local_candidates(std::time::Instant::now(), self.endpoints.clone());
        let same_network = self.mesh_controller == Some(controller_key);
        let hello = ClientHello {
            protocol_version: PROTOCOL_VERSION,
            node_key: self.node_public.to_vec(),
            hostname: self.saved.hostname.clone().unwrap_or_else(hostname),
            auth_key: self
                .auth_key
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_default(),
            endpoints: self.endpoints.iter().map(|&e| Endpoint::from(e)).collect(),
            map_version: if same_network { self.mesh.version } else { 0 },
            relay_feed: false,
            nat: self.nat_kind() as i32,
        };
        self.reported_nat = hello.nat;
        let tls = self.controller_tls(&controller);
        let params = ConnectParams {
            controller,
            controller_key,
            machine_key: self.machine_key.clone(),
            hello,
            timestamp: self.hello_clock.next(),
            tls,
        };
        let (out_tx, out_rx) = mpsc::channel(8);
        let task = tokio::spawn(control_client::run(
            params,
            self.generation,
            self.events_tx.clone(),
            out_rx,
        ));
        self.conn = Some(Connection {
            task,
            outgoing: out_tx,
        });
    }

    pub(super) fn on_control(&mut self, event: ControlEvent) {
        let now = std::time::Instant::now();
        match event {
            ControlEvent::Registered(r) => {
                self.auth_key = None; // registered: the key is not needed again
                let controller_key = self.controller_key();
                if self.mesh_controller != controller_key {
                    // Another network: start from an empty map.
                    self.apply_changes(
                        &self
                            .mesh
                            .peers
                            .values()
                            .cloned()
                            .map(Change::Remove)
                            .collect::<Vec<_>>(),
                    );
                    self.mesh = Mesh::default();
                    self.mesh_controller = controller_key;
                }
                self.set_address(&r);
                self.on_relays(&r.relays);
                info!(name = %r.name, node = r.node_id, "registered");
                self.mesh.me = Some(r);
                self.lifecycle.handle(now, Input::Registered);
            }
            ControlEvent::Map(update) => match self.mesh.apply(&update) {
                Ok((changes, invalid)) => {
                    if invalid > 0 {
                        warn!(invalid, "peers with unusable keys or addresses left out");
                    }
                    self.apply_changes(&changes);
                    self.save_cache();
                    let was_running = self.lifecycle.phase() == Phase::Running;
                    self.lifecycle.handle(now, Input::MapApplied);
                    if !was_running {
                        // What changed since the hello (a STUN answer, the
                        // NAT kind, a port mapping) was held back until now.
                        self.refresh_endpoints();
                    }
                }
                Err(e) => {
                    warn!(error = %e, "map out of sequence, asking for a full one");
                    self.mesh.version = 0;
                    self.lifecycle.handle(now, Input::Lost(e.to_string()));
                }
            },
            ControlEvent::Refused(r) => {
                let reason =
                    RefusedReason::try_from(r.reason).unwrap_or(RefusedReason::Unspecified);
                let text = format!(
                    "controller refused: {} ({})",
                    r.message,
                    reason.as_str_name()
                );
                warn!("{text}");
                match reason {
                    RefusedReason::Internal | RefusedReason::Unspecified => {
                        self.lifecycle.handle(now, Input::Lost(text));
                    }
                    RefusedReason::NodeRemoved => {
                        self.forget_network();
                        self.lifecycle.handle(now, Input::Refused(text));
                    }
                    _ => self.lifecycle.handle(now, Input::Refused(text)),
                }
            }
            ControlEvent::Lost(why) => {
                info!(reason = %why, "control connection lost");
                self.lifecycle.handle(now, Input::Lost(why));
            }
        }
    }

    /// Drops every peer and the cached map (the node was removed).
    pub(super) fn forget_network(&mut self) {
        self.remove_all_peers();
        self.mesh = Mesh::default();
        self.state.forget_map();
    }

    /// The TLS configuration for an `https://` controller, built once;
    /// `None` for plain ones (and when it cannot be built: the error is
    /// logged and the connection then says TLS is not configured).
    pub(super) fn controller_tls(&mut self, url: &str) -> Option<transport::TlsConnector> {
        if !controller_address(url).is_ok_and(|a| a.tls) {
            return None;
        }
        if self.controller_tls.is_none() {
            match transport::connector(self.opts.controller_ca.as_deref()) {
                Ok(c) => self.controller_tls = Some(c),
                Err(e) => warn!(error = %e, "cannot check the controller's TLS certificate"),
            }
        }
        self.controller_tls.clone()
    }
}
