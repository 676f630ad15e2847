//! The driver surface: what the caller calls with packets, datagrams and
//! time, and drains afterwards.

use super::*;

impl Device {
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(Peer::next_deadline).min()
    }

    /// Seals the IP packet at `buf[DATA_HEADER_LEN..][..len]` in place for
    /// the peer its destination routes to. `buf` must have room for the
    /// header in front and padding plus tag behind (`sealed_len`).
    /// Equivalent to `prepare_send` then `SealJob::seal`.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Encapsulated, SendError> {
        if buf.len() < sealed_len(len, self.mtu) {
            self.stats.count_send(&SendError::BufferTooSmall);
            return Err(SendError::BufferTooSmall);
        }
        match self.prepare_send(now, &buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len])? {
            Prepared::Queued => Ok(Encapsulated::Queued),
            Prepared::Seal(job) => {
                let sealed = job.seal(buf, len)?;
                Ok(Encapsulated::Send {
                    to: job.to,
                    also_to: job.also_to,
                    len: sealed,
                })
            }
        }
    }

    /// The bookkeeping half of sending `packet` (an IP packet from the TUN
    /// side): routing, session choice, counter reservation, timers. The
    /// returned job seals without the device, so callers may run the AEAD
    /// outside their lock and on other cores.
    pub fn prepare_send(&mut self, now: Instant, packet: &[u8]) -> Result<Prepared, SendError> {
        let result = self.prepare_send_inner(now, packet);
        if let Err(e) = &result {
            self.stats.count_send(e);
        }
        result
    }

    pub(super) fn prepare_send_inner(
        &mut self,
        now: Instant,
        packet: &[u8],
    ) -> Result<Prepared, SendError> {
        let header = IpHeader::parse(packet).ok_or(SendError::NotIp)?;
        let id = self.routes.lookup(header.dst()).ok_or(SendError::NoRoute)?;
        if self.identity.is_none() {
            return Err(SendError::NoPrivateKey);
        }
        let jitter = self.jitter();
        let mtu = self.mtu;
        let peer = self.peers.get_mut(&id).ok_or(SendError::NoRoute)?;
        if !peer.has_sendable_session(now) || !peer.staged.is_empty() {
            // Keep order: while packets wait, new ones queue behind them.
            if peer.stage(packet) {
                self.stats.staged_dropped += 1;
            }
            self.flush_staged(now, id);
            return Ok(Prepared::Queued);
        }
        let to = peer.endpoint.ok_or(SendError::NoEndpoint)?;
        let also_to = peer.also_send_to(now);
        let session = peer.current.as_mut().ok_or(SendError::NoRoute)?;
        let (key, counter, receiver) = session.reserve_send(now).map_err(|_| SendError::NoRoute)?;
        let rekey = session.wants_rekey_on_send(now);
        peer.tx_bytes += sealed_len(packet.len(), mtu) as u64;
        peer.timers_any_authenticated_packet_traversal(now);
        peer.timers_any_authenticated_packet_sent();
        peer.timers_data_sent(now, jitter);
        if rekey {
            self.send_initiation(now, id, false);
        }
        if also_to.is_some() {
            self.stats.tx_copied_to_fallback += 1;
        }
        Ok(Prepared::Seal(SealJob {
            key,
            receiver,
            counter,
            to,
            also_to,
            mtu,
        }))
    }

    /// Handles one UDP datagram from `from`, in place. Equivalent to
    /// `prepare_datagram`, `OpenJob::open` and `finish_datagram`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Received, RecvError> {
        match self.prepare_datagram(now, from, buf)? {
            Incoming::Done(r) => Ok(r),
            Incoming::Open(job) => {
                let opened = job.open(buf);
                self.finish_datagram(now, from, &job, buf, opened)
            }
            Incoming::Initiation(job) => {
                let consumed = job.consume();
                self.finish_initiation(now, from, consumed)
            }
        }
    }

    /// The first half of receiving: handshake messages are handled here
    /// entirely; a data message yields a job that opens it without the
    /// device (outside the caller's lock), to be completed by
    /// `finish_datagram`.
    pub fn prepare_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<Incoming, RecvError> {
        let result = self.prepare_datagram_inner(now, from, buf);
        if let Err(e) = &result {
            self.stats.count_recv(e);
        }
        result
    }

    pub(super) fn prepare_datagram_inner(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<Incoming, RecvError> {
        let handshake = |r: Result<(), RecvError>| r.map(|()| Incoming::Done(Received::Handshake));
        match wire::parse(buf)? {
            Message::Data(h) => {
                let id = *self
                    .by_index
                    .get(&h.receiver)
                    .ok_or(RecvError::UnknownIndex)?;
                let peer = self.peers.get_mut(&id).ok_or(RecvError::UnknownIndex)?;
                let waiting = peer.waits_for_word_from(from);
                let (session, _) = peer
                    .session_mut(h.receiver)
                    .ok_or(RecvError::UnknownIndex)?;
                let (key, twin) = match session.check_receive(now, h.counter) {
                    Ok(key) => (key, false),
                    // A copy arrived first on the fallback path: this twin
                    // is still worth opening (once) while we wait for a
                    // word from the endpoint, or copying would never end
                    // where the fallback is the faster path.
                    Err(crate::session::SessionError::Replayed) if waiting => {
                        (session.twin_key(now).ok_or(RecvError::Replayed)?, true)
                    }
                    Err(e) => return Err(e.into()),
                };
                Ok(Incoming::Open(OpenJob {
                    key,
                    peer: id,
                    local_index: h.receiver,
                    counter: h.counter,
                    twin,
                }))
            }
            Message::Initiation(msg) => {
                let msg = *msg;
                self.admit_handshake(now, from, &msg, wire::INIT_MAC1, wire::INIT_SENDER)?;
                let identity = self.identity.clone().ok_or(RecvError::NoPrivateKey)?;
                Ok(Incoming::Initiation(InitiationJob {
                    identity,
                    msg: Box::new(msg),
                }))
            }
            Message::Response(msg) => {
                let msg = *msg;
                handshake(self.receive_response(now, from, &msg))
            }
            Message::CookieReply(msg) => {
                let msg = *msg;
                handshake(self.receive_cookie_reply(now, &msg))
            }
        }
    }

    /// The second half of receiving a data message: `opened` is what
    /// `job.open(buf)` returned. Records the counter (replay), confirms a
    /// new session, runs the timers, follows roaming, and checks the inner
    /// source against the peer's allowed IPs.
    pub fn finish_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        job: &OpenJob,
        buf: &[u8],
        opened: Result<usize, RecvError>,
    ) -> Result<Received, RecvError> {
        let result = opened.and_then(|padded| self.finish_data(now, from, job, buf, padded));
        match &result {
            Err(e) => self.stats.count_recv(e),
            Ok(Received::Packet { .. }) => self.stats.rx_packets += 1,
            Ok(_) => {}
        }
        result
    }

    /// Runs every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.run_timers(now, id);
        }
    }
}
