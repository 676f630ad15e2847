//! Just enough of IPv4/IPv6 headers for cryptokey routing: the version,
//! the source and destination, and the length that trims the padding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The routing-relevant fields of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Length the header claims for the whole packet.
    pub total_len: usize,
}

/// Reads the header of an IPv4 or IPv6 packet; `None` if `packet` is too
/// short for its version or the version is neither.
pub fn peek(packet: &[u8]) -> Option<IpHeader> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let octets = |at: usize| {
                Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3])
            };
            Some(IpHeader {
                src: octets(12).into(),
                dst: octets(16).into(),
                total_len: usize::from(u16::from_be_bytes([packet[2], packet[3]])),
            })
        }
        6 if packet.len() >= 40 => {
            let addr = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&packet[at..at + 16]);
                Ipv6Addr::from(b)
            };
            Some(IpHeader {
                src: addr(8).into(),
                dst: addr(24).into(),
                total_len: 40 + usize::from(u16::from_be_bytes([packet[4], packet[5]])),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_v4_and_v6_and_refuses_short_or_unknown() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&84u16.to_be_bytes());
        v4[12..16].copy_from_slice(&[10, 0, 0, 1]);
        v4[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let h = peek(&v4).expect("v4");
        assert_eq!(h.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(h.dst, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(h.total_len, 84);
        assert_eq!(peek(&v4[..19]), None);

        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[5] = 8;
        v6[23] = 1;
        v6[39] = 2;
        let h = peek(&v6).expect("v6");
        assert_eq!(h.src, "::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(h.dst, "::2".parse::<IpAddr>().expect("ip"));
        assert_eq!(h.total_len, 48);
        assert_eq!(peek(&[0x70; 60]), None);
        assert_eq!(peek(&[]), None);
    }
}
