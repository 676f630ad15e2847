//! One peer's state: its keys, the handshake in flight, its three sessions
//! and its timers. The device drives it; nothing here does IO.
//!
//! Timers are deadlines (`Option<Instant>`), named and set exactly as the
//! whitepaper's §6 timers (and wireguard-go's `timers.go`), so each rule can
//! be checked against the reference.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cookie::{CookieJar, MacKeys};
use crate::crypto::{dh, Secret, KEY_LEN};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::noise::{initial_hash, InitiatorState};
use crate::session::Session;
use crate::tai64n::Tai64N;
use crate::timers::{KEEPALIVE_TIMEOUT, REKEY_TIMEOUT, ZERO_KEYS_AFTER};

/// A device-unique peer handle; never reused within a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u64);

/// At most this many packets wait per peer for a session; older ones are
/// dropped first, as in wireguard-go.
pub const MAX_STAGED_PACKETS: usize = 128;

/// Which slot a received packet's session occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Previous,
    Current,
    Next,
}

pub(crate) struct Peer {
    pub(crate) public_key: PublicKey,
    pub(crate) psk: PresharedKey,
    pub(crate) endpoint: Option<SocketAddr>,
    /// The owner decides the endpoint: authenticated packets from
    /// elsewhere do not move it (no roaming). For an in-process owner
    /// that chooses paths itself (the agent's path machine).
    pub(crate) endpoint_pinned: bool,
    pub(crate) persistent_keepalive: u16,

    // Precomputed from the two static keys.
    pub(crate) mac_keys: MacKeys,
    pub(crate) initial_hash: [u8; KEY_LEN],
    /// `DH(our static, their static)`; `None` if their key is low order
    /// (then no handshake with them can succeed).
    pub(crate) static_static: Option<Secret>,

    // Handshake.
    pub(crate) pending: Option<InitiatorState>,
    pub(crate) cookies: CookieJar,
    pub(crate) last_initiation_sent: Option<Instant>,
    pub(crate) attempts: u32,
    pub(crate) sent_last_minute_handshake: bool,
    pub(crate) newest_timestamp: Option<Tai64N>,
    pub(crate) last_initiation_consumed: Option<Instant>,

    // Sessions.
    pub(crate) previous: Option<Session>,
    pub(crate) current: Option<Session>,
    pub(crate) next: Option<Session>,

    // Timers (deadlines).
    pub(crate) retransmit_handshake: Option<Instant>,
    pub(crate) send_keepalive: Option<Instant>,
    pub(crate) need_another_keepalive: bool,
    pub(crate) new_handshake: Option<Instant>,
    pub(crate) zero_key_material: Option<Instant>,
    pub(crate) persistent_keepalive_at: Option<Instant>,

    pub(crate) staged: VecDeque<Vec<u8>>,

    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    /// Wall-clock time (since the Unix epoch) of the last completed handshake.
    pub(crate) last_handshake: Option<Duration>,
}

impl Peer {
    /// An authenticated packet came from `from`: the endpoint follows it
    /// (roaming) unless the owner pinned it. Whether it moved.
    pub(crate) fn roams_to(&mut self, from: SocketAddr) -> bool {
        if self.endpoint_pinned && self.endpoint.is_some() {
            return false;
        }
        let moved = self.endpoint != Some(from);
        self.endpoint = Some(from);
        moved
    }

    pub(crate) fn new(public_key: PublicKey, local: Option<&PrivateKey>) -> Self {
        let mut peer = Self {
            public_key,
            psk: PresharedKey::default(),
            endpoint: None,
            endpoint_pinned: false,
            persistent_keepalive: 0,
            mac_keys: MacKeys::new(&public_key),
            initial_hash: initial_hash(&public_key),
            static_static: None,
            pending: None,
            cookies: CookieJar::default(),
            last_initiation_sent: None,
            attempts: 0,
            sent_last_minute_handshake: false,
            newest_timestamp: None,
            last_initiation_consumed: None,
            previous: None,
            current: None,
            next: None,
            retransmit_handshake: None,
            send_keepalive: None,
            need_another_keepalive: false,
            new_handshake: None,
            zero_key_material: None,
            persistent_keepalive_at: None,
            staged: VecDeque::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            last_handshake: None,
        };
        peer.set_local_key(local);
        peer
    }

    /// Recomputes what depends on our private key.
    pub(crate) fn set_local_key(&mut self, local: Option<&PrivateKey>) {
        self.static_static = local.and_then(|k| dh(k.secret(), self.public_key.as_bytes()));
    }

    /// The session that owns `index`, and its slot.
    pub(crate) fn session_mut(&mut self, index: u32) -> Option<(&mut Session, Slot)> {
        [
            (self.current.as_mut(), Slot::Current),
            (self.next.as_mut(), Slot::Next),
            (self.previous.as_mut(), Slot::Previous),
        ]
        .into_iter()
        .find_map(|(s, slot)| s.filter(|s| s.local_index == index).map(|s| (s, slot)))
    }

    /// The initiator's new session becomes current at once (the response
    /// confirmed the keys). Mirrors wireguard-go's `BeginSymmetricSession`.
    pub(crate) fn install_initiator_session(
        &mut self,
        session: Session,
        index: &mut HashMap<u32, PeerId>,
    ) {
        let dropped = if let Some(next) = self.next.take() {
            let old_current = self.current.take();
            let old_previous = self.previous.replace(next);
            [old_current, old_previous]
        } else {
            let old_previous = self.previous.take();
            self.previous = self.current.take();
            [old_previous, None]
        };
        forget(dropped, index);
        self.current = Some(session);
    }

    /// The responder's new session waits in `next` until the initiator uses
    /// it (key confirmation); the previous session is dropped.
    pub(crate) fn install_responder_session(
        &mut self,
        session: Session,
        index: &mut HashMap<u32, PeerId>,
    ) {
        let dropped = [self.next.replace(session), self.previous.take()];
        forget(dropped, index);
    }

    /// A packet arrived on `next`: it is confirmed and becomes current.
    pub(crate) fn confirm_next(&mut self, index: &mut HashMap<u32, PeerId>) {
        let old_previous = self.previous.take();
        self.previous = self.current.take();
        self.current = self.next.take();
        forget([old_previous, None], index);
    }

    /// Drops the pending initiation, if any, and its index.
    pub(crate) fn clear_pending(&mut self, index: &mut HashMap<u32, PeerId>) {
        if let Some(p) = self.pending.take() {
            let still_used = self.sessions().any(|s| s.local_index == p.local_index);
            if !still_used {
                index.remove(&p.local_index);
            }
        }
    }

    fn sessions(&self) -> impl Iterator<Item = &Session> {
        [&self.previous, &self.current, &self.next]
            .into_iter()
            .flatten()
    }

    /// Every local index this peer holds (sessions and pending handshake).
    pub(crate) fn indices(&self) -> Vec<u32> {
        self.sessions()
            .map(|s| s.local_index)
            .chain(self.pending.as_ref().map(|p| p.local_index))
            .collect()
    }

    /// Wipes every key and handshake state (after `ZERO_KEYS_AFTER`).
    pub(crate) fn zero_keys(&mut self, index: &mut HashMap<u32, PeerId>) {
        for i in self.indices() {
            index.remove(&i);
        }
        self.pending = None;
        self.previous = None;
        self.current = None;
        self.next = None;
        self.staged.clear();
    }

    pub(crate) fn has_sendable_session(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|s| s.can_send(now))
    }

    pub(crate) fn stage(&mut self, packet: &[u8]) -> bool {
        let dropped = self.staged.len() >= MAX_STAGED_PACKETS;
        if dropped {
            self.staged.pop_front();
        }
        self.staged.push_back(packet.to_vec());
        dropped
    }

    /// The earliest of this peer's deadlines.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // --- Timer events, named after the whitepaper / wireguard-go ---

    pub(crate) fn timers_data_sent(&mut self, now: Instant, jitter: Duration) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter);
        }
    }

    pub(crate) fn timers_data_received(&mut self, now: Instant) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.need_another_keepalive = true;
        }
    }

    pub(crate) fn timers_any_authenticated_packet_sent(&mut self) {
        self.send_keepalive = None;
    }

    pub(crate) fn timers_any_authenticated_packet_received(&mut self) {
        self.new_handshake = None;
    }

    pub(crate) fn timers_any_authenticated_packet_traversal(&mut self, now: Instant) {
        if self.persistent_keepalive > 0 {
            self.persistent_keepalive_at =
                Some(now + Duration::from_secs(self.persistent_keepalive.into()));
        }
    }

    pub(crate) fn timers_handshake_initiated(&mut self, now: Instant, jitter: Duration) {
        self.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter);
    }

    pub(crate) fn timers_handshake_complete(&mut self, wall: Duration) {
        self.retransmit_handshake = None;
        self.attempts = 0;
        self.sent_last_minute_handshake = false;
        self.last_handshake = Some(wall);
    }

    pub(crate) fn timers_session_derived(&mut self, now: Instant) {
        self.zero_key_material = Some(now + ZERO_KEYS_AFTER);
    }
}

fn forget<const N: usize>(sessions: [Option<Session>; N], index: &mut HashMap<u32, PeerId>) {
    for s in sessions.into_iter().flatten() {
        index.remove(&s.local_index);
    }
}
