//! The Security Policy Database (RFC 4301 §4.4.1), reduced to what a
//! tunnel gateway needs: ordered policies whose selectors pick the SA for
//! an outbound packet, and the check that a packet which arrived on an SA
//! carries addresses, protocol and ports that SA was agreed for (so a
//! peer cannot tunnel traffic it was never given).

use std::net::IpAddr;

use cvlan_core::ip::IpHeader;
use cvlan_core::IpPrefix;

/// Addresses, protocol and ports one side of a policy covers (what an
/// IKE traffic selector carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Selector {
    pub start: IpAddr,
    pub end: IpAddr,
    /// 0: any protocol.
    pub proto: u8,
    pub start_port: u16,
    pub end_port: u16,
}

impl Selector {
    /// All protocols and ports of a prefix such as 10.1.0.0/16.
    pub fn subnet(addr: IpAddr, prefix: u8) -> Self {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let net = IpPrefix::new(addr, prefix.min(max)).unwrap_or_else(|_| IpPrefix::host(addr));
        Self {
            start: net.first(),
            end: net.last(),
            proto: 0,
            start_port: 0,
            end_port: u16::MAX,
        }
    }

    /// Whether an address, protocol and port fall inside.
    pub fn covers(&self, addr: IpAddr, proto: u8, port: u16) -> bool {
        let in_range = match (self.start, self.end, addr) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => s <= a && a <= e,
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => s <= a && a <= e,
            _ => false,
        };
        in_range
            && (self.proto == 0 || self.proto == proto)
            && self.start_port <= port
            && port <= self.end_port
    }
}

/// The fields of an IP packet that selectors look at. Ports are 0 for
/// protocols without them and for non-first fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Flow {
    /// Reads an IPv4 or IPv6 packet's addresses, protocol and ports.
    /// IPv6 extension headers are not walked: the protocol is the first
    /// next-header value, which is what selectors see for plain traffic.
    pub fn parse(packet: &[u8]) -> Option<Self> {
        let h = IpHeader::parse(packet)?;
        let (src_port, dst_port) = h.ports();
        Some(Self {
            src: h.src(),
            dst: h.dst(),
            proto: h.protocol(),
            src_port,
            dst_port,
        })
    }
}

/// One policy: traffic between `local` and `remote` goes through `sa`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy<K> {
    pub local: Vec<Selector>,
    pub remote: Vec<Selector>,
    pub sa: K,
}

impl<K> Policy<K> {
    /// Whether a packet that came out of this policy's SA is one it
    /// carries (the check `Spd::inbound_allowed` makes, for holders of a
    /// single policy).
    pub fn carries_inbound(&self, packet: &[u8]) -> bool {
        Flow::parse(packet).is_some_and(|f| self.inbound(&f))
    }

    fn outbound(&self, f: &Flow) -> bool {
        self.local
            .iter()
            .any(|s| s.covers(f.src, f.proto, f.src_port))
            && self
                .remote
                .iter()
                .any(|s| s.covers(f.dst, f.proto, f.dst_port))
    }

    fn inbound(&self, f: &Flow) -> bool {
        self.remote
            .iter()
            .any(|s| s.covers(f.src, f.proto, f.src_port))
            && self
                .local
                .iter()
                .any(|s| s.covers(f.dst, f.proto, f.dst_port))
    }
}

/// Ordered policies; the first that covers a packet decides.
#[derive(Debug, Clone)]
pub struct Spd<K> {
    policies: Vec<Policy<K>>,
}

impl<K> Default for Spd<K> {
    fn default() -> Self {
        Self { policies: vec![] }
    }
}

impl<K: PartialEq> Spd<K> {
    /// Adds a policy after the existing ones.
    pub fn push(&mut self, p: Policy<K>) {
        self.policies.push(p);
    }

    /// Points the policies of SA `old` at SA `new` (after a rekey).
    pub fn replace_sa(&mut self, old: &K, new: K)
    where
        K: Clone,
    {
        for p in self.policies.iter_mut().filter(|p| p.sa == *old) {
            p.sa = new.clone();
        }
    }

    /// Removes the policies of an SA.
    pub fn remove_sa(&mut self, sa: &K) {
        self.policies.retain(|p| p.sa != *sa);
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The SA an outbound packet must go through, if any policy covers it.
    pub fn outbound(&self, packet: &[u8]) -> Option<&K> {
        let f = Flow::parse(packet)?;
        self.policies.iter().find(|p| p.outbound(&f)).map(|p| &p.sa)
    }

    /// Whether a packet that came out of SA `sa` is one that SA carries.
    pub fn inbound_allowed(&self, sa: &K, packet: &[u8]) -> bool {
        self.policies
            .iter()
            .any(|p| p.sa == *sa && p.carries_inbound(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvlan_core::ip::proto::{TCP, UDP};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = proto;
        p[12..16].copy_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
        p[16..20].copy_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p
    }

    fn net(s: &str) -> Selector {
        let (a, p) = s.split_once('/').unwrap();
        Selector::subnet(a.parse().unwrap(), p.parse().unwrap())
    }

    fn spd() -> Spd<&'static str> {
        let mut spd = Spd::default();
        // Web traffic to 10.2.0.0/16 goes through its own SA, the rest of
        // that subnet through another; a second site has its own.
        let web = Selector {
            proto: TCP,
            start_port: 443,
            end_port: 443,
            ..net("10.2.0.0/16")
        };
        spd.push(Policy {
            local: vec![net("10.1.0.0/16")],
            remote: vec![web],
            sa: "web",
        });
        spd.push(Policy {
            local: vec![net("10.1.0.0/16")],
            remote: vec![net("10.2.0.0/16")],
            sa: "site-2",
        });
        spd.push(Policy {
            local: vec![net("10.1.0.0/16")],
            remote: vec![net("10.3.0.0/16"), net("10.4.0.0/24")],
            sa: "site-3",
        });
        spd
    }

    #[test]
    fn outbound_packets_find_their_sa_by_first_match() {
        let spd = spd();
        assert_eq!(
            spd.outbound(&v4("10.1.0.5", "10.2.9.9", TCP, 40000, 443)),
            Some(&"web")
        );
        assert_eq!(
            spd.outbound(&v4("10.1.0.5", "10.2.9.9", TCP, 40000, 80)),
            Some(&"site-2")
        );
        assert_eq!(
            spd.outbound(&v4("10.1.0.5", "10.2.9.9", 1, 0, 0)),
            Some(&"site-2")
        );
        assert_eq!(
            spd.outbound(&v4("10.1.0.5", "10.4.0.200", UDP, 5, 53)),
            Some(&"site-3")
        );
        assert_eq!(spd.outbound(&v4("10.1.0.5", "10.4.1.1", UDP, 5, 53)), None);
        assert_eq!(
            spd.outbound(&v4("192.168.0.1", "10.2.0.1", UDP, 5, 53)),
            None
        );
        assert_eq!(spd.outbound(&[0x45, 0]), None, "truncated");
        assert_eq!(spd.outbound(&[]), None);
    }

    #[test]
    fn inbound_packets_must_fit_the_sa_they_came_on() {
        let spd = spd();
        assert!(spd.inbound_allowed(&"site-2", &v4("10.2.0.7", "10.1.0.5", UDP, 53, 999)));
        // A peer of site-2 sending as if from site-3's addresses.
        assert!(!spd.inbound_allowed(&"site-2", &v4("10.3.0.7", "10.1.0.5", UDP, 53, 999)));
        // Or to an address behind us that is not ours to reach.
        assert!(!spd.inbound_allowed(&"site-2", &v4("10.2.0.7", "10.9.0.5", UDP, 53, 999)));
        assert!(spd.inbound_allowed(&"web", &v4("10.2.0.7", "10.1.0.5", TCP, 443, 4000)));
        assert!(!spd.inbound_allowed(&"web", &v4("10.2.0.7", "10.1.0.5", TCP, 80, 4000)));
    }

    #[test]
    fn rekeys_and_deletes_move_the_policies() {
        let mut spd = spd();
        spd.replace_sa(&"site-2", "site-2b");
        assert_eq!(
            spd.outbound(&v4("10.1.0.5", "10.2.9.9", UDP, 1, 2)),
            Some(&"site-2b")
        );
        spd.remove_sa(&"site-2b");
        assert_eq!(spd.outbound(&v4("10.1.0.5", "10.2.9.9", UDP, 1, 2)), None);
        assert_eq!(spd.len(), 2);
    }

    #[test]
    fn ipv6_and_fragments() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[6] = UDP;
        p[8..24].copy_from_slice(&"fd00:1::5".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00:2::7".parse::<Ipv6Addr>().unwrap().octets());
        p[40..42].copy_from_slice(&1234u16.to_be_bytes());
        p[42..44].copy_from_slice(&53u16.to_be_bytes());
        let f = Flow::parse(&p).unwrap();
        assert_eq!((f.proto, f.src_port, f.dst_port), (UDP, 1234, 53));
        // A non-first IPv4 fragment has no ports to look at.
        let mut frag = v4("10.1.0.5", "10.2.9.9", TCP, 40000, 443);
        frag[7] = 8;
        assert_eq!(Flow::parse(&frag).unwrap().dst_port, 0);
    }
}
