//! The control channel between nodes and the controller, as sans-IO state
//! machines: framing for a byte stream and a Noise IK session
//! (Noise_IK_25519_ChaChaPoly_BLAKE2s via snow's pure-Rust primitives,
//! randomness injected). The controller's protocol messages come next.
#![forbid(unsafe_code)]

pub mod channel;
pub mod frame;

pub use channel::{public_key, Channel, ChannelError, ChannelEvent, MAX_MESSAGE};

#[cfg(test)]
mod tests;
