//! The local API: `cvlan-agent up`, `down`, `status`, `peers`, `routes`
//! and key rotation.

use super::*;

use tokio::sync::oneshot;
use tracing::{info, warn};
use zeroize::Zeroizing;

use proto_control::messages::NatKind;

use crate::control_client::controller_address;
use crate::lifecycle::Input;
use crate::local_api::{Reply, Request};
use crate::mesh::Change;

impl Daemon {
    pub(super) fn on_request(&mut self, req: Request, reply: oneshot::Sender<Reply>) {
        let answer = match req.command.as_str() {
            "up" => match self.up(&req) {
                Ok(()) => {
                    self.waiting.push(reply);
                    return;
                }
                Err(e) => Reply::error(e),
            },
            "rotate-key" => match self.rotate_key() {
                Ok(()) => {
                    self.waiting.push(reply);
                    return;
                }
                Err(e) => Reply::error(e),
            },
            "down" => self.down(),
            "status" => Reply::ok(self.status()),
            "peers" => {
                let device = self.device.peers();
                Reply::ok(crate::report::peers(&self.mesh, &device, |k| {
                    let endpoint = device
                        .iter()
                        .find(|p| p.public_key.0 == *k)
                        .and_then(|p| p.endpoint);
                    let proxy = self.relay.as_ref().and_then(|r| r.proxy_of(k));
                    let label = crate::path_view::label(self.paths.path(k), endpoint, proxy);
                    let learnt = match self.paths.winner(k) {
                        Some(w) if label == "direct" && endpoint == Some(w.addr) => {
                            w.source.as_str().to_string()
                        }
                        _ => "-".to_string(),
                    };
                    (label.to_string(), learnt)
                }))
            }
            "netcheck" => Reply::ok(self.netcheck()),
            "debug-counters" => Reply::ok(self.counters()),
            "debug-ping" => {
                self.start_debug_ping(&req, reply);
                return;
            }
            "routes" => Reply::ok(crate::report::routes(
                &self.mesh,
                self.address,
                &self.opts.interface,
            )),
            other => Reply::error(format!("unknown command {other:?}")),
        };
        let _ = reply.send(answer);
    }

    /// A new WireGuard key: stored first (so a crash keeps the new one),
    /// then given to the device, then announced on a fresh connection; the
    /// controller pushes it to every peer in the next delta.
    pub(super) fn rotate_key(&mut self) -> Result<(), String> {
        if !self.saved.up {
            return Err("the node is down: `cvlan-agent up` first".into());
        }
        let mut fresh = Zeroizing::new([0u8; 32]);
        cvlan_core::seed::fill(&mut fresh[..]).map_err(|e| e.to_string())?;
        self.state.store_node_key(&fresh)?;
        self.device.set_private_key(&fresh);
        self.node_public = *proto_wg::PrivateKey::from_bytes(*fresh)
            .public_key()
            .as_bytes();
        // Probes and the relay prove the node key: both start over with it.
        self.paths = new_path_manager(&fresh, self.node_public)?;
        self.node_key = fresh.clone();
        self.relay = None;
        let relays = std::mem::take(&mut self.relays);
        let peers: Vec<Change> = self.mesh.peers.values().cloned().map(Change::Add).collect();
        self.apply_changes(&peers);
        self.on_relays(&relays);
        info!(public_key = %hex::encode(self.node_public), "node key rotated");
        let now = std::time::Instant::now();
        self.lifecycle.handle(now, Input::Down);
        self.lifecycle.handle(now, Input::Up);
        Ok(())
    }

    pub(super) fn up(&mut self, req: &Request) -> Result<(), String> {
        let mut next = self.saved.clone();
        let pick = |given: Option<&str>, saved: &Option<String>, default: &Option<String>| {
            given
                .map(str::to_string)
                .or_else(|| saved.clone())
                .or_else(|| default.clone())
        };
        next.controller = pick(
            req.param("controller"),
            &self.saved.controller,
            &self.opts.defaults.controller,
        );
        next.controller_key = pick(
            req.param("controller_key"),
            &self.saved.controller_key,
            &self.opts.defaults.controller_key,
        );
        next.hostname = pick(
            req.param("hostname"),
            &self.saved.hostname,
            &self.opts.defaults.hostname,
        );
        let Some(controller) = &next.controller else {
            return Err(
                "no controller: cvlan-agent up --controller URL --controller-key KEY".into(),
            );
        };
        controller_address(controller).map_err(|e| e.to_string())?;
        let Some(key) = &next.controller_key else {
            return Err(
                "no controller key: pass --controller-key (`cvlan-controller key` prints it)"
                    .into(),
            );
        };
        hex_key(key)?;
        if let Some(k) = req.param("auth_key") {
            self.auth_key = Some(Zeroizing::new(k.to_string()));
        }
        let changed = next.controller != self.saved.controller
            || next.controller_key != self.saved.controller_key
            || next.hostname != self.saved.hostname;
        next.up = true;
        self.state.save(&next)?;
        self.saved = next;
        let now = std::time::Instant::now();
        if changed || req.param("auth_key").is_some() {
            // New settings take effect on a fresh connection.
            self.lifecycle.handle(now, Input::Down);
        }
        self.lifecycle.handle(now, Input::Up);
        Ok(())
    }

    pub(super) fn down(&mut self) -> Reply {
        self.lifecycle
            .handle(std::time::Instant::now(), Input::Down);
        self.remove_all_peers();
        // Keep the registration and cache: `up` brings the same node back.
        self.mesh.peers.clear();
        self.mesh.version = 0;
        if let Err(e) = self.device.tun().set_up(false) {
            warn!(error = %e, "could not set the interface down");
        }
        self.address = None;
        self.saved.up = false;
        if let Err(e) = self.state.save(&self.saved) {
            return Reply::error(e);
        }
        Reply::ok("down\n")
    }

    /// `cvlan-agent debug counters`: what arrived and was dropped, by
    /// whom it was dropped and why, and what the path machine learnt.
    pub(super) fn counters(&self) -> String {
        let p = self.paths.counters();
        let d = self.device.stats();
        let mut rows: Vec<(&str, u64)> = vec![
            ("probes from unknown keys", p.unknown_sender),
            ("probes not sealed by their sender", p.not_sealed),
            ("pongs to no ping of ours", p.unsolicited_pongs),
            ("calls received", p.calls_received),
            ("calls sent", p.calls_sent),
            ("peer-reflexive addresses learnt", p.seen_learnt),
            ("port guesses sent (hard NATs)", p.guesses_sent),
            ("port guesses answered", p.guesses_answered),
            (
                "STUN answers to nothing we asked",
                self.reflexive.unsolicited,
            ),
        ];
        if let Some(m) = &self.portmap {
            let c = m.counters();
            rows.extend([
                ("port mapping: not from the gateway", c.not_from_gateway),
                ("port mapping: malformed", c.malformed),
                ("port mapping: answers to nothing", c.unexpected),
                ("port mapping: refused", c.refused),
            ]);
        }
        rows.extend([
            ("wireguard: malformed", d.rx_malformed),
            ("wireguard: bad mac1", d.rx_bad_mac1),
            ("wireguard: handshakes rejected", d.rx_handshake_rejected),
            ("wireguard: rate limited", d.rx_rate_limited),
            ("wireguard: unknown index", d.rx_unknown_index),
            ("wireguard: replayed (copies included)", d.rx_replayed),
            ("wireguard: failed to decrypt", d.rx_decrypt_failed),
            (
                "wireguard: packets also sent to the relay",
                d.tx_copied_to_fallback,
            ),
        ]);
        let mut out = String::new();
        for (name, n) in rows {
            let _ = writeln!(out, "{name:<42} {n}");
        }
        out
    }

    /// What `cvlan-agent netcheck` prints: what STUN on the WireGuard
    /// socket found, like `tailscale netcheck`.
    pub(super) fn netcheck(&self) -> String {
        let r = self.reflexive.report();
        let mut out = String::new();
        let yes_no = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown (needs two STUN servers)",
        };
        let _ = writeln!(
            out,
            "UDP:                 {}",
            if r.udp { "yes" } else { "no answer" }
        );
        let reflexive: Vec<String> = r.addresses.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            out,
            "reflexive addresses: {}",
            if reflexive.is_empty() {
                "-".into()
            } else {
                reflexive.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "mapping varies by destination: {}",
            yes_no(r.mapping_varies)
        );
        let _ = writeln!(
            out,
            "port preserved:      {}",
            match r.port_preserved {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            }
        );
        let kind = r.nat_kind(&self.local) as i32;
        let _ = writeln!(out, "NAT:                 {}", NatKind::word(kind));
        let home = self
            .relay
            .as_ref()
            .map(|r| r.address.as_str())
            .unwrap_or("-");
        let _ = writeln!(out, "home relay:          {home}");
        let _ = writeln!(out, "port mapping:        {}", self.port_mapping_line());
        for (server, answer) in &r.servers {
            match answer {
                Some(a) => {
                    let _ = writeln!(
                        out,
                        "  stun {server}: {:.1} ms, sees {}",
                        a.rtt.as_secs_f64() * 1000.0,
                        a.reflexive
                    );
                }
                None => {
                    let _ = writeln!(out, "  stun {server}: no answer");
                }
            }
        }
        out
    }

    pub(super) fn status(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "state:       {}", self.lifecycle.phase().as_str());
        if let (Some(me), Some((a, len))) = (&self.mesh.me, self.address) {
            let _ = writeln!(
                out,
                "node:        {} (id {}), {a}/{len}",
                me.name, me.node_id
            );
        }
        let _ = writeln!(
            out,
            "controller:  {}",
            self.saved.controller.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            out,
            "interface:   {} (UDP port {})",
            self.opts.interface,
            self.device.listen_port().unwrap_or(0)
        );
        let _ = writeln!(out, "map version: {}", self.mesh.version);
        let _ = writeln!(out, "peers:       {}", self.mesh.peers.len());
        if let Some(e) = self.lifecycle.last_error() {
            let _ = writeln!(out, "last error:  {e}");
        }
        if let Some(at) = self.lifecycle.retry_at() {
            let secs = at
                .saturating_duration_since(std::time::Instant::now())
                .as_secs_f32();
            let _ = writeln!(out, "retry in:    {secs:.1}s");
        }
        out
    }
}
