//! The ground floor every other crate stands on: small types and the few
//! host facilities that are not TUN or UDP. Nothing here knows a protocol.
//!
//! - [`prefix`]: IP prefixes (parse, mask, contain, first and last address);
//! - [`ip`]: a zero-copy view of an inner IPv4/IPv6 header and the
//!   next-header numbers;
//! - [`key`]: 32-byte keys and their hex and base64 forms;
//! - [`relay_addr`]: the `[tls://]HOST:PORT#KEY[#STUNHOST:PORT]` form;
//! - [`transmit`]: the `Transmit` every protocol machine's `poll_transmit` returns;
//!
//! With the `host` feature (daemons only; the protocol crates stay pure):
//! - `keyfile`: keys and secrets in files only their owner may read;
//! - `seed`: the OS's randomness, with one failure policy;
//! - `local_socket`: Unix sockets that are 0600 from the start;
//! - `logging` (feature `logging`): one log setup for every daemon.
#![forbid(unsafe_code)]

pub mod ip;
pub mod key;
#[cfg(feature = "host")]
pub mod keyfile;
#[cfg(feature = "host")]
pub mod local_socket;
#[cfg(feature = "logging")]
pub mod logging;
pub mod prefix;
pub mod relay_addr;
#[cfg(feature = "host")]
pub mod seed;
pub mod transmit;

pub use key::{Key32, KeyError};
pub use prefix::{IpPrefix, PrefixError};
pub use relay_addr::RelayAddr;
#[cfg(feature = "host")]
pub use seed::os_seed;
pub use transmit::Transmit;
