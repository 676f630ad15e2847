//! The port mapping asked of our gateway (PCP, then NAT-PMP), from the
//! WireGuard socket: its public address is one more endpoint, reported
//! with the others and named in calls. A new gateway or a new address of
//! ours gets a new mapping; the old one is given back.

use super::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use proto_path::portmap::client::{Status, RETRY_LATER};
use proto_path::portmap::{Event as MapEvent, PortMapper};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::upnp::{UpnpError, UpnpMapping, LEASE};

/// A UPnP attempt's outcome, for the gateway it was made for.
pub(super) type UpnpResult = (Ipv4Addr, Result<UpnpMapping, UpnpError>);

/// UPnP IGD, asked (in a task: it takes HTTP round trips) only once the
/// gateway has answered neither PCP nor NAT-PMP.
pub(super) struct Upnp {
    pub(super) mapping: Option<UpnpMapping>,
    /// When to ask next (again after a failure, or to renew the lease).
    pub(super) next: Option<Instant>,
    running: bool,
    last_error: Option<String>,
    done: mpsc::Sender<UpnpResult>,
}

impl Upnp {
    pub(super) fn new(done: mpsc::Sender<UpnpResult>) -> Self {
        Self {
            mapping: None,
            next: None,
            running: false,
            last_error: None,
            done,
        }
    }
}

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
        self.upnp.next = None;
        if let Some(old) = self.upnp.mapping.take() {
            tokio::spawn(async move { crate::upnp::unmap(&old).await });
        }
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
        self.upnp_if_due(now);
    }

    /// Starts a UPnP attempt when PCP and NAT-PMP got nothing and one is
    /// due (the first, a retry, or the lease's renewal).
    fn upnp_if_due(&mut self, now: Instant) {
        let Some(m) = &self.portmap else { return };
        let neither = matches!(m.status(), Status::Unavailable { .. });
        if !neither || self.upnp.running || self.upnp.next.is_some_and(|t| now < t) {
            return;
        }
        let (gateway, client, port) = (
            match m.gateway().ip() {
                std::net::IpAddr::V4(g) => g,
                std::net::IpAddr::V6(_) => return,
            },
            m.client(),
            m.internal_port(),
        );
        self.upnp.running = true;
        self.upnp.next = None;
        let done = self.upnp.done.clone();
        tokio::spawn(async move {
            let result = crate::upnp::map(gateway, client, port).await;
            let _ = done.send((gateway, result)).await;
        });
    }

    pub(super) fn on_upnp(&mut self, (gateway, result): UpnpResult) {
        self.upnp.running = false;
        let now = Instant::now();
        let current = self.portmap.as_ref().map(|m| m.gateway().ip());
        if current != Some(std::net::IpAddr::V4(gateway)) {
            return; // for a gateway we have left
        }
        let before = self.upnp.mapping.as_ref().map(|m| m.external);
        match result {
            Ok(m) => {
                if before != Some(m.external) {
                    info!(external = %m.external, "port mapped by the gateway (UPnP)");
                }
                self.upnp.mapping = Some(m);
                self.upnp.last_error = None;
                self.upnp.next = Some(now + std::time::Duration::from_secs(u64::from(LEASE / 2)));
            }
            Err(e) => {
                debug!(error = %e, "no UPnP port mapping");
                self.upnp.mapping = None;
                self.upnp.last_error = Some(e.to_string());
                self.upnp.next = Some(now + RETRY_LATER);
            }
        }
        if before != self.upnp.mapping.as_ref().map(|m| m.external) {
            self.refresh_endpoints();
        }
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
        let by_pcp_or_pmp = self.portmap.as_ref().and_then(|m| m.mapping());
        let external =
            by_pcp_or_pmp
                .map(|m| m.external)
                .or(self.upnp.mapping.as_ref().map(|m| m.external))?;
        Some(SocketAddr::V4(external))
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
        if let Some(u) = &self.upnp.mapping {
            return format!("UPnP by {gw}: {} (lease {LEASE} s)", u.external);
        }
        match m.status() {
            Status::Asking => format!("asking {gw} (PCP, NAT-PMP)"),
            Status::Mapped(mapping) => format!(
                "{} by {gw}: {} (lifetime {} s)",
                mapping.protocol.as_str(),
                mapping.external,
                mapping.lifetime.as_secs()
            ),
            Status::Unavailable { refused: true } => format!("refused by {gw}"),
            Status::Unavailable { refused: false } => match &self.upnp.last_error {
                Some(e) => format!("none ({gw} answers neither PCP nor NAT-PMP; {e})"),
                None => format!("none by PCP or NAT-PMP from {gw}; asking UPnP"),
            },
        }
    }
}
