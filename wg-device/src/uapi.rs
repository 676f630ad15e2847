//! WireGuard's cross-platform userspace API (the `key=value` protocol `wg`
//! speaks over `/var/run/wireguard/IFNAME.sock`), as pure functions over a
//! [`Device`]. Socket handling is in `device`; this file has no IO, so
//! every rule of the protocol is unit-tested.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use proto_wg::{Device, IpPrefix, PeerId, PresharedKey, PrivateKey, PublicKey};

/// The errno values wireguard-go answers with (negated, as it sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UapiError {
    #[error("invalid value for {0}")]
    Invalid(&'static str),
    #[error("malformed line")]
    Protocol,
    #[error("cannot bind listen port: {0}")]
    PortInUse(u16),
    #[error("I/O error applying setting")]
    Io,
}

impl UapiError {
    pub fn errno(&self) -> i32 {
        -match self {
            Self::Invalid(_) => libc::EINVAL,
            Self::Protocol => libc::EPROTO,
            Self::PortInUse(_) => libc::EADDRINUSE,
            Self::Io => libc::EIO,
        }
    }
}

/// Device settings that live outside the state machine (in the socket).
pub trait Sockets {
    fn listen_port(&self) -> Option<u16>;
    fn set_listen_port(&mut self, port: u16) -> Result<(), UapiError>;
    fn fwmark(&self) -> u32;
    fn set_fwmark(&mut self, mark: u32) -> Result<(), UapiError>;
}

/// Text holding keys: when it grows, the outgrown buffer is wiped, so no
/// copy of a key is left behind in freed memory.
struct SecretText(zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Write for SecretText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let need = self.0.len() + s.len();
        if need > self.0.capacity() {
            let mut bigger = zeroize::Zeroizing::new(Vec::with_capacity(need.max(1024) * 2));
            bigger.extend_from_slice(&self.0);
            self.0 = bigger; // the old buffer is wiped as it drops
        }
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Answers `get=1`: the whole configuration and peer state. The text holds
/// the private and preshared keys, so it wipes itself when dropped.
pub fn get(device: &Device, sockets: &dyn Sockets) -> zeroize::Zeroizing<String> {
    let mut out = SecretText(zeroize::Zeroizing::new(Vec::new()));
    if let Some(k) = device.private_key() {
        let _ = writeln!(out, "private_key={}", hex::encode(*k.to_bytes()));
    }
    if let Some(p) = sockets.listen_port() {
        let _ = writeln!(out, "listen_port={p}");
    }
    if sockets.fwmark() != 0 {
        let _ = writeln!(out, "fwmark={}", sockets.fwmark());
    }
    for peer in device.peers() {
        let _ = writeln!(
            out,
            "public_key={}",
            hex::encode(peer.public_key.as_bytes())
        );
        let _ = writeln!(
            out,
            "preshared_key={}",
            hex::encode(peer.preshared_key.as_bytes())
        );
        let _ = writeln!(out, "protocol_version=1");
        if let Some(e) = peer.endpoint {
            let _ = writeln!(out, "endpoint={e}");
        }
        let hs = peer.last_handshake.unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", hs.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", hs.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", peer.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", peer.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            peer.persistent_keepalive
        );
        for net in peer.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    // Only `write!` of valid UTF-8 went in; moving the bytes copies nothing.
    let bytes = std::mem::take(&mut *out.0);
    zeroize::Zeroizing::new(String::from_utf8(bytes).unwrap_or_default())
}

fn key32(value: &str, what: &'static str) -> Result<[u8; 32], UapiError> {
    cvlan_core::Key32::parse(value)
        .map(|k| k.0)
        .map_err(|_| UapiError::Invalid(what))
}

/// A private or preshared key, into memory wiped on drop.
fn secret32(value: &str, what: &'static str) -> Result<zeroize::Zeroizing<[u8; 32]>, UapiError> {
    cvlan_core::key::parse_secret(value).map_err(|_| UapiError::Invalid(what))
}

fn is_true(value: &str, what: &'static str) -> Result<bool, UapiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(UapiError::Invalid(what)),
    }
}

/// `ADDRESS/LENGTH`, the length required (the UAPI always sends one).
fn parse_net(value: &str) -> Result<IpPrefix, UapiError> {
    value
        .contains('/')
        .then(|| value.parse().ok())
        .flatten()
        .ok_or(UapiError::Invalid("allowed_ip"))
}

fn parse_endpoint(value: &str) -> Result<SocketAddr, UapiError> {
    if let Ok(a) = value.parse() {
        return Ok(a);
    }
    // `wg` resolves names itself; accept them anyway, as wireguard-go does.
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(UapiError::Invalid("endpoint"))
}

/// The peer a `set` section is about. A peer created by this section and
/// then marked `update_only` is removed again; `Ignored` swallows the rest
/// of a section (removed peer, our own key, update_only on a new key).
enum Section {
    Device,
    Peer { id: PeerId, created: bool },
    Ignored,
}

/// Applies a `set=1` body (lines without the `set=1` header and without
/// the final blank line). Stops at the first error, like wireguard-go;
/// what was applied before it stays applied.
pub fn set<'a>(
    device: &mut Device,
    sockets: &mut dyn Sockets,
    now: Instant,
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<(), UapiError> {
    let mut section = Section::Device;
    for line in lines {
        let (key, value) = line.split_once('=').ok_or(UapiError::Protocol)?;
        if key == "public_key" {
            let key = PublicKey(key32(value, "public_key")?);
            section = match device.peer_id(&key) {
                Some(id) => Section::Peer { id, created: false },
                None => match device.add_peer(key) {
                    Some(id) => Section::Peer { id, created: true },
                    None => Section::Ignored,
                },
            };
            continue;
        }
        match section {
            Section::Ignored => {}
            Section::Device => set_device_key(device, sockets, key, value)?,
            Section::Peer { id, created } => {
                // update_only on a key this section created, or remove:
                // the peer goes, and the rest of its section is ignored.
                let drop_peer = match key {
                    "update_only" => is_true(value, "update_only")? && created,
                    "remove" => is_true(value, "remove")?,
                    _ => false,
                };
                if drop_peer {
                    device.remove_peer(id);
                    section = Section::Ignored;
                } else {
                    set_peer_key(device, now, id, key, value)?;
                }
            }
        }
    }
    Ok(())
}

fn set_device_key(
    device: &mut Device,
    sockets: &mut dyn Sockets,
    key: &str,
    value: &str,
) -> Result<(), UapiError> {
    match key {
        "private_key" => {
            let bytes = secret32(value, "private_key")?;
            let k = (*bytes != [0u8; 32]).then(|| PrivateKey::from_bytes(*bytes));
            device.set_private_key(k);
        }
        "listen_port" => sockets.set_listen_port(
            value
                .parse()
                .map_err(|_| UapiError::Invalid("listen_port"))?,
        )?,
        "fwmark" => sockets.set_fwmark(value.parse().map_err(|_| UapiError::Invalid("fwmark"))?)?,
        "replace_peers" => {
            if is_true(value, "replace_peers")? {
                device.remove_all_peers();
            }
        }
        _ => return Err(UapiError::Invalid("device key")),
    }
    Ok(())
}

fn set_peer_key(
    device: &mut Device,
    now: Instant,
    id: PeerId,
    key: &str,
    value: &str,
) -> Result<(), UapiError> {
    match key {
        "update_only" | "remove" => {}
        "preshared_key" => {
            let psk = secret32(value, "preshared_key")?;
            device.set_preshared_key(id, PresharedKey::from_bytes(*psk))
        }
        "endpoint" => device.set_endpoint(id, parse_endpoint(value)?),
        "persistent_keepalive_interval" => {
            let secs = value
                .parse()
                .map_err(|_| UapiError::Invalid("persistent_keepalive_interval"))?;
            device.set_persistent_keepalive(now, id, secs);
        }
        "replace_allowed_ips" => {
            if is_true(value, "replace_allowed_ips")? {
                device.clear_allowed_ips(id);
            }
        }
        "allowed_ip" => device.add_allowed_ip(id, parse_net(value)?),
        "protocol_version" => {
            if value != "1" {
                return Err(UapiError::Invalid("protocol_version"));
            }
        }
        _ => return Err(UapiError::Invalid("peer key")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Default)]
    struct FakeSockets {
        port: Option<u16>,
        mark: u32,
    }

    impl Sockets for FakeSockets {
        fn listen_port(&self) -> Option<u16> {
            self.port
        }
        fn set_listen_port(&mut self, port: u16) -> Result<(), UapiError> {
            if port == 1 {
                return Err(UapiError::PortInUse(1));
            }
            self.port = Some(port);
            Ok(())
        }
        fn fwmark(&self) -> u32 {
            self.mark
        }
        fn set_fwmark(&mut self, mark: u32) -> Result<(), UapiError> {
            self.mark = mark;
            Ok(())
        }
    }

    fn device() -> Device {
        Device::new([0; 32], Instant::now(), Duration::from_secs(1_700_000_000))
    }

    const PRIV: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    const PEER: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";
    const PEER2: &str = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376";

    fn apply(d: &mut Device, s: &mut FakeSockets, body: &str) -> Result<(), UapiError> {
        set(d, s, Instant::now(), body.lines())
    }

    #[test]
    fn set_then_get_round_trips_every_key() {
        let (mut d, mut s) = (device(), FakeSockets::default());
        let body = format!(
            "private_key={PRIV}\nlisten_port=51820\nfwmark=7\nreplace_peers=true\npublic_key={PEER}\n\
             preshared_key={}\nendpoint=192.0.2.9:51820\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\n\
             allowed_ip=fd00::/64\nprotocol_version=1\npublic_key={PEER2}\nendpoint=[2001:db8::1]:9\n",
            "11".repeat(32)
        );
        apply(&mut d, &mut s, &body).expect("set");
        let out = get(&d, &s).to_string(); // a test copy; the daemon never makes one
        assert!(
            out.starts_with(&format!(
                "private_key={PRIV}\nlisten_port=51820\nfwmark=7\n"
            )),
            "{out}"
        );
        assert!(out.contains(&format!(
            "public_key={PEER}\npreshared_key={}\nprotocol_version=1\nendpoint=192.0.2.9:51820\n",
            "11".repeat(32)
        )));
        assert!(out.contains("allowed_ip=10.0.0.2/32\nallowed_ip=fd00::/64\n"));
        assert!(out.contains(&format!(
            "public_key={PEER2}\npreshared_key={}\n",
            "00".repeat(32)
        )));
        assert!(out.contains("endpoint=[2001:db8::1]:9\n"));
        assert!(out.contains("last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n"));
    }

    #[test]
    fn remove_update_only_and_replace() {
        let (mut d, mut s) = (device(), FakeSockets::default());
        apply(
            &mut d,
            &mut s,
            &format!("public_key={PEER}\nallowed_ip=10.0.0.0/8\npublic_key={PEER2}\n"),
        )
        .expect("set");
        assert_eq!(d.peers().count(), 2);
        apply(
            &mut d,
            &mut s,
            &format!("public_key={PEER}\nremove=true\nallowed_ip=1.1.1.1/32\n"),
        )
        .expect("remove");
        assert_eq!(d.peers().count(), 1);
        // update_only on an unknown key creates nothing.
        apply(
            &mut d,
            &mut s,
            &format!("public_key={PEER}\nupdate_only=true\nallowed_ip=1.1.1.1/32\n"),
        )
        .expect("upd");
        assert_eq!(d.peers().count(), 1);
        // An allowed IP moves between peers; replace_allowed_ips clears.
        apply(&mut d, &mut s, &format!("public_key={PEER2}\nallowed_ip=10.1.0.0/16\nreplace_allowed_ips=true\nallowed_ip=10.2.0.0/16\n")).expect("set");
        let p = d.peers().next().expect("peer");
        assert_eq!(
            p.allowed_ips
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            vec!["10.2.0.0/16"]
        );
        apply(&mut d, &mut s, "replace_peers=true\n").expect("replace");
        assert_eq!(d.peers().count(), 0);
        // A zero private key removes the key.
        apply(&mut d, &mut s, &format!("private_key={PRIV}\n")).expect("key");
        assert!(d.private_key().is_some());
        apply(
            &mut d,
            &mut s,
            &format!("private_key={}\n", "00".repeat(32)),
        )
        .expect("key");
        assert!(d.private_key().is_none());
    }

    #[test]
    fn bad_lines_give_the_wireguard_go_errno() {
        let (mut d, mut s) = (device(), FakeSockets::default());
        let cases: &[(&str, i32)] = &[
            ("garbage\n", -libc::EPROTO),
            ("private_key=zz\n", -libc::EINVAL),
            ("listen_port=99999\n", -libc::EINVAL),
            ("listen_port=1\n", -libc::EADDRINUSE),
            ("bogus=1\n", -libc::EINVAL),
            ("public_key=abc\n", -libc::EINVAL),
        ];
        for (body, errno) in cases {
            assert_eq!(
                apply(&mut d, &mut s, body).map_err(|e| e.errno()),
                Err(*errno),
                "{body}"
            );
        }
        let peer_cases = [
            "allowed_ip=10.0.0.0/33",
            "allowed_ip=nonsense",
            "endpoint=nohost",
            "persistent_keepalive_interval=-1",
            "protocol_version=2",
            "remove=maybe",
            "mystery=1",
        ];
        for line in peer_cases {
            let body = format!("public_key={PEER}\n{line}\n");
            assert_eq!(
                apply(&mut d, &mut s, &body).map_err(|e| e.errno()),
                Err(-libc::EINVAL),
                "{line}"
            );
        }
    }
}
