//! The endpoint side of CloudVLAN. For now: `cvlan-wg`, a userspace
//! WireGuard device that behaves like wireguard-go (TUN + UAPI).

pub mod uapi;
pub mod wg_device;
