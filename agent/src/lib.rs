//! The endpoint side of CloudVLAN: `cvlan-agent` (a node of the mesh:
//! control connection, lifecycle, WireGuard peers from the network map)
//! and `cvlan-wg` (the userspace WireGuard device it is built on, usable
//! on its own like wireguard-go).
#![forbid(unsafe_code)]

pub mod control_client;
pub mod daemon;
pub mod lifecycle;
pub mod local_api;
pub mod mesh;
pub mod relay_client;
pub mod relay_path;
pub mod report;
pub mod settings;
pub mod uapi;
pub mod wg_device;
