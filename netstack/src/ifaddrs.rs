//! The host's own addresses (getifaddrs), for the endpoints a node reports.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address on an interface that is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub ip: IpAddr,
    pub loopback: bool,
}

pub fn local_addresses() -> io::Result<Vec<InterfaceAddress>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive
        // until freeifaddrs; its fields are read-only here.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        if ifa.ifa_addr.is_null() || !up {
            continue;
        }
        // SAFETY: a non-null ifa_addr points at a sockaddr whose family
        // says which larger struct it is; we read only that struct.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let interface = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push(InterfaceAddress {
            interface,
            ip,
            loopback: ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_loopback_address_is_listed() {
        let all = super::local_addresses().unwrap();
        assert!(
            all.iter()
                .any(|a| a.loopback && a.ip == std::net::Ipv4Addr::LOCALHOST),
            "{all:?}"
        );
    }
}

/// The IPv4 default route's gateway (the router port mapping is asked
/// of), from `/proc/net/route`; the route with the lowest metric wins.
pub fn default_gateway_v4() -> Option<std::net::Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    default_gateway_in(&table)
}

/// Parses `/proc/net/route`: addresses are hex in host (little-endian)
/// order; flag 0x2 is RTF_GATEWAY; a default route has destination and
/// mask 0.
fn default_gateway_in(table: &str) -> Option<std::net::Ipv4Addr> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, gw, flags, metric, mask) = (
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                hex(f.get(3)?)?,
                f.get(6)?.parse::<u32>().ok()?,
                hex(f.get(7)?)?,
            );
            (dest == 0 && mask == 0 && flags & 0x2 != 0 && gw != 0)
                .then(|| (metric, std::net::Ipv4Addr::from(gw.swap_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

#[cfg(test)]
mod gateway_tests {
    use super::*;

    #[test]
    fn the_default_routes_gateway_with_the_lowest_metric() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            wlan0\t00000000\t0102A8C0\t0003\t0\t0\t50\t00000000\t0\t0\t0\n\
            eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            default_gateway_in(table),
            Some(std::net::Ipv4Addr::new(192, 168, 2, 1))
        );
        let no_default = "Iface\tDestination\tGateway\n eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_gateway_in(no_default), None);
        assert_eq!(default_gateway_in(""), None);
    }
}
