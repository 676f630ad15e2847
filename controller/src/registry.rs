//! The registry: nodes, pre-auth keys and overlay addresses, kept in
//! memory for reading and written through to the store on every change.
//! Every change that nodes can see bumps the map version, lands in the
//! change log (for deltas) and wakes the connections (a watch channel).
//!
//! Changes are computed first, written in one transaction, and only then
//! applied in memory: a failed write leaves memory as it was.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use proto_control::messages::{
    key32, sanitize_name, valid_name, ClientHello, Endpoint, MapUpdate, RefusedReason,
    MAX_ENDPOINTS, PROTOCOL_VERSION,
};
use proto_control::HelloTimes;
use thiserror::Error;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::authkey::{self, PresentedKey};
use crate::ipam::{Exhausted, Ipam, Ipv4Prefix};
use crate::netmap::{self, ChangeLog};
use crate::records::{AuthKeyRecord, NodeRecord};
use crate::store::{Store, StoreError};

const META_VERSION: &str = "map_version";
const META_PREFIX: &str = "overlay_prefix";
const META_IPAM_CURSOR: &str = "ipam_cursor";
const META_NEXT_NODE: &str = "next_node_id";
const META_NEXT_KEY: &str = "next_auth_key_id";
/// Most tags on a key (and so on a node).
const MAX_TAGS: usize = 32;
/// Hello timestamps kept (registered machines only, so in practice one
/// per node; the bound holds whatever happens).
const MAX_HELLO_TIMES: usize = 1 << 20;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("this machine is not registered and presented no auth key")]
    AuthKeyRequired,
    #[error("auth key not recognised")]
    AuthKeyInvalid,
    #[error("auth key {0:016x} has expired")]
    AuthKeyExpired(u64),
    #[error("auth key {0:016x} is single-use and was already used")]
    AuthKeyUsed(u64),
    #[error("auth key {0:016x} was revoked")]
    AuthKeyRevoked(u64),
    #[error("unknown auth key id {0}")]
    UnknownAuthKey(String),
    #[error("no node named or numbered {0:?}")]
    UnknownNode(String),
    #[error("a node named {0:?} already exists")]
    NameTaken(String),
    #[error("{0:?} is not a valid node name (1-63 of a-z, 0-9, '-', not at either end)")]
    InvalidName(String),
    #[error("invalid tag {0:?} (tags look like tag:name)")]
    InvalidTag(String),
    #[error("the node key is already used by another node")]
    NodeKeyInUse,
    #[error("protocol version {0} is not supported (this controller speaks {PROTOCOL_VERSION})")]
    VersionUnsupported(u32),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    #[error("the database was created with overlay prefix {stored}, not {requested}")]
    PrefixMismatch {
        stored: Ipv4Prefix,
        requested: Ipv4Prefix,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// The reason a node is told when its connection is refused.
    pub fn refusal(&self) -> RefusedReason {
        match self {
            Self::AuthKeyRequired => RefusedReason::AuthKeyRequired,
            Self::AuthKeyInvalid => RefusedReason::AuthKeyInvalid,
            Self::AuthKeyExpired(_) => RefusedReason::AuthKeyExpired,
            Self::AuthKeyUsed(_) => RefusedReason::AuthKeyUsed,
            Self::AuthKeyRevoked(_) => RefusedReason::AuthKeyRevoked,
            Self::NodeKeyInUse => RefusedReason::NodeKeyInUse,
            Self::VersionUnsupported(_) => RefusedReason::VersionUnsupported,
            Self::Exhausted(_) => RefusedReason::AddressesExhausted,
            Self::BadRequest(_) | Self::InvalidTag(_) | Self::InvalidName(_) => {
                RefusedReason::BadRequest
            }
            _ => RefusedReason::Internal,
        }
    }
}

/// Settings for a new pre-auth key.
#[derive(Debug, Clone, Default)]
pub struct NewAuthKey {
    pub reusable: bool,
    pub expires_in: Option<Duration>,
    pub tags: Vec<String>,
}

#[derive(Debug)]
pub struct Registry {
    store: Store,
    nodes: BTreeMap<u64, NodeRecord>,
    by_machine: HashMap<[u8; 32], u64>,
    by_node_key: HashMap<[u8; 32], u64>,
    by_name: HashMap<String, u64>,
    auth_keys: BTreeMap<u64, AuthKeyRecord>,
    ipam: Ipam,
    version: u64,
    next_node_id: u64,
    next_key_id: u64,
    log: ChangeLog,
    /// Connected nodes: node id -> the id of its current connection.
    online: HashMap<u64, u64>,
    /// The newest hello timestamp of each registered machine's confirmed
    /// sessions: a recorded handshake is turned away before it is answered.
    hello_times: HelloTimes,
    notify: watch::Sender<u64>,
}

fn meta_u64(meta: &[(String, Vec<u8>)], key: &str) -> Result<Option<u64>, StoreError> {
    match meta.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) => <[u8; 8]>::try_from(v.as_slice())
            .map(|b| Some(u64::from_be_bytes(b)))
            .map_err(|_| StoreError::Corrupt("meta counter")),
    }
}

fn valid_tag(t: &str) -> bool {
    t.strip_prefix("tag:").is_some_and(valid_name)
}

impl Registry {
    /// Opens the registry in `path`. `prefix` is the overlay prefix for a
    /// new database; an existing one keeps its own and refuses another.
    pub fn open(path: &Path, prefix: Option<Ipv4Prefix>) -> Result<Self, RegistryError> {
        let store = Store::open(path)?;
        let snap = store.load()?;
        let stored_prefix = match snap.meta.iter().find(|(k, _)| k == META_PREFIX) {
            Some((_, v)) => Some(
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<Ipv4Prefix>().ok())
                    .ok_or(StoreError::Corrupt("overlay prefix"))?,
            ),
            None => None,
        };
        let prefix = match (stored_prefix, prefix) {
            (Some(stored), Some(requested)) if stored != requested => {
                return Err(RegistryError::PrefixMismatch { stored, requested })
            }
            (Some(p), _) => p,
            (None, requested) => {
                let p = requested.unwrap_or(Ipv4Prefix::DEFAULT);
                store.write(|b| b.set_meta(META_PREFIX, p.to_string().as_bytes()))?;
                p
            }
        };
        let version = meta_u64(&snap.meta, META_VERSION)?.unwrap_or(0);
        let cursor = meta_u64(&snap.meta, META_IPAM_CURSOR)?.unwrap_or(0);
        let mut reg = Self {
            store,
            nodes: BTreeMap::new(),
            by_machine: HashMap::new(),
            by_node_key: HashMap::new(),
            by_name: HashMap::new(),
            auth_keys: snap.auth_keys.into_iter().map(|k| (k.id, k)).collect(),
            ipam: Ipam::new(
                prefix,
                snap.nodes.iter().map(|n| n.address),
                u32::try_from(cursor).unwrap_or(0),
            ),
            version,
            next_node_id: meta_u64(&snap.meta, META_NEXT_NODE)?.unwrap_or(1),
            next_key_id: meta_u64(&snap.meta, META_NEXT_KEY)?.unwrap_or(1),
            log: ChangeLog::new(version),
            online: HashMap::new(),
            hello_times: HelloTimes::new(MAX_HELLO_TIMES),
            notify: watch::channel(version).0,
        };
        for n in snap.nodes {
            reg.index(n);
        }
        Ok(reg)
    }

    fn index(&mut self, n: NodeRecord) {
        if let Some(k) = key32(&n.machine_key) {
            self.by_machine.insert(k, n.id);
        }
        if let Some(k) = key32(&n.node_key) {
            self.by_node_key.insert(k, n.id);
        }
        self.by_name.insert(n.name.clone(), n.id);
        self.nodes.insert(n.id, n);
    }

    fn unindex(&mut self, id: u64) -> Option<NodeRecord> {
        let n = self.nodes.remove(&id)?;
        if let Some(k) = key32(&n.machine_key) {
            self.by_machine.remove(&k);
        }
        if let Some(k) = key32(&n.node_key) {
            self.by_node_key.remove(&k);
        }
        self.by_name.remove(&n.name);
        Some(n)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn prefix(&self) -> Ipv4Prefix {
        self.ipam.prefix()
    }

    /// Wakes with the new map version after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn node(&self, id: u64) -> Option<&NodeRecord> {
        self.nodes.get(&id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    pub fn auth_keys(&self) -> impl Iterator<Item = &AuthKeyRecord> {
        self.auth_keys.values()
    }

    /// Whether a hello from `machine` written at `timestamp` may be
    /// answered: newer than any it confirmed before.
    pub fn hello_is_fresh(&self, machine: &[u8; 32], timestamp: u64) -> bool {
        self.hello_times.is_fresh(machine, timestamp)
    }

    /// A registered machine's session with this hello proved live.
    pub fn hello_confirmed(&mut self, machine: [u8; 32], timestamp: u64) {
        if self.by_machine.contains_key(&machine) {
            self.hello_times.confirm(machine, timestamp);
        }
    }

    /// Every registered node's WireGuard key (what relays may serve).
    pub fn node_keys(&self) -> std::collections::HashSet<[u8; 32]> {
        self.by_node_key.keys().copied().collect()
    }

    pub fn is_online(&self, id: u64) -> bool {
        self.online.contains_key(&id)
    }

    /// Marks `conn` as node `id`'s connection (a newer one replaces it).
    pub fn set_online(&mut self, id: u64, conn: u64) {
        self.online.insert(id, conn);
    }

    pub fn set_offline(&mut self, id: u64, conn: u64) {
        if self.online.get(&id) == Some(&conn) {
            self.online.remove(&id);
        }
    }

    /// Whether `conn` is still node `id`'s connection (the node exists
    /// and has not connected again since).
    pub fn is_current(&self, id: u64, conn: u64) -> bool {
        self.nodes.contains_key(&id) && self.online.get(&id) == Some(&conn)
    }

    pub fn full_map(&self, viewer: u64) -> MapUpdate {
        netmap::full_map(&self.nodes, viewer, self.version)
    }

    pub fn delta_since(&self, viewer: u64, since: u64) -> Option<MapUpdate> {
        netmap::delta(&self.nodes, &self.log, viewer, since, self.version)
    }

    /// Writes `nodes` (and the other effects in `extra`) as the next map
    /// version, then applies them in memory and wakes the connections.
    fn commit_nodes(
        &mut self,
        upserts: Vec<NodeRecord>,
        removed: Vec<u64>,
        extra: impl FnOnce(&crate::store::Batch<'_>) -> Result<(), StoreError>,
    ) -> Result<(), RegistryError> {
        let version = self.version + 1;
        let cursor = u64::from(self.ipam.cursor());
        let next_node = self.next_node_id;
        self.store.write(|b| {
            for n in &upserts {
                b.put_node(n)?;
            }
            for &id in &removed {
                b.delete_node(id)?;
            }
            extra(b)?;
            b.set_meta(META_VERSION, &version.to_be_bytes())?;
            b.set_meta(META_IPAM_CURSOR, &cursor.to_be_bytes())?;
            b.set_meta(META_NEXT_NODE, &next_node.to_be_bytes())
        })?;
        self.version = version;
        for id in removed {
            if let Some(n) = self.unindex(id) {
                self.ipam.release(Ipv4Addr::from(n.address));
                if let Some(k) = key32(&n.machine_key) {
                    self.hello_times.forget(&k);
                }
            }
            self.log.record(version, id);
        }
        for n in upserts {
            self.log.record(version, n.id);
            self.unindex(n.id);
            self.index(n);
        }
        self.notify.send_replace(version);
        Ok(())
    }

    fn validate_endpoints(endpoints: &[Endpoint]) -> Result<Vec<Endpoint>, RegistryError> {
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(RegistryError::BadRequest("too many endpoints"));
        }
        endpoints
            .iter()
            .map(|e| {
                e.socket_addr()
                    .map(Endpoint::from)
                    .ok_or(RegistryError::BadRequest("invalid endpoint"))
            })
            .collect()
    }

    fn unique_name(&self, hostname: &str) -> String {
        let base = sanitize_name(hostname);
        if !self.by_name.contains_key(&base) {
            return base;
        }
        (2u64..)
            .map(|i| {
                let suffix = format!("-{i}");
                let keep = base
                    .len()
                    .min(proto_control::messages::MAX_NAME - suffix.len());
                format!("{}{suffix}", base[..keep].trim_end_matches('-'))
            })
            .find(|n| !self.by_name.contains_key(n))
            .unwrap_or_else(|| unreachable!("names are endless"))
    }

    /// A node connecting: returns its record, registering it first (with
    /// the auth key in `hello`) if the machine key is new, and recording a
    /// rotated node key or changed endpoints.
    pub fn connect(
        &mut self,
        machine_key: [u8; 32],
        hello: &ClientHello,
        now_unix: u64,
    ) -> Result<NodeRecord, RegistryError> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(RegistryError::VersionUnsupported(hello.protocol_version));
        }
        let node_key = key32(&hello.node_key).ok_or(RegistryError::BadRequest("node key"))?;
        let endpoints = Self::validate_endpoints(&hello.endpoints)?;
        if let Some(&id) = self.by_machine.get(&machine_key) {
            let current = self
                .nodes
                .get(&id)
                .cloned()
                .ok_or(RegistryError::BadRequest("index"))?;
            if self
                .by_node_key
                .get(&node_key)
                .is_some_and(|&other| other != id)
            {
                return Err(RegistryError::NodeKeyInUse);
            }
            let mut updated = current.clone();
            updated.node_key = node_key.to_vec();
            updated.endpoints = endpoints;
            updated.nat = hello.nat;
            if updated != current {
                self.commit_nodes(vec![updated.clone()], vec![], |_| Ok(()))?;
            }
            return Ok(updated);
        }
        self.register(machine_key, node_key, hello, endpoints, now_unix)
    }

    fn register(
        &mut self,
        machine_key: [u8; 32],
        node_key: [u8; 32],
        hello: &ClientHello,
        endpoints: Vec<Endpoint>,
        now_unix: u64,
    ) -> Result<NodeRecord, RegistryError> {
        if hello.auth_key.is_empty() {
            return Err(RegistryError::AuthKeyRequired);
        }
        let presented =
            PresentedKey::parse(&hello.auth_key).ok_or(RegistryError::AuthKeyInvalid)?;
        let key = self
            .auth_keys
            .get(&presented.id)
            .filter(|k| presented.matches(&k.secret_hash))
            .ok_or(RegistryError::AuthKeyInvalid)?;
        if key.revoked {
            return Err(RegistryError::AuthKeyRevoked(key.id));
        }
        if key.expires_unix != 0 && now_unix >= key.expires_unix {
            return Err(RegistryError::AuthKeyExpired(key.id));
        }
        if !key.reusable && key.uses > 0 {
            return Err(RegistryError::AuthKeyUsed(key.id));
        }
        if self.by_node_key.contains_key(&node_key) {
            return Err(RegistryError::NodeKeyInUse);
        }
        let mut key = key.clone();
        key.uses += 1;
        let address = self.ipam.allocate()?;
        let node = NodeRecord {
            id: self.next_node_id,
            name: self.unique_name(&hello.hostname),
            machine_key: machine_key.to_vec(),
            node_key: node_key.to_vec(),
            address: u32::from(address),
            tags: key.tags.clone(),
            endpoints,
            created_unix: now_unix,
            auth_key_id: key.id,
            nat: hello.nat,
        };
        self.next_node_id += 1;
        let stored_key = key.clone();
        if let Err(e) =
            self.commit_nodes(vec![node.clone()], vec![], |b| b.put_auth_key(&stored_key))
        {
            self.ipam.release(address);
            self.next_node_id -= 1;
            return Err(e);
        }
        self.auth_keys.insert(key.id, key);
        Ok(node)
    }

    /// The node's endpoints and NAT kind, as it reports them.
    pub fn update_endpoints(
        &mut self,
        id: u64,
        endpoints: &[Endpoint],
        nat: i32,
    ) -> Result<(), RegistryError> {
        let endpoints = Self::validate_endpoints(endpoints)?;
        let mut n = self
            .nodes
            .get(&id)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownNode(id.to_string()))?;
        if n.endpoints == endpoints && n.nat == nat {
            return Ok(());
        }
        n.endpoints = endpoints;
        n.nat = nat;
        self.commit_nodes(vec![n], vec![], |_| Ok(()))
    }

    /// A node by name, or by id when `selector` is a number.
    pub fn find_node(&self, selector: &str) -> Result<&NodeRecord, RegistryError> {
        let id = self.by_name.get(selector).copied().or_else(|| {
            selector
                .parse::<u64>()
                .ok()
                .filter(|id| self.nodes.contains_key(id))
        });
        id.and_then(|id| self.nodes.get(&id))
            .ok_or_else(|| RegistryError::UnknownNode(selector.into()))
    }

    /// Removes a node: peers drop it at the next delta, its connection is
    /// closed, and its machine key must join again with a new auth key.
    pub fn remove_node(&mut self, selector: &str) -> Result<NodeRecord, RegistryError> {
        let n = self.find_node(selector)?.clone();
        self.commit_nodes(vec![], vec![n.id], |_| Ok(()))?;
        Ok(n)
    }

    pub fn rename_node(
        &mut self,
        selector: &str,
        new_name: &str,
    ) -> Result<NodeRecord, RegistryError> {
        if !valid_name(new_name) {
            return Err(RegistryError::InvalidName(new_name.into()));
        }
        let mut n = self.find_node(selector)?.clone();
        if self
            .by_name
            .get(new_name)
            .is_some_and(|&other| other != n.id)
        {
            return Err(RegistryError::NameTaken(new_name.into()));
        }
        n.name = new_name.into();
        self.commit_nodes(vec![n.clone()], vec![], |_| Ok(()))?;
        Ok(n)
    }

    /// Creates a pre-auth key; the returned text is shown once and never
    /// stored (only its hash is).
    pub fn create_auth_key(
        &mut self,
        spec: &NewAuthKey,
        now_unix: u64,
    ) -> Result<(AuthKeyRecord, Zeroizing<String>), RegistryError> {
        if spec.tags.len() > MAX_TAGS {
            return Err(RegistryError::BadRequest("too many tags"));
        }
        if let Some(bad) = spec.tags.iter().find(|t| !valid_tag(t)) {
            return Err(RegistryError::InvalidTag(bad.clone()));
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        cvlan_core::seed::fill(&mut secret[..])
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        let id = self.next_key_id;
        let record = AuthKeyRecord {
            id,
            secret_hash: authkey::hash(&secret).to_vec(),
            reusable: spec.reusable,
            expires_unix: spec
                .expires_in
                .map_or(0, |d| now_unix.saturating_add(d.as_secs().max(1))),
            tags: spec.tags.clone(),
            created_unix: now_unix,
            uses: 0,
            revoked: false,
        };
        let next = id + 1;
        self.store.write(|b| {
            b.put_auth_key(&record)?;
            b.set_meta(META_NEXT_KEY, &next.to_be_bytes())
        })?;
        self.next_key_id = next;
        self.auth_keys.insert(id, record.clone());
        Ok((record, authkey::format(id, &secret)))
    }

    /// Revokes a key (by its id in hex, as listed). Nodes that joined with
    /// it stay; it admits no new ones.
    pub fn revoke_auth_key(&mut self, id_hex: &str) -> Result<(), RegistryError> {
        let unknown = || RegistryError::UnknownAuthKey(id_hex.into());
        let id = u64::from_str_radix(id_hex, 16).map_err(|_| unknown())?;
        let mut key = self.auth_keys.get(&id).cloned().ok_or_else(unknown)?;
        key.revoked = true;
        self.store.write(|b| b.put_auth_key(&key))?;
        self.auth_keys.insert(id, key);
        Ok(())
    }
}
