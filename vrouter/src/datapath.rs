//! The per-packet half of the gateway: what the threads moving packets
//! need from a Child SA, shareable outside the gateway's lock. Each SA
//! carries its own small lock (the outbound sequence number, the inbound
//! replay window), so the thread sealing a tenant's packets, the thread
//! opening the peer's and the IKE work never wait on each other.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use proto_esp::spd::Policy;
use proto_esp::{EspError, InboundSa, OutboundSa};

/// Room a caller leaves in front of a packet to seal in place: the ESP
/// header and IV of every cipher we negotiate (8 + 16 for AES-CBC).
pub const HEADROOM: usize = 32;
/// Room behind it: padding to the cipher's block (< 16), the pad length
/// and next header (2) and the ICV (at most 32, HMAC-SHA2-512-256).
pub const TAILROOM: usize = 64;

const NEXT_HEADER_IPV4: u8 = 4;
const NEXT_HEADER_IPV6: u8 = 41;

/// Traffic counters of one tunnel, shared by all its SAs.
#[derive(Debug, Default)]
pub struct Traffic {
    pub bytes_in: AtomicU64,
    pub packets_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub packets_out: AtomicU64,
}

/// Packets dropped on the data path, by reason.
#[derive(Debug, Default)]
pub struct DropCounters {
    pub no_policy: AtomicU64,
    pub unknown_spi: AtomicU64,
    pub esp_invalid: AtomicU64,
    pub policy_mismatch: AtomicU64,
}

/// A snapshot of [`DropCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    pub no_policy: u64,
    pub unknown_spi: u64,
    pub esp_invalid: u64,
    pub policy_mismatch: u64,
}

impl DropCounters {
    pub fn snapshot(&self) -> Drops {
        Drops {
            no_policy: self.no_policy.load(Relaxed),
            unknown_spi: self.unknown_spi.load(Relaxed),
            esp_invalid: self.esp_invalid.load(Relaxed),
            policy_mismatch: self.policy_mismatch.load(Relaxed),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The SA state stays consistent between calls even if a holder
    // panicked: keep forwarding rather than die.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a tenant's packets to one peer are sealed, and where they go.
#[derive(Debug)]
pub struct OutboundPath {
    sa: Mutex<OutboundSa>,
    /// ESP in UDP between `local` and `peer` (port 4500 both, NAT-T);
    /// else raw ESP to the peer's address.
    pub encap: bool,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    traffic: Arc<Traffic>,
}

impl OutboundPath {
    pub fn new(
        sa: OutboundSa,
        encap: bool,
        local: SocketAddr,
        peer: SocketAddr,
        traffic: Arc<Traffic>,
    ) -> Self {
        Self {
            sa: Mutex::new(sa),
            encap,
            local,
            peer,
            traffic,
        }
    }

    /// Seals the IP packet at `buf[HEADROOM..HEADROOM + len]` in place
    /// (`buf` has [`TAILROOM`] bytes behind it) and returns where in `buf`
    /// the ESP packet is.
    pub fn seal(&self, buf: &mut [u8], len: usize) -> Result<Range<usize>, EspError> {
        let next = match buf.get(HEADROOM) {
            Some(b) if b >> 4 == 6 => NEXT_HEADER_IPV6,
            _ => NEXT_HEADER_IPV4,
        };
        let mut sa = lock(&self.sa);
        let start = HEADROOM - sa.headroom();
        let sealed = sa.seal(&mut buf[start..], len, next)?;
        drop(sa);
        self.traffic.bytes_out.fetch_add(len as u64, Relaxed);
        self.traffic.packets_out.fetch_add(1, Relaxed);
        Ok(start..start + sealed)
    }
}

/// Where one peer's ESP packets are opened, and which tenant gets them.
#[derive(Debug)]
pub struct InboundPath {
    sa: Mutex<InboundSa>,
    pub tenant: usize,
    /// The traffic selectors this Child SA was agreed for: an opened
    /// packet outside them is dropped (RFC 4301 §5.2).
    policy: Policy<()>,
    traffic: Arc<Traffic>,
    drops: Arc<DropCounters>,
}

impl InboundPath {
    pub fn new(
        sa: InboundSa,
        tenant: usize,
        policy: Policy<()>,
        traffic: Arc<Traffic>,
        drops: Arc<DropCounters>,
    ) -> Self {
        Self {
            sa: Mutex::new(sa),
            tenant,
            policy,
            traffic,
            drops,
        }
    }

    /// Authenticates and decrypts an ESP packet in place. Returns where
    /// the inner IP packet is, if there is one this SA may carry; forged,
    /// replayed or out-of-policy packets are counted and dropped, dummy
    /// packets (next header 59) silently.
    pub fn open(&self, packet: &mut [u8]) -> Option<Range<usize>> {
        let opened = lock(&self.sa).open(packet);
        let Ok(opened) = opened else {
            self.drops.esp_invalid.fetch_add(1, Relaxed);
            return None;
        };
        if !matches!(opened.next_header, NEXT_HEADER_IPV4 | NEXT_HEADER_IPV6) {
            return None;
        }
        if !self.policy.carries_inbound(&packet[opened.payload.clone()]) {
            self.drops.policy_mismatch.fetch_add(1, Relaxed);
            return None;
        }
        self.traffic
            .bytes_in
            .fetch_add(opened.payload.len() as u64, Relaxed);
        self.traffic.packets_in.fetch_add(1, Relaxed);
        Some(opened.payload)
    }
}
