//! Relay frames. Each frame is one message of the Noise session between
//! a client (or a meshed relay) and the relay, so it is already length-
//! delimited and authenticated; this module only gives its bytes a type.
//!
//! ```text
//! type (1) | body
//! 0x01 SendPacket    dst key (32) | packet        client -> relay
//! 0x02 RecvPacket    src key (32) | packet        relay  -> client
//! 0x03 KeepAlive     -                            both ways
//! 0x04 PeerGone      key (32) | reason (1)        relay  -> client
//! 0x05 Ping          data (8)                     both ways
//! 0x06 Pong          data (8)                     both ways
//! 0x07 PeerPresent   key (32)                     relay  -> relay (mesh)
//! 0x08 PeerAbsent    key (32)                     relay  -> relay (mesh)
//! 0x09 ForwardPacket src (32) | dst (32) | packet relay  -> relay (mesh)
//! ```

use thiserror::Error;

use proto_control::MAX_MESSAGE;

/// A node key (X25519 public key, as WireGuard uses it).
pub type Key = [u8; 32];

/// Largest packet a frame carries (the biggest frame is ForwardPacket).
pub const MAX_PACKET: usize = MAX_MESSAGE - 1 - 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// The peer was connected here and disconnected.
    Disconnected = 0,
    /// The relay does not know the peer (never connected, or elsewhere).
    NotHere = 1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    SendPacket {
        dst: Key,
        packet: &'a [u8],
    },
    RecvPacket {
        src: Key,
        packet: &'a [u8],
    },
    KeepAlive,
    PeerGone {
        key: Key,
        reason: GoneReason,
    },
    Ping([u8; 8]),
    Pong([u8; 8]),
    PeerPresent(Key),
    PeerAbsent(Key),
    ForwardPacket {
        src: Key,
        dst: Key,
        packet: &'a [u8],
    },
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("frame type {0:#04x} has the wrong length")]
    Length(u8),
    #[error("packet larger than {MAX_PACKET} bytes")]
    TooLarge,
    #[error("unknown peer-gone reason {0}")]
    Reason(u8),
}

fn key(b: &[u8]) -> Key {
    let mut k = [0u8; 32];
    k.copy_from_slice(&b[..32]);
    k
}

impl<'a> Frame<'a> {
    pub fn decode(b: &'a [u8]) -> Result<Self, FrameError> {
        let (&t, body) = b.split_first().ok_or(FrameError::Empty)?;
        let exact = |n: usize| {
            if body.len() == n {
                Ok(())
            } else {
                Err(FrameError::Length(t))
            }
        };
        let at_least = |n: usize| {
            if body.len() < n {
                Err(FrameError::Length(t))
            } else if body.len() - n > MAX_PACKET {
                Err(FrameError::TooLarge)
            } else {
                Ok(())
            }
        };
        let eight = |body: &[u8]| {
            let mut d = [0u8; 8];
            d.copy_from_slice(body);
            d
        };
        Ok(match t {
            0x01 => {
                at_least(32)?;
                Self::SendPacket {
                    dst: key(body),
                    packet: &body[32..],
                }
            }
            0x02 => {
                at_least(32)?;
                Self::RecvPacket {
                    src: key(body),
                    packet: &body[32..],
                }
            }
            0x03 => {
                exact(0)?;
                Self::KeepAlive
            }
            0x04 => {
                exact(33)?;
                let reason = match body[32] {
                    0 => GoneReason::Disconnected,
                    1 => GoneReason::NotHere,
                    r => return Err(FrameError::Reason(r)),
                };
                Self::PeerGone {
                    key: key(body),
                    reason,
                }
            }
            0x05 => {
                exact(8)?;
                Self::Ping(eight(body))
            }
            0x06 => {
                exact(8)?;
                Self::Pong(eight(body))
            }
            0x07 => {
                exact(32)?;
                Self::PeerPresent(key(body))
            }
            0x08 => {
                exact(32)?;
                Self::PeerAbsent(key(body))
            }
            0x09 => {
                at_least(64)?;
                Self::ForwardPacket {
                    src: key(body),
                    dst: key(&body[32..]),
                    packet: &body[64..],
                }
            }
            other => return Err(FrameError::UnknownType(other)),
        })
    }

    /// Appends the frame's bytes to `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.clear();
        let packet_len = match self {
            Self::SendPacket { packet, .. }
            | Self::RecvPacket { packet, .. }
            | Self::ForwardPacket { packet, .. } => packet.len(),
            _ => 0,
        };
        if packet_len > MAX_PACKET {
            return Err(FrameError::TooLarge);
        }
        match self {
            Self::SendPacket { dst, packet } => {
                out.push(0x01);
                out.extend_from_slice(dst);
                out.extend_from_slice(packet);
            }
            Self::RecvPacket { src, packet } => {
                out.push(0x02);
                out.extend_from_slice(src);
                out.extend_from_slice(packet);
            }
            Self::KeepAlive => out.push(0x03),
            Self::PeerGone { key, reason } => {
                out.push(0x04);
                out.extend_from_slice(key);
                out.push(*reason as u8);
            }
            Self::Ping(d) => {
                out.push(0x05);
                out.extend_from_slice(d);
            }
            Self::Pong(d) => {
                out.push(0x06);
                out.extend_from_slice(d);
            }
            Self::PeerPresent(k) => {
                out.push(0x07);
                out.extend_from_slice(k);
            }
            Self::PeerAbsent(k) => {
                out.push(0x08);
                out.extend_from_slice(k);
            }
            Self::ForwardPacket { src, dst, packet } => {
                out.push(0x09);
                out.extend_from_slice(src);
                out.extend_from_slice(dst);
                out.extend_from_slice(packet);
            }
        }
        Ok(())
    }

    pub fn to_vec(&self) -> Result<Vec<u8>, FrameError> {
        let mut v = Vec::new();
        self.encode_into(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let p: &[u8] = b"sealed wireguard bytes";
        for f in [
            Frame::SendPacket { dst: a, packet: p },
            Frame::RecvPacket {
                src: b,
                packet: &[],
            },
            Frame::KeepAlive,
            Frame::PeerGone {
                key: a,
                reason: GoneReason::NotHere,
            },
            Frame::PeerGone {
                key: b,
                reason: GoneReason::Disconnected,
            },
            Frame::Ping([3; 8]),
            Frame::Pong([4; 8]),
            Frame::PeerPresent(a),
            Frame::PeerAbsent(b),
            Frame::ForwardPacket {
                src: a,
                dst: b,
                packet: p,
            },
        ] {
            let bytes = f.to_vec().unwrap();
            assert_eq!(Frame::decode(&bytes), Ok(f));
        }
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[0x77]), Err(FrameError::UnknownType(0x77)));
        assert_eq!(Frame::decode(&[0x01; 32]), Err(FrameError::Length(1)));
        assert_eq!(Frame::decode(&[0x03, 0]), Err(FrameError::Length(3)));
        let mut gone = vec![0x04];
        gone.extend_from_slice(&[0; 32]);
        gone.push(9);
        assert_eq!(Frame::decode(&gone), Err(FrameError::Reason(9)));
        let huge = vec![0u8; MAX_PACKET + 1];
        assert_eq!(
            Frame::SendPacket {
                dst: [0; 32],
                packet: &huge
            }
            .to_vec(),
            Err(FrameError::TooLarge)
        );
    }
}
