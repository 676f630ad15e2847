//! The WireGuard device: many peers behind one static key, as a sans-IO
//! state machine. Its parts, one file each: `config.rs` (key, peers,
//! reports), `driver.rs` (the surface below), `receive.rs` and `send.rs`
//! (the paths and timers), `jobs.rs` (work done outside the device lock).
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

mod config;
mod driver;
mod jobs;
mod receive;
mod send;

pub use jobs::{ConsumedInitiation, Incoming, InitiationJob, OpenJob, SealJob};

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
    /// `buf[..len]` is the sealed message: send it to `to`, and to
    /// `also_to` as well when there is one.
    Send {
        to: SocketAddr,
        also_to: Option<SocketAddr>,
        len: usize,
    },
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
