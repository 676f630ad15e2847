//! The endpoint side of CloudVLAN: `cvlan-agent`, a node of the mesh
//! (control connection, lifecycle, WireGuard peers from the network map,
//! path discovery through proto-path, relay fallback, CLI), on the
//! userspace WireGuard device of `wg-device`.
#![forbid(unsafe_code)]

pub mod control_client;
pub mod daemon;
pub mod lifecycle;
pub mod local_api;
pub mod mesh;
pub mod path_view;
pub mod reflexive;
pub mod relay_client;
pub mod relay_path;
pub mod report;
pub mod settings;
pub mod socket_demux;
pub mod upnp;
