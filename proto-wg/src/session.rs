//! One transport session (a "keypair" in wireguard-go): the keys a
//! handshake produced, the send counter and the receive replay window.

use std::sync::Arc;
use std::time::Instant;

use crate::crypto::AeadKey;
use crate::noise::TransportKeys;
use crate::replay::ReplayWindow;
use crate::timers::{
    REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME,
};
use crate::wire::{write_data_header, DATA_HEADER_LEN, DATA_TAG_LEN};

pub(crate) struct Session {
    pub(crate) local_index: u32,
    pub(crate) remote_index: u32,
    // Shared with in-flight seal/open jobs, so the AEAD can run outside the
    // device's lock; the key is wiped when the last holder drops it.
    send: Arc<AeadKey>,
    recv: Arc<AeadKey>,
    send_counter: u64,
    replay: ReplayWindow,
    pub(crate) created: Instant,
    /// Only the initiator renews a session by time (whitepaper §6.2).
    pub(crate) initiator: bool,
}

/// Why a session could not seal or open a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionError {
    Expired,
    Replayed,
    Decrypt,
}

/// Bytes of padding that bring `len` to a multiple of 16 without going
/// past `mtu` (whitepaper §5.4.6; a zero MTU means "no limit").
pub fn padded_len(len: usize, mtu: usize) -> usize {
    let padded = len.div_ceil(16) * 16;
    if mtu == 0 || len > mtu {
        padded
    } else {
        padded.min(mtu)
    }
}

impl Session {
    pub(crate) fn new(
        local_index: u32,
        remote_index: u32,
        keys: &TransportKeys,
        now: Instant,
        initiator: bool,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            send: Arc::new(AeadKey::new(&keys.send)),
            recv: Arc::new(AeadKey::new(&keys.recv)),
            send_counter: 0,
            replay: ReplayWindow::default(),
            created: now,
            initiator,
        }
    }

    fn age_ok(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < REJECT_AFTER_TIME
    }

    /// Can this session still send?
    pub(crate) fn can_send(&self, now: Instant) -> bool {
        self.age_ok(now) && self.send_counter < REJECT_AFTER_MESSAGES
    }

    /// Should the initiator start a new handshake after sending on this?
    pub(crate) fn wants_rekey_on_send(&self, now: Instant) -> bool {
        self.initiator
            && (now.saturating_duration_since(self.created) >= REKEY_AFTER_TIME
                || self.send_counter >= REKEY_AFTER_MESSAGES)
    }

    /// Reserves the next counter for a packet to send: the key, the
    /// counter and the peer's index, to seal with `seal_data` anywhere.
    pub(crate) fn reserve_send(
        &mut self,
        now: Instant,
    ) -> Result<(Arc<AeadKey>, u64, u32), SessionError> {
        if !self.can_send(now) {
            return Err(SessionError::Expired);
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        Ok((self.send.clone(), counter, self.remote_index))
    }

    /// Checks that a received counter may be fresh and the session is
    /// young enough; returns the key to open it with.
    pub(crate) fn check_receive(
        &self,
        now: Instant,
        counter: u64,
    ) -> Result<Arc<AeadKey>, SessionError> {
        if !self.age_ok(now) {
            return Err(SessionError::Expired);
        }
        if !self.replay.may_accept(counter) {
            return Err(SessionError::Replayed);
        }
        Ok(self.recv.clone())
    }

    /// The receive key for a packet whose counter was already seen: its
    /// twin sent on the other path (see `Peer::also_send_to`), opened
    /// only to learn that the path it came on works.
    pub(crate) fn twin_key(&self, now: Instant) -> Option<Arc<AeadKey>> {
        self.age_ok(now).then(|| self.recv.clone())
    }

    /// Records an authenticated counter; `false` for a replay.
    pub(crate) fn accept_counter(&mut self, counter: u64) -> bool {
        self.replay.accept(counter)
    }

    #[cfg(test)]
    pub(crate) fn set_send_counter(&mut self, counter: u64) {
        self.send_counter = counter;
    }
}

/// Seals the packet at `buf[DATA_HEADER_LEN..][..len]` in place: pads it
/// with zeros, writes the header and tag. Returns the message length. The
/// caller checked `buf` has room for padding and tag (`sealed_len`).
pub(crate) fn seal_data(
    key: &AeadKey,
    receiver: u32,
    counter: u64,
    buf: &mut [u8],
    len: usize,
    mtu: usize,
) -> usize {
    let padded = padded_len(len, mtu);
    let body = &mut buf[DATA_HEADER_LEN..];
    body[len..padded].fill(0);
    let sealed = key.seal(counter, &[], body, padded);
    write_data_header(buf, receiver, counter);
    DATA_HEADER_LEN + sealed
}

/// Opens a data message in place; the padded plaintext is at
/// `buf[DATA_HEADER_LEN..][..returned length]`.
pub(crate) fn open_data(
    key: &AeadKey,
    counter: u64,
    buf: &mut [u8],
) -> Result<usize, SessionError> {
    let body = buf
        .get_mut(DATA_HEADER_LEN..)
        .ok_or(SessionError::Decrypt)?;
    key.open(counter, &[], body)
        .map_err(|_| SessionError::Decrypt)
}

/// Bytes a sealed packet of `len` plaintext bytes needs in the caller's buffer.
pub fn sealed_len(len: usize, mtu: usize) -> usize {
    DATA_HEADER_LEN + padded_len(len, mtu) + DATA_TAG_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_rules() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(16, 1420), 16);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1415, 1418), 1418, "never pads past the MTU");
        assert_eq!(
            padded_len(1500, 1420),
            1504,
            "oversize packets still pad to 16"
        );
        assert_eq!(padded_len(17, 0), 32);
    }
}
