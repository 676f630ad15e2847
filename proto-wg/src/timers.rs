//! The protocol's constants (whitepaper §6.1) and the handshake jitter.

use std::time::Duration;

pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys and handshake state are wiped after this long without a new session.
pub const ZERO_KEYS_AFTER: Duration = Duration::from_secs(3 * 180);
/// Up to this much random delay is added to each handshake retransmission,
/// so that peers which lost packets together do not retry in lockstep.
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(333);
/// Initiations are sent at most once per `REKEY_TIMEOUT`, so a retry takes
/// `REKEY_ATTEMPT_TIME / REKEY_TIMEOUT` attempts to give up.
pub(crate) const MAX_HANDSHAKE_ATTEMPTS: u32 =
    (REKEY_ATTEMPT_TIME.as_secs() / REKEY_TIMEOUT.as_secs()) as u32;
/// An initiator renews a session this old when it receives on it, so the
/// responder never has to send on a key about to be rejected.
pub(crate) const REKEY_ON_RECEIVE_AGE: Duration = Duration::from_secs(180 - 10 - 5);
/// Initiations from one peer faster than this are dropped (flood guard).
pub(crate) const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);
