//! A zero-copy view of an inner IPv4 or IPv6 header: what cryptokey
//! routing, security policies and packet filters look at. IPv6 extension
//! headers are not walked: the protocol is the first next-header value,
//! which is what plain traffic carries.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol / IPv6 next-header numbers (IANA).
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const IPV4: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const ESP: u8 = 50;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
}

pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;

/// An IP packet's header, borrowed. Built only by [`IpHeader::parse`],
/// which checks that every field read lies inside the slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader<'a> {
    packet: &'a [u8],
    v4: bool,
    /// Where the transport header starts.
    header_len: usize,
}

impl<'a> IpHeader<'a> {
    /// The header of an IPv4 or IPv6 packet; `None` if `packet` is too
    /// short for its version (or its IPv4 header length), or the version
    /// is neither.
    pub fn parse(packet: &'a [u8]) -> Option<Self> {
        match packet.first()? >> 4 {
            4 => {
                let header_len = usize::from(packet[0] & 0x0f) * 4;
                (header_len >= IPV4_HEADER_LEN && packet.len() >= header_len).then_some(Self {
                    packet,
                    v4: true,
                    header_len,
                })
            }
            6 => (packet.len() >= IPV6_HEADER_LEN).then_some(Self {
                packet,
                v4: false,
                header_len: IPV6_HEADER_LEN,
            }),
            _ => None,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.v4
    }

    pub fn src(&self) -> IpAddr {
        if self.v4 {
            Ipv4Addr::from(self.array::<4>(12)).into()
        } else {
            Ipv6Addr::from(self.array::<16>(8)).into()
        }
    }

    pub fn dst(&self) -> IpAddr {
        if self.v4 {
            Ipv4Addr::from(self.array::<4>(16)).into()
        } else {
            Ipv6Addr::from(self.array::<16>(24)).into()
        }
    }

    /// The protocol (IPv4) or first next header (IPv6).
    pub fn protocol(&self) -> u8 {
        self.packet[if self.v4 { 9 } else { 6 }]
    }

    /// The whole packet's length as the header states it.
    pub fn total_len(&self) -> usize {
        if self.v4 {
            usize::from(u16::from_be_bytes([self.packet[2], self.packet[3]]))
        } else {
            IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([self.packet[4], self.packet[5]]))
        }
    }

    /// Where the transport header starts.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// A non-first IPv4 fragment (no transport header of its own).
    pub fn is_later_fragment(&self) -> bool {
        self.v4 && u16::from_be_bytes([self.packet[6], self.packet[7]]) & 0x1fff != 0
    }

    /// (source, destination) ports of TCP, UDP and SCTP; (0, 0) for other
    /// protocols, later fragments, or a transport header cut short.
    pub fn ports(&self) -> (u16, u16) {
        if self.is_later_fragment() {
            return (0, 0);
        }
        match (self.protocol(), &self.packet[self.header_len..]) {
            (proto::TCP | proto::UDP | proto::SCTP, [a, b, c, d, ..]) => {
                (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))
            }
            _ => (0, 0),
        }
    }

    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        // In bounds: `parse` checked the fixed header is all there.
        out.copy_from_slice(&self.packet[at..at + N]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(proto: u8, frag: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..24].copy_from_slice(&[0x12, 0x34, 0x00, 0x50]);
        p
    }

    #[test]
    fn headers_of_both_versions_and_what_is_refused() {
        let p = v4(proto::TCP, 0);
        let h = IpHeader::parse(&p).unwrap();
        assert!(h.is_ipv4());
        assert_eq!(h.src(), IpAddr::from([10, 0, 0, 1]));
        assert_eq!(h.dst(), IpAddr::from([10, 0, 0, 2]));
        assert_eq!((h.protocol(), h.total_len(), h.header_len()), (6, 28, 20));
        assert_eq!(h.ports(), (0x1234, 80));
        let frag = v4(proto::UDP, 5);
        assert_eq!(IpHeader::parse(&frag).unwrap().ports(), (0, 0));
        assert_eq!(
            IpHeader::parse(&v4(proto::ICMP, 0)).unwrap().ports(),
            (0, 0)
        );
        assert_eq!(IpHeader::parse(&p[..19]), None);
        let mut bad_ihl = p.clone();
        bad_ihl[0] = 0x44; // 16-byte header: impossible
        assert_eq!(IpHeader::parse(&bad_ihl), None);
        bad_ihl[0] = 0x4f; // 60 bytes: longer than the packet
        assert_eq!(IpHeader::parse(&bad_ihl), None);

        let mut v6 = [0u8; 44];
        v6[0] = 0x60;
        v6[5] = 4;
        v6[6] = proto::UDP;
        v6[23] = 1;
        v6[39] = 2;
        v6[40..44].copy_from_slice(&[0, 53, 0x30, 0x39]);
        let h = IpHeader::parse(&v6).unwrap();
        assert_eq!(h.src(), "::1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst(), "::2".parse::<IpAddr>().unwrap());
        assert_eq!((h.total_len(), h.ports()), (44, (53, 12345)));
        assert_eq!(IpHeader::parse(&v6[..39]), None);
        assert_eq!(IpHeader::parse(&[0x70; 60]), None);
        assert_eq!(IpHeader::parse(&[]), None);
    }
}
