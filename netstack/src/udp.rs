//! Batched UDP I/O: `recvmmsg`/`sendmmsg`, so a burst of datagrams costs
//! one syscall instead of one each.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Buffers for up to `capacity` datagrams of up to `slot` bytes each,
/// filled by [`RecvBatch::recv`].
pub struct RecvBatch {
    storage: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    /// With UDP GRO a message may hold several datagrams of this size
    /// (the last may be shorter); otherwise it equals the message length.
    strides: Vec<usize>,
    addrs: Vec<SocketAddr>,
    count: usize,
    // recvmmsg's headers, allocated once and re-aimed on every call.
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    control: Vec<u64>,
    msgs: Vec<libc::mmsghdr>,
}

/// Control-message room per received message (one `UDP_GRO` cmsg), in
/// u64 words so every buffer is aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 8;

impl core::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.lens.len())
            .field("received", &self.count)
            .finish()
    }
}

impl RecvBatch {
    pub fn new(capacity: usize, slot: usize) -> Self {
        Self {
            storage: vec![0; capacity * slot],
            slot,
            lens: vec![0; capacity],
            strides: vec![0; capacity],
            addrs: vec![SocketAddr::from(([0, 0, 0, 0], 0)); capacity],
            count: 0,
            // SAFETY: all-zero is a valid bit pattern for these plain C structs.
            names: vec![unsafe { zeroed() }; capacity],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                capacity
            ],
            control: vec![0; capacity * CONTROL_WORDS],
            // SAFETY: as above.
            msgs: vec![unsafe { zeroed() }; capacity],
        }
    }

    /// Datagrams received by the last `recv`.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The datagrams in message `i`, as ranges of `get(i)`: one, or with
    /// UDP GRO several that the kernel coalesced.
    /// The iterator holds no borrow, so the batch can be mutated meanwhile.
    pub fn datagrams(&self, i: usize) -> impl Iterator<Item = std::ops::Range<usize>> + 'static {
        let (len, stride) = (self.lens[i], self.strides[i].max(1));
        (0..len)
            .step_by(stride)
            .map(move |start| start..(start + stride).min(len))
    }

    /// Message `i` (one datagram, or several coalesced by GRO).
    pub fn get(&self, i: usize) -> &[u8] {
        let start = i * self.slot;
        &self.storage[start..start + self.lens[i]]
    }

    /// Message `i` (mutable, for in-place decryption) and its source.
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
        // Re-aim every header at its slot: the kernel rewrote the lengths
        // last time. The vectors never grow, so the pointers stay valid.
        for i in 0..capacity {
            let slot = &mut self.storage[i * self.slot..(i + 1) * self.slot];
            self.iovs[i] = libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.control[i * CONTROL_WORDS..].as_mut_ptr().cast();
            h.msg_controllen = CONTROL_WORDS * 8;
            h.msg_flags = 0;
        }
        // SAFETY: every pointer in `msgs` points into this batch's own
        // vectors (`iovs`, `names`, `control`, `storage`), alive and not
        // resized for the whole call, with lengths that match them.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.msgs.as_mut_ptr(),
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
            self.lens[i] = (self.msgs[i].msg_len as usize).min(self.slot);
            self.strides[i] = gro_stride(&self.msgs[i].msg_hdr).unwrap_or(self.lens[i]);
            self.addrs[i] = from_sockaddr(&self.names[i])
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        }
        self.count = n;
        Ok(n)
    }
}

/// The segment size of a GRO-coalesced message, from its `UDP_GRO` cmsg.
fn gro_stride(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: `hdr` was filled by recvmmsg; CMSG_FIRSTHDR/NXTHDR only walk
    // within msg_control..msg_controllen, which points at our buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).ok().filter(|s| *s > 0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}

/// `UDP_GRO` from linux/udp.h (not exported by libc for glibc targets).
const UDP_GRO: libc::c_int = 104;

/// Asks the kernel to coalesce datagrams of one flow into one receive
/// (read them apart with [`RecvBatch::datagrams`]).
pub fn enable_gro(sock: &UdpSocket) -> io::Result<()> {
    crate::sockopt::set_int(sock, libc::SOL_UDP, UDP_GRO, 1)
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

/// Writes `addr` as the C socket address for a socket of `family` (a
/// dual-stack IPv6 socket takes IPv4 destinations as mapped addresses).
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

fn family_of(sock: &UdpSocket) -> io::Result<libc::c_int> {
    Ok(match sock.local_addr()? {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    })
}

/// `UDP_SEGMENT` from linux/udp.h (not exported by libc for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;
/// The kernel refuses GSO super-datagrams of more segments than this.
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Nor larger than a UDP payload can be.
pub const GSO_MAX_BYTES: usize = 65_000;

/// Batched sends with reusable scratch: after the first few calls a send
/// allocates nothing. One per sending thread (it holds raw pointers only
/// during a call, and is deliberately not `Send`).
#[derive(Default)]
pub struct UdpSender {
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// The socket family, cached per socket (by fd) to spare a syscall.
    family: Option<(std::os::fd::RawFd, libc::c_int)>,
}

impl core::fmt::Debug for UdpSender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UdpSender")
            .field("capacity", &self.msgs.capacity())
            .finish()
    }
}

impl UdpSender {
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, sock: &UdpSocket) -> io::Result<libc::c_int> {
        let fd = sock.as_raw_fd();
        match self.family {
            Some((cached, family)) if cached == fd => Ok(family),
            _ => {
                let family = family_of(sock)?;
                self.family = Some((fd, family));
                Ok(family)
            }
        }
    }

    /// Sends every `(destination, bytes)` pair with as few `sendmmsg` calls
    /// as the kernel allows. Returns how many were sent before any error.
    pub fn send_many<'a>(
        &mut self,
        sock: &UdpSocket,
        datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
    ) -> io::Result<usize> {
        let family = self.family(sock)?;
        self.names.clear();
        self.iovs.clear();
        self.msgs.clear();
        for (to, bytes) in datagrams {
            // SAFETY: all-zero is a valid bit pattern for sockaddr_storage.
            let mut name: libc::sockaddr_storage = unsafe { zeroed() };
            to_sockaddr(to, family, &mut name);
            self.names.push(name);
            // sendmmsg never writes through iov_base; the cast only satisfies the C type.
            self.iovs.push(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
        }
        // Pointers are taken only now that `names` and `iovs` stop growing.
        for (name, iov) in self.names.iter_mut().zip(self.iovs.iter_mut()) {
            // SAFETY: all-zero is a valid bit pattern for mmsghdr.
            let mut m: libc::mmsghdr = unsafe { zeroed() };
            m.msg_hdr.msg_namelen = if name.ss_family as libc::c_int == libc::AF_INET {
                size_of::<libc::sockaddr_in>()
            } else {
                size_of::<libc::sockaddr_in6>()
            } as libc::socklen_t;
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
        let mut sent = 0;
        let result = loop {
            if sent == self.msgs.len() {
                break Ok(sent);
            }
            let rest = &mut self.msgs[sent..];
            // SAFETY: every pointer in `rest` points into `self.iovs`,
            // `self.names` and the caller's datagrams, all alive and not
            // moved for the whole call.
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
                break if sent == 0 { Err(e) } else { Ok(sent) };
            }
            if n == 0 {
                break Ok(sent);
            }
            sent += n as usize;
        };
        // No pointer into the caller's buffers outlives the call.
        self.iovs.clear();
        self.msgs.clear();
        result
    }

    /// Sends `segments` to `to` as one UDP GSO super-datagram: the kernel
    /// splits it into one datagram per segment. Every segment but the last
    /// must be exactly as long as the first; the last may be shorter.
    /// Errors (EIO, EINVAL, ENOPROTOOPT) mean the path cannot do GSO.
    pub fn send_gso<'a>(
        &mut self,
        sock: &UdpSocket,
        to: SocketAddr,
        segments: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        let family = self.family(sock)?;
        self.iovs.clear();
        for b in segments {
            // sendmsg never writes through iov_base; the cast only satisfies the C type.
            self.iovs.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            });
        }
        let Some(first) = self.iovs.first() else {
            return Ok(());
        };
        let size = u16::try_from(first.iov_len)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: all-zero is a valid bit pattern for these plain C structs.
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        let namelen = to_sockaddr(to, family, &mut name);
        // Room for one cmsg carrying a u16, 8-byte aligned as cmsghdr needs.
        let mut control = [0u64; 4];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = namelen;
        msg.msg_iov = self.iovs.as_mut_ptr();
        msg.msg_iovlen = self.iovs.len();
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
        // SAFETY: msg_control points at `control`, large enough for the
        // header and a u16 (CMSG_SPACE above), so the first header and its
        // data lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
        }
        // SAFETY: every pointer in `msg` refers to locals, `self.iovs` and
        // the caller's segments, all alive for the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) };
        self.iovs.clear();
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// How many datagrams from the front of a sequence (`datagram(i)` gives
/// destination and length of the `i`-th of `count`) can share one GSO
/// send: same destination, same size (the last may be shorter), within
/// the kernel's limits.
pub fn gso_run(count: usize, datagram: impl Fn(usize) -> (SocketAddr, usize)) -> usize {
    if count == 0 {
        return 0;
    }
    let (to, first) = datagram(0);
    let mut total = first;
    let mut n = 1;
    while n < count {
        let (dest, len) = datagram(n);
        if dest != to || len > first || n == GSO_MAX_SEGMENTS || total + len > GSO_MAX_BYTES {
            break;
        }
        total += len;
        n += 1;
        if len < first {
            break;
        }
    }
    n
}

/// Sends `count` datagrams (`datagram(i)` gives destination and bytes) in
/// order: runs of equal-sized datagrams to one destination go out as one
/// GSO super-datagram (one trip through the kernel's UDP stack), the rest
/// by sendmmsg. `gso` says whether to try GSO; it is switched off for good
/// when the kernel or the route refuses it (the run then goes the slow
/// way). Returns the first send error, after trying every datagram.
pub fn send_in_order<'a>(
    sender: &mut UdpSender,
    sock: &UdpSocket,
    gso: &std::sync::atomic::AtomicBool,
    count: usize,
    datagram: impl Fn(usize) -> (SocketAddr, &'a [u8]),
) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    let mut first_error = None;
    let mut note = |r: io::Result<usize>| {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    };
    // Datagrams waiting for sendmmsg: `singles..i`.
    let mut singles = 0;
    let mut i = 0;
    while i < count {
        let run = if gso.load(Ordering::Relaxed) {
            gso_run(count - i, |j| {
                let (to, bytes) = datagram(i + j);
                (to, bytes.len())
            })
        } else {
            1
        };
        if run > 1 {
            // Keep order: what waited goes first.
            note(sender.send_many(sock, (singles..i).map(&datagram)));
            let to = datagram(i).0;
            match sender.send_gso(sock, to, (i..i + run).map(|k| datagram(k).1)) {
                Ok(()) => singles = i + run,
                Err(_) => {
                    gso.store(false, Ordering::Relaxed);
                    singles = i;
                }
            }
        }
        i += run;
    }
    note(sender.send_many(sock, (singles..count).map(&datagram)));
    first_error.map_or(Ok(()), Err)
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
            let mut sender = UdpSender::new();
            let sent = sender
                .send_many(&tx, payloads.iter().map(|p| (to, p.as_slice())))
                .expect("send");
            assert_eq!(sent, 40);
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

    #[test]
    fn gro_receive_splits_back_into_the_datagrams_sent() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind rx");
        enable_gro(&rx).expect("UDP_GRO");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        let to = rx.local_addr().expect("addr");
        let segs: Vec<Vec<u8>> = (0..20u8)
            .map(|i| vec![i; if i == 19 { 77 } else { 1452 }])
            .collect();
        UdpSender::new()
            .send_gso(&tx, to, segs.iter().map(Vec::as_slice))
            .expect("gso");
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut rb = RecvBatch::new(8, 65_536);
        let mut got = Vec::new();
        let mut messages = 0;
        while got.len() < segs.len() {
            let n = rb.recv(&rx).expect("recv");
            messages += n;
            for i in 0..n {
                for r in rb.datagrams(i) {
                    got.push(rb.get(i)[r].to_vec());
                }
            }
        }
        assert_eq!(got, segs);
        assert!(
            messages < segs.len(),
            "coalesced: {messages} receives for {} datagrams",
            segs.len()
        );
    }

    #[test]
    fn gso_super_datagram_arrives_as_separate_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind rx");
        let tx = UdpSocket::bind("[::]:0").expect("bind tx");
        let to = rx.local_addr().expect("addr");
        let segs: Vec<Vec<u8>> = (0..10u8)
            .map(|i| vec![i; if i == 9 { 300 } else { 1452 }])
            .collect();
        UdpSender::new()
            .send_gso(&tx, to, segs.iter().map(Vec::as_slice))
            .expect("gso send on loopback");
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        for s in &segs {
            let (n, _) = rx.recv_from(&mut buf).expect("recv");
            assert_eq!(&buf[..n], s.as_slice());
        }
    }

    #[test]
    fn gso_runs_group_equal_sizes_to_one_peer_ending_at_a_shorter_one() {
        let a = SocketAddr::from(([10, 0, 0, 1], 1));
        let b = SocketAddr::from(([10, 0, 0, 2], 1));
        let run = |d: &[(SocketAddr, usize)]| gso_run(d.len(), |i| d[i]);
        assert_eq!(run(&[]), 0);
        assert_eq!(
            run(&[(a, 1452), (a, 1452), (a, 100), (a, 1452)]),
            3,
            "shorter one closes the run"
        );
        assert_eq!(run(&[(a, 1452), (b, 1452)]), 1, "other destination");
        assert_eq!(run(&[(a, 100), (a, 1452)]), 1, "larger one cannot follow");
        assert_eq!(run(&[(a, 1452); 100]), 44, "65,000-byte limit: 44 x 1452");
        assert_eq!(run(&[(a, 10); 100]), 64, "segment limit");
    }
}
