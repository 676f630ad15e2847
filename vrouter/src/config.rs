//! The vrouter's TOML configuration: tenants (each with its own TUN
//! device and its own policy database) and IPsec tunnels with the fields
//! of the vrouter design (id, type, remote_id, auth, local_subnets,
//! remote_subnets, proposals), checked into proto-ikev2 configurations.
//! Every mistake is reported with the tunnel and field it is in.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proto_ikev2::cert::{Certificate, TrustStore};
use proto_ikev2::crypto::sig::PrivateKey;
use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{
    ChildBudget, ChildLimits, Config, Credentials, EndpointConfig, EspProposal, Identity,
    IkeProposal, Timers, DEFAULT_FRAGMENT_SIZE,
};
use serde::Deserialize;
use sha2::Digest;
use zeroize::Zeroizing;

/// strongSwan's most common legacy configurations first.
const DEFAULT_IKE: &[&str] = &[
    "aes256gcm16-prfsha256-ecp256",
    "aes128gcm16-prfsha256-x25519",
    "chacha20poly1305-prfsha256-x25519",
    "aes256-sha256-modp2048",
];
const DEFAULT_ESP: &[&str] = &[
    "aes256gcm16",
    "aes128gcm16",
    "chacha20poly1305",
    "aes256-sha256",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    vrouter: GlobalFile,
    #[serde(default)]
    tenant: Vec<TenantFile>,
    #[serde(default)]
    tunnel: Vec<TunnelFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalFile {
    /// The address IKE (UDP 500) and ESP-in-UDP (4500) listen on.
    listen: IpAddr,
    /// Our IKE identity unless a tunnel names its own.
    local_id: Option<String>,
    status_socket: Option<PathBuf>,
    /// Serve GET /metrics and /health over HTTP here (e.g. "127.0.0.1:9101").
    metrics: Option<std::net::SocketAddr>,
    /// Bounds on what unauthenticated peers can make us hold (defaults:
    /// proto-ikev2's EndpointConfig).
    cookie_threshold: Option<usize>,
    max_half_open: Option<usize>,
    max_half_open_per_source: Option<usize>,
    max_ike_sas: Option<usize>,
    max_fragment_bytes: Option<usize>,
}

impl GlobalFile {
    fn endpoint(&self) -> EndpointConfig {
        let d = EndpointConfig::default();
        EndpointConfig {
            cookie_threshold: self.cookie_threshold.unwrap_or(d.cookie_threshold),
            max_half_open: self.max_half_open.unwrap_or(d.max_half_open),
            max_half_open_per_source: self
                .max_half_open_per_source
                .unwrap_or(d.max_half_open_per_source),
            max_sas: self.max_ike_sas.unwrap_or(d.max_sas),
            max_fragment_bytes: self.max_fragment_bytes.unwrap_or(d.max_fragment_bytes),
            ..d
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    name: String,
    /// The TUN device this tenant's decrypted traffic comes out of.
    tun: String,
    /// An address for that device, "10.1.0.1/24" (optional).
    address: Option<String>,
    /// The routing table the tenant's remote subnets go into, through its
    /// TUN device (default: main). Tenants whose sites use the same
    /// subnets need tables of their own; `ip rule` picks who uses which.
    table: Option<u32>,
    /// Install those routes (default); `false` leaves routing to the
    /// operator.
    #[serde(default = "yes")]
    routes: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    method: String,
    /// Inline; `psk_file` (0600) keeps it out of the configuration.
    psk: Option<String>,
    psk_file: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    ca: Vec<PathBuf>,
    #[serde(default)]
    rsa_pss: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelFile {
    id: String,
    tenant: String,
    #[serde(default = "ipsec", rename = "type")]
    kind: String,
    /// The peer: an address (we may initiate to it) or a prefix it may
    /// come from ("0.0.0.0/0" for anywhere).
    remote: String,
    local_id: Option<String>,
    remote_id: Option<String>,
    auth: AuthFile,
    local_subnets: Vec<String>,
    remote_subnets: Vec<String>,
    #[serde(default)]
    proposals: Vec<String>,
    #[serde(default)]
    esp_proposals: Vec<String>,
    /// Bring the tunnel up ourselves (else wait for the peer).
    #[serde(default)]
    initiate: bool,
    /// ESP in UDP 4500 always (the default: what strongSwan's userspace
    /// ESP speaks, and any NAT passes it); `false` sends raw ESP (IP
    /// protocol 50, IPv4) when no NAT is detected.
    #[serde(default = "yes")]
    encap: bool,
    /// Seconds; defaults are strongSwan's (4 h, 1 h, 30 s).
    rekey_time: Option<u64>,
    child_rekey_time: Option<u64>,
    dpd: Option<u64>,
    /// First retransmission after this many milliseconds (doubling), and
    /// how many before the peer is declared gone.
    retransmit_timeout_ms: Option<u64>,
    retransmit_tries: Option<u32>,
    /// Child SAs this tunnel may hold across all its IKE SAs; the peer is
    /// answered NO_ADDITIONAL_SAS beyond (rekeys still go through).
    max_child_sas: Option<usize>,
}

/// Child SAs a tunnel holds at most unless it says otherwise: a site has
/// one per pair of subnets, rarely more than a handful.
const DEFAULT_MAX_CHILD_SAS: usize = 32;

impl Drop for AuthFile {
    fn drop(&mut self) {
        if let Some(p) = &mut self.psk {
            zeroize::Zeroize::zeroize(p);
        }
    }
}

impl std::fmt::Debug for AuthFile {
    // Never the PSK (the fingerprint hashes it separately).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFile")
            .field("method", &self.method)
            .field("psk", &self.psk.as_ref().map(|_| ".."))
            .field("psk_file", &self.psk_file)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .field("rsa_pss", &self.rsa_pss)
            .finish()
    }
}

fn ipsec() -> String {
    "ipsec".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub tun: String,
    pub address: Option<(IpAddr, u8)>,
    /// Where its tunnels' remote subnets are routed, if we route them.
    pub table: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Tunnel {
    pub id: String,
    /// SHA-256 of everything the tunnel's table says (and the files it
    /// names): a reload keeps a tunnel whose fingerprint did not change.
    pub fingerprint: [u8; 32],
    pub tenant: usize,
    /// The prefix the peer may come from.
    pub remote: (IpAddr, u8),
    /// Where we initiate to, if we do.
    pub initiate_to: Option<IpAddr>,
    /// The peer's side of the tunnel, as prefixes (for routes).
    pub remote_subnets: Vec<(IpAddr, u8)>,
    pub ike: Arc<Config>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: IpAddr,
    pub metrics: Option<std::net::SocketAddr>,
    /// The IKE endpoint's bounds on half-open SAs, SAs and fragments.
    pub endpoint: EndpointConfig,
    pub status_socket: PathBuf,
    pub tenants: Vec<Tenant>,
    pub tunnels: Vec<Tunnel>,
}

/// Where `cvlan-vrouter status` asks by default.
pub const DEFAULT_STATUS_SOCKET: &str = "/run/cvlan-vrouter.sock";

fn prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match p {
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
        None => max,
    };
    Ok((addr, len))
}

fn read(path: &Path, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

/// A PSK or private key file: only its owner may read it, and it is read
/// into memory wiped after use.
fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    cvlan_core::keyfile::read_secret(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn credentials(a: &AuthFile) -> Result<Credentials, String> {
    match a.method.as_str() {
        "psk" => {
            let psk = match (&a.psk, &a.psk_file) {
                (Some(p), None) => Zeroizing::new(p.as_bytes().to_vec()),
                (None, Some(f)) => {
                    let mut bytes = read_secret(f, "psk_file")?;
                    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
                        bytes.pop();
                    }
                    bytes
                }
                _ => return Err("auth: give exactly one of psk and psk_file".into()),
            };
            if psk.len() < 8 {
                return Err("auth: a PSK shorter than 8 characters is refused".into());
            }
            Ok(Credentials::Psk(psk))
        }
        "certificate" | "pubkey" => {
            let (Some(cert), Some(key)) = (&a.cert, &a.key) else {
                return Err("auth: certificate needs cert and key".into());
            };
            if a.ca.is_empty() {
                return Err("auth: certificate needs at least one ca".into());
            }
            let cert = Certificate::from_pem(&read(cert, "certificate")?)
                .map_err(|e| format!("auth: {}: {e}", cert.display()))?;
            let key_pem = read_secret(key, "key")?;
            let key = std::str::from_utf8(&key_pem)
                .map_err(|_| "not PEM text".to_string())
                .and_then(|pem| PrivateKey::from_pem(pem).map_err(|e| e.to_string()))
                .map_err(|e| format!("auth: {}: {e}", key.display()))?;
            if &key.public_key() != cert.public_key() {
                return Err("auth: the key does not belong to the certificate".into());
            }
            let cas =
                a.ca.iter()
                    .map(|p| {
                        Certificate::from_pem(&read(p, "CA certificate")?)
                            .map_err(|e| format!("auth: {}: {e}", p.display()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
            Ok(Credentials::Certificate {
                cert: Arc::new(cert),
                key: Arc::new(key),
                trust: Arc::new(TrustStore::new(cas)),
                rsa_pss: a.rsa_pss,
            })
        }
        other => Err(format!(
            "auth: unknown method {other:?} (psk or certificate)"
        )),
    }
}

fn selectors(list: &[String], field: &str) -> Result<Vec<TrafficSelector>, String> {
    if list.is_empty() {
        return Err(format!("{field} is empty"));
    }
    list.iter()
        .map(|s| prefix(s).map(|(a, l)| TrafficSelector::subnet(a, l)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{field}: {e}"))
}

/// SHA-256 over everything a tunnel's table says and the contents of the
/// files it names (secrets included, hashed without a plain copy), so a
/// reload sees any change.
fn fingerprint(t: &TunnelFile) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(format!("{t:?}").as_bytes());
    if let Some(p) = &t.auth.psk {
        h.update(p.as_bytes());
    }
    for secret in [&t.auth.key, &t.auth.psk_file].into_iter().flatten() {
        if let Ok(bytes) = cvlan_core::keyfile::read_secret(secret) {
            h.update(&bytes[..]);
        }
    }
    for public in t.auth.cert.iter().chain(&t.auth.ca) {
        h.update(std::fs::read(public).unwrap_or_default());
    }
    h.finalize().into()
}

fn tunnel(t: &TunnelFile, tenants: &[Tenant], default_id: Option<&str>) -> Result<Tunnel, String> {
    if t.kind != "ipsec" {
        return Err(format!("type {:?} is not served yet (ipsec is)", t.kind));
    }
    let tenant = tenants
        .iter()
        .position(|x| x.name == t.tenant)
        .ok_or_else(|| format!("unknown tenant {:?}", t.tenant))?;
    let remote = prefix(&t.remote).map_err(|e| format!("remote: {e}"))?;
    let host = remote.1 == if remote.0.is_ipv4() { 32 } else { 128 };
    if t.initiate && !host {
        return Err("initiate = true needs remote to be one address".into());
    }
    if !t.encap && remote.0.is_ipv6() {
        return Err("encap = false (raw ESP) is served over IPv4 only".into());
    }
    let local_id = t
        .local_id
        .as_deref()
        .or(default_id)
        .ok_or("local_id is missing (here or in [vrouter])")?;
    if t.auth.method != "psk" && t.remote_id.is_none() {
        // Without it, any certificate the CA ever issued would do.
        return Err("remote_id is required with certificate authentication".into());
    }
    let list = |given: &[String], default: &[&str]| -> Vec<String> {
        if given.is_empty() {
            default.iter().map(|s| s.to_string()).collect()
        } else {
            given.to_vec()
        }
    };
    let ike_proposals = list(&t.proposals, DEFAULT_IKE)
        .iter()
        .map(|p| IkeProposal::parse(p).map_err(|e| format!("proposals: {e}")))
        .collect::<Result<_, _>>()?;
    let esp_proposals = list(&t.esp_proposals, DEFAULT_ESP)
        .iter()
        .map(|p| EspProposal::parse(p).map_err(|e| format!("esp_proposals: {e}")))
        .collect::<Result<_, _>>()?;
    let defaults = Timers::default();
    let secs = |v: Option<u64>, d: Option<Duration>| v.map(Duration::from_secs).or(d);
    let ike = Config {
        local_id: Identity::parse(local_id),
        remote_id: t.remote_id.as_deref().map(Identity::parse),
        credentials: credentials(&t.auth)?,
        ike_proposals,
        esp_proposals,
        local_ts: selectors(&t.local_subnets, "local_subnets")?,
        remote_ts: selectors(&t.remote_subnets, "remote_subnets")?,
        force_encap: t.encap,
        fragment_size: Some(DEFAULT_FRAGMENT_SIZE),
        timers: Timers {
            ike_rekey: secs(t.rekey_time, defaults.ike_rekey),
            child_rekey: secs(t.child_rekey_time, defaults.child_rekey),
            dpd: secs(t.dpd, defaults.dpd),
            retransmit: t
                .retransmit_timeout_ms
                .map_or(defaults.retransmit, Duration::from_millis),
            retransmit_tries: t.retransmit_tries.unwrap_or(defaults.retransmit_tries),
            ..defaults
        },
        child_limits: {
            let max = t.max_child_sas.unwrap_or(DEFAULT_MAX_CHILD_SAS);
            if max == 0 {
                return Err("max_child_sas must be at least 1".into());
            }
            ChildLimits {
                per_ike_sa: max,
                per_config: Some(ChildBudget::new(max)),
            }
        },
    };
    let fingerprint = fingerprint(t);
    Ok(Tunnel {
        id: t.id.clone(),
        fingerprint,
        tenant,
        remote,
        initiate_to: t.initiate.then_some(remote.0),
        remote_subnets: t
            .remote_subnets
            .iter()
            .filter_map(|s| prefix(s).ok())
            .collect(),
        ike: Arc::new(ike),
    })
}

impl Settings {
    pub fn parse(text: &str) -> Result<Self, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let tenants = f
            .tenant
            .iter()
            .map(|t| {
                let address = t
                    .address
                    .as_deref()
                    .map(prefix)
                    .transpose()
                    .map_err(|e| format!("tenant {}: address: {e}", t.name))?;
                Ok(Tenant {
                    name: t.name.clone(),
                    tun: t.tun.clone(),
                    address,
                    table: t
                        .routes
                        .then_some(t.table.unwrap_or(netstack::route::MAIN_TABLE)),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        for (i, t) in tenants.iter().enumerate() {
            if tenants[..i]
                .iter()
                .any(|o| o.name == t.name || o.tun == t.tun)
            {
                return Err(format!("tenant {}: name or tun used twice", t.name));
            }
        }
        let mut tunnels = Vec::new();
        for t in &f.tunnel {
            if tunnels.iter().any(|o: &Tunnel| o.id == t.id) {
                return Err(format!("tunnel {}: id used twice", t.id));
            }
            let new = tunnel(t, &tenants, f.vrouter.local_id.as_deref())
                .map_err(|e| format!("tunnel {}: {e}", t.id))?;
            // Tunnels answering the same peer address are told apart by
            // the identity the peer presents (ours may differ too, when
            // one site reaches us under two names).
            if let Some(o) = tunnels.iter().find(|o: &&Tunnel| {
                o.remote == new.remote
                    && o.ike.remote_id == new.ike.remote_id
                    && o.ike.local_id == new.ike.local_id
            }) {
                return Err(format!(
                    "tunnel {}: same remote, remote_id and local_id as tunnel {}; give each a distinct remote_id",
                    t.id, o.id
                ));
            }
            // One table cannot send a subnet to two tenants.
            if let Some((o, net)) = tunnels.iter().find_map(|o: &Tunnel| {
                let shared = o.tenant != new.tenant
                    && tenants[o.tenant].table.is_some()
                    && tenants[o.tenant].table == tenants[new.tenant].table;
                let net = o
                    .remote_subnets
                    .iter()
                    .find(|n| new.remote_subnets.contains(n));
                net.filter(|_| shared).map(|n| (o, n))
            }) {
                return Err(format!(
                    "tunnel {}: tenants {} and {} would both route {}/{} in one table; \
                     give one a table of its own",
                    t.id, tenants[o.tenant].name, tenants[new.tenant].name, net.0, net.1
                ));
            }
            tunnels.push(new);
        }
        Ok(Self {
            listen: f.vrouter.listen,
            metrics: f.vrouter.metrics,
            endpoint: f.vrouter.endpoint(),
            status_socket: f
                .vrouter
                .status_socket
                .unwrap_or_else(|| DEFAULT_STATUS_SOCKET.into()),
            tenants,
            tunnels,
        })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        // It may hold inline PSKs: wiped after parsing.
        let text = Zeroizing::new(read(path, "configuration")?);
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[vrouter]
listen = "10.88.0.2"
local_id = "gw-o.interop"

[[tenant]]
name = "acme"
tun = "vr-acme"
address = "10.88.2.1/24"

[[tunnel]]
id = "tun-001"
tenant = "acme"
type = "ipsec"
remote = "10.88.0.1"
remote_id = "gw-s.interop"
auth = { method = "psk", psk = "interop-psk-5b1f0e7d" }
local_subnets = ["10.88.2.0/24"]
remote_subnets = ["10.88.1.0/24"]
proposals = ["aes256gcm16-prfsha256-ecp256"]
initiate = true
"#;

    #[test]
    fn a_tunnel_becomes_an_ike_config() {
        let s = Settings::parse(GOOD).unwrap();
        assert_eq!(s.tunnels.len(), 1);
        let t = &s.tunnels[0];
        assert_eq!(t.initiate_to, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(t.ike.local_id, Identity::parse("gw-o.interop"));
        assert_eq!(t.ike.esp_proposals.len(), DEFAULT_ESP.len());
        assert!(t.ike.force_encap);
        assert_eq!(
            s.tenants[0].address,
            Some(("10.88.2.1".parse().unwrap(), 24))
        );
    }

    #[test]
    fn mistakes_name_the_tunnel_and_field() {
        let cases = [
            (
                "tenant = \"acme\"",
                "tenant = \"nobody\"",
                "tunnel tun-001: unknown tenant",
            ),
            (
                "aes256gcm16-prfsha256-ecp256",
                "des-md5-modp768",
                "tunnel tun-001: proposals: unknown algorithm",
            ),
            (
                "psk = \"interop-psk-5b1f0e7d\"",
                "psk = \"short\"",
                "shorter than 8",
            ),
            (
                "local_subnets = [\"10.88.2.0/24\"]",
                "local_subnets = [\"10.88.2.0/33\"]",
                "local_subnets",
            ),
            (
                "remote = \"10.88.0.1\"",
                "remote = \"10.88.0.0/24\"",
                "initiate = true needs remote",
            ),
            ("type = \"ipsec\"", "type = \"gre\"", "not served yet"),
            (
                "initiate = true",
                "initiate = true\nbogus = 1",
                "unknown field",
            ),
            (
                "initiate = true",
                "initiate = true\nmax_child_sas = 0",
                "max_child_sas must be at least 1",
            ),
        ];
        for (from, to, want) in cases {
            let e = Settings::parse(&GOOD.replace(from, to)).unwrap_err();
            assert!(e.contains(want), "{to}: {e}");
        }
    }

    #[test]
    fn secrets_come_from_private_files_and_certificates_need_a_remote_id() {
        let certificate = GOOD
            .replace(
                "auth = { method = \"psk\", psk = \"interop-psk-5b1f0e7d\" }",
                "auth = { method = \"certificate\", cert = \"c.pem\", key = \"c.key\", ca = [\"ca.pem\"] }",
            )
            .replace("remote_id = \"gw-s.interop\"\n", "");
        let e = Settings::parse(&certificate).unwrap_err();
        assert!(
            e.contains("tunnel tun-001: remote_id is required with certificate authentication"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("cvlan-vrouter-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let psk = dir.join("tun.psk");
        std::fs::write(&psk, "a-long-enough-psk\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o644)).unwrap();
        let from_file = GOOD.replace(
            "psk = \"interop-psk-5b1f0e7d\"",
            &format!("psk_file = {:?}", psk.display().to_string()),
        );
        let e = Settings::parse(&from_file).unwrap_err();
        assert!(
            e.contains("readable by others") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Settings::parse(&from_file).unwrap();
        match &s.tunnels[0].ike.credentials {
            Credentials::Psk(k) => assert_eq!(&k[..], b"a-long-enough-psk"),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_ike_bounds_are_settable_and_default_to_the_endpoints() {
        let s = Settings::parse(GOOD).unwrap();
        assert_eq!(
            s.endpoint.max_half_open_per_source,
            EndpointConfig::default().max_half_open_per_source
        );
        let t = &s.tunnels[0].ike.child_limits;
        assert_eq!(t.per_ike_sa, DEFAULT_MAX_CHILD_SAS);
        assert_eq!(
            t.per_config.as_ref().map(|b| b.limit()),
            Some(DEFAULT_MAX_CHILD_SAS)
        );
        let tuned = GOOD
            .replace(
                "local_id = \"gw-o.interop\"\n",
                "local_id = \"gw-o.interop\"\nmax_half_open = 9\nmax_half_open_per_source = 2\n\
                 cookie_threshold = 3\nmax_ike_sas = 100\nmax_fragment_bytes = 4096\n",
            )
            .replace("initiate = true", "initiate = true\nmax_child_sas = 4");
        let s = Settings::parse(&tuned).unwrap();
        let e = s.endpoint;
        assert_eq!(
            (
                e.max_half_open,
                e.max_half_open_per_source,
                e.cookie_threshold
            ),
            (9, 2, 3)
        );
        assert_eq!((e.max_sas, e.max_fragment_bytes), (100, 4096));
        assert_eq!(s.tunnels[0].ike.child_limits.per_ike_sa, 4);
    }

    #[test]
    fn tunnels_sharing_a_peer_address_need_distinct_identities() {
        let second = GOOD[GOOD.find("[[tunnel]]").unwrap()..].replace("tun-001", "tun-002");
        let e = Settings::parse(&format!("{GOOD}{second}")).unwrap_err();
        assert!(
            e.contains("tunnel tun-002: same remote, remote_id and local_id as tunnel tun-001"),
            "{e}"
        );
        let distinct = second.replace("gw-s.interop", "gw-s2.interop");
        let s = Settings::parse(&format!("{GOOD}{distinct}")).unwrap();
        assert_eq!(s.tunnels.len(), 2);
    }

    #[test]
    fn tenants_routing_the_same_subnet_need_their_own_tables() {
        let other = "[[tenant]]\nname = \"globex\"\ntun = \"vr-globex\"\n";
        let second = GOOD[GOOD.find("[[tunnel]]").unwrap()..]
            .replace("tun-001", "tun-002")
            .replace("\"acme\"", "\"globex\"")
            .replace("gw-s.interop", "gw-s2.interop");
        let e = Settings::parse(&format!("{GOOD}{other}{second}")).unwrap_err();
        assert!(
            e.contains("tenants acme and globex would both route 10.88.1.0/24 in one table"),
            "{e}"
        );
        let own = other.replace("vr-globex\"\n", "vr-globex\"\ntable = 200\n");
        let s = Settings::parse(&format!("{GOOD}{own}{second}")).unwrap();
        assert_eq!(s.tenants[0].table, Some(netstack::route::MAIN_TABLE));
        assert_eq!(s.tenants[1].table, Some(200));
        let unrouted = other.replace("vr-globex\"\n", "vr-globex\"\nroutes = false\n");
        let s = Settings::parse(&format!("{GOOD}{unrouted}{second}")).unwrap();
        assert_eq!(s.tenants[1].table, None);
    }
}
