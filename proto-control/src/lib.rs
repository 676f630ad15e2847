//! The control channel between nodes and the controller, as sans-IO state
//! machines: framing for a byte stream and a Noise IK session
//! (Noise_IK_25519_ChaChaPoly_BLAKE2s via snow's pure-Rust primitives,
//! randomness injected), and the protocol messages it carries (protobuf,
//! compiled from `proto/control.proto` at build time).
#![forbid(unsafe_code)]

pub mod channel;
pub mod frame;
pub mod hello_times;
pub mod http;
pub mod messages;
pub mod noise_crypto;

pub use channel::{
    next_timestamp, public_key, Channel, ChannelError, ChannelEvent, Purpose, MAX_MESSAGE,
};
pub use hello_times::HelloTimes;

#[cfg(test)]
mod channel_tests;
