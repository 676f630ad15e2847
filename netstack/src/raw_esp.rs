//! Raw ESP (IP protocol 50) over IPv4, for peers that need no NAT
//! traversal: a raw socket bound to our address. The kernel adds the IP
//! header on send; on receive it is included and [`RawEsp::recv`] strips
//! it. Needs CAP_NET_RAW. IPv6 peers use ESP in UDP instead (an IPv6 raw
//! socket would need its own path for extension headers).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const IPPROTO_ESP: libc::c_int = 50;

/// A raw IPv4 socket for protocol 50.
#[derive(Debug)]
pub struct RawEsp {
    // std has no raw socket type; a datagram socket's send_to/recv_from
    // and timeouts are exactly the syscalls a raw socket takes.
    sock: UdpSocket,
}

impl RawEsp {
    /// Opens the socket and binds it to `local`, so only ESP sent to that
    /// address arrives.
    pub fn bind(local: Ipv4Addr) -> io::Result<Self> {
        // SAFETY: socket() takes no pointers; the result is checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                IPPROTO_ESP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(local).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `addr` is a valid sockaddr_in for the whole call and the
        // length passed is its size.
        let rc = unsafe {
            libc::bind(
                owned.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            sock: UdpSocket::from(owned),
        })
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }

    /// Sends one ESP packet to `peer` (the kernel writes the IP header).
    pub fn send(&self, peer: Ipv4Addr, esp: &[u8]) -> io::Result<usize> {
        // Raw sockets ignore the port.
        self.sock.send_to(esp, SocketAddrV4::new(peer, 0))
    }

    /// Receives one packet into `buf`; returns the sender and where in
    /// `buf` its ESP payload is (after the IPv4 header, whose length it
    /// gives). Malformed headers come back as `InvalidData`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(Ipv4Addr, std::ops::Range<usize>)> {
        let (n, from) = self.sock.recv_from(buf)?;
        let SocketAddr::V4(from) = from else {
            return Err(io::ErrorKind::InvalidData.into());
        };
        let ihl = buf
            .first()
            .map(|b| usize::from(b & 0x0f) * 4)
            .filter(|&ihl| ihl >= 20 && ihl <= n)
            .ok_or(io::ErrorKind::InvalidData)?;
        Ok((*from.ip(), ihl..n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root (CAP_NET_RAW); CI runs it"]
    fn an_esp_packet_goes_out_and_comes_back_without_its_ip_header() {
        let a = RawEsp::bind(Ipv4Addr::LOCALHOST).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let esp = [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1, 0xaa, 0xbb];
        assert_eq!(a.send(Ipv4Addr::LOCALHOST, &esp).unwrap(), esp.len());
        let mut buf = [0u8; 2048];
        let (from, range) = a.recv(&mut buf).unwrap();
        assert_eq!(from, Ipv4Addr::LOCALHOST);
        assert_eq!(&buf[range], &esp);
    }
}
