//! The userspace WireGuard device runtime: one proto-wg `Device` driven by
//! a TUN interface, a UDP socket and the UAPI socket, the way wireguard-go
//! runs, as `cvlan-wg IFNAME` or inside another program (the agent).
//!
//! - [`device`]: the threads, the sockets and the [`DeviceHandle`] an
//!   embedding program holds;
//! - [`config`]: the typed configuration that program gives it;
//! - [`uapi`]: WireGuard's `key=value` protocol over the UAPI socket, for
//!   `wg`, `wg-quick` and other outside tools, as pure functions.
#![forbid(unsafe_code)]

pub mod config;
pub mod device;
pub mod uapi;

pub use config::{ConfigError, PeerChange, PeerConfig};
pub use device::{run, start, DeviceHandle, Options};
pub use proto_wg::PeerInfo;
