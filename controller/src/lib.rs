//! cvlan-controller: the control plane. Nodes join with pre-auth keys, get
//! a stable overlay address, and receive the network map (full, then
//! versioned deltas) over the Noise control channel. State lives in one
//! redb file.
#![forbid(unsafe_code)]

pub mod admin;
pub mod authkey;
pub mod ipam;
pub mod netmap;
pub mod records;
pub mod registry;
pub mod server;
pub mod store;

#[cfg(test)]
mod registry_tests;
