//! STUN (RFC 8489, RFC 5389) as sans-IO: a zero-copy codec with
//! MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT, a stateless Binding server
//! (RFC 3489 clients included), and a Binding client with RFC
//! retransmissions and NAT mapping detection. No sockets, no clock, no OS
//! randomness in here.
#![forbid(unsafe_code)]

pub mod client;
pub mod integrity;
pub mod server;
pub mod wire;

pub use client::{BindingClient, ClientConfig, ClientError, Event, MappingBehavior};
pub use integrity::long_term_key;
pub use wire::{is_stun, Class, Message, MessageBuilder, StunError, TransactionId};
