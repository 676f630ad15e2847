//! cvlan-vrouter: terminates IPsec tunnels from legacy routers with our
//! own IKEv2 (proto-ikev2) and ESP (proto-esp), per tenant, onto TUN
//! devices. `config` reads the TOML file, `gateway` is the IO-free core
//! that moves packets between UDP, SAs and tenants, `daemon` runs it.
#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod datapath;
pub mod gateway;
