//! IP prefixes: an address and a length, host bits cleared.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrefixError {
    #[error("{0:?} is not ADDRESS or ADDRESS/LENGTH")]
    Syntax(String),
    #[error("prefix length {0} is too long for the address")]
    Length(u8),
}

/// An IP network. Ordering is by family, address, then length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// The bits a prefix length keeps of an IPv4 address.
pub fn v4_mask(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

/// The bits a prefix length keeps of an IPv6 address.
pub fn v6_mask(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// `addr` with the bits beyond `len` cleared (the network it is in).
pub fn masked(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) & v4_mask(len)).into(),
        IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) & v6_mask(len)).into(),
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl IpPrefix {
    /// `addr/len` with the host bits of `addr` cleared.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        if len > max_len(addr) {
            return Err(PrefixError::Length(len));
        }
        Ok(Self {
            addr: Self::first_of(addr, len),
            len,
        })
    }

    /// The prefix holding just `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: max_len(addr),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// A prefix of length 0 (everything of its family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn first_of(addr: IpAddr, len: u8) -> IpAddr {
        masked(addr, len)
    }

    /// Whether `ip` lies inside (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & v4_mask(self.len) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & v6_mask(self.len) == u128::from(n),
            _ => false,
        }
    }

    /// The network address (the first one).
    pub fn first(&self) -> IpAddr {
        self.addr
    }

    /// The last address (all host bits set).
    pub fn last(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(n) => Ipv4Addr::from(u32::from(n) | !v4_mask(self.len)).into(),
            IpAddr::V6(n) => Ipv6Addr::from(u128::from(n) | !v6_mask(self.len)).into(),
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    /// `ADDRESS/LENGTH` (host bits cleared), or `ADDRESS` alone (a host).
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let syntax = || PrefixError::Syntax(s.to_string());
        let (a, l) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| syntax())?;
        match l {
            None => Ok(Self::host(addr)),
            Some(l) => Self::new(addr, l.trim().parse().map_err(|_| syntax())?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_mask_and_contain() {
        let p: IpPrefix = "10.1.2.3/16".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.0.0/16");
        assert!(p.contains("10.1.255.9".parse().unwrap()));
        assert!(!p.contains("10.2.0.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()), "never across families");
        assert_eq!(p.last(), "10.1.255.255".parse::<IpAddr>().unwrap());
        assert_eq!(
            "192.0.2.7".parse::<IpPrefix>().unwrap(),
            IpPrefix::host("192.0.2.7".parse().unwrap())
        );
        let v6: IpPrefix = "fd00::1:2/112".parse().unwrap();
        assert_eq!(v6.to_string(), "fd00::1:0/112");
        assert_eq!(v6.last(), "fd00::1:ffff".parse::<IpAddr>().unwrap());
        let all: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("255.255.255.255".parse().unwrap()) && all.is_empty());
        assert_eq!(
            "1.2.3.4/33".parse::<IpPrefix>(),
            Err(PrefixError::Length(33))
        );
        assert!(matches!(
            "1.2.3/8".parse::<IpPrefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert!(matches!(
            "::/x".parse::<IpPrefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert_eq!(v4_mask(24), 0xffff_ff00);
        assert_eq!(v4_mask(0), 0);
        assert_eq!(v6_mask(128), u128::MAX);
    }
}
