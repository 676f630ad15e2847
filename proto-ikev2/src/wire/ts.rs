//! Traffic selectors (RFC 7296 §3.13): address ranges, an IP protocol and
//! a port range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proto_esp::spd::Selector;

use super::consts::ts_type;
use super::reader::Reader;
use super::WireError;

/// The ESP side of a traffic selector: what the SPD matches packets with.
impl From<&TrafficSelector> for Selector {
    fn from(ts: &TrafficSelector) -> Self {
        Selector {
            start: ts.start,
            end: ts.end,
            proto: ts.ip_proto,
            start_port: ts.start_port,
            end_port: ts.end_port,
        }
    }
}

/// More selectors than any sane peer proposes in one payload.
pub const MAX_SELECTORS: usize = 32;

/// One traffic selector. `start` and `end` are of the same family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// 0 means any protocol.
    pub ip_proto: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start: IpAddr,
    pub end: IpAddr,
}

impl TrafficSelector {
    /// All ports and protocols of an address range.
    pub fn range(start: IpAddr, end: IpAddr) -> Self {
        Self {
            ip_proto: 0,
            start_port: 0,
            end_port: 0xffff,
            start,
            end,
        }
    }

    /// All ports and protocols of a prefix such as 10.1.0.0/16.
    pub fn subnet(addr: IpAddr, prefix: u8) -> Self {
        let s = Selector::subnet(addr, prefix);
        Self::range(s.start, s.end)
    }

    /// Whether a packet's addresses/protocol/port fall inside.
    pub fn contains(&self, addr: IpAddr, proto: u8, port: u16) -> bool {
        Selector::from(self).covers(addr, proto, port)
    }

    /// The intersection with another selector (RFC 7296 §2.9 narrowing),
    /// if they overlap.
    pub fn intersect(&self, other: &Self) -> Option<Self> {
        let ip_proto = match (self.ip_proto, other.ip_proto) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let start_port = self.start_port.max(other.start_port);
        let end_port = self.end_port.min(other.end_port);
        if start_port > end_port {
            return None;
        }
        let (start, end) = match (self.start, self.end, other.start, other.end) {
            (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(c), IpAddr::V4(d)) => {
                let (s, e) = (a.max(c), b.min(d));
                (s <= e).then_some((IpAddr::V4(s), IpAddr::V4(e)))?
            }
            (IpAddr::V6(a), IpAddr::V6(b), IpAddr::V6(c), IpAddr::V6(d)) => {
                let (s, e) = (a.max(c), b.min(d));
                (s <= e).then_some((IpAddr::V6(s), IpAddr::V6(e)))?
            }
            _ => return None,
        };
        Some(Self {
            ip_proto,
            start_port,
            end_port,
            start,
            end,
        })
    }
}

pub(crate) fn parse_list(body: &[u8]) -> Result<Vec<TrafficSelector>, WireError> {
    let mut r = Reader::new(body);
    let count = r.u8()? as usize;
    r.take(3)?;
    if count == 0 || count > MAX_SELECTORS {
        return Err(WireError::Malformed("traffic selector count"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = r.u8()?;
        let ip_proto = r.u8()?;
        let len = r.u16()? as usize;
        let mut s = Reader::new(r.take(len.checked_sub(4).ok_or(WireError::BadLength)?)?);
        let start_port = s.u16()?;
        let end_port = s.u16()?;
        let (start, end): (IpAddr, IpAddr) = match kind {
            ts_type::IPV4_ADDR_RANGE => (v4(s.take(4)?).into(), v4(s.take(4)?).into()),
            ts_type::IPV6_ADDR_RANGE => (v6(s.take(16)?).into(), v6(s.take(16)?).into()),
            _ => return Err(WireError::Malformed("traffic selector type")),
        };
        if !s.is_empty() {
            return Err(WireError::BadLength);
        }
        out.push(TrafficSelector {
            ip_proto,
            start_port,
            end_port,
            start,
            end,
        });
    }
    if !r.is_empty() {
        return Err(WireError::BadLength);
    }
    Ok(out)
}

fn v4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

pub(crate) fn emit_list(list: &[TrafficSelector], out: &mut Vec<u8>) {
    out.extend_from_slice(&[list.len() as u8, 0, 0, 0]);
    for ts in list {
        let (kind, len) = match ts.start {
            IpAddr::V4(_) => (ts_type::IPV4_ADDR_RANGE, 16u16),
            IpAddr::V6(_) => (ts_type::IPV6_ADDR_RANGE, 40u16),
        };
        out.push(kind);
        out.push(ts.ip_proto);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&ts.start_port.to_be_bytes());
        out.extend_from_slice(&ts.end_port.to_be_bytes());
        // A selector mixing families is API misuse: keep the frame valid.
        let end = match (ts.start, ts.end) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => ts.end,
            _ => ts.start,
        };
        for a in [ts.start, end] {
            match a {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
    }
}
