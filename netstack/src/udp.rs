//! Batched UDP I/O: `recvmmsg`/`sendmmsg`, so a burst of datagrams costs
//! one syscall instead of one each.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Buffers for up to `capacity` datagrams of up to `slot` bytes each,
/// filled by [`RecvBatch::recv`].
#[derive(Debug)]
pub struct RecvBatch {
    storage: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    addrs: Vec<SocketAddr>,
    count: usize,
}

impl RecvBatch {
    pub fn new(capacity: usize, slot: usize) -> Self {
        Self {
            storage: vec![0; capacity * slot],
            slot,
            lens: vec![0; capacity],
            addrs: vec![SocketAddr::from(([0, 0, 0, 0], 0)); capacity],
            count: 0,
        }
    }

    /// Datagrams received by the last `recv`.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` (mutable, for in-place decryption) and its source.
    pub fn get_mut(&mut self, i: usize) -> (&mut [u8], SocketAddr) {
        let start = i * self.slot;
        (
            &mut self.storage[start..start + self.lens[i]],
            self.addrs[i],
        )
    }

    /// Blocks (up to the socket's read timeout) for at least one datagram,
    /// then takes whatever else is already queued, up to capacity.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        let capacity = self.lens.len();
        // SAFETY: all-zero is a valid bit pattern for these plain C structs.
        let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; capacity];
        let mut iovs: Vec<libc::iovec> = self
            .storage
            .chunks_mut(self.slot)
            .map(|c| libc::iovec {
                iov_base: c.as_mut_ptr().cast(),
                iov_len: c.len(),
            })
            .collect();
        // SAFETY: as above.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; capacity];
        for ((m, iov), name) in msgs.iter_mut().zip(iovs.iter_mut()).zip(names.iter_mut()) {
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer in `msgs` points into `iovs`, `names` and
        // `self.storage`, all alive and unaliased for the whole call, with
        // lengths that match their allocations.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                capacity as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (msgs[i].msg_len as usize).min(self.slot);
            self.addrs[i] =
                from_sockaddr(&names[i]).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        }
        self.count = n;
        Ok(n)
    }
}

fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = u32::from_be(a.sin_addr.s_addr);
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip.into(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            let v6 = SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            );
            // Dual-stack sockets report IPv4 peers as mapped addresses.
            Some(SocketAddr::new(v6.ip().to_canonical(), v6.port()))
        }
        _ => None,
    }
}

/// Writes `addr` for a socket of family `family` (a dual-stack IPv6 socket
/// needs IPv4 destinations as mapped addresses).
fn to_sockaddr(
    addr: SocketAddr,
    family: libc::c_int,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let addr = match (addr, family) {
        (SocketAddr::V4(v4), libc::AF_INET6) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => addr,
    };
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin: &mut libc::sockaddr_in =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Sends every `(destination, bytes)` pair with as few `sendmmsg` calls as
/// the kernel allows. Returns how many were sent before any error.
pub fn send_many(sock: &UdpSocket, datagrams: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    if datagrams.is_empty() {
        return Ok(0);
    }
    let family = match sock.local_addr()? {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: all-zero is a valid bit pattern for these plain C structs.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; datagrams.len()];
    let mut iovs: Vec<libc::iovec> = datagrams
        .iter()
        // sendmmsg never writes through iov_base; the cast only satisfies the C type.
        .map(|(_, b)| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; datagrams.len()];
    for (((m, iov), name), (to, _)) in msgs
        .iter_mut()
        .zip(iovs.iter_mut())
        .zip(names.iter_mut())
        .zip(datagrams)
    {
        m.msg_hdr.msg_namelen = to_sockaddr(*to, family, name);
        m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < msgs.len() {
        let rest = &mut msgs[sent..];
        // SAFETY: every pointer in `rest` points into `iovs`, `names` and
        // the caller's datagrams, all alive for the whole call.
        let n = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                rest.as_mut_ptr(),
                rest.len() as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if sent == 0 {
                return Err(e);
            }
            return Ok(sent);
        }
        if n == 0 {
            break;
        }
        sent += n as usize;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_over_loopback_v4_and_dual_stack() {
        for bind in ["127.0.0.1:0", "[::]:0"] {
            let rx = UdpSocket::bind(bind).expect("bind rx");
            let tx = UdpSocket::bind(bind).expect("bind tx");
            let port = rx.local_addr().expect("addr").port();
            let to = SocketAddr::from(([127, 0, 0, 1], port));
            let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
            let batch: Vec<(SocketAddr, &[u8])> =
                payloads.iter().map(|p| (to, p.as_slice())).collect();
            assert_eq!(send_many(&tx, &batch).expect("send"), 40);
            rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .expect("timeout");
            let mut got = Vec::new();
            let mut rb = RecvBatch::new(16, 2048);
            while got.len() < 40 {
                let n = rb.recv(&rx).expect("recv");
                assert!(n <= 16);
                for i in 0..n {
                    let (bytes, from) = rb.get_mut(i);
                    assert_eq!(
                        from.ip(),
                        std::net::IpAddr::from([127, 0, 0, 1]),
                        "{bind}: canonical source"
                    );
                    got.push(bytes.to_vec());
                }
            }
            assert_eq!(got, payloads, "{bind}");
        }
    }
}
