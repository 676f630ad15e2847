//! Overlay address allocation: one IPv4 address per node from a prefix
//! (100.64.0.0/10 by default). An address stays with its node for the
//! node's whole life; a released address is handed out again only after
//! the cursor has gone round the whole prefix, so a removed node's address
//! does not reach a new node while old peers may still remember it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use cvlan_core::prefix::v4_mask;
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Prefix {
    network: u32,
    len: u8,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrefixError {
    #[error("expected ADDRESS/LENGTH, like 100.64.0.0/10")]
    Syntax,
    #[error("prefix length must be 8 to 30")]
    Length,
    #[error("{0} has host bits set")]
    HostBits(String),
}

impl Ipv4Prefix {
    pub const DEFAULT: Self = Self {
        network: 0x6440_0000, // 100.64.0.0
        len: 10,
    };

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    fn size(&self) -> u64 {
        1u64 << (32 - self.len)
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & v4_mask(self.len) == self.network
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, PrefixError> {
        let (a, l) = s.split_once('/').ok_or(PrefixError::Syntax)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| PrefixError::Syntax)?;
        let len: u8 = l.parse().map_err(|_| PrefixError::Syntax)?;
        if !(8..=30).contains(&len) {
            return Err(PrefixError::Length);
        }
        let network = u32::from(addr);
        if network & !v4_mask(len) != 0 {
            return Err(PrefixError::HostBits(s.into()));
        }
        Ok(Self { network, len })
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.len)
    }
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("no free address left in the overlay prefix")]
pub struct Exhausted;

#[derive(Debug)]
pub struct Ipam {
    prefix: Ipv4Prefix,
    used: BTreeSet<u32>,
    /// Offset in the prefix where the next search starts.
    cursor: u32,
}

impl Ipam {
    /// `cursor` is the persisted search position (0 on a new network).
    pub fn new(prefix: Ipv4Prefix, used: impl IntoIterator<Item = u32>, cursor: u32) -> Self {
        Self {
            prefix,
            used: used.into_iter().collect(),
            cursor,
        }
    }

    pub fn prefix(&self) -> Ipv4Prefix {
        self.prefix
    }

    pub fn cursor(&self) -> u32 {
        self.cursor
    }

    /// Host offsets 1 ..= size-2: not the network or broadcast address.
    fn usable(&self, offset: u64) -> bool {
        offset != 0 && offset != self.prefix.size() - 1
    }

    /// The next free address after the cursor (wrapping once round).
    pub fn allocate(&mut self) -> Result<Ipv4Addr, Exhausted> {
        let size = self.prefix.size();
        if self.used.len() as u64 >= size - 2 {
            return Err(Exhausted);
        }
        let mut offset = u64::from(self.cursor) % size;
        for _ in 0..size {
            offset = (offset + 1) % size;
            let addr = self.prefix.network | offset as u32;
            if self.usable(offset) && !self.used.contains(&addr) {
                self.used.insert(addr);
                self.cursor = offset as u32;
                return Ok(Ipv4Addr::from(addr));
            }
        }
        Err(Exhausted)
    }

    pub fn release(&mut self, a: Ipv4Addr) {
        self.used.remove(&u32::from(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Ipv4Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_strictly() {
        assert_eq!(p("100.64.0.0/10"), Ipv4Prefix::DEFAULT);
        assert_eq!(Ipv4Prefix::DEFAULT.to_string(), "100.64.0.0/10");
        assert_eq!(
            "100.64.0.1/10".parse::<Ipv4Prefix>(),
            Err(PrefixError::HostBits("100.64.0.1/10".into()))
        );
        assert_eq!(
            "10.0.0.0/31".parse::<Ipv4Prefix>(),
            Err(PrefixError::Length)
        );
        assert_eq!("10.0.0.0".parse::<Ipv4Prefix>(), Err(PrefixError::Syntax));
        assert!(p("100.64.0.0/10").contains("100.127.255.255".parse().unwrap()));
        assert!(!p("100.64.0.0/10").contains("100.128.0.0".parse().unwrap()));
    }

    #[test]
    fn addresses_are_unique_skip_network_and_broadcast_and_run_out() {
        let mut ipam = Ipam::new(p("10.9.0.0/29"), [], 0);
        let got: Vec<_> = (0..6)
            .map(|_| ipam.allocate().unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            ["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
        );
        assert_eq!(ipam.allocate(), Err(Exhausted));
    }

    #[test]
    fn a_released_address_is_not_handed_out_again_before_the_others() {
        let mut ipam = Ipam::new(p("10.9.0.0/29"), [], 0);
        let a = ipam.allocate().unwrap();
        let b = ipam.allocate().unwrap();
        ipam.release(a);
        let c = ipam.allocate().unwrap();
        assert!(c != a && c != b, "{c} reused too early");
    }

    #[test]
    fn allocation_resumes_from_persisted_state() {
        let used = [
            u32::from(Ipv4Addr::new(100, 64, 0, 1)),
            u32::from(Ipv4Addr::new(100, 64, 0, 3)),
        ];
        let mut ipam = Ipam::new(Ipv4Prefix::DEFAULT, used, 1);
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(100, 64, 0, 2));
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(100, 64, 0, 4));
        assert_eq!(ipam.cursor(), 4);
    }
}
