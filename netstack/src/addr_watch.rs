//! Address changes as they happen: an rtnetlink socket subscribed to the
//! kernel's address and link groups. The agent re-reads its endpoints
//! when one arrives instead of finding out at its next poll.

use std::fs::File;
use std::io::{self, Read};

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// A socket that becomes readable whenever an address or link changes.
#[derive(Debug)]
pub struct AddressWatch {
    sock: File,
}

impl AddressWatch {
    pub fn open() -> io::Result<Self> {
        let sock = crate::route::rtnetlink_socket()?;
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
        use std::os::fd::AsRawFd;
        // SAFETY: `addr` is a valid sockaddr_nl for the whole call and its
        // size is passed with it.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { sock })
    }

    /// Blocks until the kernel reports a change (what changed is not
    /// read: the caller looks at its addresses again).
    pub fn wait(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        self.sock.read(&mut buf).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    #[test]
    #[ignore = "needs root (a network namespace); CI runs it"]
    fn a_new_address_is_reported() {
        let ns = format!("cvaw{}", std::process::id());
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(ip(&["netns", "add", &ns]), "ip netns add (root?)");
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = {
            let ns = ns.clone();
            std::thread::spawn(move || {
                crate::netns::enter(&ns).expect("setns");
                let mut w = AddressWatch::open().expect("netlink");
                tx.send(()).expect("ready");
                w.wait().is_ok()
            })
        };
        rx.recv_timeout(Duration::from_secs(5))
            .expect("watcher ready");
        let added = ip(&["-n", &ns, "addr", "add", "192.0.2.77/32", "dev", "lo"]);
        let woke = added && watcher.join().unwrap_or(false);
        ip(&["netns", "del", &ns]);
        assert!(added, "ip addr add");
        assert!(woke, "no notification for the new address");
    }
}
