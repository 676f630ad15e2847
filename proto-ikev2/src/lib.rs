//! IKEv2 (RFC 7296) as a sans-IO library.
//!
//! - [`wire`]: the message format, zero-copy parsing and a writer that
//!   fills in every length; never panics on any input.
//! - [`crypto`]: the PRF and prf+, Diffie-Hellman groups 14/19/20/31 and
//!   the key schedule. [`sk`]: the Encrypted payload, sealed with
//!   proto-esp's ciphers.
//!
//! No IO inside: time comes in as an argument, randomness from an injected
//! `RngCore + CryptoRng`.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod sk;
pub mod wire;
