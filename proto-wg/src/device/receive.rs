//! Receive paths: data, handshake initiations and responses, cookie
//! replies, and the load checks in front of them.

use super::*;

impl Device {
    pub(super) fn finish_data(
        &mut self,
        now: Instant,
        from: SocketAddr,
        job: &OpenJob,
        buf: &[u8],
        padded: usize,
    ) -> Result<Received, RecvError> {
        let id = job.peer;
        let peer = self.peers.get_mut(&id).ok_or(RecvError::UnknownIndex)?;
        // The session may have rotated (or gone) since `prepare_datagram`:
        // find it again by its index.
        let (session, slot) = peer
            .session_mut(job.local_index)
            .ok_or(RecvError::UnknownIndex)?;
        if job.twin {
            peer.heard_from(now, from);
            return Err(RecvError::Replayed);
        }
        if !session.accept_counter(job.counter) {
            return Err(RecvError::Replayed);
        }
        let wire_len = buf.len() as u64;

        let mut confirmed = false;
        if slot == Slot::Next {
            peer.confirm_next(&mut self.by_index);
            peer.timers_handshake_complete(self.clock.unix(now));
            confirmed = true;
        }
        let renew = !peer.sent_last_minute_handshake
            && peer.current.as_ref().is_some_and(|s| {
                s.initiator && now.saturating_duration_since(s.created) > REKEY_ON_RECEIVE_AGE
            });
        if renew {
            peer.sent_last_minute_handshake = true;
        }
        peer.rx_bytes += wire_len;
        peer.timers_any_authenticated_packet_traversal(now);
        peer.timers_any_authenticated_packet_received();
        let roamed = peer.roams_to(from);
        peer.heard_from(now, from);
        if padded > 0 {
            peer.timers_data_received(now);
        }
        if roamed {
            self.push_event(Event::EndpointChanged {
                peer: id,
                endpoint: from,
            });
        }
        if confirmed {
            self.push_event(Event::HandshakeCompleted {
                peer: id,
                initiator: false,
            });
            self.flush_staged(now, id);
        }
        if renew {
            self.send_initiation(now, id, false);
        }
        if padded == 0 {
            return Ok(Received::Keepalive { peer: id });
        }

        // Cryptokey routing, inbound: the packet's source must be one of
        // the sender's allowed IPs.
        let body = &buf[DATA_HEADER_LEN..DATA_HEADER_LEN + padded];
        let header = IpHeader::parse(body).ok_or(RecvError::NotIp)?;
        let total_len = header.total_len();
        if total_len > padded {
            return Err(RecvError::NotIp);
        }
        if self.routes.lookup(header.src()) != Some(id) {
            return Err(RecvError::ForbiddenSource);
        }
        Ok(Received::Packet {
            peer: id,
            range: DATA_HEADER_LEN..DATA_HEADER_LEN + total_len,
        })
    }

    /// The DoS gate every handshake message passes first: MAC1 must prove
    /// the sender knows our public key; under load, MAC2 must prove it can
    /// receive at its address, or it gets a cookie reply instead.
    pub(super) fn admit_handshake(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &[u8],
        mac1_at: usize,
        sender_at: usize,
    ) -> Result<(), RecvError> {
        let own = self.identity.as_ref().ok_or(RecvError::NoPrivateKey)?;
        if !own.mac_keys.verify_mac1(msg, mac1_at) {
            return Err(RecvError::BadMac1);
        }
        self.check_load(now, from, msg, mac1_at, wire::read_u32(msg, sender_at))
    }

    /// Under load, a handshake message without a valid MAC2 is answered with
    /// a cookie reply instead. Returns `Err(CookieSent)` in that case.
    pub(super) fn check_load(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &[u8],
        mac1_at: usize,
        sender: u32,
    ) -> Result<(), RecvError> {
        if !self.under_load {
            return Ok(());
        }
        let mac2_at = mac1_at + crate::crypto::MAC_LEN;
        if self
            .checker
            .verify_mac2(now, from, msg, mac2_at, &mut self.rng)
        {
            // Proven reachable at its address: now at most 20 a second.
            if !self.limiter.allow(now, from.ip()) {
                return Err(RecvError::RateLimited);
            }
            return Ok(());
        }
        let Some(own) = self.identity.as_ref() else {
            return Err(RecvError::NoPrivateKey);
        };
        let reply = self.checker.reply(
            now,
            from,
            sender,
            &msg[mac1_at..mac2_at],
            &own.mac_keys,
            &mut self.rng,
        );
        self.push_transmit(Transmit::to(from, reply.to_vec()));
        Err(RecvError::CookieSent)
    }

    /// The second half of receiving an initiation: `consumed` is what
    /// `job.consume()` returned. Checks the initiator is a peer, that its
    /// timestamp is newer and it is not flooding, then answers (the
    /// response's DH runs here, only for a peer that proved its key).
    pub fn finish_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        consumed: Result<ConsumedInitiation, RecvError>,
    ) -> Result<Received, RecvError> {
        let result = consumed
            .and_then(|c| self.receive_initiation(now, from, c))
            .map(|()| Received::Handshake);
        if let Err(e) = &result {
            self.stats.count_recv(e);
        }
        result
    }

    pub(super) fn receive_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        consumed: ConsumedInitiation,
    ) -> Result<(), RecvError> {
        if self.identity.as_ref().map(|i| i.public) != Some(consumed.under) {
            // The key changed while the initiation was read.
            return Err(RecvError::NoPrivateKey);
        }
        let init = consumed.init;
        let id = *self
            .by_key
            .get(&init.remote_static)
            .ok_or(RecvError::UnknownPeer)?;
        let peer = self.peers.get_mut(&id).ok_or(RecvError::UnknownPeer)?;
        if peer.static_static.is_none() {
            return Err(RecvError::UnknownPeer);
        }
        if peer.newest_timestamp.is_some_and(|t| init.timestamp <= t) {
            return Err(RecvError::ReplayedInitiation);
        }
        if peer
            .last_initiation_consumed
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
        {
            return Err(RecvError::InitiationFlood);
        }
        let local_index = alloc_index(&mut self.by_index, &mut self.rng, id);
        let peer = self.peers.get_mut(&id).ok_or(RecvError::UnknownPeer)?;
        let (mut response, keys) =
            match noise::create_response(&init, &peer.psk, local_index, &mut self.rng) {
                Ok(r) => r,
                Err(e) => {
                    self.by_index.remove(&local_index);
                    return Err(e.into());
                }
            };
        peer.newest_timestamp = Some(init.timestamp);
        peer.last_initiation_consumed = Some(now);
        let mac1 = seal_macs(
            &mut response,
            wire::RESP_MAC1,
            &peer.mac_keys,
            peer.cookies.current(now),
        );
        peer.cookies.sent(mac1);
        let session = Session::new(local_index, init.remote_index, &keys, now, false);
        peer.install_responder_session(session, &mut self.by_index);
        peer.roams_to(from);
        peer.tx_bytes += response.len() as u64;
        peer.rx_bytes += wire::INITIATION_LEN as u64;
        peer.timers_any_authenticated_packet_traversal(now);
        peer.timers_any_authenticated_packet_received();
        peer.timers_session_derived(now);
        peer.timers_any_authenticated_packet_sent();
        self.push_transmit(Transmit::to(from, response.to_vec()));
        Ok(())
    }

    pub(super) fn receive_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &[u8; wire::RESPONSE_LEN],
    ) -> Result<(), RecvError> {
        self.admit_handshake(now, from, msg, wire::RESP_MAC1, wire::RESP_SENDER)?;
        let receiver = wire::read_u32(msg, wire::RESP_RECEIVER);
        let id = *self
            .by_index
            .get(&receiver)
            .ok_or(RecvError::UnknownIndex)?;
        let own = self.identity.as_ref().ok_or(RecvError::NoPrivateKey)?;
        let peer = self.peers.get_mut(&id).ok_or(RecvError::UnknownIndex)?;
        let pending = peer
            .pending
            .as_ref()
            .filter(|p| p.local_index == receiver)
            .ok_or(RecvError::UnknownIndex)?;
        let keys = noise::consume_response(pending, &own.private, &peer.psk, msg)?;
        let remote_index = wire::read_u32(msg, wire::RESP_SENDER);
        // The pending index now names the session: keep it in `by_index`.
        peer.pending = None;
        let session = Session::new(receiver, remote_index, &keys, now, true);
        peer.install_initiator_session(session, &mut self.by_index);
        peer.rx_bytes += msg.len() as u64;
        peer.timers_session_derived(now);
        peer.timers_handshake_complete(self.clock.unix(now));
        peer.timers_any_authenticated_packet_traversal(now);
        peer.timers_any_authenticated_packet_received();
        let roamed = peer.roams_to(from);
        if roamed {
            self.push_event(Event::EndpointChanged {
                peer: id,
                endpoint: from,
            });
        }
        self.push_event(Event::HandshakeCompleted {
            peer: id,
            initiator: true,
        });
        // Confirm the keys to the responder at once: staged data, or a keepalive.
        self.send_keepalive(now, id);
        Ok(())
    }

    pub(super) fn receive_cookie_reply(
        &mut self,
        now: Instant,
        msg: &[u8; wire::COOKIE_REPLY_LEN],
    ) -> Result<(), RecvError> {
        let receiver = wire::read_u32(msg, wire::COOKIE_RECEIVER);
        let id = *self
            .by_index
            .get(&receiver)
            .ok_or(RecvError::UnknownIndex)?;
        let peer = self.peers.get_mut(&id).ok_or(RecvError::UnknownIndex)?;
        peer.cookies
            .consume_reply(now, msg, &peer.mac_keys)
            .map_err(|_| RecvError::BadCookieReply)
    }
}
