//! `cvlan-agent debug ping PEER`, like `tailscale ping`: path probes to
//! every candidate of the peer and through the relay, once a second; each
//! answer printed with the way it came and its round trip, until a direct
//! path answers or the tries run out.

use super::*;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::local_api::{Reply, Request};

/// Tries when the caller names no count, and the most it may name (the
/// local API's client waits 40 s for an answer).
const DEFAULT_TRIES: u32 = 10;
const MAX_TRIES: u32 = 30;
const INTERVAL: Duration = Duration::from_secs(1);
/// At most this many `debug ping`s run at once.
const MAX_RUNNING: usize = 4;

pub(super) struct DebugPing {
    peer: [u8; 32],
    name: String,
    reply: oneshot::Sender<Reply>,
    out: String,
    tries: u32,
    sent: u32,
    next: Instant,
}

impl Daemon {
    /// Starts a `debug ping`; the answer comes when it ends.
    pub(super) fn start_debug_ping(&mut self, req: &Request, reply: oneshot::Sender<Reply>) {
        match self.new_debug_ping(req) {
            Ok((peer, name, tries)) => {
                self.debug_pings.push(DebugPing {
                    peer,
                    name,
                    reply,
                    out: String::new(),
                    tries,
                    sent: 0,
                    next: Instant::now(),
                });
                self.debug_ping_tick(Instant::now());
            }
            Err(e) => {
                let _ = reply.send(Reply::error(e));
            }
        }
    }

    fn new_debug_ping(&self, req: &Request) -> Result<([u8; 32], String, u32), String> {
        let wanted = req
            .param("peer")
            .ok_or("name a peer: debug ping NAME|ADDRESS")?;
        let peer = self
            .mesh
            .peers
            .values()
            .find(|p| p.name == wanted || p.address.to_string() == wanted)
            .ok_or_else(|| format!("no peer named {wanted:?} (see `cvlan-agent peers`)"))?;
        let tries = match req.param("count") {
            None => DEFAULT_TRIES,
            Some(n) => n
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_TRIES).contains(n))
                .ok_or_else(|| format!("--count must be 1 to {MAX_TRIES}"))?,
        };
        if self.debug_pings.len() >= MAX_RUNNING {
            return Err("too many debug pings running; try again".into());
        }
        Ok((peer.node_key, peer.name.clone(), tries))
    }

    /// Sends the pings that are due and ends those out of tries.
    pub(super) fn debug_ping_tick(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.debug_pings.len() {
            let ping = &mut self.debug_pings[i];
            if now < ping.next {
                i += 1;
                continue;
            }
            if ping.sent == ping.tries {
                let mut ping = self.debug_pings.swap_remove(i);
                let _ = writeln!(
                    ping.out,
                    "no direct path to {} after {} tries",
                    ping.name, ping.tries
                );
                let _ = ping.reply.send(Reply::ok(ping.out));
                continue;
            }
            ping.sent += 1;
            ping.next = now + INTERVAL;
            let peer = ping.peer;
            if self.paths.debug_ping(now, &peer) == 0 {
                let ping = &mut self.debug_pings[i];
                let _ = writeln!(ping.out, "no path to {} to try", ping.name);
            }
            i += 1;
        }
    }

    /// An answer to a debug ping: printed; a direct one ends the ping.
    pub(super) fn on_debug_pong(
        &mut self,
        peer: [u8; 32],
        from: SocketAddr,
        via_relay: bool,
        rtt: Duration,
    ) {
        let Some(i) = self.debug_pings.iter().position(|p| p.peer == peer) else {
            return;
        };
        let via = match (&self.relay, via_relay) {
            (Some(r), true) => format!("relay {}", r.address),
            (None, true) => "relay".to_string(),
            (_, false) => from.to_string(),
        };
        let ping = &mut self.debug_pings[i];
        let address = self
            .mesh
            .peers
            .values()
            .find(|p| p.node_key == peer)
            .map(|p| p.address.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            ping.out,
            "pong from {} ({address}) via {via} in {:.1}ms",
            ping.name,
            rtt.as_secs_f64() * 1000.0
        );
        if !via_relay {
            let mut ping = self.debug_pings.swap_remove(i);
            let _ = writeln!(ping.out, "direct path to {} is {from}", ping.name);
            let _ = ping.reply.send(Reply::ok(ping.out));
        }
    }

    /// When the next debug ping is due.
    pub(super) fn debug_ping_due(&self) -> Option<Instant> {
        self.debug_pings.iter().map(|p| p.next).min()
    }
}
