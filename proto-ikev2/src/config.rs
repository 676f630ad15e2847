//! What one IKE SA is configured with: identities, credentials,
//! proposals, traffic selectors and timers.

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::cert::{Certificate, TrustStore};
pub use crate::child_slots::ChildLimits;
use crate::crypto::sig::PrivateKey;
pub use crate::identity::Identity;

use crate::proposal::{EspProposal, IkeProposal};
use crate::wire::TrafficSelector;

/// How we prove who we are and check the peer.
#[derive(Clone)]
pub enum Credentials {
    /// One pre-shared key, used both ways (RFC 7296 §2.15).
    Psk(Zeroizing<Vec<u8>>),
    /// Our certificate and its private key; the peer must show a
    /// certificate issued by a CA in `trust` that names its identity.
    Certificate {
        cert: Arc<Certificate>,
        key: Arc<PrivateKey>,
        trust: Arc<TrustStore>,
        /// Sign with RSASSA-PSS instead of PKCS#1 v1.5 (RSA keys only).
        rsa_pss: bool,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Psk(_) => f.write_str("Psk(..)"), // never the key
            Self::Certificate { cert, .. } => write!(f, "Certificate({})", cert.subject()),
        }
    }
}

/// Retransmission and liveness timers.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// First retransmission after this long, doubling each time.
    pub retransmit: Duration,
    /// Retransmissions before giving up on a request.
    pub retransmit_tries: u32,
    /// Idle time after which a liveness check (empty INFORMATIONAL) goes out.
    pub dpd: Option<Duration>,
    /// How long a half-open responder SA (no IKE_AUTH yet) lives.
    pub half_open: Duration,
    /// Rekey each Child SA this long after it was made (`None`: leave it
    /// to the peer).
    pub child_rekey: Option<Duration>,
    /// Rekey the IKE SA this long after it was made.
    pub ike_rekey: Option<Duration>,
    /// Behind a NAT, send a NAT keepalive (RFC 3948 §2.3) this often so
    /// the mapping survives quiet periods.
    pub nat_keepalive: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        // strongSwan's defaults are 4 s x 1.8 over 5 tries; these are a
        // little quicker and give up after a similar total (~60 s).
        Self {
            retransmit: Duration::from_secs(2),
            retransmit_tries: 5,
            dpd: Some(Duration::from_secs(30)),
            half_open: Duration::from_secs(30),
            // strongSwan's defaults: 1 h for Child SAs, 4 h for IKE SAs.
            child_rekey: Some(Duration::from_secs(3600)),
            ike_rekey: Some(Duration::from_secs(4 * 3600)),
            // strongSwan's default keep_alive interval.
            nat_keepalive: Duration::from_secs(20),
        }
    }
}

/// The configuration of one tunnel, as initiator or responder.
#[derive(Debug, Clone)]
pub struct Config {
    pub local_id: Identity,
    /// The identity the peer must prove; `None` accepts any the
    /// credentials verify.
    pub remote_id: Option<Identity>,
    pub credentials: Credentials,
    pub ike_proposals: Vec<IkeProposal>,
    pub esp_proposals: Vec<EspProposal>,
    /// Our side's selectors (TSi when we initiate).
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// Move IKE and ESP to UDP 4500 even without a NAT (strongSwan's
    /// `encap = yes`; its userspace ESP needs it).
    pub force_encap: bool,
    /// Announce IKE fragmentation (RFC 7383) and, if the peer does too,
    /// split protected messages longer than this many bytes. `Some(1248)`
    /// keeps each datagram within 1280 bytes on the wire (strongSwan's
    /// default); `None` neither sends nor accepts fragments.
    pub fragment_size: Option<usize>,
    pub timers: Timers,
    /// How many Child SAs each IKE SA, and all of this configuration's
    /// IKE SAs together, may hold (beyond: NO_ADDITIONAL_SAS).
    pub child_limits: ChildLimits,
}

/// The fragment size that fits a 1280-byte IP datagram (IPv4, UDP,
/// non-ESP marker).
pub const DEFAULT_FRAGMENT_SIZE: usize = 1280 - 20 - 8 - 4;
