//! IKEv2 (RFC 7296) as a sans-IO library.
//!
//! - [`wire`]: the message format, zero-copy parsing and a writer that
//!   fills in every length; never panics on any input.
//! - [`crypto`]: every primitive in one folder: PRF and prf+, DH groups
//!   14/19/20/31, the key schedule, the Encrypted (SK) payload (sealed
//!   with proto-esp's ciphers), PSK AUTH, signatures, cookies, NAT hashes.
//! - [`cert`]: X.509 certificates and their checks; [`identity`]: IKE
//!   identities (ID payloads) and how a certificate proves one.
//! - [`proposal`]: strongSwan-style proposal strings, SA payloads, and
//!   the choice of a suite from a peer's offer.
//! - [`IkeSa`]: one IKE SA, initiator or responder: IKE_SA_INIT, IKE_AUTH
//!   with pre-shared keys and the first Child SA (handed out as a
//!   [`ChildSa`] that builds proto-esp SAs), INFORMATIONAL (delete,
//!   liveness), retransmissions, NAT detection and the float to UDP 4500.
//! - [`Endpoint`]: many IKE SAs on one pair of ports: demultiplexing,
//!   responder configurations by peer address, stateless cookies under
//!   load, bounded half-open state.
//!
//! No IO inside: time comes in as an argument, randomness from a seed the
//! caller supplies per SA.
#![forbid(unsafe_code)]

pub mod cert;
pub mod child;
pub mod child_slots;
pub mod config;
pub mod crypto;
pub mod endpoint;
pub mod identity;
pub mod ike_sa;
pub mod proposal;
pub mod wire;

pub use child::ChildSa;
pub use child_slots::{ChildBudget, ChildLimits, SpiClaim, SpiTable};
pub use config::{Config, Credentials, Identity, Timers, DEFAULT_FRAGMENT_SIZE};
pub use endpoint::{Drops, Endpoint, EndpointConfig, Refused, SaHandle};
pub use ike_sa::{DownReason, Event, IkeSa, Phase, Refusal, Role, Transmit};
pub use proposal::{EspProposal, EspSuite, IkeProposal, IkeSuite};
