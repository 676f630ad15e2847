//! Routes through an interface, in a chosen routing table, over rtnetlink
//! (no `ip` binary needed): what a daemon uses to send its tunnels' remote
//! subnets into its TUN device, one table per tenant when asked.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, OwnedFd};

/// The main routing table (`ip route` without `table`).
pub const MAIN_TABLE: u32 = 254;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RT_TABLE_UNSPEC: u8 = 0;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

/// One route: `dst/prefix` out of interface `ifindex`, in `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix: u8,
    pub ifindex: u32,
    pub table: u32,
}

impl Route {
    /// The rtnetlink request that adds (replacing any route to the same
    /// destination in that table) or deletes this route.
    pub fn request(&self, add: bool, seq: u32) -> Vec<u8> {
        let (family, addr): (u8, Vec<u8>) = match self.dst {
            IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
        };
        let (kind, flags) = if add {
            (
                RTM_NEWROUTE,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            )
        } else {
            (RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
        };
        let mut m = Vec::with_capacity(64);
        // nlmsghdr: length (filled in below), type, flags, sequence, port.
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        // rtmsg: the table goes in RTA_TABLE (ids above 255 fit there only).
        m.extend_from_slice(&[
            family,
            self.prefix,
            0,
            0,
            RT_TABLE_UNSPEC,
            RTPROT_STATIC,
            RT_SCOPE_LINK,
            RTN_UNICAST,
        ]);
        m.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut m, RTA_DST, &addr);
        attr(&mut m, RTA_OIF, &self.ifindex.to_ne_bytes());
        attr(&mut m, RTA_TABLE, &self.table.to_ne_bytes());
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m
    }
}

fn attr(m: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    m.extend_from_slice(&(len as u16).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(data);
    m.resize(m.len() + (4 - len % 4) % 4, 0);
}

/// The kernel's answer to a request with NLM_F_ACK: Ok for an ack, the
/// errno it carried otherwise.
fn check_ack(answer: &[u8]) -> io::Result<()> {
    let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let code = answer
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, code) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(e)) => Err(io::Error::from_raw_os_error(-e)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected rtnetlink answer",
        )),
    }
}

/// A fresh rtnetlink socket (not bound to any multicast group).
pub(crate) fn rtnetlink_socket() -> io::Result<File> {
    // SAFETY: socket() takes no pointers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// An rtnetlink socket.
#[derive(Debug)]
pub struct Routes {
    // A netlink socket takes plain write(2)/read(2): one request, one
    // answer, to and from the kernel.
    sock: File,
    seq: u32,
}

impl Routes {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            sock: rtnetlink_socket()?,
            seq: 0,
        })
    }

    fn call(&mut self, route: &Route, add: bool) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        self.sock.write_all(&route.request(add, self.seq))?;
        // The ack echoes the request after the error code: room for it.
        let mut answer = [0u8; 512];
        let n = self.sock.read(&mut answer)?;
        check_ack(&answer[..n])
    }

    /// Adds the route, replacing one to the same destination in its table.
    pub fn add(&mut self, route: &Route) -> io::Result<()> {
        self.call(route, true)
    }

    /// Deletes the route; one already gone is not an error.
    pub fn delete(&mut self, route: &Route) -> io::Result<()> {
        match self.call(route, false) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn requests_are_laid_out_as_rtnetlink_expects() {
        let r = Route {
            dst: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 0)),
            prefix: 24,
            ifindex: 7,
            table: 1000,
        };
        let m = r.request(true, 3);
        // 16 header + 12 rtmsg + 3 attributes of 8 bytes.
        assert_eq!(m.len(), 52);
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()), 52);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWROUTE);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 0x505);
        assert_eq!(&m[16..24], &[2, 24, 0, 0, 0, 4, 253, 1]);
        assert_eq!(&m[28..36], &[8, 0, 1, 0, 10, 9, 0, 0]);
        assert_eq!(&m[44..52], &[8, 0, 15, 0, 0xe8, 3, 0, 0]);
        let d = r.request(false, 4);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), RTM_DELROUTE);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), 0x5);
    }

    #[test]
    fn acks_and_errors_are_told_apart() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(check_ack(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            check_ack(&ack).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(check_ack(&[0; 3]).is_err());
    }

    #[test]
    #[ignore = "needs root (a network namespace); CI runs it"]
    fn a_route_goes_into_its_table_and_comes_out() {
        let ns = format!("cvlanrt{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let ns2 = ns.clone();
        let result = std::thread::spawn(move || {
            crate::netns::enter(&ns2).unwrap();
            let r = Route {
                dst: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 0)),
                prefix: 24,
                ifindex: ifindex("lo").unwrap(),
                table: 1234,
            };
            let mut routes = Routes::open().unwrap();
            let add = routes.add(&r).and_then(|()| routes.add(&r));
            let listed = ip(&["route", "show", "table", "1234"]);
            let del = routes.delete(&r).and_then(|()| routes.delete(&r));
            let after = ip(&["route", "show", "table", "1234"]);
            (add, listed, del, after)
        })
        .join();
        ip(&["netns", "del", &ns]);
        let (add, listed, del, after) = result.unwrap();
        add.unwrap();
        assert!(listed.contains("10.77.0.0/24 dev lo"), "{listed}");
        del.unwrap();
        assert!(!after.contains("10.77.0.0"), "{after}");
    }
}
