//! Socket options std does not expose.

use std::io;
use std::os::fd::AsRawFd;

pub(crate) fn set_int(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: we pass a pointer to a live `c_int` and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_MARK` (the `fwmark` of WireGuard's UAPI); needs CAP_NET_ADMIN.
pub fn set_mark(fd: &impl AsRawFd, mark: u32) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_MARK, mark as libc::c_int)
}

/// Socket buffer sizes, so bursts at line rate are not dropped by the
/// kernel before we read them. Falls back to the unprivileged variant.
pub fn set_buffer_sizes(fd: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        if set_int(fd, libc::SOL_SOCKET, force, v).is_err() {
            set_int(fd, libc::SOL_SOCKET, plain, v)?;
        }
    }
    Ok(())
}
