//! Cryptokey routing table: IP prefixes to peers, longest prefix wins.
//!
//! One hash map per prefix length in use, probed from the longest length
//! down. Real configurations use a handful of distinct lengths (/32, /128,
//! a few subnets), so a lookup is a few hash probes whatever the number of
//! peers; insertion and removal are O(1).

use std::collections::HashMap;
use std::net::IpAddr;

use cvlan_core::prefix::masked;
use cvlan_core::IpPrefix;

/// Maps prefixes to values; each prefix belongs to exactly one value, as in
/// WireGuard (assigning a prefix to a peer takes it from any other peer).
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    /// (prefix length, table) sorted longest first.
    v4: Vec<(u8, HashMap<IpAddr, T>)>,
    v6: Vec<(u8, HashMap<IpAddr, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    fn family(&mut self, v4: bool) -> &mut Vec<(u8, HashMap<IpAddr, T>)> {
        if v4 {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Assigns `net` to `value`, taking it from whoever had it.
    pub fn insert(&mut self, net: IpPrefix, value: T) {
        let tables = self.family(net.is_ipv4());
        let pos = match tables.binary_search_by(|(p, _)| net.len().cmp(p)) {
            Ok(i) => i,
            Err(i) => {
                tables.insert(i, (net.len(), HashMap::new()));
                i
            }
        };
        tables[pos].1.insert(net.addr(), value);
    }

    /// The value whose prefix is the longest match for `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<T> {
        let tables = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
        tables
            .iter()
            .find_map(|(prefix, table)| table.get(&masked(addr, *prefix)).copied())
    }

    /// Removes every prefix held by `value`.
    pub fn remove_value(&mut self, value: T) {
        for tables in [&mut self.v4, &mut self.v6] {
            for (_, t) in tables.iter_mut() {
                t.retain(|_, v| *v != value);
            }
            tables.retain(|(_, t)| !t.is_empty());
        }
    }

    /// Every prefix held by `value`, in a stable order.
    pub fn nets_of(&self, value: T) -> Vec<IpPrefix> {
        let mut out: Vec<IpPrefix> = self
            .v4
            .iter()
            .chain(self.v6.iter())
            .flat_map(|(prefix, t)| {
                t.iter()
                    .filter(|(_, v)| **v == value)
                    .filter_map(|(addr, _)| IpPrefix::new(*addr, *prefix).ok())
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpPrefix {
        s.parse().expect("net")
    }

    #[test]
    fn longest_prefix_wins_v4_and_v6() {
        let mut t = AllowedIps::default();
        t.insert(net("0.0.0.0/0"), 1);
        t.insert(net("10.0.0.0/8"), 2);
        t.insert(net("10.1.2.3/32"), 3);
        t.insert(net("::/0"), 4);
        t.insert(net("fd00::/64"), 5);
        t.insert(net("fd00::1/128"), 6);
        let q = |s: &str| t.lookup(s.parse().expect("ip"));
        assert_eq!(q("10.1.2.3"), Some(3));
        assert_eq!(q("10.1.2.4"), Some(2));
        assert_eq!(q("192.168.0.1"), Some(1));
        assert_eq!(q("fd00::1"), Some(6));
        assert_eq!(q("fd00::2"), Some(5));
        assert_eq!(q("2001:db8::1"), Some(4));
    }

    #[test]
    fn host_bits_are_masked_and_prefixes_move_between_values() {
        let mut t = AllowedIps::default();
        t.insert(net("10.9.9.9/24"), 1);
        assert_eq!(t.nets_of(1), vec![net("10.9.9.0/24")]);
        t.insert(net("10.9.9.0/24"), 2);
        assert!(t.nets_of(1).is_empty(), "a prefix belongs to one peer");
        assert_eq!(t.lookup("10.9.9.200".parse().expect("ip")), Some(2));
        t.remove_value(2);
        assert_eq!(t.lookup("10.9.9.200".parse().expect("ip")), None);
        assert!(IpPrefix::new("1.2.3.4".parse().expect("ip"), 33).is_err());
        assert_eq!(net("1.2.3.4/0").to_string(), "0.0.0.0/0");
    }
}
