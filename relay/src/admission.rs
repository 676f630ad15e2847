//! `--verify-clients`: the relay serves only node keys its controller
//! registered. It follows the controller over the same Noise channel
//! nodes use, authenticated by the relay's own key (which the controller
//! knows from its `--relay` list), asking for the node keys instead of a
//! map: the whole list, then what is added and removed. The list is kept
//! on disk so a restarted relay serves the nodes it knew while the
//! controller is away; keys the controller removes are disconnected.

use crate::error::ConnError;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use proto_control::messages::{
    decode_server, encode_client, ClientBody, ClientHello, Ping, RelayKeys, ServerBody,
    PROTOCOL_VERSION,
};
use proto_control::{Channel, ChannelEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::node::{hello_timestamp, RelayNode};
use proto_relay::frame::Key;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Nothing from the controller for this long (it answers pings): gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(40);
/// Keys one (possibly split) update may carry.
const MAX_KEYS: usize = 1 << 20;

/// Where the controller is and how to know it.
#[derive(Clone)]
pub struct ControllerFeed {
    /// `host:port` (or `http://host:port`).
    pub controller: String,
    pub controller_key: Key,
    /// The relay's private key: the controller knows its public half.
    pub relay_key: Arc<Zeroizing<[u8; 32]>>,
    /// Where the list is kept between runs.
    pub cache: PathBuf,
}

impl std::fmt::Debug for ControllerFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerFeed")
            .field("controller", &self.controller)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// The list saved by the last run, if there is a readable one.
pub fn load_cache(path: &Path) -> Option<HashSet<Key>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() % 32 != 0 || bytes.len() / 32 > MAX_KEYS {
        warn!(path = %path.display(), "ignoring a damaged list of node keys");
        return None;
    }
    Some(
        bytes
            .chunks_exact(32)
            .filter_map(|c| <[u8; 32]>::try_from(c).ok())
            .collect(),
    )
}

fn save_cache(path: &Path, keys: &HashSet<Key>) -> std::io::Result<()> {
    let mut sorted: Vec<&Key> = keys.iter().collect();
    sorted.sort();
    let bytes: Vec<u8> = sorted.into_iter().flatten().copied().collect();
    cvlan_core::keyfile::write_private(path, &bytes)
}

/// Follows the controller for as long as the relay runs, reconnecting
/// with backoff.
pub async fn follow(feed: ControllerFeed, node: Arc<RelayNode>) {
    let mut delay = Duration::from_secs(1);
    loop {
        match session(&feed, &node).await {
            Ok(()) => delay = Duration::from_secs(1),
            Err(e) => warn!(controller = %feed.controller, error = %e, "node key feed down"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Parts of one update gathered until the last.
#[derive(Default)]
struct Pending {
    full: bool,
    added: Vec<Key>,
    removed: Vec<Key>,
}

fn key_list(raw: Vec<Vec<u8>>) -> Result<Vec<Key>, ConnError> {
    raw.into_iter()
        .map(|k| <[u8; 32]>::try_from(k.as_slice()).map_err(|_| ConnError::BadKey))
        .collect()
}

async fn session(feed: &ControllerFeed, node: &RelayNode) -> Result<(), ConnError> {
    let addr = feed
        .controller
        .strip_prefix("http://")
        .unwrap_or(&feed.controller)
        .trim_end_matches('/')
        .to_string();
    let limits = transport::DialLimits {
        connect: CONNECT_TIMEOUT,
        ..transport::DialLimits::default()
    };
    let mut stream = transport::dial(&addr, None, limits).await?;
    let early = transport::http::upgrade(
        &mut stream,
        &addr,
        proto_control::http::CONTROL_PATH,
        proto_control::http::UPGRADE_TOKEN,
        CONNECT_TIMEOUT,
    )
    .await?;
    let hello = ClientHello {
        protocol_version: PROTOCOL_VERSION,
        relay_feed: true,
        ..ClientHello::default()
    }
    .encode_to_vec();
    let seed = cvlan_core::os_seed()?;
    let mut ch = Channel::client(
        &feed.relay_key,
        &feed.controller_key,
        seed,
        hello_timestamp(node.hello_clock()),
        &hello,
    )?;
    ch.handle_input(&early)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Pending::default();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    let mut last_heard = tokio::time::Instant::now();
    let mut nonce = 0u64;
    loop {
        while let Some(bytes) = ch.poll_transmit() {
            stream.write_all(&bytes).await?;
        }
        tokio::select! {
            read = stream.read(&mut buf) => {
                let n = read?;
                if n == 0 {
                    return Err(ConnError::ControllerClosed);
                }
                last_heard = tokio::time::Instant::now();
                ch.handle_input(&buf[..n])?;
                while let Some(ev) = ch.poll_event() {
                    let ChannelEvent::Message(m) = ev else { continue };
                    match decode_server(&m)? {
                        ServerBody::RelayKeys(part) => apply(feed, node, &mut pending, part)?,
                        ServerBody::Refused(r) => {
                            return Err(ConnError::Refused(r.message));
                        }
                        _ => {}
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return Err(ConnError::ControllerSilent);
                }
                if ch.is_open() {
                    nonce += 1;
                    ch.send(&encode_client(ClientBody::Ping(Ping { nonce })))?;
                }
            }
        }
    }
}

fn apply(
    feed: &ControllerFeed,
    node: &RelayNode,
    pending: &mut Pending,
    part: RelayKeys,
) -> Result<(), ConnError> {
    pending.full |= part.full;
    pending.added.extend(key_list(part.added)?);
    pending.removed.extend(key_list(part.removed)?);
    if pending.added.len() + pending.removed.len() > MAX_KEYS {
        return Err(ConnError::TooManyKeys);
    }
    if part.more {
        return Ok(());
    }
    let done = std::mem::take(pending);
    let now = node.apply_keys(done.full, &done.added, &done.removed);
    if done.full {
        info!(nodes = now.len(), "registered node keys received");
    }
    if let Err(e) = save_cache(&feed.cache, &now) {
        warn!(path = %feed.cache.display(), error = %e, "node keys not saved");
    }
    Ok(())
}
