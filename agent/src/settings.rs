//! What the agent reads and keeps on disk.
//!
//! - The config file (TOML, written by the operator, optional): the same
//!   settings as the command line.
//! - The state directory (0700): `machine.key` and `node.key` (0600,
//!   created on first run, reused after), `settings.toml` (the controller
//!   and whether the node should be up, written by the daemon on
//!   `up`/`down`) and `map.bin` (the last network map, so a restarted node
//!   comes back with its peers while the controller is away), and
//!   `hello.time` (the timestamp of the last handshake sent, so hellos
//!   keep growing across restarts even on a board whose clock starts at
//!   1970 after each boot).

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use prost::Message;
use proto_control::messages::{MapUpdate, Registered};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cvlan-agent";
pub const DEFAULT_SOCKET: &str = "/run/cvlan-agent.sock";
pub const DEFAULT_INTERFACE: &str = "cvlan0";
pub const DEFAULT_LISTEN_PORT: u16 = 41641;

/// The operator's config file. Every field is optional; command-line
/// flags override it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub controller: Option<String>,
    pub controller_key: Option<String>,
    pub auth_key: Option<String>,
    pub auth_key_file: Option<PathBuf>,
    pub hostname: Option<String>,
    pub interface: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub listen_port: Option<u16>,
    /// PEM CA certificates trusted for relays announced as `tls://`.
    pub relay_ca_file: Option<PathBuf>,
    /// PEM CA certificates trusted for an `https://` controller (default:
    /// the system's CAs).
    pub controller_ca_file: Option<PathBuf>,
    /// STUN servers (`IP:PORT`) asked from the WireGuard socket besides
    /// the relays' own.
    #[serde(default)]
    pub stun_servers: Vec<String>,
    /// Ask the router (PCP, NAT-PMP) to forward a public port to the
    /// WireGuard port (default: yes).
    pub port_mapping: Option<bool>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// The configured STUN servers, each an `IP:PORT`.
    pub fn stun_servers(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        self.stun_servers
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("stun_servers: {s:?} is not IP:PORT"))
            })
            .collect()
    }

    /// The auth key, inline or from its file.
    pub fn auth_key(&self) -> Result<Option<Zeroizing<String>>, String> {
        if let Some(k) = &self.auth_key {
            return Ok(Some(Zeroizing::new(k.trim().to_string())));
        }
        match &self.auth_key_file {
            None => Ok(None),
            // Like every secret file: only its owner may read it.
            Some(p) => cvlan_core::keyfile::read_secret(p)
                .map_err(|e| format!("auth key file {}: {e}", p.display()))
                .and_then(|bytes| {
                    std::str::from_utf8(&bytes)
                        .map(|k| Some(Zeroizing::new(k.trim().to_string())))
                        .map_err(|_| format!("auth key file {}: not text", p.display()))
                }),
        }
    }
}

/// Remembered by the daemon across restarts.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub controller: Option<String>,
    pub controller_key: Option<String>,
    pub hostname: Option<String>,
    /// Whether the node should be connected (the last command was `up`).
    #[serde(default)]
    pub up: bool,
}

/// The last map, with the registration it belongs to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CachedMap {
    #[prost(message, optional, tag = "1")]
    pub registered: Option<Registered>,
    #[prost(message, optional, tag = "2")]
    pub map: Option<MapUpdate>,
    /// The controller key the map came from: a map from another network
    /// is not reused.
    #[prost(bytes = "vec", tag = "3")]
    pub controller_key: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    pub dir: PathBuf,
}

/// Hands out the timestamps hellos carry (controller and relays turn away
/// any hello not newer than the last one they accepted from us): the wall
/// clock in nanoseconds, but always above the last one handed out, which
/// is kept in `hello.time` across restarts.
#[derive(Debug, Clone)]
pub struct HelloClock {
    path: PathBuf,
    last: std::sync::Arc<std::sync::Mutex<u64>>,
}

impl HelloClock {
    pub fn open(state: &StateDir) -> Self {
        let path = state.dir.join("hello.time");
        let last = std::fs::read(&path)
            .ok()
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, u64::from_be_bytes);
        Self {
            path,
            last: std::sync::Arc::new(std::sync::Mutex::new(last)),
        }
    }

    /// The timestamp for the next hello (stored before it is used).
    pub fn next(&self) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = proto_control::next_timestamp(wall, *last);
        if let Err(e) = write_atomic(&self.path, &last.to_be_bytes()) {
            // Still monotonic in this process; only a restart could repeat.
            tracing::warn!(path = %self.path.display(), error = %e, "hello timestamp not saved");
        }
        *last
    }
}

/// Writes `bytes` to `path` whole (temp file, fsync, rename), mode 0600.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    cvlan_core::keyfile::write_private(path, bytes)
}

fn random_key() -> io::Result<[u8; 32]> {
    let mut k = [0u8; 32];
    cvlan_core::seed::fill(&mut k).map_err(io::Error::other)?;
    Ok(k)
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("state dir {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("state dir {}: {e}", dir.display()))?;
        Ok(Self { dir: dir.into() })
    }

    fn key(&self, name: &str) -> Result<Zeroizing<[u8; 32]>, String> {
        let path = self.dir.join(name);
        cvlan_core::keyfile::load_or_create(&path, random_key)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The Noise key of the control channel.
    pub fn machine_key(&self) -> Result<Zeroizing<[u8; 32]>, String> {
        self.key("machine.key")
    }

    /// The WireGuard private key, clamped the way X25519 uses it.
    pub fn node_key(&self) -> Result<Zeroizing<[u8; 32]>, String> {
        self.key("node.key")
    }

    pub fn store_node_key(&self, key: &[u8; 32]) -> Result<(), String> {
        let path = self.dir.join("node.key");
        cvlan_core::keyfile::store(&path, key).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn saved(&self) -> Result<Saved, String> {
        let path = self.dir.join("settings.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, s: &Saved) -> Result<(), String> {
        let path = self.dir.join("settings.toml");
        let text = toml::to_string(s).map_err(|e| e.to_string())?;
        write_atomic(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The cached map, if there is a readable one.
    pub fn cached_map(&self) -> Option<CachedMap> {
        let bytes = std::fs::read(self.dir.join("map.bin")).ok()?;
        CachedMap::decode(bytes.as_slice()).ok()
    }

    pub fn save_map(&self, m: &CachedMap) -> Result<(), String> {
        let path = self.dir.join("map.bin");
        write_atomic(&path, &m.encode_to_vec()).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn forget_map(&self) {
        let _ = std::fs::remove_file(self.dir.join("map.bin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_parse_strictly() {
        let c: ConfigFile = toml::from_str(
            "controller = \"http://10.0.0.1:7443\"\nlisten_port = 5\nauth_key = \" k \"\n",
        )
        .unwrap();
        assert_eq!(c.listen_port, Some(5));
        assert_eq!(c.auth_key().unwrap().unwrap().as_str(), "k");
        assert!(toml::from_str::<ConfigFile>("controler = \"typo\"").is_err());
    }

    #[test]
    fn hello_timestamps_grow_across_restarts_even_when_the_clock_is_behind() {
        let dir = std::env::temp_dir().join(format!("cvlan-agent-hello-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = StateDir::open(&dir).unwrap();
        let a = HelloClock::open(&s).next();
        let b = HelloClock::open(&s).next();
        assert!(b > a);
        // A clock far behind what was sent before (a board booting at 1970).
        let future = u64::MAX / 2;
        std::fs::write(dir.join("hello.time"), future.to_be_bytes()).unwrap();
        let clock = HelloClock::open(&s);
        assert_eq!(clock.next(), future + 1);
        assert_eq!(HelloClock::open(&s).next(), future + 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_survives_a_restart_with_private_files() {
        let dir = std::env::temp_dir().join(format!("cvlan-agent-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = StateDir::open(&dir).unwrap();
        let (m, n) = (s.machine_key().unwrap(), s.node_key().unwrap());
        assert_ne!(*m, *n);
        let saved = Saved {
            controller: Some("c".into()),
            up: true,
            ..Default::default()
        };
        s.save(&saved).unwrap();
        let map = CachedMap {
            registered: Some(Registered {
                node_id: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        s.save_map(&map).unwrap();
        let again = StateDir::open(&dir).unwrap();
        assert_eq!(*again.machine_key().unwrap(), *m);
        assert_eq!(*again.node_key().unwrap(), *n);
        assert_eq!(again.saved().unwrap(), saved);
        assert_eq!(again.cached_map(), Some(map));
        for f in ["machine.key", "node.key", "settings.toml", "map.bin"] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
