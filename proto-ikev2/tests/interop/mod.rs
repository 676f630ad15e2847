//! Support for the tests against real peers.
pub mod driver;
