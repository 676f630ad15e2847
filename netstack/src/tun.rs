//! Linux TUN devices (`/dev/net/tun`), layer 3, no packet-info header.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::offload;

/// An open TUN interface. The interface exists while this value lives
/// (it is not made persistent), so dropping it removes the interface.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    /// Every read and write carries a virtio-net header (offloads on).
    vnet_hdr: bool,
    /// The handle SIOC*IFMTU ioctls need, opened once (the MTU is re-read
    /// every second).
    control: std::net::UdpSocket,
}

/// State the reading thread keeps between `recv_batch` calls: the raw read
/// buffer, and a super-packet that did not fit the last batch.
#[derive(Debug)]
pub struct TunReader {
    scratch: Vec<u8>,
    carried: Option<usize>,
    /// Reads dropped because their offload header could not be honoured.
    pub dropped: u64,
    /// Why the last one was dropped.
    pub last_drop: Option<offload::OffloadError>,
}

impl Default for TunReader {
    fn default() -> Self {
        Self {
            scratch: vec![0; offload::VNET_HDR_LEN + 65_536],
            carried: None,
            dropped: 0,
            last_drop: None,
        }
    }
}

/// Slots kept free before another read: a TSO super-packet at MTU 1420 is
/// at most 48 segments.
const SEGMENT_RESERVE: usize = 64;

/// `struct ifreq` as the TUN and MTU ioctls use it: a name and a union
/// whose first member is what we set (flags or MTU).
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> io::Result<Self> {
        if name.is_empty()
            || name.len() >= libc::IFNAMSIZ
            || name.contains('/')
            || name.contains(char::is_whitespace)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid interface name {name:?}"),
            ));
        }
        let mut req = Self {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        Ok(req)
    }
}

fn ioctl(fd: libc::c_int, request: libc::c_ulong, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: `req` is a valid, exclusively borrowed `ifreq`-sized buffer
    // for the whole call; the kernel reads and writes only within it.
    let rc = unsafe { libc::ioctl(fd, request as _, req as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A throwaway datagram socket, the handle `SIOC*IF*` ioctls need.
fn control_socket() -> io::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))
}

impl Tun {
    /// Creates (or attaches to) TUN interface `name`, with TCP segmentation
    /// and checksum offloads when the kernel offers them.
    pub fn create(name: &str) -> io::Result<Self> {
        match Self::open(name, true) {
            Ok(t) => Ok(t),
            Err(_) => Self::open(name, false),
        }
    }

    /// A TUN device without virtio-net offloads: every read is one IP
    /// packet and every write takes one (simpler consumers, e.g. the
    /// vrouter's first data path).
    pub fn create_plain(name: &str) -> io::Result<Self> {
        Self::open(name, false)
    }

    fn open(name: &str, offloads: bool) -> io::Result<Self> {
        let mut req = IfReq::new(name)?;
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if offloads {
            flags |= libc::IFF_VNET_HDR;
        }
        req.data[..2].copy_from_slice(&(flags as libc::c_short).to_ne_bytes());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req)?;
        if offloads {
            let features =
                libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
            // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is shared.
            if unsafe {
                libc::ioctl(
                    file.as_raw_fd(),
                    libc::TUNSETOFFLOAD as _,
                    features as libc::c_ulong,
                )
            } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        set_nonblocking(file.as_raw_fd())?;
        let len = req
            .name
            .iter()
            .position(|c| *c == 0)
            .unwrap_or(libc::IFNAMSIZ);
        let name = req.name[..len].iter().map(|c| *c as u8 as char).collect();
        Ok(Self {
            file,
            name,
            vnet_hdr: offloads,
            control: control_socket()?,
        })
    }

    /// Whether reads may hand over TSO super-packets (split by `recv_batch`).
    pub fn has_offloads(&self) -> bool {
        self.vnet_hdr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet. Blocks until one arrives.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&self.file).read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_readable()?,
                other => return other,
            }
        }
    }

    /// Blocks for one packet, then takes the ones already queued: packet
    /// `i` lands at `bufs[i][head..]` (room is left in front for the
    /// caller's framing; slots are sized by the caller for the largest
    /// packet plus its own tail room) and its length in `lens[i]`. With
    /// offloads on, a TSO super-packet becomes its MTU-sized segments.
    /// Returns how many packets were produced (at least one, unless every
    /// read was malformed and dropped).
    pub fn recv_batch(
        &self,
        reader: &mut TunReader,
        bufs: &mut [Vec<u8>],
        head: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let max = bufs.len().min(lens.len());
        let mut n = 0;
        loop {
            // With offloads a read may yield many packets: read again only
            // while a whole super-packet still fits.
            let reserve = if self.vnet_hdr { SEGMENT_RESERVE } else { 1 };
            if n > 0 && max - n < reserve.min(max) {
                return Ok(n);
            }
            let len = if let Some(len) = reader.carried.take() {
                len
            } else if n == 0 {
                self.recv(&mut reader.scratch)?
            } else {
                match (&self.file).read(&mut reader.scratch) {
                    Ok(len) => len,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) =>
                    {
                        return Ok(n)
                    }
                    Err(e) => return Err(e),
                }
            };
            let read = &reader.scratch[..len];
            if !self.vnet_hdr {
                let Some(dst) = bufs[n].get_mut(head..head + len) else {
                    continue;
                };
                dst.copy_from_slice(read);
                lens[n] = len;
                n += 1;
                continue;
            }
            match offload::split(read, &mut bufs[n..max], head, &mut lens[n..max]) {
                Ok(k) => n += k,
                Err(offload::OffloadError::TooManySegments) if n > 0 => {
                    // Does not fit this batch: first thing in the next one.
                    reader.carried = Some(len);
                    return Ok(n);
                }
                // Malformed or impossible to fit even alone: dropped and
                // counted, as a NIC drops a frame it cannot parse.
                Err(e) => {
                    reader.dropped += 1;
                    reader.last_drop = Some(e);
                }
            }
            if n == max {
                return Ok(n);
            }
        }
    }

    /// Writes one IP packet (behind a zero, "no offload" virtio-net
    /// header when offloads are on; one writev, no copy).
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        if !self.vnet_hdr {
            return (&self.file).write(packet);
        }
        const NO_OFFLOAD: [u8; offload::VNET_HDR_LEN] = [0; offload::VNET_HDR_LEN];
        (&self.file).write_vectored(&[io::IoSlice::new(&NO_OFFLOAD), io::IoSlice::new(packet)])
    }

    /// Writes `count` packets (`packet(i)`) in order; with offloads, runs
    /// of one TCP flow go as a single GRO super-packet built in `gro_buf`
    /// (at least `VNET_HDR_LEN + 65_536` bytes), so the kernel's TCP stack
    /// handles them once. Returns how many writes failed and the last error.
    pub fn send_in_order<'a>(
        &self,
        count: usize,
        packet: impl Fn(usize) -> &'a [u8],
        gro_buf: &mut [u8],
    ) -> (usize, Option<io::Error>) {
        let (mut failed, mut last) = (0, None);
        let mut k = 0;
        while k < count {
            let run = if self.vnet_hdr {
                offload::gro_run_with(count - k, |j| packet(k + j)).max(1)
            } else {
                1
            };
            if let Some(len) = (run > 1)
                .then(|| offload::gro_build_with(run, |j| packet(k + j), gro_buf))
                .flatten()
            {
                // If refused, the segments go one by one below instead.
                if self.send_offloaded(&gro_buf[..len]).is_ok() {
                    k += run;
                    continue;
                }
            }
            for j in k..k + run {
                if let Err(e) = self.send(packet(j)) {
                    failed += 1;
                    last = Some(e);
                }
            }
            k += run;
        }
        (failed, last)
    }

    /// Writes a packet that already starts with its virtio-net header (a
    /// GRO super-packet from `offload::gro_build`). Offloads must be on.
    pub fn send_offloaded(&self, with_header: &[u8]) -> io::Result<usize> {
        if !self.vnet_hdr {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "tun offloads are off",
            ));
        }
        (&self.file).write(with_header)
    }

    fn wait_readable(&self) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, exclusively borrowed for the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "tun interface went away",
            ));
        }
        Ok(())
    }

    pub fn mtu(&self) -> io::Result<u32> {
        let mut req = IfReq::new(&self.name)?;
        ioctl(self.control.as_raw_fd(), libc::SIOCGIFMTU, &mut req)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&req.data[..4]);
        Ok(u32::try_from(i32::from_ne_bytes(b)).unwrap_or(0))
    }

    pub fn set_mtu(&self, mtu: u32) -> io::Result<()> {
        let mut req = IfReq::new(&self.name)?;
        let v = i32::try_from(mtu).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        req.data[..4].copy_from_slice(&v.to_ne_bytes());
        ioctl(self.control.as_raw_fd(), libc::SIOCSIFMTU, &mut req)
    }
}

impl Tun {
    /// Gives the interface its IPv4 address and prefix (replacing the
    /// previous one); the kernel adds the prefix route once the link is up.
    pub fn set_ipv4(&self, addr: std::net::Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        if prefix_len > 32 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mask = cvlan_core::prefix::v4_mask(prefix_len);
        let sockaddr = |a: std::net::Ipv4Addr| {
            // struct sockaddr_in: family (host order), port, address, zeros.
            let mut data = [0u8; 24];
            data[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            data[4..8].copy_from_slice(&a.octets());
            data
        };
        let mut req = IfReq::new(&self.name)?;
        req.data = sockaddr(addr);
        ioctl(self.control.as_raw_fd(), libc::SIOCSIFADDR, &mut req)?;
        let mut req = IfReq::new(&self.name)?;
        req.data = sockaddr(mask.into());
        ioctl(self.control.as_raw_fd(), libc::SIOCSIFNETMASK, &mut req)
    }

    /// Sets the link up (or down).
    pub fn set_up(&self, up: bool) -> io::Result<()> {
        let mut req = IfReq::new(&self.name)?;
        ioctl(self.control.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req)?;
        let mut flags = i16::from_ne_bytes([req.data[0], req.data[1]]);
        let bits = (libc::IFF_UP | libc::IFF_RUNNING) as i16;
        if up {
            flags |= bits;
        } else {
            flags &= !bits;
        }
        req.data[..2].copy_from_slice(&flags.to_ne_bytes());
        ioctl(self.control.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req)
    }
}
