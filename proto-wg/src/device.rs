//! The WireGuard device: many peers behind one static key, as a sans-IO
//! state machine.
//!
//! Driver surface (the caller owns sockets, TUN and clock):
//! - `encapsulate(now, buf, len)`: a packet from the TUN side, sealed in
//!   place for the peer its destination routes to;
//! - `handle_datagram(now, from, buf)`: a UDP datagram, opened in place;
//! - `handle_timeout(now)` when `poll_timeout()` is due;
//! - `poll_transmit()` / `poll_event()` to drain what those produced.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::allowed_ips::AllowedIps;
use crate::cookie::{seal_macs, CookieChecker, MacKeys};
use crate::crypto::AeadKey;
use crate::crypto::KEY_LEN;
use crate::errors::{RecvError, SendError, Stats};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::noise::{self, initial_hash};
use crate::peer::{Peer, PeerId, Slot};
use crate::ratelimit::RateLimiter;
use crate::session::{open_data, seal_data, sealed_len, Session};
use crate::tai64n::Tai64N;
use crate::timers::{
    KEEPALIVE_TIMEOUT, MAX_HANDSHAKE_ATTEMPTS, MIN_INITIATION_INTERVAL, REKEY_ON_RECEIVE_AGE,
    REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX, ZERO_KEYS_AFTER,
};
use crate::wire::{self, Message, DATA_HEADER_LEN};
use cvlan_core::ip::IpHeader;
use cvlan_core::IpPrefix;

/// Bounds on what network input can make the device queue.
const MAX_QUEUED_TRANSMITS: usize = 4096;
const MAX_QUEUED_EVENTS: usize = 1024;

/// A datagram the caller must send (from its WireGuard socket): a
/// handshake message, a cookie reply, a keepalive, or a data packet that
/// had waited for a session. [`TransmitKind::of`] tells which.
pub use cvlan_core::Transmit;

/// Which of WireGuard's messages a datagram is, by its type byte (and,
/// for data, whether it carries a packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransmitKind {
    Initiation,
    Response,
    CookieReply,
    Keepalive,
    Data,
}

impl TransmitKind {
    /// The kind of a datagram with WireGuard's framing, else `None`.
    pub fn of(datagram: &[u8]) -> Option<Self> {
        if !crate::wire::is_wireguard(datagram) {
            return None;
        }
        Some(match datagram[0] {
            crate::wire::MSG_INITIATION => Self::Initiation,
            crate::wire::MSG_RESPONSE => Self::Response,
            crate::wire::MSG_COOKIE_REPLY => Self::CookieReply,
            _ if datagram.len() == crate::wire::DATA_MIN_LEN => Self::Keepalive,
            _ => Self::Data,
        })
    }
}

/// Something the caller may want to know or log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Keys were confirmed with the peer (as initiator: response received;
    /// as responder: first packet on the new session received).
    HandshakeCompleted { peer: PeerId, initiator: bool },
    /// No response after `REKEY_ATTEMPT_TIME`; staged packets were dropped.
    HandshakeGaveUp { peer: PeerId },
    /// Three `REJECT_AFTER_TIME`s without a new session: keys wiped.
    KeysZeroed { peer: PeerId },
    /// An authenticated packet came from a new address.
    EndpointChanged { peer: PeerId, endpoint: SocketAddr },
}

/// What happened to a packet from the TUN side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// `buf[..len]` is the sealed message: send it to `to`.
    Send { to: SocketAddr, len: usize },
    /// No session yet: the packet waits (bounded) while a handshake runs.
    Queued,
}

/// What `prepare_send` decided for a packet.
#[derive(Debug)]
pub enum Prepared {
    /// Seal it (anywhere, without the device) and send it.
    Seal(SealJob),
    /// No session yet: the packet waits (bounded) while a handshake runs.
    Queued,
}

/// One packet's sealing, detached from the device: the session key (shared;
/// wiped when the last holder drops it), the counter reserved for it, and
/// where it goes.
pub struct SealJob {
    key: Arc<AeadKey>,
    receiver: u32,
    counter: u64,
    pub to: SocketAddr,
    mtu: usize,
}

impl core::fmt::Debug for SealJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealJob")
            .field("counter", &self.counter)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl SealJob {
    /// Seals the packet at `buf[DATA_HEADER_LEN..][..len]` in place;
    /// returns the datagram length (`buf[..n]`).
    pub fn seal(&self, buf: &mut [u8], len: usize) -> Result<usize, SendError> {
        if buf.len() < sealed_len(len, self.mtu) {
            return Err(SendError::BufferTooSmall);
        }
        Ok(seal_data(
            &self.key,
            self.receiver,
            self.counter,
            buf,
            len,
            self.mtu,
        ))
    }
}

/// What `prepare_datagram` made of a datagram.
#[derive(Debug)]
pub enum Incoming {
    /// Fully handled (a handshake message or cookie reply).
    Done(Received),
    /// A data message: open it with the job, then `finish_datagram`.
    Open(OpenJob),
    /// A handshake initiation past the DoS gate (MAC1; under load MAC2
    /// and the per-address rate): `consume` it without the device (its
    /// two X25519 operations are where a sender who knows our public key
    /// can make us work), then `finish_initiation`.
    Initiation(InitiationJob),
}

/// One handshake initiation's reading, detached from the device.
pub struct InitiationJob {
    identity: Arc<Identity>,
    msg: Box<[u8; wire::INITIATION_LEN]>,
}

impl core::fmt::Debug for InitiationJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InitiationJob").finish_non_exhaustive()
    }
}

/// An initiation that decrypted: who sent it (for `finish_initiation`).
pub struct ConsumedInitiation {
    /// The device key it was read with: a key changed meanwhile drops it.
    under: PublicKey,
    init: noise::ConsumedInitiation,
}

impl core::fmt::Debug for ConsumedInitiation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConsumedInitiation")
            .field("from", &self.init.remote_static)
            .finish_non_exhaustive()
    }
}

impl InitiationJob {
    /// Decrypts the initiator's static key and timestamp (whitepaper
    /// §5.4.2): DH(Sr, Ei) and DH(Sr, Si).
    pub fn consume(&self) -> Result<ConsumedInitiation, RecvError> {
        let init = noise::consume_initiation(
            &self.identity.private,
            &self.identity.initial_hash,
            &self.msg,
        )?;
        Ok(ConsumedInitiation {
            under: self.identity.public,
            init,
        })
    }
}

/// One data message's opening, detached from the device.
pub struct OpenJob {
    key: Arc<AeadKey>,
    peer: PeerId,
    local_index: u32,
    counter: u64,
}

impl core::fmt::Debug for OpenJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenJob")
            .field("peer", &self.peer)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl OpenJob {
    /// Authenticates and decrypts the data message in `buf` in place;
    /// returns the padded plaintext length (at `buf[DATA_HEADER_LEN..]`).
    pub fn open(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        open_data(&self.key, self.counter, buf).map_err(RecvError::from)
    }
}

/// What a datagram turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A packet for the TUN side, at `buf[range]`.
    Packet {
        peer: PeerId,
        range: Range<usize>,
    },
    Keepalive {
        peer: PeerId,
    },
    /// A handshake message or cookie reply, consumed; see `poll_transmit`.
    Handshake,
}

/// Public view of one peer, for `wg show`-style reporting.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub id: PeerId,
    pub public_key: PublicKey,
    pub preshared_key: PresharedKey,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<IpPrefix>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub last_handshake: Option<Duration>,
}

/// Maps the caller's monotonic clock to wall-clock time, for TAI64N and
/// "last handshake" reports, without reading a clock here.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    at: Instant,
    unix: Duration,
}

impl WallClock {
    fn unix(&self, now: Instant) -> Duration {
        self.unix + now.saturating_duration_since(self.at)
    }
}

struct Identity {
    private: PrivateKey,
    public: PublicKey,
    mac_keys: MacKeys,
    initial_hash: [u8; KEY_LEN],
}

pub struct Device {
    identity: Option<Arc<Identity>>,
    peers: HashMap<PeerId, Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    by_index: HashMap<u32, PeerId>,
    routes: AllowedIps<PeerId>,
    next_peer: u64,
    checker: CookieChecker,
    under_load: bool,
    /// Handshake messages per source address, under load.
    limiter: RateLimiter,
    rng: ChaCha20Rng,
    clock: WallClock,
    mtu: usize,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("public_key", &self.identity.as_ref().map(|i| i.public))
            .field("peers", &self.peers.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device with no key and no peers. `seed` feeds every random choice
    /// (ephemeral keys, indices, jitter, cookie secrets): give it 32 bytes
    /// from the OS in production, a constant in tests. `now` and
    /// `unix_now` anchor the wall clock.
    pub fn new(seed: [u8; 32], now: Instant, unix_now: Duration) -> Self {
        Self {
            identity: None,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            routes: AllowedIps::default(),
            next_peer: 0,
            checker: CookieChecker::new(),
            under_load: false,
            limiter: RateLimiter::default(),
            rng: ChaCha20Rng::from_seed(seed),
            clock: WallClock {
                at: now,
                unix: unix_now,
            },
            mtu: 1420,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    // ---------------------------------------------------------------
    // Configuration
    // ---------------------------------------------------------------

    /// Sets (or with `None` removes) the static private key. Sessions made
    /// under the old key are dropped; a peer with our own public key is
    /// removed, as wireguard-go does.
    pub fn set_private_key(&mut self, key: Option<PrivateKey>) {
        let same = match (&self.identity, &key) {
            (Some(a), Some(b)) => a.public == b.public_key(),
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        self.identity = key.map(|private| {
            let public = private.public_key();
            Arc::new(Identity {
                mac_keys: MacKeys::new(&public),
                initial_hash: initial_hash(&public),
                private,
                public,
            })
        });
        if let Some(own) = self.identity.as_ref().map(|i| i.public) {
            if let Some(id) = self.by_key.get(&own).copied() {
                self.remove_peer(id);
            }
        }
        let local = self.identity.as_ref().map(|i| &i.private);
        for peer in self.peers.values_mut() {
            peer.set_local_key(local);
            peer.zero_keys(&mut self.by_index);
            peer.retransmit_handshake = None;
            // As wireguard-go's ExpireCurrentKeypairs: the next packet may
            // start a handshake under the new key at once.
            peer.last_initiation_sent = None;
        }
    }

    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.identity.as_ref().map(|i| &i.private)
    }

    pub fn public_key(&self) -> Option<PublicKey> {
        self.identity.as_ref().map(|i| i.public)
    }

    /// The TUN MTU, which bounds padding.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }

    /// Under load, handshake messages need a valid MAC2 (a cookie) or get a
    /// cookie reply instead of an answer.
    pub fn set_under_load(&mut self, on: bool) {
        self.under_load = on;
    }

    /// Adds a peer, or returns the existing one with that key. Our own
    /// public key is refused.
    pub fn add_peer(&mut self, key: PublicKey) -> Option<PeerId> {
        if self.public_key() == Some(key) {
            return None;
        }
        if let Some(id) = self.by_key.get(&key) {
            return Some(*id);
        }
        let id = PeerId(self.next_peer);
        self.next_peer += 1;
        self.peers.insert(
            id,
            Peer::new(key, self.identity.as_ref().map(|i| &i.private)),
        );
        self.by_key.insert(key, id);
        Some(id)
    }

    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    pub fn remove_peer(&mut self, id: PeerId) {
        if let Some(mut peer) = self.peers.remove(&id) {
            peer.zero_keys(&mut self.by_index);
            self.by_key.remove(&peer.public_key);
            self.routes.remove_value(id);
        }
    }

    pub fn remove_all_peers(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.remove_peer(id);
        }
    }

    pub fn set_preshared_key(&mut self, id: PeerId, psk: PresharedKey) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.psk = psk;
        }
    }

    pub fn set_endpoint(&mut self, id: PeerId, endpoint: SocketAddr) {
        if let Some(p) = self.peers.get_mut(&id) {
            p.endpoint = Some(endpoint);
        }
    }

    /// Sets the persistent keepalive interval (0 = off). Turning it on sends
    /// a keepalive now, which starts a handshake if there is no session.
    pub fn set_persistent_keepalive(&mut self, now: Instant, id: PeerId, secs: u16) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let was = p.persistent_keepalive;
        p.persistent_keepalive = secs;
        if secs == 0 {
            p.persistent_keepalive_at = None;
        } else if was != secs {
            self.send_keepalive(now, id);
        }
    }

    pub fn add_allowed_ip(&mut self, id: PeerId, net: IpPrefix) {
        if self.peers.contains_key(&id) {
            self.routes.insert(net, id);
        }
    }

    pub fn clear_allowed_ips(&mut self, id: PeerId) {
        self.routes.remove_value(id);
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerInfo> + '_ {
        let mut ids: Vec<&PeerId> = self.peers.keys().collect();
        ids.sort();
        ids.into_iter().filter_map(|id| self.peer_info(*id))
    }

    pub fn peer_info(&self, id: PeerId) -> Option<PeerInfo> {
        let p = self.peers.get(&id)?;
        Some(PeerInfo {
            id,
            public_key: p.public_key,
            preshared_key: p.psk.clone(),
            endpoint: p.endpoint,
            persistent_keepalive: p.persistent_keepalive,
            allowed_ips: self.routes.nets_of(id),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            last_handshake: p.last_handshake,
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    // ---------------------------------------------------------------
    // Driver surface
    // ---------------------------------------------------------------

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

    fn prepare_send_inner(&mut self, now: Instant, packet: &[u8]) -> Result<Prepared, SendError> {
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
        Ok(Prepared::Seal(SealJob {
            key,
            receiver,
            counter,
            to,
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

    fn prepare_datagram_inner(
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
                let (session, _) = peer
                    .session_mut(h.receiver)
                    .ok_or(RecvError::UnknownIndex)?;
                let key = session.check_receive(now, h.counter)?;
                Ok(Incoming::Open(OpenJob {
                    key,
                    peer: id,
                    local_index: h.receiver,
                    counter: h.counter,
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

    // ---------------------------------------------------------------
    // Receive paths
    // ---------------------------------------------------------------

    fn finish_data(
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
        let roamed = peer.endpoint != Some(from);
        peer.endpoint = Some(from);
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
    fn admit_handshake(
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
    fn check_load(
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

    fn receive_initiation(
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
        peer.endpoint = Some(from);
        peer.tx_bytes += response.len() as u64;
        peer.rx_bytes += wire::INITIATION_LEN as u64;
        peer.timers_any_authenticated_packet_traversal(now);
        peer.timers_any_authenticated_packet_received();
        peer.timers_session_derived(now);
        peer.timers_any_authenticated_packet_sent();
        self.push_transmit(Transmit::to(from, response.to_vec()));
        Ok(())
    }

    fn receive_response(
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
        let roamed = peer.endpoint != Some(from);
        peer.endpoint = Some(from);
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

    fn receive_cookie_reply(
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

    // ---------------------------------------------------------------
    // Send paths
    // ---------------------------------------------------------------

    fn jitter(&mut self) -> Duration {
        let max = REKEY_TIMEOUT_JITTER_MAX.as_micros() as u64;
        Duration::from_micros(self.rng.next_u64() % (max + 1))
    }

    /// wireguard-go's `SendHandshakeInitiation(isRetry)`.
    fn send_initiation(&mut self, now: Instant, id: PeerId, retry: bool) {
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
    fn send_keepalive(&mut self, now: Instant, id: PeerId) {
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
    fn flush_staged(&mut self, now: Instant, id: PeerId) {
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

    fn run_timers(&mut self, now: Instant, id: PeerId) {
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

    fn push_transmit(&mut self, t: Transmit) {
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            self.transmits.pop_front();
            self.stats.transmits_dropped += 1;
        }
        self.transmits.push_back(t);
    }

    fn push_event(&mut self, e: Event) {
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

/// A fresh random index, unique in the device (whitepaper: "a randomly
/// generated 32-bit index").
fn alloc_index(by_index: &mut HashMap<u32, PeerId>, rng: &mut ChaCha20Rng, id: PeerId) -> u32 {
    loop {
        let i = rng.next_u32();
        if let std::collections::hash_map::Entry::Vacant(e) = by_index.entry(i) {
            e.insert(id);
            return i;
        }
    }
}
