//! `cvlan-relay`, the daemon around the sans-IO relay protocol
//! (`proto-relay`): its TCP port (HTTP upgrade, optional TLS), links to
//! the other relays of a mesh, the admission feed from the controller,
//! and STUN.
#![forbid(unsafe_code)]

pub mod admission;
pub mod error;
pub mod node;
pub mod tls;
