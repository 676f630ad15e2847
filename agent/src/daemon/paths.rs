//! Paths to peers: the path machine's probes and choices carried out on
//! the device, the relay and its proxies, our own endpoints.

use super::*;
use std::net::{IpAddr, SocketAddr};

use proto_control::messages::{ClientBody, Endpoint, NatKind, RelayInfo, UpdateEndpoints};
use tracing::{debug, info};

use crate::control_client::controller_address;
use crate::lifecycle::Phase;
use crate::mesh::Change;
use crate::relay_path::{choose_home, RelayLink};
use crate::socket_demux::{classify, SocketDatagram};
use proto_path::Event as PathEvent;

impl Daemon {
    pub(super) fn forget_path(&mut self, key: &[u8; 32]) {
        self.paths.remove_peer(key);
        if let Some(r) = &self.relay {
            r.remove_peer(key);
        }
    }

    /// Puts back every direct path the device left for the relay proxy
    /// by following a relayed packet (see `path_view`).
    pub(super) fn reassert_direct_paths(&mut self) {
        for peer in self.device.peers() {
            let key = peer.public_key.0;
            let proxy = self.relay.as_ref().and_then(|r| r.proxy_of(&key));
            let chosen = self.paths.path(&key);
            if let Some(direct) = crate::path_view::to_reassert(chosen, peer.endpoint, proxy) {
                if self.device.set_endpoint(&key, direct) {
                    info!(peer = %hex::encode(&key[..4]), endpoint = %direct, "direct path put back (the device had followed a relayed packet)");
                }
            }
        }
    }

    /// A datagram on the WireGuard socket that is not WireGuard's: a STUN
    /// answer (by its magic cookie) or a path probe (anything else is
    /// dropped by the path machine).
    pub(super) fn on_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = std::time::Instant::now();
        match classify(from, datagram) {
            SocketDatagram::Stun => {
                let nat = self.nat_kind();
                if self.reflexive.handle_input(now, from, datagram) {
                    info!(reflexive = ?self.reflexive.report().addresses, "reflexive addresses changed");
                    self.refresh_endpoints();
                } else if self.nat_kind() != nat {
                    self.refresh_endpoints();
                }
            }
            SocketDatagram::PathProbe => self.paths.handle_input(now, from, datagram),
            SocketDatagram::PortMapping => self.on_port_mapping(from, datagram),
            // WireGuard's never reaches us (the device keeps it); the
            // rest is nothing of ours.
            SocketDatagram::WireGuard | SocketDatagram::Other => {}
        }
    }

    /// Carries out the path manager's decisions on the device, and sends
    /// the STUN queries (both from the WireGuard socket).
    pub(super) fn path_actions(&mut self) {
        while let Some(t) = self.paths.poll_transmit() {
            if let Err(e) = self.device.send_datagram(t.destination, &t.contents) {
                debug!(to = %t.destination, error = %e, "probe not sent");
            }
        }
        while let Some(t) = self.reflexive.poll_transmit() {
            if let Err(e) = self.device.send_datagram(t.destination, &t.contents) {
                debug!(to = %t.destination, error = %e, "STUN query not sent");
            }
        }
        while let Some(event) = self.paths.poll_event() {
            let (peer, endpoint) = match event {
                PathEvent::UseEndpoint { peer, endpoint } => (peer, endpoint),
                PathEvent::DebugPong {
                    peer,
                    from,
                    via_relay,
                    rtt,
                } => {
                    self.on_debug_pong(peer, from, via_relay, rtt);
                    continue;
                }
                _ => continue,
            };
            // Only for a peer the device still has (a `public_key` line
            // would otherwise create it).
            if !self.mesh.peers.values().any(|p| p.node_key == peer) {
                continue;
            }
            if self.device.set_endpoint(&peer, endpoint) {
                info!(peer = %hex::encode(&peer[..4]), %endpoint, "path changed");
            }
        }
    }

    /// The controller named the network's relays: pick the home relay
    /// (lowest STUN round trip) without holding up anything else.
    pub(super) fn on_relays(&mut self, relays: &[RelayInfo]) {
        if relays == self.relays.as_slice() {
            return;
        }
        self.relays = relays.to_vec();
        if relays.is_empty() {
            self.relay = None;
            self.set_relay_stun(Vec::new());
            return;
        }
        let (relays, tx) = (relays.to_vec(), self.relay_choice.clone());
        tokio::spawn(async move {
            let home = choose_home(&relays).await.unwrap_or(0);
            let mut stun = Vec::new();
            for r in &relays {
                if let Ok(Some(a)) = tokio::net::lookup_host(&r.stun).await.map(|mut a| a.next()) {
                    stun.push(a);
                }
            }
            let _ = tx.send((relays, home, stun)).await;
        });
    }

    /// The STUN servers our reflexive addresses come from: the relays'
    /// and the configured ones.
    fn set_relay_stun(&mut self, stun: Vec<SocketAddr>) {
        self.relay_stun = stun;
        let mut servers = self.relay_stun.clone();
        servers.extend(self.opts.stun_servers.iter().copied());
        self.reflexive
            .set_servers(std::time::Instant::now(), servers);
    }

    pub(super) fn start_relay(&mut self, relays: &[RelayInfo], home: usize, stun: Vec<SocketAddr>) {
        if relays != self.relays.as_slice() {
            return; // superseded
        }
        self.set_relay_stun(stun);
        let Some(info) = relays.get(home) else { return };
        if self
            .relay
            .as_ref()
            .is_some_and(|r| r.address == info.address)
        {
            return;
        }
        let port = self.device.listen_port().unwrap_or(self.opts.listen_port);
        self.relay = RelayLink::start(
            info,
            self.node_key.clone(),
            port,
            self.opts.relay_tls.clone(),
            self.hello_clock.clone(),
        );
        info!(relay = %info.address, "home relay");
        // Every peer gets its relay path (and starts on it if not direct).
        let peers: Vec<Change> = self.mesh.peers.values().cloned().map(Change::Add).collect();
        self.apply_changes(&peers);
    }

    /// Local addresses and the listening port: the route toward the
    /// controller first, then every other address that is up.
    pub(super) fn local_endpoints(&self) -> Vec<SocketAddr> {
        let port = self.device.listen_port().unwrap_or(self.opts.listen_port);
        let mut ips: Vec<IpAddr> = Vec::new();
        let controller_ip = self
            .saved
            .controller
            .as_deref()
            .and_then(|c| controller_address(c).ok())
            .and_then(|a| a.host_port.parse::<SocketAddr>().ok());
        if let Some(c) = controller_ip {
            let any: SocketAddr = if c.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            if let Ok(s) = std::net::UdpSocket::bind(any) {
                if s.connect(c).is_ok() {
                    if let Ok(local) = s.local_addr() {
                        if !local.ip().is_loopback() {
                            ips.push(local.ip());
                        }
                    }
                }
            }
        }
        let overlay = self.address;
        for a in netstack::ifaddrs::local_addresses().unwrap_or_default() {
            let in_overlay = match (a.ip, overlay) {
                (IpAddr::V4(ip), Some((net, len))) => {
                    len > 0 && (u32::from(ip) ^ u32::from(net)) >> (32 - u32::from(len)) == 0
                }
                _ => false,
            };
            let link_local = matches!(a.ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
            if a.loopback
                || link_local
                || in_overlay
                || a.interface == self.opts.interface
                || ips.contains(&a.ip)
            {
                continue;
            }
            ips.push(a.ip);
        }
        ips.truncate(proto_control::messages::MAX_ENDPOINTS);
        ips.into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect()
    }

    /// Our endpoints: the local ones, the one our gateway maps for us,
    /// then the reflexive ones STUN learnt on the WireGuard socket.
    pub(super) fn all_endpoints(&mut self) -> Vec<SocketAddr> {
        let local = self.local_endpoints();
        if local != self.local {
            // Moved: the NAT in front may be another one now.
            let gone = self.local.iter().any(|a| !local.contains(a));
            self.local = local.clone();
            self.reflexive.refresh(std::time::Instant::now());
            if gone {
                self.reconnect_after_move();
            }
        }
        self.update_port_mapping();
        let mut all = local;
        if let Some(mapped) = self.mapped_endpoint() {
            if !all.contains(&mapped) {
                all.push(mapped);
            }
        }
        for r in self.reflexive.report().addresses {
            if !all.contains(&r) {
                all.push(r);
            }
        }
        all.truncate(proto_control::messages::MAX_ENDPOINTS);
        all
    }

    /// What our STUN answers say of the NAT in front of us.
    pub(super) fn nat_kind(&self) -> NatKind {
        self.reflexive.report().nat_kind(&self.local)
    }

    /// An address of ours went away: TCP connections from it (to the
    /// controller, to the relay) are dead without knowing it, and what we
    /// send on them is lost. Both start over at once (the control
    /// connection after the lifecycle's first short backoff, from
    /// whatever address we have by then) instead of waiting for their
    /// timeouts.
    fn reconnect_after_move(&mut self) {
        if self.lifecycle.phase() != Phase::Running || self.conn.is_none() {
            return;
        }
        info!("an address of ours went away: reconnecting to the controller and the relay");
        self.lifecycle.handle(
            std::time::Instant::now(),
            crate::lifecycle::Input::Lost("local address changed".into()),
        );
        if self.relay.take().is_some() {
            let relays = std::mem::take(&mut self.relays);
            self.on_relays(&relays);
        }
    }

    pub(super) fn refresh_endpoints(&mut self) {
        let now = self.all_endpoints();
        self.paths
            .set_local_candidates(std::time::Instant::now(), now.clone());
        if self.lifecycle.phase() != Phase::Running {
            return;
        }
        let nat = self.nat_kind() as i32;
        if now != self.endpoints || nat != self.reported_nat {
            info!(endpoints = ?now, nat = NatKind::word(nat), "endpoints changed");
            self.endpoints = now.clone();
            self.reported_nat = nat;
            if let Some(c) = &self.conn {
                let body = ClientBody::Endpoints(UpdateEndpoints {
                    endpoints: now.into_iter().map(Endpoint::from).collect(),
                    nat,
                });
                let _ = c.outgoing.try_send(body);
            }
        }
    }
}
