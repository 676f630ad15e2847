//! The relay: forwards sealed WireGuard packets between nodes by node key
//! when no direct path exists. It never holds a key that could open them.
//! The protocol (frames, server and client state machines) is sans-IO;
//! `cvlan-relay` is the tokio daemon around it.
#![forbid(unsafe_code)]

pub mod admission;
pub mod client;
pub mod dial;
pub mod frame;
pub mod link;
pub mod node;
pub mod server;
pub mod tls;

#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod server_tests;
