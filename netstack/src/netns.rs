//! Network namespaces (`ip netns` style, under /var/run/netns).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Moves the calling thread into the named network namespace. Sockets it
/// opens afterwards live there; other threads are unaffected. Used by tests
/// that talk across namespaces from one process.
pub fn enter(name: &str) -> io::Result<()> {
    let ns = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: `ns` is an open namespace file descriptor for the whole call;
    // setns only changes this thread's namespace membership.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
