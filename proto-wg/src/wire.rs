//! WireGuard's four message formats: zero-copy views for parsing and fixed
//! layouts for emitting. Parsing never panics and never allocates.
//!
//! ```text
//! initiation (148): type=1 | 0,0,0 | sender | ephemeral(32) | static(32+16) | timestamp(12+16) | mac1 | mac2
//! response    (92): type=2 | 0,0,0 | sender | receiver | ephemeral(32) | empty(0+16) | mac1 | mac2
//! cookie      (64): type=3 | 0,0,0 | receiver | nonce(24) | cookie(16+16)
//! data     (32+n): type=4 | 0,0,0 | receiver | counter(8, LE) | packet(n) + tag(16)
//! ```

use thiserror::Error;

pub const MSG_INITIATION: u8 = 1;
pub const MSG_RESPONSE: u8 = 2;
pub const MSG_COOKIE_REPLY: u8 = 3;
pub const MSG_DATA: u8 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header of a data message: type, reserved, receiver index, counter.
pub const DATA_HEADER_LEN: usize = 16;
/// Poly1305 tag closing every data message.
pub const DATA_TAG_LEN: usize = 16;
/// Smallest data message: an empty (keepalive) payload.
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + DATA_TAG_LEN;
/// Bytes a data message adds to the (padded) packet it carries.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + DATA_TAG_LEN;

// Field offsets, shared by parser and emitter.
pub(crate) const INIT_SENDER: usize = 4;
pub(crate) const INIT_EPHEMERAL: usize = 8;
pub(crate) const INIT_STATIC: usize = 40;
pub(crate) const INIT_TIMESTAMP: usize = 88;
pub(crate) const INIT_MAC1: usize = 116;

pub(crate) const RESP_SENDER: usize = 4;
pub(crate) const RESP_RECEIVER: usize = 8;
pub(crate) const RESP_EPHEMERAL: usize = 12;
pub(crate) const RESP_EMPTY: usize = 44;
pub(crate) const RESP_MAC1: usize = 60;

pub(crate) const COOKIE_RECEIVER: usize = 4;
pub(crate) const COOKIE_NONCE: usize = 8;
pub(crate) const COOKIE_SEALED: usize = 32;

pub(crate) const DATA_RECEIVER: usize = 4;
pub(crate) const DATA_COUNTER: usize = 8;

// No amplification: a cookie reply is smaller than the message it answers.
const _: () = assert!(COOKIE_REPLY_LEN < INITIATION_LEN && COOKIE_REPLY_LEN < RESPONSE_LEN);

/// Why a datagram is not a well-formed WireGuard message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    #[error("empty datagram")]
    Empty,
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("reserved bytes are not zero")]
    Reserved,
    #[error("message type {kind} must be {expected} bytes, got {got}")]
    BadLength {
        kind: u8,
        expected: usize,
        got: usize,
    },
    #[error("data message of {0} bytes is shorter than header and tag")]
    DataTooShort(usize),
}

/// A parsed message: fixed-size views into the caller's buffer.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Initiation(&'a [u8; INITIATION_LEN]),
    Response(&'a [u8; RESPONSE_LEN]),
    CookieReply(&'a [u8; COOKIE_REPLY_LEN]),
    Data(DataHeader),
}

/// The clear part of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    pub receiver: u32,
    pub counter: u64,
}

fn fixed<const N: usize>(buf: &[u8], kind: u8) -> Result<&[u8; N], WireError> {
    buf.try_into().map_err(|_| WireError::BadLength {
        kind,
        expected: N,
        got: buf.len(),
    })
}

/// Whether a datagram has WireGuard's framing: a type from 1 to 4 and
/// three zero bytes. A socket WireGuard shares (path probes, STUN) hands
/// only these to the device. STUN's first bytes can be 0x01 0x01, never
/// 0x01 0x00 0x00 0x00 (its length field is a multiple of 4 and the magic
/// cookie follows), and probes start with 0xff.
pub fn is_wireguard(buf: &[u8]) -> bool {
    buf.len() >= 4 && (MSG_INITIATION..=MSG_DATA).contains(&buf[0]) && buf[1..4] == [0, 0, 0]
}

/// Classifies a datagram and checks its framing (not its cryptography).
pub fn parse(buf: &[u8]) -> Result<Message<'_>, WireError> {
    let kind = *buf.first().ok_or(WireError::Empty)?;
    if !(MSG_INITIATION..=MSG_DATA).contains(&kind) {
        return Err(WireError::UnknownType(kind));
    }
    if buf.len() < 4 {
        return Err(WireError::BadLength {
            kind,
            expected: 4,
            got: buf.len(),
        });
    }
    if buf[1..4] != [0, 0, 0] {
        return Err(WireError::Reserved);
    }
    Ok(match kind {
        MSG_INITIATION => Message::Initiation(fixed(buf, kind)?),
        MSG_RESPONSE => Message::Response(fixed(buf, kind)?),
        MSG_COOKIE_REPLY => Message::CookieReply(fixed(buf, kind)?),
        _ => {
            if buf.len() < DATA_MIN_LEN {
                return Err(WireError::DataTooShort(buf.len()));
            }
            Message::Data(DataHeader {
                receiver: read_u32(buf, DATA_RECEIVER),
                counter: read_u64(buf, DATA_COUNTER),
            })
        }
    })
}

/// Reads a little-endian u32 at `at`. Callers have checked the length.
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Copies `N` bytes at `at` out of a fixed-size message.
pub(crate) fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// Writes the header of a data message into `buf[..DATA_HEADER_LEN]`.
pub(crate) fn write_data_header(buf: &mut [u8], receiver: u32, counter: u64) {
    buf[..4].copy_from_slice(&[MSG_DATA, 0, 0, 0]);
    buf[DATA_RECEIVER..DATA_RECEIVER + 4].copy_from_slice(&receiver.to_le_bytes());
    buf[DATA_COUNTER..DATA_COUNTER + 8].copy_from_slice(&counter.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wireguard_framing_goes_to_the_device() {
        assert!(is_wireguard(&[1, 0, 0, 0, 9]));
        assert!(is_wireguard(&[4, 0, 0, 0]));
        // A STUN Binding success (type 0x0101, length 12, magic cookie).
        assert!(!is_wireguard(&[1, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42]));
        // A STUN Binding request with no attributes.
        assert!(!is_wireguard(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]));
        assert!(!is_wireguard(b"\xffCVP"), "a path probe");
        assert!(!is_wireguard(&[5, 0, 0, 0]));
        assert!(!is_wireguard(&[1, 0, 0]));
    }

    #[test]
    fn rejects_every_malformed_shape() {
        assert_eq!(parse(&[]).unwrap_err(), WireError::Empty);
        assert_eq!(parse(&[9, 0, 0, 0]).unwrap_err(), WireError::UnknownType(9));
        assert_eq!(parse(&[0]).unwrap_err(), WireError::UnknownType(0));
        assert!(matches!(
            parse(&[1, 0]).unwrap_err(),
            WireError::BadLength { .. }
        ));
        let mut init = [0u8; INITIATION_LEN];
        init[0] = 1;
        assert!(matches!(parse(&init).expect("ok"), Message::Initiation(_)));
        init[2] = 1;
        assert_eq!(parse(&init).unwrap_err(), WireError::Reserved);
        assert!(matches!(
            parse(&init[..100]).unwrap_err(),
            WireError::Reserved | WireError::BadLength { .. }
        ));
        let mut data = [0u8; 31];
        data[0] = 4;
        assert_eq!(parse(&data).unwrap_err(), WireError::DataTooShort(31));
    }

    #[test]
    fn data_header_round_trips() {
        let mut buf = [0u8; DATA_MIN_LEN];
        write_data_header(&mut buf, 0xdead_beef, 0x0102_0304_0506_0708);
        match parse(&buf).expect("data") {
            Message::Data(h) => {
                assert_eq!(h.receiver, 0xdead_beef);
                assert_eq!(h.counter, 0x0102_0304_0506_0708);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(&buf[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }
}
