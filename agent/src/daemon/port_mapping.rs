//! The port mapping asked of our gateway (PCP, then NAT-PMP), from the
//! WireGuard socket: its public address is one more endpoint, reported
//! with the others and named in calls. A new gateway or a new address of
//! ours gets a new mapping; the old one is given back.

use super::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use proto_path::portmap::client::Status;
use proto_path::portmap::{Event as MapEvent, PortMapper};
use tracing::{debug, info};

impl Daemon {
    /// Our gateway and our address toward it, if port mapping is on and
    /// there is an IPv4 default route.
    fn gateway(&self) -> Option<(Ipv4Addr, Ipv4Addr)> {
        if !self.opts.port_mapping {
            return None;
        }
        let gateway = netstack::ifaddrs::default_gateway_v4()?;
        let s = std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).ok()?;
        s.connect(SocketAddr::from((
            gateway,
            proto_path::portmap::SERVER_PORT,
        )))
        .ok()?;
        match s.local_addr().ok()?.ip() {
            std::net::IpAddr::V4(ip) => Some((gateway, ip)),
            std::net::IpAddr::V6(_) => None,
        }
    }

    /// Follows the gateway: called whenever our addresses are read.
    pub(super) fn update_port_mapping(&mut self) {
        let port = self.device.listen_port().unwrap_or(self.opts.listen_port);
        let wanted = self.gateway();
        let current = self.portmap.as_ref().map(|m| m.gateway().ip());
        if wanted.map(|(g, _)| std::net::IpAddr::V4(g)) == current {
            return;
        }
        self.release_port_mapping();
        let Some((gateway, client)) = wanted else {
            return;
        };
        let mut nonce = [0u8; 12];
        if cvlan_core::seed::fill(&mut nonce).is_err() {
            return; // no nonce, no request (an off-path guess must fail)
        }
        debug!(%gateway, %client, port, "asking the gateway for a port mapping");
        self.portmap = Some(PortMapper::new(
            Instant::now(),
            gateway,
            client,
            port,
            nonce,
        ));
        self.port_mapping_tick(Instant::now());
    }

    /// Timers, requests and what the gateway's answers changed.
    pub(super) fn port_mapping_tick(&mut self, now: Instant) {
        let Some(m) = &mut self.portmap else { return };
        m.handle_timeout(now);
        self.port_mapping_actions();
    }

    pub(super) fn on_port_mapping(&mut self, from: SocketAddr, datagram: &[u8]) {
        let Some(m) = &mut self.portmap else { return };
        m.handle_input(Instant::now(), from, datagram);
        self.port_mapping_actions();
    }

    fn port_mapping_actions(&mut self) {
        let Some(m) = &mut self.portmap else { return };
        let mut changed = false;
        while let Some(e) = m.poll_event() {
            match e {
                MapEvent::Mapped(mapping) => info!(
                    external = %mapping.external,
                    protocol = mapping.protocol.as_str(),
                    "port mapped by the gateway"
                ),
                MapEvent::Lost => info!("port mapping lost"),
                _ => {}
            }
            changed = true;
        }
        let sends: Vec<_> = std::iter::from_fn(|| m.poll_transmit()).collect();
        for t in sends {
            if let Err(e) = self.device.send_datagram(t.destination, &t.contents) {
                debug!(to = %t.destination, error = %e, "port mapping request not sent");
            }
        }
        if changed {
            self.refresh_endpoints();
        }
    }

    /// Gives the mapping back (lifetime 0) before we go or move.
    pub(super) fn release_port_mapping(&mut self) {
        if let Some(mut m) = self.portmap.take() {
            m.release();
            while let Some(t) = m.poll_transmit() {
                let _ = self.device.send_datagram(t.destination, &t.contents);
            }
        }
    }

    /// The mapped public address, if the gateway gave one.
    pub(super) fn mapped_endpoint(&self) -> Option<SocketAddr> {
        let m = self.portmap.as_ref()?.mapping()?;
        Some(SocketAddr::V4(m.external))
    }

    /// `netcheck`'s line.
    pub(super) fn port_mapping_line(&self) -> String {
        let Some(m) = &self.portmap else {
            return if self.opts.port_mapping {
                "none (no IPv4 default route)".into()
            } else {
                "off (port_mapping = false)".into()
            };
        };
        let gw = m.gateway().ip();
        match m.status() {
            Status::Asking => format!("asking {gw} (PCP, NAT-PMP)"),
            Status::Mapped(mapping) => format!(
                "{} by {gw}: {} (lifetime {} s)",
                mapping.protocol.as_str(),
                mapping.external,
                mapping.lifetime.as_secs()
            ),
            Status::Unavailable { refused: true } => format!("refused by {gw}"),
            Status::Unavailable { refused: false } => {
                format!("none ({gw} answers neither PCP nor NAT-PMP)")
            }
        }
    }
}
