//! The vrouter's core, without IO: datagrams from UDP 500/4500 and
//! packets from tenants' TUN devices go in, datagrams and packets come
//! out. It owns the IKE endpoint, every Child SA's proto-esp state, and
//! one policy database per tenant, so two tenants may use the same
//! subnets without ever seeing each other's traffic.
//!
//! Packets can also bypass the owner's lock: `route` and `inbound_path`
//! hand out a Child SA's [`OutboundPath`] / [`InboundPath`], which seal
//! and open on their own (the daemon's data path does this; the
//! `handle_tun` / `handle_udp` calls below do the same for tests and for
//! anything not worth a fast path).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_esp::spd::Spd;
use proto_esp::udp_encap::{classify, Udp4500};
use proto_ikev2::{DownReason, Endpoint, Event, SaHandle, Transmit};
use tracing::{info, warn};

use crate::config::{Settings, Tunnel};
pub use crate::datapath::Drops;
use crate::datapath::{DropCounters, InboundPath, OutboundPath, Traffic, HEADROOM, TAILROOM};

pub const IKE_PORT: u16 = 500;
pub const NAT_T_PORT: u16 = 4500;
/// Anti-replay window of every inbound SA.
const REPLAY_WINDOW: u64 = 4096;
/// A tunnel we initiate that went down is tried again after this long.
const RETRY: Duration = Duration::from_secs(5);
/// An inbound SA replaced by a rekey still opens packets this long after
/// its delete: the peer may have sealed some just before (strongSwan's
/// delete_rekeyed_delay is the same 5 s).
const REKEYED_GRACE: Duration = Duration::from_secs(5);
/// A refused request of one kind is logged at most this often per tunnel.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Something to do in the outside world.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// A datagram from our port 500 or 4500.
    Udp(Transmit),
    /// A decrypted packet for a tenant's TUN device.
    Tun { tenant: usize, packet: Vec<u8> },
    /// A raw ESP packet (IP protocol 50) for a peer with no NAT between
    /// us, on a tunnel with `encap = false`.
    Esp {
        destination: IpAddr,
        contents: Vec<u8>,
    },
}

/// Counters of one tunnel (a snapshot).
#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelStats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub up: bool,
    pub child_sas: u32,
    pub ike_rekeys: u64,
}

/// What the control side keeps of a tunnel; traffic is counted apart.
#[derive(Debug, Default, Clone, Copy)]
struct TunnelState {
    up: bool,
    child_sas: u32,
    ike_rekeys: u64,
    /// Requests of the peer's we refused.
    refused: u64,
}

/// One configured tunnel's running state.
#[derive(Debug, Clone, Default)]
struct PerTunnel {
    state: TunnelState,
    traffic: Arc<Traffic>,
    /// When to initiate again after a failure.
    retry_at: Option<Instant>,
    /// An operator took it down: neither answered nor initiated until
    /// taken up again.
    admin_down: bool,
}

struct Inbound {
    tunnel: usize,
    path: Arc<InboundPath>,
    /// A rekey replaced this SA: its delete starts a grace period.
    superseded: bool,
    /// When a deleted, superseded SA is finally dropped; meanwhile its SPI
    /// stays held so no new SA can be given it.
    retire_at: Option<(Instant, Option<proto_ikev2::SpiClaim>)>,
}

struct Outbound {
    tunnel: usize,
    path: Arc<OutboundPath>,
}

pub struct Gateway {
    settings: Settings,
    endpoint: Endpoint,
    /// Which tunnel each IKE SA serves.
    sa_tunnel: HashMap<SaHandle, usize>,
    /// The identity each authenticated IKE SA's peer proved, and when:
    /// a newer IKE SA of the same tunnel and identity replaces older ones.
    sa_peer: HashMap<SaHandle, (proto_ikev2::Identity, Instant)>,
    /// When a refusal of each kind was last logged, per tunnel, and how
    /// many were left out since.
    refusal_log: HashMap<(usize, &'static str, u16), (Instant, u64)>,
    /// Child SAs by our inbound SPI, which names a Child SA here on both
    /// directions: it is unique (the endpoint's SPI table sees to it),
    /// while the outbound SPI is the peer's choice and two peers may well
    /// choose the same one.
    inbound: HashMap<u32, Inbound>,
    outbound: HashMap<u32, Outbound>,
    /// Per tenant; policies name the Child SA (by our inbound SPI).
    spds: Vec<Spd<u32>>,
    /// Child SAs the peer rekeyed: the policy moves to the new one when
    /// the old one is deleted.
    switch_on_delete: HashMap<u32, u32>,
    /// What is kept per configured tunnel, in `settings.tunnels` order.
    tunnels: Vec<PerTunnel>,
    drops: Arc<DropCounters>,
    out: VecDeque<Output>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("tunnels", &self.settings.tunnels.len())
            .field("child_sas", &self.inbound.len())
            .finish_non_exhaustive()
    }
}

fn same_config(t: &Tunnel, c: &Arc<proto_ikev2::Config>) -> bool {
    same_config_arc(&t.ike, c)
}

fn same_config_arc(a: &Arc<proto_ikev2::Config>, b: &Arc<proto_ikev2::Config>) -> bool {
    Arc::ptr_eq(a, b)
}

impl Gateway {
    /// A gateway answering the configured peers; `start` initiates.
    pub fn new(settings: Settings, seed: [u8; 32]) -> Self {
        let endpoint = Endpoint::new(settings.endpoint, seed);
        let n = settings.tunnels.len();
        let mut gw = Self {
            spds: settings.tenants.iter().map(|_| Spd::default()).collect(),
            settings,
            endpoint,
            sa_tunnel: HashMap::new(),
            sa_peer: HashMap::new(),
            refusal_log: HashMap::new(),
            inbound: HashMap::new(),
            outbound: HashMap::new(),
            switch_on_delete: HashMap::new(),
            // Not `vec![..; n]`: that would clone one `Arc<Traffic>` into every tunnel.
            tunnels: (0..n).map(|_| PerTunnel::default()).collect(),
            drops: Arc::default(),
            out: VecDeque::new(),
        };
        gw.set_responders();
        gw
    }

    /// The endpoint answers the peers of every tunnel not taken down.
    fn set_responders(&mut self) {
        self.endpoint.clear_responders();
        for (t, run) in self.settings.tunnels.iter().zip(&self.tunnels) {
            if !run.admin_down {
                self.endpoint.add_responder(Some(t.remote), t.ike.clone());
            }
        }
    }

    fn tunnel_index(&self, id: &str) -> Result<usize, String> {
        self.settings
            .tunnels
            .iter()
            .position(|t| t.id == id)
            .ok_or_else(|| format!("no tunnel {id:?} in the configuration"))
    }

    /// Takes a tunnel down: its IKE SAs are deleted (the peer is told),
    /// and it is neither answered nor initiated until `up`.
    pub fn down(&mut self, now: Instant, id: &str) -> Result<String, String> {
        let i = self.tunnel_index(id)?;
        self.tunnels[i].admin_down = true;
        self.tunnels[i].retry_at = None;
        self.set_responders();
        let config = self.settings.tunnels[i].ike.clone();
        let live: Vec<SaHandle> = self
            .endpoint
            .sas()
            .filter(|(_, sa)| {
                same_config_arc(&config, sa.config()) && sa.phase() != proto_ikev2::Phase::Closed
            })
            .map(|(h, _)| h)
            .collect();
        for h in &live {
            self.endpoint.delete(now, *h);
        }
        self.drain(now);
        info!(tunnel = %id, ike_sas = live.len(), "taken down by the operator");
        Ok(format!("{id}: down ({} IKE SA deleted)\n", live.len()))
    }

    /// Brings a tunnel taken down back: answered again, and initiated if
    /// it is ours to initiate.
    pub fn up(&mut self, now: Instant, id: &str) -> Result<String, String> {
        let i = self.tunnel_index(id)?;
        if !std::mem::replace(&mut self.tunnels[i].admin_down, false) {
            return Ok(format!("{id}: already up\n"));
        }
        self.set_responders();
        self.initiate(now, i);
        self.drain(now);
        info!(tunnel = %id, "taken up by the operator");
        Ok(format!("{id}: up\n"))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn stats(&self) -> Vec<TunnelStats> {
        self.tunnels
            .iter()
            .map(|run| (&run.state, &run.traffic))
            .map(|(s, t)| TunnelStats {
                bytes_in: t.bytes_in.load(Relaxed),
                bytes_out: t.bytes_out.load(Relaxed),
                packets_in: t.packets_in.load(Relaxed),
                packets_out: t.packets_out.load(Relaxed),
                up: s.up,
                child_sas: s.child_sas,
                ike_rekeys: s.ike_rekeys,
            })
            .collect()
    }

    pub fn drops(&self) -> Drops {
        self.drops.snapshot()
    }

    /// Brings up the tunnels we initiate.
    pub fn start(&mut self, now: Instant) {
        for i in 0..self.settings.tunnels.len() {
            self.initiate(now, i);
        }
        self.drain(now);
    }

    fn initiate(&mut self, now: Instant, i: usize) {
        let t = &self.settings.tunnels[i];
        let Some(peer) = t.initiate_to.filter(|_| !self.tunnels[i].admin_down) else {
            return;
        };
        let local = SocketAddr::new(self.settings.listen, IKE_PORT);
        let h = self
            .endpoint
            .connect(now, t.ike.clone(), local, SocketAddr::new(peer, IKE_PORT));
        self.sa_tunnel.insert(h, i);
        info!(tunnel = %t.id, %peer, "initiating");
    }

    pub fn set_unix_time(&mut self, secs: u64) {
        self.endpoint.set_unix_time(secs);
    }

    /// Draws inbound SPIs from `table` (tests narrow it to force
    /// collisions); call before `start`.
    pub fn set_spi_table(&mut self, table: proto_ikev2::SpiTable) {
        self.endpoint.set_spi_table(table);
    }

    /// The inbound SPIs of every Child SA installed (including those kept
    /// a little after their delete).
    pub fn inbound_spis(&self) -> Vec<u32> {
        self.inbound.keys().copied().collect()
    }

    /// Rekeys every Child SA of every IKE SA now.
    pub fn rekey_all(&mut self, now: Instant) {
        let children: Vec<(SaHandle, u32)> = self
            .endpoint
            .sas()
            .flat_map(|(h, sa)| sa.child_spis().into_iter().map(move |(i, _)| (h, i)))
            .collect();
        for (h, spi_in) in children {
            self.endpoint.rekey_child(now, h, spi_in);
        }
        self.drain(now);
    }

    /// A raw ESP packet (its IP header removed) arrived.
    pub fn handle_esp(&mut self, esp: &[u8]) {
        self.esp_in(esp);
    }

    /// A datagram arrived on UDP port `to.port()`.
    pub fn handle_udp(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        if to.port() == NAT_T_PORT {
            match classify(payload) {
                Udp4500::Ike(m) => self.endpoint.handle_input(now, from, to, m),
                Udp4500::Esp(_) => self.esp_in(payload),
                Udp4500::Keepalive | Udp4500::Invalid => {}
            }
        } else {
            self.endpoint.handle_input(now, from, to, payload);
        }
        self.drain(now);
    }

    fn esp_in(&mut self, datagram: &[u8]) {
        let Some(path) = self.inbound_path(datagram) else {
            return;
        };
        let mut buf = datagram.to_vec();
        if let Some(inner) = path.open(&mut buf) {
            // The decrypted packet moves to the front of the buffer it was
            // opened in: one copy per packet, not two.
            let len = inner.len();
            buf.copy_within(inner, 0);
            buf.truncate(len);
            self.out.push_back(Output::Tun {
                tenant: path.tenant,
                packet: buf,
            });
        }
    }

    /// The SA that opens an ESP packet (by its SPI), if we have it.
    pub fn inbound_path(&self, esp: &[u8]) -> Option<Arc<InboundPath>> {
        let found = esp
            .first_chunk::<4>()
            .and_then(|spi| self.inbound.get(&u32::from_be_bytes(*spi)));
        if found.is_none() {
            self.drops.unknown_spi.fetch_add(1, Relaxed);
        }
        found.map(|i| i.path.clone())
    }

    /// The SA a tenant's packet must be sealed with, if a policy covers it.
    pub fn route(&self, tenant: usize, packet: &[u8]) -> Option<Arc<OutboundPath>> {
        let found = self
            .spds
            .get(tenant)
            .and_then(|s| s.outbound(packet))
            .and_then(|spi| self.outbound.get(spi));
        if found.is_none() {
            self.drops.no_policy.fetch_add(1, Relaxed);
        }
        found.map(|o| o.path.clone())
    }

    /// A packet a tenant's TUN device gave us to send.
    pub fn handle_tun(&mut self, tenant: usize, packet: &[u8]) {
        let Some(path) = self.route(tenant, packet) else {
            return;
        };
        let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
        if let Ok(sealed) = path.seal(&mut buf, packet.len()) {
            let contents = buf[sealed].to_vec();
            self.out.push_back(if path.encap {
                Output::Udp(Transmit::from_to(path.local, path.peer, contents))
            } else {
                Output::Esp {
                    destination: path.peer.ip(),
                    contents,
                }
            });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.inbound
            .retain(|_, i| i.retire_at.as_ref().is_none_or(|(t, _)| now < *t));
        for i in 0..self.tunnels.len() {
            if self.tunnels[i].retry_at.is_some_and(|t| now >= t) {
                self.tunnels[i].retry_at = None;
                self.initiate(now, i);
            }
        }
        self.drain(now);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn tunnel_of(&mut self, h: SaHandle) -> Option<usize> {
        if let Some(&t) = self.sa_tunnel.get(&h) {
            return Some(t);
        }
        let sa = self.endpoint.sa(h)?;
        let t = self
            .settings
            .tunnels
            .iter()
            .position(|t| same_config(t, sa.config()))?;
        self.sa_tunnel.insert(h, t);
        Some(t)
    }

    fn drain(&mut self, now: Instant) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.out.push_back(Output::Udp(t));
        }
        while let Some(r) = self.endpoint.poll_refusal() {
            let tunnel = self
                .settings
                .tunnels
                .iter()
                .find(|t| same_config(t, &r.config))
                .map_or("?", |t| t.id.as_str());
            warn!(tunnel, peer = %r.peer, reason = r.reason, notify = ?r.notify, "IKE_SA_INIT refused");
        }
        while let Some((h, e)) = self.endpoint.poll_event() {
            let Some(tunnel) = self.tunnel_of(h) else {
                continue;
            };
            self.event(now, h, tunnel, e);
        }
    }

    /// Installs a Child SA; `route` puts its policy in the tenant's SPD
    /// now (else it takes over its predecessor's when that is deleted).
    fn install(&mut self, h: SaHandle, tunnel: usize, c: proto_ikev2::ChildSa, route: bool) {
        let (Ok(inb), Ok(outb)) = (c.inbound(REPLAY_WINDOW), c.outbound()) else {
            warn!(tunnel = %self.settings.tunnels[tunnel].id, "Child SA keys rejected");
            return;
        };
        let Some(sa) = self.endpoint.sa(h) else {
            return;
        };
        // The endpoint's SPI table makes this impossible; never let a new
        // SA take another's place (another tenant's, even) if it happens.
        if self.inbound.contains_key(&c.spi_in) {
            warn!(tunnel = %self.settings.tunnels[tunnel].id, spi_in = format_args!("{:08x}", c.spi_in), "Child SA refused: its inbound SPI is in use");
            return;
        }
        let (local, peer) = (sa.local(), sa.remote());
        let tenant = self.settings.tunnels[tunnel].tenant;
        if route {
            self.spds[tenant].push(c.policy(c.spi_in));
        }
        let traffic = &self.tunnels[tunnel].traffic;
        let path = InboundPath::new(
            inb,
            tenant,
            c.policy(()),
            traffic.clone(),
            self.drops.clone(),
        );
        self.inbound.insert(
            c.spi_in,
            Inbound {
                tunnel,
                path: Arc::new(path),
                superseded: false,
                retire_at: None,
            },
        );
        let path = OutboundPath::new(outb, c.encap, local, peer, traffic.clone());
        self.outbound.insert(
            c.spi_in,
            Outbound {
                tunnel,
                path: Arc::new(path),
            },
        );
        self.tunnels[tunnel].state.child_sas += 1;
    }

    fn event(&mut self, now: Instant, h: SaHandle, tunnel: usize, e: Event) {
        let id = self.settings.tunnels[tunnel].id.clone();
        match e {
            Event::IkeSaUp {
                remote_id,
                suite,
                nat_local,
                nat_remote,
            } => {
                self.tunnels[tunnel].state.up = true;
                info!(tunnel = %id, %remote_id, ?suite, nat_local, nat_remote, "tunnel up");
                self.replace_older(now, h, tunnel, &remote_id);
                self.sa_peer.insert(h, (remote_id, now));
            }
            Event::PeerRequestRefused {
                what,
                notify,
                reason,
            } => {
                self.tunnels[tunnel].state.refused += 1;
                let peer = self.endpoint.sa(h).map(|sa| sa.remote());
                let key = (tunnel, what, notify);
                let last = self.refusal_log.get(&key).copied();
                match last {
                    Some((at, suppressed))
                        if now.saturating_duration_since(at) < REFUSAL_LOG_EVERY =>
                    {
                        self.refusal_log.insert(key, (at, suppressed + 1));
                    }
                    _ => {
                        let suppressed = last.map_or(0, |(_, n)| n);
                        warn!(tunnel = %id, peer = ?peer, exchange = "CREATE_CHILD_SA", what, notify, %reason, suppressed, "refused the peer's request");
                        self.refusal_log.insert(key, (now, 0));
                    }
                }
            }
            Event::ChildSaUp(c) => {
                info!(tunnel = %id, spi_in = format_args!("{:08x}", c.spi_in), spi_out = format_args!("{:08x}", c.spi_out), local = ?c.local_ts, remote = ?c.remote_ts, "Child SA installed");
                self.install(h, tunnel, c, true);
            }
            Event::ChildSaRekeyed {
                old_spi_in,
                new,
                send_now,
            } => {
                info!(tunnel = %id, old = format_args!("{old_spi_in:08x}"), new = format_args!("{:08x}", new.spi_in), send_now, "Child SA rekeyed");
                let tenant = self.settings.tunnels[tunnel].tenant;
                let known = self.inbound.get_mut(&old_spi_in).map(|old| {
                    old.superseded = true;
                });
                let new_in = new.spi_in;
                match known {
                    // We started it: the peer has the new SA, send on it.
                    Some(()) if send_now => {
                        self.spds[tenant].remove_sa(&old_spi_in);
                        if self.outbound.remove(&old_spi_in).is_some() {
                            self.tunnels[tunnel].state.child_sas =
                                self.tunnels[tunnel].state.child_sas.saturating_sub(1);
                        }
                        self.install(h, tunnel, new, true);
                    }
                    // The peer started it: send on the old SA until the
                    // peer deletes it (RFC 7296 §2.8).
                    Some(()) => {
                        self.install(h, tunnel, new, false);
                        self.switch_on_delete.insert(old_spi_in, new_in);
                    }
                    None => self.install(h, tunnel, new, true),
                }
            }
            Event::ChildSaDeleted { spi_in, .. } => {
                let tenant = self.settings.tunnels[tunnel].tenant;
                let spis = self.endpoint.spi_table().clone();
                match self.inbound.get_mut(&spi_in) {
                    Some(i) if i.superseded => {
                        i.retire_at = Some((now + REKEYED_GRACE, spis.hold(spi_in)));
                    }
                    _ => {
                        self.inbound.remove(&spi_in);
                    }
                }
                if self.outbound.remove(&spi_in).is_some() {
                    self.tunnels[tunnel].state.child_sas =
                        self.tunnels[tunnel].state.child_sas.saturating_sub(1);
                }
                match self.switch_on_delete.remove(&spi_in) {
                    Some(next) => self.spds[tenant].replace_sa(&spi_in, next),
                    None => self.spds[tenant].remove_sa(&spi_in),
                }
            }
            Event::ChildSaFailed { notify } => {
                let peer = self.endpoint.sa(h).map(|sa| sa.remote());
                warn!(tunnel = %id, peer = ?peer, notify, "the Child SA was refused (14 NO_PROPOSAL_CHOSEN, 35 NO_ADDITIONAL_SAS, 38 TS_UNACCEPTABLE)");
            }
            Event::IkeSaRekeyed { .. } => {
                self.tunnels[tunnel].state.ike_rekeys += 1;
                info!(tunnel = %id, "IKE SA rekeyed");
            }
            Event::IkeSaDown(reason) => {
                // Another IKE SA of the tunnel may still be up (a second
                // attempt failing, or one superseded).
                let others = |phase: fn(proto_ikev2::Phase) -> bool| {
                    self.endpoint.sas().any(|(o, sa)| {
                        o != h
                            && same_config(&self.settings.tunnels[tunnel], sa.config())
                            && phase(sa.phase())
                    })
                };
                self.tunnels[tunnel].state.up = others(|p| p == proto_ikev2::Phase::Established);
                let live = others(|p| p != proto_ikev2::Phase::Closed);
                match &reason {
                    DownReason::AuthenticationFailed(why) => {
                        warn!(tunnel = %id, reason = %why, "authentication failed")
                    }
                    other => info!(tunnel = %id, reason = ?other, "tunnel down"),
                }
                self.sa_tunnel.remove(&h);
                self.sa_peer.remove(&h);
                if self.settings.tunnels[tunnel].initiate_to.is_some()
                    && !self.tunnels[tunnel].admin_down
                    && !live
                {
                    self.tunnels[tunnel].retry_at = Some(now + RETRY);
                }
            }
            _ => {}
        }
    }

    /// A peer that dropped its IKE SA without a DELETE and came back (some
    /// do, every few seconds) leaves the old one behind: the newest IKE SA
    /// of a tunnel and identity replaces the others (strongSwan's
    /// `unique = replace`, and what RFC 7296 §2.4's INITIAL_CONTACT asks).
    fn replace_older(
        &mut self,
        now: Instant,
        newest: SaHandle,
        tunnel: usize,
        remote_id: &proto_ikev2::Identity,
    ) {
        // Only when the peer came to us: two IKE SAs started by both sides
        // at once must not each delete the other's.
        if self
            .endpoint
            .sa(newest)
            .is_none_or(|sa| sa.role() != proto_ikev2::Role::Responder)
        {
            return;
        }
        let older: Vec<SaHandle> = self
            .sa_peer
            .iter()
            .filter(|(h, (id, _))| {
                **h != newest && id == remote_id && self.sa_tunnel.get(*h) == Some(&tunnel)
            })
            .map(|(h, _)| *h)
            .collect();
        for h in older {
            info!(tunnel = %self.settings.tunnels[tunnel].id, %remote_id, old = format_args!("{h:016x}"), "a newer IKE SA of the same peer replaces this one");
            self.sa_peer.remove(&h);
            self.endpoint.replace(now, h);
        }
    }

    /// Takes a new configuration without disturbing tunnels it leaves
    /// unchanged (same id, same fingerprint): their SAs, policies and
    /// counters carry on. Removed or changed tunnels are deleted (their
    /// peers are told); new ones are answered, and initiated if so
    /// configured. Tenants and the listen address need a restart.
    pub fn reload(&mut self, now: Instant, new: Settings) -> Result<String, String> {
        if new.listen != self.settings.listen {
            return Err("listen changed: restart the vrouter to apply".into());
        }
        let same_tenants = new.tenants.len() == self.settings.tenants.len()
            && new
                .tenants
                .iter()
                .zip(&self.settings.tenants)
                .all(|(a, b)| a.name == b.name && a.tun == b.tun && a.table == b.table);
        if !same_tenants {
            return Err("tenants changed: restart the vrouter to apply".into());
        }
        // Where each old tunnel goes: the index of its unchanged self.
        let kept: Vec<Option<usize>> = self
            .settings
            .tunnels
            .iter()
            .map(|old| {
                new.tunnels
                    .iter()
                    .position(|t| t.id == old.id && t.fingerprint == old.fingerprint)
            })
            .collect();
        let mut new = new;
        for (old, to) in self.settings.tunnels.iter().zip(&kept) {
            if let Some(i) = to {
                // Keep the very same IKE config: live SAs point at it.
                new.tunnels[*i].ike = old.ike.clone();
            }
        }
        // Delete what goes away.
        let gone: Vec<SaHandle> = self
            .endpoint
            .sas()
            .filter(|(_, sa)| {
                self.settings
                    .tunnels
                    .iter()
                    .zip(&kept)
                    .any(|(t, k)| k.is_none() && same_config(t, sa.config()))
            })
            .map(|(h, _)| h)
            .collect();
        for h in &gone {
            self.endpoint.delete(now, *h);
            self.sa_tunnel.remove(h);
            self.sa_peer.remove(h);
        }
        let dropped: Vec<usize> = (0..kept.len()).filter(|i| kept[*i].is_none()).collect();
        let dead_spis: Vec<u32> = self
            .outbound
            .iter()
            .filter(|(_, o)| dropped.contains(&o.tunnel))
            .map(|(spi, _)| *spi)
            .collect();
        self.switch_on_delete
            .retain(|old, new| !dead_spis.contains(old) && !dead_spis.contains(new));
        for spi in &dead_spis {
            self.outbound.remove(spi);
            for spd in &mut self.spds {
                spd.remove_sa(spi);
            }
        }
        self.inbound.retain(|_, i| !dropped.contains(&i.tunnel));
        // Renumber what stays.
        for i in self.inbound.values_mut() {
            i.tunnel = kept[i.tunnel].unwrap_or(usize::MAX);
        }
        for o in self.outbound.values_mut() {
            o.tunnel = kept[o.tunnel].unwrap_or(usize::MAX);
        }
        self.sa_tunnel = self
            .sa_tunnel
            .iter()
            .filter_map(|(h, t)| kept[*t].map(|n| (*h, n)))
            .collect();
        let mut tunnels: Vec<PerTunnel> = (0..new.tunnels.len())
            .map(|_| PerTunnel::default())
            .collect();
        for (old, to) in kept.iter().enumerate() {
            if let Some(n) = to {
                tunnels[*n] = self.tunnels[old].clone();
            }
        }
        let added: Vec<usize> = (0..new.tunnels.len())
            .filter(|n| !kept.contains(&Some(*n)))
            .collect();
        let report = format!(
            "reloaded: {} kept, {} removed or changed, {} added\n",
            kept.iter().flatten().count(),
            dropped.len(),
            added.len()
        );
        self.endpoint.set_limits(new.endpoint);
        self.tunnels = tunnels;
        self.settings = new;
        self.set_responders();
        for n in added {
            self.initiate(now, n);
        }
        self.drain(now);
        info!(%report, "configuration reloaded");
        Ok(report)
    }

    /// The next moment `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retire = self
            .inbound
            .values()
            .filter_map(|i| i.retire_at.as_ref().map(|(t, _)| *t))
            .min();
        let retry = self
            .tunnels
            .iter()
            .filter_map(|t| t.retry_at)
            .chain(retire)
            .min();
        match (self.endpoint.poll_timeout(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `cvlan-vrouter status`: tunnels, SAs, traffic.
    pub fn status(&self) -> String {
        let mut s = String::new();
        let tunnels = (self.settings.tunnels.iter()).zip(self.tunnels.iter().map(|t| t.admin_down));
        for ((t, down), st) in tunnels.zip(self.stats()) {
            let tenant = &self.settings.tenants[t.tenant].name;
            let state = match (down, st.up, st.child_sas) {
                (true, _, _) => "admin-down",
                // Authenticated, but nothing can cross it.
                (false, true, 0) => "degraded",
                (false, true, _) => "up",
                (false, false, _) => "down",
            };
            s += &format!(
                "{:<12} tenant {:<10} {:<10} child SAs {}  in {} B / {} pkts  out {} B / {} pkts  IKE rekeys {}\n",
                t.id,
                tenant,
                state,
                st.child_sas,
                st.bytes_in,
                st.packets_in,
                st.bytes_out,
                st.packets_out,
                st.ike_rekeys
            );
        }
        for (h, sa) in self.endpoint.sas() {
            s += &format!(
                "  IKE SA {h:016x} {:?} {:?} peer {} suite {:?} children {:?}\n",
                sa.role(),
                sa.phase(),
                sa.remote(),
                sa.suite(),
                sa.child_spis()
            );
        }
        s += &format!(
            "drops: {:?}\nIKE: {:?}\n",
            self.drops(),
            self.endpoint.drops()
        );
        s
    }

    /// Prometheus text with the names of the vrouter design.
    pub fn metrics(&self) -> String {
        let mut m = String::new();
        let stats = self.stats();
        let mut per_tenant: HashMap<&str, u32> = HashMap::new();
        for (t, st) in self.settings.tunnels.iter().zip(&stats) {
            *per_tenant
                .entry(&self.settings.tenants[t.tenant].name)
                .or_default() += u32::from(st.up);
        }
        m += "# TYPE cvlan_vrouter_tunnels_active gauge\n";
        for tenant in &self.settings.tenants {
            let n = per_tenant.get(tenant.name.as_str()).copied().unwrap_or(0);
            m += &format!(
                "cvlan_vrouter_tunnels_active{{tenant=\"{}\",type=\"ipsec\"}} {n}\n",
                tenant.name
            );
        }
        m += "# TYPE cvlan_vrouter_bytes_in_total counter\n";
        for (t, st) in self.settings.tunnels.iter().zip(&stats) {
            m += &format!(
                "cvlan_vrouter_bytes_in_total{{tunnel=\"{}\"}} {}\n",
                t.id, st.bytes_in
            );
        }
        m += "# TYPE cvlan_vrouter_bytes_out_total counter\n";
        for (t, st) in self.settings.tunnels.iter().zip(&stats) {
            m += &format!(
                "cvlan_vrouter_bytes_out_total{{tunnel=\"{}\"}} {}\n",
                t.id, st.bytes_out
            );
        }
        let ike = self
            .endpoint
            .sas()
            .filter(|(_, sa)| sa.phase() == proto_ikev2::Phase::Established)
            .count();
        let rekeys: u64 = self.tunnels.iter().map(|t| t.state.ike_rekeys).sum();
        m += &format!(
            "# TYPE cvlan_vrouter_ike_sa_active gauge\ncvlan_vrouter_ike_sa_active {ike}\n"
        );
        m += &format!(
            "# TYPE cvlan_vrouter_child_sa_active gauge\ncvlan_vrouter_child_sa_active {}\n",
            self.outbound.len()
        );
        m += &format!("# TYPE cvlan_vrouter_ike_rekeys_total counter\ncvlan_vrouter_ike_rekeys_total {rekeys}\n");
        m += "# TYPE cvlan_vrouter_peer_requests_refused_total counter\n";
        for (t, run) in self.settings.tunnels.iter().zip(&self.tunnels) {
            m += &format!(
                "cvlan_vrouter_peer_requests_refused_total{{tunnel=\"{}\"}} {}\n",
                t.id, run.state.refused
            );
        }
        let d = self.drops();
        m += "# TYPE cvlan_vrouter_packets_dropped_total counter\n";
        for (reason, n) in [
            ("no_policy", d.no_policy),
            ("unknown_spi", d.unknown_spi),
            ("esp_invalid", d.esp_invalid),
            ("policy_mismatch", d.policy_mismatch),
        ] {
            m += &format!("cvlan_vrouter_packets_dropped_total{{reason=\"{reason}\"}} {n}\n");
        }
        m
    }

    /// The address the gateway listens on.
    pub fn listen(&self) -> IpAddr {
        self.settings.listen
    }
}
