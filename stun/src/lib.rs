//! STUN (RFC 8489, RFC 5389) as sans-IO: a zero-copy codec with
//! MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT, and a stateless Binding
//! server. No sockets, no clock, no OS randomness in here; the binding
//! client (retransmissions, NAT mapping checks) comes next.
#![forbid(unsafe_code)]

pub mod server;
pub mod wire;

pub use wire::{is_stun, long_term_key, Class, Message, MessageBuilder, StunError, TransactionId};
