//! Dev-only support for the tests that run against real peers, in network
//! namespaces (root; CI runs them with `--include-ignored`):
//!
//! - [`host`]: root and tool checks that fail loudly, commands that must succeed;
//! - [`nat_lab`]: a small internet in namespaces, two sites behind NAT routers of chosen types;
//! - [`daemons`]: the controller, the relay and agents started in a lab's namespaces;
//! - [`wg_lab`]: two namespaces on a veth pair, each side cvlan-wg or wireguard-go;
//! - [`strongswan`]: charon in a namespace of its own, configured per test;
//! - [`transfer`]: TCP between namespaces, every byte checked on arrival;
//! - [`vrouter_config`]: cvlan-vrouter configurations built as values.
//!
//! A lab panics when something it needs fails: that is how a test fails.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

pub mod daemons;
pub mod host;
pub mod nat_lab;
pub mod strongswan;
pub mod transfer;
pub mod vrouter_config;
pub mod wg_lab;
