//! Typed errors for both directions, and the counters they feed. Bad
//! network input is dropped and counted, never a panic.

use thiserror::Error;

use crate::noise::HandshakeError;
use crate::session::SessionError;
use crate::wire::WireError;

/// Why a datagram from the network was dropped.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    #[error("handshake message with an invalid MAC1")]
    BadMac1,
    #[error("under load: answered with a cookie reply instead")]
    CookieSent,
    #[error("no private key configured")]
    NoPrivateKey,
    #[error("handshake message failed to authenticate")]
    HandshakeAuth,
    #[error("handshake used a low-order public key")]
    LowOrderPoint,
    #[error("initiation from a key that is not a peer")]
    UnknownPeer,
    #[error("no session or handshake with that receiver index")]
    UnknownIndex,
    #[error("initiation timestamp not newer than the last one (replay)")]
    ReplayedInitiation,
    #[error("initiations from this peer arrive too fast")]
    InitiationFlood,
    #[error("under load: this address sent more than 20 handshake messages a second")]
    RateLimited,
    #[error("cookie reply did not authenticate")]
    BadCookieReply,
    #[error("session expired")]
    Expired,
    #[error("replayed or too old data packet")]
    Replayed,
    #[error("data packet failed to authenticate")]
    Decrypt,
    #[error("decrypted payload is not an IP packet")]
    NotIp,
    #[error("inner source address is not in the peer's allowed IPs")]
    ForbiddenSource,
}

impl From<HandshakeError> for RecvError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Decrypt => Self::HandshakeAuth,
            HandshakeError::LowOrderPoint => Self::LowOrderPoint,
        }
    }
}

impl From<SessionError> for RecvError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Expired => Self::Expired,
            SessionError::Replayed => Self::Replayed,
            SessionError::Decrypt => Self::Decrypt,
        }
    }
}

/// Why a packet from the TUN side was not sent.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
    #[error("no peer's allowed IPs cover the destination")]
    NoRoute,
    #[error("the peer has no known endpoint")]
    NoEndpoint,
    #[error("no private key configured")]
    NoPrivateKey,
    /// API misuse: the caller's buffer cannot hold header, padding and tag.
    #[error("buffer too small for the sealed packet")]
    BufferTooSmall,
}

/// Drop counters by reason, plus a few totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_malformed: u64,
    pub rx_bad_mac1: u64,
    pub rx_cookie_sent: u64,
    pub rx_rate_limited: u64,
    pub rx_handshake_rejected: u64,
    pub rx_unknown_index: u64,
    pub rx_replayed: u64,
    pub rx_decrypt_failed: u64,
    pub rx_expired: u64,
    pub rx_not_ip: u64,
    pub rx_forbidden_source: u64,
    pub tx_no_route: u64,
    pub tx_no_endpoint: u64,
    pub tx_not_ip: u64,
    pub tx_other: u64,
    pub staged_dropped: u64,
    pub transmits_dropped: u64,
    /// Data packets also sent on the fallback path (not drops).
    pub tx_copied_to_fallback: u64,
}

impl Stats {
    pub(crate) fn count_recv(&mut self, e: &RecvError) {
        let slot = match e {
            RecvError::Wire(_) => &mut self.rx_malformed,
            RecvError::BadMac1 => &mut self.rx_bad_mac1,
            RecvError::CookieSent => &mut self.rx_cookie_sent,
            RecvError::RateLimited => &mut self.rx_rate_limited,
            RecvError::NoPrivateKey
            | RecvError::HandshakeAuth
            | RecvError::LowOrderPoint
            | RecvError::UnknownPeer
            | RecvError::ReplayedInitiation
            | RecvError::InitiationFlood
            | RecvError::BadCookieReply => &mut self.rx_handshake_rejected,
            RecvError::UnknownIndex => &mut self.rx_unknown_index,
            RecvError::Replayed => &mut self.rx_replayed,
            RecvError::Decrypt => &mut self.rx_decrypt_failed,
            RecvError::Expired => &mut self.rx_expired,
            RecvError::NotIp => &mut self.rx_not_ip,
            RecvError::ForbiddenSource => &mut self.rx_forbidden_source,
        };
        *slot += 1;
    }

    pub(crate) fn count_send(&mut self, e: &SendError) {
        let slot = match e {
            SendError::NoRoute => &mut self.tx_no_route,
            SendError::NoEndpoint => &mut self.tx_no_endpoint,
            SendError::NotIp => &mut self.tx_not_ip,
            SendError::NoPrivateKey | SendError::BufferTooSmall => &mut self.tx_other,
        };
        *slot += 1;
    }

    /// Every datagram or TUN packet dropped, whatever the reason.
    pub fn total_dropped(&self) -> u64 {
        self.rx_malformed
            + self.rx_bad_mac1
            + self.rx_handshake_rejected
            + self.rx_unknown_index
            + self.rx_replayed
            + self.rx_decrypt_failed
            + self.rx_expired
            + self.rx_not_ip
            + self.rx_forbidden_source
            + self.tx_no_route
            + self.tx_no_endpoint
            + self.tx_not_ip
            + self.tx_other
            + self.staged_dropped
    }
}
