//! Send paths: initiations, keepalives, staged data, and the per-peer
//! timers that decide when.

use super::*;

impl Device {
    pub(super) fn jitter(&mut self) -> Duration {
        let max = REKEY_TIMEOUT_JITTER_MAX.as_micros() as u64;
        Duration::from_micros(self.rng.next_u64() % (max + 1))
    }

    /// wireguard-go's `SendHandshakeInitiation(isRetry)`.
    pub(super) fn send_initiation(&mut self, now: Instant, id: PeerId, retry: bool) {
        let Some(own) = self.identity.as_ref() else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !retry {
            peer.attempts = 0;
        }
        if peer
            .last_initiation_sent
            .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
        {
            return;
        }
        let (Some(to), Some(ss)) = (peer.endpoint, peer.static_static.as_ref()) else {
            return;
        };
        let local_index = alloc_index(&mut self.by_index, &mut self.rng, id);
        let timestamp = Tai64N::from_unix(self.clock.unix(now));
        let (mut msg, state) = noise::create_initiation(
            &own.public,
            &peer.public_key,
            &peer.initial_hash,
            ss,
            local_index,
            timestamp,
            &mut self.rng,
        );
        peer.clear_pending(&mut self.by_index);
        peer.pending = Some(state);
        peer.last_initiation_sent = Some(now);
        let mac1 = seal_macs(
            &mut msg,
            wire::INIT_MAC1,
            &peer.mac_keys,
            peer.cookies.current(now),
        );
        peer.cookies.sent(mac1);
        peer.tx_bytes += msg.len() as u64;
        peer.timers_any_authenticated_packet_traversal(now);
        peer.timers_any_authenticated_packet_sent();
        let jitter = self.jitter();
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.timers_handshake_initiated(now, jitter);
        }
        self.push_transmit(Transmit::to(to, msg.to_vec()));
    }

    /// wireguard-go's `SendKeepalive`: an empty packet joins the staged
    /// queue if it is empty, then the queue is flushed.
    pub(super) fn send_keepalive(&mut self, now: Instant, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.staged.is_empty() {
            peer.stage(&[]);
        }
        self.flush_staged(now, id);
    }

    /// wireguard-go's `SendStagedPackets`: seal what waits if a session can
    /// send, else start a handshake.
    pub(super) fn flush_staged(&mut self, now: Instant, id: PeerId) {
        let jitter = self.jitter();
        let mtu = self.mtu;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.staged.is_empty() {
            return;
        }
        if !peer.has_sendable_session(now) {
            self.send_initiation(now, id, false);
            return;
        }
        let Some(to) = peer.endpoint else { return };
        let mut rekey = false;
        let mut out = Vec::with_capacity(peer.staged.len());
        while let Some(packet) = peer.staged.pop_front() {
            let Some(session) = peer.current.as_mut() else {
                break;
            };
            let mut buf = vec![0u8; sealed_len(packet.len(), mtu)];
            buf[DATA_HEADER_LEN..DATA_HEADER_LEN + packet.len()].copy_from_slice(&packet);
            let Ok((key, counter, receiver)) = session.reserve_send(now) else {
                break;
            };
            rekey |= session.wants_rekey_on_send(now);
            let len = seal_data(&key, receiver, counter, &mut buf, packet.len(), mtu);
            buf.truncate(len);
            peer.tx_bytes += len as u64;
            peer.timers_any_authenticated_packet_traversal(now);
            peer.timers_any_authenticated_packet_sent();
            if !packet.is_empty() {
                peer.timers_data_sent(now, jitter);
            }
            out.push(Transmit::to(to, buf));
        }
        for t in out {
            self.push_transmit(t);
        }
        if rekey {
            self.send_initiation(now, id, false);
        }
    }

    pub(super) fn run_timers(&mut self, now: Instant, id: PeerId) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };

        if due(peer.retransmit_handshake) {
            peer.retransmit_handshake = None;
            if peer.attempts >= MAX_HANDSHAKE_ATTEMPTS {
                // Give up: drop what waited; wipe keys later if nothing new comes.
                peer.send_keepalive = None;
                peer.staged.clear();
                peer.clear_pending(&mut self.by_index);
                if peer.zero_key_material.is_none() {
                    peer.zero_key_material = Some(now + ZERO_KEYS_AFTER);
                }
                self.push_event(Event::HandshakeGaveUp { peer: id });
            } else {
                peer.attempts += 1;
                self.send_initiation(now, id, true);
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if due(peer.send_keepalive) {
            peer.send_keepalive = None;
            let again = std::mem::take(&mut peer.need_another_keepalive);
            self.send_keepalive(now, id);
            if again {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
                }
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if due(peer.new_handshake) {
            peer.new_handshake = None;
            self.send_initiation(now, id, false);
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if due(peer.zero_key_material) {
            peer.zero_key_material = None;
            peer.zero_keys(&mut self.by_index);
            self.push_event(Event::KeysZeroed { peer: id });
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if due(peer.persistent_keepalive_at) {
            peer.persistent_keepalive_at = None;
            if peer.persistent_keepalive > 0 {
                self.send_keepalive(now, id);
            }
        }
    }

    pub(super) fn push_transmit(&mut self, t: Transmit) {
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            self.transmits.pop_front();
            self.stats.transmits_dropped += 1;
        }
        self.transmits.push_back(t);
    }

    pub(super) fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    #[cfg(test)]
    pub(crate) fn current_session_mut(&mut self, id: PeerId) -> Option<&mut Session> {
        self.peers.get_mut(&id)?.current.as_mut()
    }
}
