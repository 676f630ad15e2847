//! Everything between the protocol state machines and the operating
//! system. This is the only crate with `unsafe`: each block is a single
//! syscall on memory we own, with a `// SAFETY:` line saying why it is sound.

pub mod addr_watch;
pub mod ifaddrs;
pub mod netns;
pub mod offload;
pub mod raw_esp;
pub mod route;
pub mod sockopt;
pub mod tun;
pub mod udp;

pub use tun::Tun;
