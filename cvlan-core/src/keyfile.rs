//! Private keys on disk: 32 bytes as 64 hex digits and a newline, in a
//! file only its owner can read (0600), created with that mode (never
//! widened after the fact) and written whole (temp file, then rename), so
//! a crash never leaves half a key.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

/// Largest secret file read (a PEM private key is a few KiB).
const MAX_SECRET_FILE: u64 = 1 << 20;

fn refuse_if_shared(path: &Path, file: &std::fs::File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

/// Reads a secret (a PSK, a PEM private key) from a file only its owner
/// may read, into memory that is wiped when dropped (sized up front, so
/// no copy is left behind by a growing buffer).
pub fn read_secret(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut file = std::fs::File::open(path)?;
    refuse_if_shared(path, &file)?;
    let len = file.metadata()?.len();
    if len > MAX_SECRET_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is too large for a key ({len} bytes)", path.display()),
        ));
    }
    let mut buf = Zeroizing::new(vec![0u8; usize::try_from(len).unwrap_or(0) + 1]);
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    if n == buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} changed while it was read", path.display()),
        ));
    }
    buf.truncate(n);
    Ok(buf)
}

/// Reads the key at `path`, or creates it with `generate` if the file
/// does not exist. A file readable by others is refused.
pub fn load_or_create(
    path: &Path,
    generate: impl FnOnce() -> io::Result<[u8; 32]>,
) -> io::Result<Zeroed> {
    match load(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = Zeroizing::new(generate()?);
            store(path, &key)?;
            Ok(key)
        }
        other => other,
    }
}

/// A key that is wiped from memory when dropped.
pub type Zeroed = Zeroizing<[u8; 32]>;

pub fn load(path: &Path) -> io::Result<Zeroed> {
    let mut file = std::fs::File::open(path)?;
    refuse_if_shared(path, &file)?;
    let mut text = Zeroizing::new([0u8; 32]);
    let mut buf = Zeroizing::new([0u8; 66]);
    let n = file.read(&mut buf[..])?;
    let digits = buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n]);
    let ok = digits.len() == 64 && decode_hex(digits, &mut text);
    if !ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not hold a key (64 hex digits)", path.display()),
        ));
    }
    Ok(text)
}

fn decode_hex(digits: &[u8], out: &mut [u8; 32]) -> bool {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => return false,
        }
    }
    true
}

pub fn store(path: &Path, key: &[u8; 32]) -> io::Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = Zeroizing::new([0u8; 65]);
    for (i, b) in key.iter().enumerate() {
        text[2 * i] = HEX[usize::from(b >> 4)];
        text[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    text[64] = b'\n';
    write_private(path, &text[..])
}

/// Writes `bytes` to `path` whole or not at all (a temporary file, fsync,
/// rename), readable by its owner only (0600) from the first byte.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_0600_and_read_back() {
        let dir = std::env::temp_dir().join(format!("cvlan-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k");
        let _ = std::fs::remove_file(&path);
        let a = load_or_create(&path, || Ok([0xab; 32])).unwrap();
        let b = load_or_create(&path, || panic!("must not generate again")).unwrap();
        assert_eq!(*a, *b);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load(&path).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        std::fs::write(&path, "zz\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&path).unwrap_err().kind(), io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_are_read_only_from_private_files() {
        let dir = std::env::temp_dir().join(format!("cvlan-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("psk");
        std::fs::write(&path, "a pre-shared key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(&read_secret(&path).unwrap()[..], b"a pre-shared key\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
