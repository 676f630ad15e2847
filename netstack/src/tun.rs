//! Linux TUN devices (`/dev/net/tun`), layer 3, no packet-info header.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// An open TUN interface. The interface exists while this value lives
/// (it is not made persistent), so dropping it removes the interface.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
}

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
    /// Creates (or attaches to) TUN interface `name`.
    pub fn create(name: &str) -> io::Result<Self> {
        let mut req = IfReq::new(name)?;
        let flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        req.data[..2].copy_from_slice(&flags.to_ne_bytes());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req)?;
        set_nonblocking(file.as_raw_fd())?;
        let len = req
            .name
            .iter()
            .position(|c| *c == 0)
            .unwrap_or(libc::IFNAMSIZ);
        let name = req.name[..len].iter().map(|c| *c as u8 as char).collect();
        Ok(Self { file, name })
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
    /// `i` lands at `bufs[i][head..len - tail]` (room is left in front and
    /// behind for the caller's framing) and its length in `lens[i]`.
    /// Returns how many were read (at least one).
    pub fn recv_batch(
        &self,
        bufs: &mut [Vec<u8>],
        head: usize,
        tail: usize,
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let max = bufs.len().min(lens.len());
        if max == 0 {
            return Ok(0);
        }
        fn room(b: &mut [u8], head: usize, tail: usize) -> &mut [u8] {
            let end = b.len().saturating_sub(tail).max(head);
            &mut b[head..end]
        }
        lens[0] = self.recv(room(&mut bufs[0], head, tail))?;
        let mut n = 1;
        while n < max {
            match (&self.file).read(room(&mut bufs[n], head, tail)) {
                Ok(len) => {
                    lens[n] = len;
                    n += 1;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        Ok(n)
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

    /// Writes one packet.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }

    pub fn mtu(&self) -> io::Result<u32> {
        let mut req = IfReq::new(&self.name)?;
        let sock = control_socket()?;
        ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req)?;
        let mut b = [0u8; 4];
        b.copy_from_slice(&req.data[..4]);
        Ok(u32::try_from(i32::from_ne_bytes(b)).unwrap_or(0))
    }

    pub fn set_mtu(&self, mtu: u32) -> io::Result<()> {
        let mut req = IfReq::new(&self.name)?;
        let v = i32::try_from(mtu).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        req.data[..4].copy_from_slice(&v.to_ne_bytes());
        let sock = control_socket()?;
        ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU, &mut req)
    }
}
