//! Unix sockets only their owner may use (a daemon's control socket, the
//! WireGuard UAPI socket): never reachable with wider permissions, not
//! even for the instant between bind and chmod. The socket is bound inside
//! a fresh directory of mode 0700, set to 0600 there, and only then
//! renamed to its place, so it also appears there only once it listens
//! (wg-quick connects the moment it sees the UAPI socket).

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// Binds a listener at `path`, mode 0600 from the start. A socket already
/// there that answers means another daemon serves it (`AddrInUse`); one
/// that does not is a leftover and is replaced.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a socket path needs a name"))?;
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is served by a running daemon", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let staging = dir.join(format!(
        ".{}.staging.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let bound = (|| {
        let inside = staging.join("s");
        let listener = UnixListener::bind(&inside)?;
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inside, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_private_leftovers_replaced_and_live_ones_kept() {
        let dir = std::env::temp_dir().join(format!("cvlan-local-socket-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let live = bind_private(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no staging directory left"
        );
        assert!(UnixStream::connect(&path).is_ok());
        // A second daemon on the same path is refused...
        assert_eq!(
            bind_private(&path).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        // ...and a socket nobody serves is replaced.
        drop(live);
        let again = bind_private(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
