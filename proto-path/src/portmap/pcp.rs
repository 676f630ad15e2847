//! PCP (RFC 6887) MAP requests and answers, for UDP over IPv4. Addresses
//! travel as 16 bytes (IPv4-mapped IPv6); options after the MAP fields
//! are ignored.

use std::net::Ipv4Addr;

use super::{be16, be32, WireError};

pub const VERSION: u8 = 2;
pub const OP_MAP: u8 = 1;
const RESPONSE: u8 = 0x80;
const UDP: u8 = 17;
/// The common header and the MAP opcode's fields.
pub const MAP_LEN: usize = 24 + 36;

/// Result codes (§7.4) the client acts on.
pub const SUCCESS: u8 = 0;
pub const UNSUPP_VERSION: u8 = 1;

fn mapped(ip: Ipv4Addr) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&ip.octets());
    a
}

fn unmapped(a: &[u8]) -> Option<Ipv4Addr> {
    (a[..10] == [0; 10] && a[10..12] == [0xff, 0xff])
        .then(|| Ipv4Addr::new(a[12], a[13], a[14], a[15]))
}

/// A MAP request: UDP `internal_port` on `client` (our address toward
/// the router, which checks it against the packet's source), for
/// `lifetime` seconds (0 deletes), under `nonce` (answers must repeat it).
pub fn map_request(
    client: Ipv4Addr,
    nonce: [u8; 12],
    internal_port: u16,
    suggested: u16,
    lifetime: u32,
) -> [u8; MAP_LEN] {
    let mut m = [0u8; MAP_LEN];
    m[0] = VERSION;
    m[1] = OP_MAP;
    m[4..8].copy_from_slice(&lifetime.to_be_bytes());
    m[8..24].copy_from_slice(&mapped(client));
    m[24..36].copy_from_slice(&nonce);
    m[36] = UDP;
    m[40..42].copy_from_slice(&internal_port.to_be_bytes());
    m[42..44].copy_from_slice(&suggested.to_be_bytes());
    // No preferred external address: the IPv4 all-zeros (::ffff:0.0.0.0).
    m[44..60].copy_from_slice(&mapped(Ipv4Addr::UNSPECIFIED));
    m
}

/// A MAP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapAnswer {
    pub result: u8,
    pub lifetime: u32,
    pub epoch: u32,
    pub nonce: [u8; 12],
    pub protocol: u8,
    pub internal_port: u16,
    pub external_port: u16,
    /// `None` when the address is not IPv4-mapped.
    pub external: Option<Ipv4Addr>,
}

/// Reads a MAP answer. An error answer may be only the header (§7.2):
/// its result is still read, the MAP fields left zero.
pub fn parse(datagram: &[u8]) -> Result<MapAnswer, WireError> {
    if datagram.len() < 24 {
        return Err(WireError::Truncated);
    }
    if datagram[0] != VERSION {
        return Err(WireError::Version(datagram[0]));
    }
    if datagram[1] != RESPONSE | OP_MAP {
        return Err(WireError::NotAnAnswer(datagram[1]));
    }
    let result = datagram[3];
    let mut answer = MapAnswer {
        result,
        lifetime: be32(datagram, 4),
        epoch: be32(datagram, 8),
        nonce: [0; 12],
        protocol: 0,
        internal_port: 0,
        external_port: 0,
        external: None,
    };
    if datagram.len() < MAP_LEN {
        return if result == SUCCESS {
            Err(WireError::Truncated)
        } else {
            Ok(answer)
        };
    }
    let map = &datagram[24..MAP_LEN];
    answer.nonce.copy_from_slice(&map[..12]);
    answer.protocol = map[12];
    answer.internal_port = be16(map, 16);
    answer.external_port = be16(map, 18);
    answer.external = unmapped(&map[20..36]);
    Ok(answer)
}

/// A MAP answer as a server sends it, for tests and the fuzzers' seeds.
pub fn emit_answer(a: &MapAnswer) -> [u8; MAP_LEN] {
    let mut m = [0u8; MAP_LEN];
    m[0] = VERSION;
    m[1] = RESPONSE | OP_MAP;
    m[3] = a.result;
    m[4..8].copy_from_slice(&a.lifetime.to_be_bytes());
    m[8..12].copy_from_slice(&a.epoch.to_be_bytes());
    m[24..36].copy_from_slice(&a.nonce);
    m[36] = a.protocol;
    m[40..42].copy_from_slice(&a.internal_port.to_be_bytes());
    m[42..44].copy_from_slice(&a.external_port.to_be_bytes());
    m[44..60].copy_from_slice(&mapped(a.external.unwrap_or(Ipv4Addr::UNSPECIFIED)));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_request_has_the_rfcs_layout() {
        let r = map_request(Ipv4Addr::new(192, 168, 1, 10), [7; 12], 41641, 41641, 7200);
        assert_eq!(r.len(), 60);
        assert_eq!(&r[..4], &[2, 1, 0, 0]);
        assert_eq!(&r[4..8], &7200u32.to_be_bytes());
        assert_eq!(
            &r[8..24],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 10]
        );
        assert_eq!(&r[24..36], &[7; 12]);
        assert_eq!(r[36], 17);
        assert_eq!(&r[40..44], &[0xa2, 0xa9, 0xa2, 0xa9]);
        assert_eq!(&r[44..60], &mapped(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn answers_round_trip_and_junk_is_refused() {
        let a = MapAnswer {
            result: SUCCESS,
            lifetime: 3600,
            epoch: 9,
            nonce: [7; 12],
            protocol: UDP,
            internal_port: 41641,
            external_port: 50001,
            external: Some(Ipv4Addr::new(198, 51, 100, 11)),
        };
        let bytes = emit_answer(&a);
        assert_eq!(parse(&bytes), Ok(a));
        // An error may come as the bare header.
        let mut bare = bytes[..24].to_vec();
        bare[3] = 2; // NOT_AUTHORIZED
        assert_eq!(parse(&bare).map(|a| a.result), Ok(2));
        bare[3] = SUCCESS;
        assert_eq!(parse(&bare), Err(WireError::Truncated));
        // Our own request is no answer; NAT-PMP's version is not ours.
        let req = map_request(Ipv4Addr::LOCALHOST, [1; 12], 1, 1, 1);
        assert_eq!(parse(&req), Err(WireError::NotAnAnswer(1)));
        let mut v0 = bytes;
        v0[0] = 0;
        assert_eq!(parse(&v0), Err(WireError::Version(0)));
        assert_eq!(parse(&[2; 10]), Err(WireError::Truncated));
    }
}
