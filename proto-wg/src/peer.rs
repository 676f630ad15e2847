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

/// How long data may go to an endpoint without a word back from it before
/// each packet is also sent to the peer's fallback path, at the least:
/// longer than a LAN's round trip, so answered traffic there is never
/// copied. The silence must also be longer than the peer's usual gaps
/// (see [`Peer::usual_silence`]), so traffic that is simply not answered
/// at once (replies interleaved with our own requests) is not copied
/// either.
pub(crate) const SUSPECT_AFTER: Duration = Duration::from_millis(30);
/// A peer that is usually this quiet is suspected after this much silence
/// at the most.
pub(crate) const MAX_SUSPECT_AFTER: Duration = Duration::from_secs(1);
/// Gaps between packets heard from the endpoint that are remembered.
const GAPS: usize = 4;

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
    /// A second way to the peer (the relay's entry into the device) that
    /// data also takes while the endpoint is not answering: see
    /// [`Peer::also_send_to`].
    pub(crate) fallback: Option<SocketAddr>,
    /// When the first data packet went to the endpoint since we last
    /// heard from it there.
    pub(crate) unheard_since: Option<Instant>,
    /// The last data packet sent while there was a fallback.
    pub(crate) last_sent: Option<Instant>,
    /// The last packet heard from the endpoint, and the latest gaps
    /// between such packets (a ring).
    pub(crate) last_heard: Option<Instant>,
    pub(crate) gaps: [Duration; GAPS],
    pub(crate) next_gap: usize,
    /// How many of `gaps` are measured (up to `GAPS`).
    pub(crate) gaps_known: usize,
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
    /// Where a copy of the data packet being sent goes too, if anywhere.
    ///
    /// A path that breaks (a NAT mapping dropped, a firewall rule) loses
    /// everything sent on it until the owner notices and moves the
    /// endpoint, seconds later. So while the endpoint has stayed silent for
    /// [`SUSPECT_AFTER`] of our sending, and for longer than its usual
    /// gaps, each packet also goes to the fallback: the receiver keeps
    /// whichever copy arrives first (the second is a replay). Traffic that
    /// gets answers, a ping or a TCP flow with its ACKs, is heard from
    /// within a round trip and never copied; only unanswered traffic is,
    /// at most twice.
    pub(crate) fn also_send_to(&mut self, now: Instant) -> Option<SocketAddr> {
        let fallback = self.fallback.filter(|f| Some(*f) != self.endpoint)?;
        // After a pause, sending starts over: a reply we sent seconds ago
        // and a request now are not a stream that went unanswered.
        let paused = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= MAX_SUSPECT_AFTER);
        self.last_sent = Some(now);
        if paused {
            self.unheard_since = Some(now);
        }
        let since = *self.unheard_since.get_or_insert(now);
        // Nothing heard yet on this endpoint (just chosen, the peer may
        // still answer through the relay): silent since we began sending.
        let silent = now.saturating_duration_since(self.last_heard.unwrap_or(since));
        let suspect =
            now.saturating_duration_since(since) >= SUSPECT_AFTER && silent >= self.usual_silence();
        suspect.then_some(fallback)
    }

    /// Silence longer than this is unusual for the peer: half again its
    /// longest recent gap, within [`SUSPECT_AFTER`]..[`MAX_SUSPECT_AFTER`]
    /// (the most until the ring is full: a few gaps say little, and a path
    /// just chosen was just proven).
    fn usual_silence(&self) -> Duration {
        if self.gaps_known < GAPS {
            return MAX_SUSPECT_AFTER;
        }
        let longest = self.gaps.iter().max().copied().unwrap_or_default();
        (longest * 3 / 2).clamp(SUSPECT_AFTER, MAX_SUSPECT_AFTER)
    }

    /// An authenticated packet came from `from`.
    pub(crate) fn heard_from(&mut self, now: Instant, from: SocketAddr) {
        // Only a peer with a fallback needs to know (nothing per packet
        // for the others).
        if self.fallback.is_none() || self.endpoint != Some(from) {
            return;
        }
        self.unheard_since = None;
        if let Some(last) = self.last_heard {
            self.gaps[self.next_gap] = now.saturating_duration_since(last);
            self.next_gap = (self.next_gap + 1) % GAPS;
            self.gaps_known = (self.gaps_known + 1).min(GAPS);
        }
        self.last_heard = Some(now);
    }

    /// Copies are going to the fallback and `from` is the endpoint: a
    /// packet from there ends them.
    pub(crate) fn waits_for_word_from(&self, from: SocketAddr) -> bool {
        self.fallback.is_some() && self.unheard_since.is_some() && self.endpoint == Some(from)
    }

    /// The endpoint is now `to` (the owner's choice or roaming).
    pub(crate) fn set_endpoint(&mut self, to: SocketAddr) {
        if self.endpoint != Some(to) {
            self.unheard_since = None;
            self.last_sent = None;
            self.last_heard = None;
            self.gaps = [Duration::ZERO; GAPS];
            self.gaps_known = 0;
        }
        self.endpoint = Some(to);
    }

    /// An authenticated packet came from `from`: the endpoint follows it
    /// (roaming) unless the owner pinned it. Whether it moved.
    pub(crate) fn roams_to(&mut self, from: SocketAddr) -> bool {
        if self.endpoint_pinned && self.endpoint.is_some() {
            return false;
        }
        let moved = self.endpoint != Some(from);
        self.set_endpoint(from);
        moved
    }

    pub(crate) fn new(public_key: PublicKey, local: Option<&PrivateKey>) -> Self {
        let mut peer = Self {
            public_key,
            psk: PresharedKey::default(),
            endpoint: None,
            endpoint_pinned: false,
            fallback: None,
            unheard_since: None,
            last_sent: None,
            last_heard: None,
            gaps: [Duration::ZERO; GAPS],
            next_gap: 0,
            gaps_known: 0,
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
