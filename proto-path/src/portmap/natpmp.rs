//! NAT-PMP (RFC 6886) messages: version 0, big-endian, fixed sizes.

use std::net::Ipv4Addr;

use super::{be16, be32, WireError};

pub const VERSION: u8 = 0;
/// Opcodes; answers carry the opcode + 128.
pub const OP_EXTERNAL_ADDRESS: u8 = 0;
pub const OP_MAP_UDP: u8 = 1;
const ANSWER: u8 = 128;

/// Result code 0 (§3.5); the others are refusals.
pub const SUCCESS: u16 = 0;
/// What a NAT-PMP server answers a PCP request with (§3.5, RFC 6887 §9).
pub const UNSUPPORTED_VERSION: u16 = 1;

/// `[0, 0]`: what is our public address?
pub fn external_address_request() -> [u8; 2] {
    [VERSION, OP_EXTERNAL_ADDRESS]
}

/// Map UDP `internal_port` (asking for `suggested` outside) for
/// `lifetime` seconds; lifetime 0 deletes the mapping (§3.4).
pub fn map_request(internal_port: u16, suggested: u16, lifetime: u32) -> [u8; 12] {
    let mut m = [0u8; 12];
    m[0] = VERSION;
    m[1] = OP_MAP_UDP;
    m[4..6].copy_from_slice(&internal_port.to_be_bytes());
    m[6..8].copy_from_slice(&suggested.to_be_bytes());
    m[8..12].copy_from_slice(&lifetime.to_be_bytes());
    m
}

/// An answer from a NAT-PMP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    ExternalAddress {
        result: u16,
        epoch: u32,
        address: Ipv4Addr,
    },
    MapUdp {
        result: u16,
        epoch: u32,
        internal_port: u16,
        external_port: u16,
        lifetime: u32,
    },
    /// Any other answer: only its result code is read (a refusal of a
    /// version or an opcode is 8 bytes, §3.5).
    Other { op: u8, result: u16 },
}

impl Answer {
    pub fn result(&self) -> u16 {
        match *self {
            Answer::ExternalAddress { result, .. }
            | Answer::MapUdp { result, .. }
            | Answer::Other { result, .. } => result,
        }
    }
}

/// Reads an answer; anything longer than its fixed part is ignored.
pub fn parse(datagram: &[u8]) -> Result<Answer, WireError> {
    if datagram.len() < 4 {
        return Err(WireError::Truncated);
    }
    if datagram[0] != VERSION {
        return Err(WireError::Version(datagram[0]));
    }
    let op = datagram[1];
    if op < ANSWER {
        return Err(WireError::NotAnAnswer(op));
    }
    let result = be16(datagram, 2);
    match op - ANSWER {
        OP_EXTERNAL_ADDRESS if result == SUCCESS => {
            if datagram.len() < 12 {
                return Err(WireError::Truncated);
            }
            Ok(Answer::ExternalAddress {
                result,
                epoch: be32(datagram, 4),
                address: Ipv4Addr::new(datagram[8], datagram[9], datagram[10], datagram[11]),
            })
        }
        OP_MAP_UDP if result == SUCCESS => {
            if datagram.len() < 16 {
                return Err(WireError::Truncated);
            }
            Ok(Answer::MapUdp {
                result,
                epoch: be32(datagram, 4),
                internal_port: be16(datagram, 8),
                external_port: be16(datagram, 10),
                lifetime: be32(datagram, 12),
            })
        }
        _ => Ok(Answer::Other { op, result }),
    }
}

/// Answers as a server sends them, for tests and the fuzzers' seeds.
pub mod emit {
    use std::net::Ipv4Addr;

    pub fn external_address(epoch: u32, address: Ipv4Addr) -> [u8; 12] {
        let mut m = [0u8; 12];
        m[1] = 128;
        m[4..8].copy_from_slice(&epoch.to_be_bytes());
        m[8..12].copy_from_slice(&address.octets());
        m
    }

    pub fn map_udp(epoch: u32, internal: u16, external: u16, lifetime: u32) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[1] = 129;
        m[4..8].copy_from_slice(&epoch.to_be_bytes());
        m[8..10].copy_from_slice(&internal.to_be_bytes());
        m[10..12].copy_from_slice(&external.to_be_bytes());
        m[12..16].copy_from_slice(&lifetime.to_be_bytes());
        m
    }

    /// A refusal of `op` (the opcode of the request) with `result`.
    pub fn refusal(op: u8, result: u16, epoch: u32) -> [u8; 8] {
        let mut m = [0u8; 8];
        m[1] = 128 + op;
        m[2..4].copy_from_slice(&result.to_be_bytes());
        m[4..8].copy_from_slice(&epoch.to_be_bytes());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_rfcs_layout() {
        assert_eq!(external_address_request(), [0, 0]);
        // §3.3: version, opcode 1, reserved, internal port, suggested
        // external port, lifetime (7200 s recommended).
        assert_eq!(
            map_request(41641, 41641, 7200),
            [0, 1, 0, 0, 0xa2, 0xa9, 0xa2, 0xa9, 0, 0, 0x1c, 0x20]
        );
    }

    #[test]
    fn answers_parse_and_junk_is_refused() {
        let a = emit::external_address(77, Ipv4Addr::new(198, 51, 100, 11));
        assert_eq!(
            parse(&a),
            Ok(Answer::ExternalAddress {
                result: 0,
                epoch: 77,
                address: Ipv4Addr::new(198, 51, 100, 11)
            })
        );
        let m = emit::map_udp(78, 41641, 50000, 3600);
        assert_eq!(
            parse(&m),
            Ok(Answer::MapUdp {
                result: 0,
                epoch: 78,
                internal_port: 41641,
                external_port: 50000,
                lifetime: 3600
            })
        );
        // A refusal is 8 bytes and still names its result.
        let r = emit::refusal(OP_MAP_UDP, 2, 5);
        assert_eq!(parse(&r).map(|a| a.result()), Ok(2));
        // Truncated, requests, other versions.
        assert_eq!(parse(&m[..12]), Err(WireError::Truncated));
        assert_eq!(parse(&[0, 1, 0, 0]), Err(WireError::NotAnAnswer(1)));
        assert_eq!(parse(&[2, 129, 0, 0]), Err(WireError::Version(2)));
        assert_eq!(parse(&[]), Err(WireError::Truncated));
    }
}
