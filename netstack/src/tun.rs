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

    /// Reads one packet. Blocks.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
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
