//! The relay protocol, sans-IO. A relay forwards sealed WireGuard packets
//! between nodes by node key when no direct path exists; it never holds a
//! key that could open them. Every frame is one message of a Noise
//! session (proto-control's channel, relay purpose) between a node and
//! its relay, or between two meshed relays.
//!
//! - [`frame`]: the frames' bytes;
//! - [`server`]: the relay's forwarding core (who is where, queues, limits);
//! - [`client`]: a node's side of one relay connection;
//! - [`link`]: the relay-to-relay handshake of a mesh link.
//!
//! The daemon around it is `relay` (`cvlan-relay`); a node's async client
//! is the agent's `relay_client`.
#![forbid(unsafe_code)]

pub mod client;
pub mod frame;
pub mod link;
pub mod server;

#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod server_tests;

/// The HTTP path and `Upgrade` token a relay's TCP port answers.
pub const RELAY_PATH: &str = "/relay";
pub const UPGRADE_TOKEN: &str = "cvlan-relay/1";
