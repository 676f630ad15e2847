//! The control protocol's messages (`proto/control.proto`, compiled by
//! prost at build time) and what both sides need around them: decoding
//! with typed errors, endpoint conversion, and splitting a large map over
//! several channel messages.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use prost::Message;
use thiserror::Error;

use crate::channel::MAX_MESSAGE;

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/cloudvlan.control.v1.rs"));
}

pub use generated::client_message::Body as ClientBody;
pub use generated::refused::Reason as RefusedReason;
pub use generated::server_message::Body as ServerBody;
pub use generated::{
    ClientHello, ClientMessage, Endpoint, MapUpdate, NatKind, Peer, Ping, Pong, Refused,
    Registered, RelayInfo, RelayKeys, ServerHello, ServerMessage, UpdateEndpoints,
};

impl NatKind {
    /// One word for `cvlan-agent peers` and `netcheck`; a value this
    /// version does not know (a newer node's) is "unknown".
    pub fn word(raw: i32) -> &'static str {
        match NatKind::try_from(raw).unwrap_or(NatKind::NatUnknown) {
            NatKind::NatUnknown => "unknown",
            NatKind::NatNone => "none",
            NatKind::NatCone => "cone",
            NatKind::NatSymmetric => "symmetric",
            NatKind::NatNoUdp => "no-udp",
        }
    }
}

/// Bumped on any change an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 1;
/// Most endpoints a node may report (bounds what one node puts in every map).
pub const MAX_ENDPOINTS: usize = 16;
/// Longest node name, in bytes.
pub const MAX_NAME: usize = 63;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("malformed protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("message has no body")]
    Empty,
    #[error("invalid field {0}")]
    Field(&'static str),
}

pub fn decode_server(bytes: &[u8]) -> Result<ServerBody, DecodeError> {
    ServerMessage::decode(bytes)?.body.ok_or(DecodeError::Empty)
}

pub fn decode_client(bytes: &[u8]) -> Result<ClientBody, DecodeError> {
    ClientMessage::decode(bytes)?.body.ok_or(DecodeError::Empty)
}

pub fn encode_server(body: ServerBody) -> Vec<u8> {
    ServerMessage { body: Some(body) }.encode_to_vec()
}

pub fn encode_client(body: ClientBody) -> Vec<u8> {
    ClientMessage { body: Some(body) }.encode_to_vec()
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Self {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        Self {
            ip,
            port: u32::from(a.port()),
        }
    }
}

/// An IP address from its 4- or 16-byte wire form.
pub fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?).into()),
        16 => Some(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).into()),
        _ => None,
    }
}

pub fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

impl Endpoint {
    /// The socket address, if the wire form is valid (port 0 is not).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let port = u16::try_from(self.port).ok().filter(|&p| p != 0)?;
        Some(SocketAddr::new(ip_from_bytes(&self.ip)?, port))
    }
}

/// A 32-byte key from its wire form.
pub fn key32(b: &[u8]) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(b).ok()
}

/// A node name: 1 to 63 bytes of lowercase letters, digits and '-', not
/// starting or ending with '-' (it will be a DNS label).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Turns any hostname into a valid node name (lowercase, other characters
/// become '-', trimmed to 63 bytes); `node` if nothing is left.
pub fn sanitize_name(hostname: &str) -> String {
    let mut s: String = hostname
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME)
        .collect();
    while s.ends_with('-') {
        s.pop();
    }
    let s = s.trim_start_matches('-').to_string();
    if s.is_empty() {
        "node".into()
    } else {
        s
    }
}

/// Splits a map update into messages that each fit one channel message:
/// every part carries the version fields, all but the last `more = true`.
/// The encoded messages are returned ready for `Channel::send`.
pub fn split_map_update(update: MapUpdate) -> Vec<Vec<u8>> {
    // Room for the envelope and the version fields of each part.
    const BUDGET: usize = MAX_MESSAGE - 64;
    let header = |more| MapUpdate {
        version: update.version,
        full: update.full,
        base_version: update.base_version,
        upserts: Vec::new(),
        removed: Vec::new(),
        more,
    };
    let mut parts = Vec::new();
    let mut current = header(true);
    let mut size = 0usize;
    for peer in update.upserts {
        let len = peer.encoded_len() + 4; // field tag and length prefix
        if size + len > BUDGET && !(current.upserts.is_empty() && current.removed.is_empty()) {
            parts.push(std::mem::replace(&mut current, header(true)));
            size = 0;
        }
        size += len;
        current.upserts.push(peer);
    }
    for id in update.removed {
        let len = 11; // a varint u64 at most 10 bytes, plus its share of the tag
        if size + len > BUDGET {
            parts.push(std::mem::replace(&mut current, header(true)));
            size = 0;
        }
        size += len;
        current.removed.push(id);
    }
    current.more = false;
    parts.push(current);
    parts
        .into_iter()
        .map(|m| encode_server(ServerBody::Map(m)))
        .collect()
}

/// Splits a change to a relay's key list into messages that each fit one
/// channel message (all but the last with `more = true`).
pub fn split_relay_keys(full: bool, added: Vec<[u8; 32]>, removed: Vec<[u8; 32]>) -> Vec<Vec<u8>> {
    // 34 bytes a key on the wire (tag, length, key).
    const PER_MESSAGE: usize = (MAX_MESSAGE - 64) / 34;
    let changes: Vec<(bool, [u8; 32])> = added
        .into_iter()
        .map(|k| (true, k))
        .chain(removed.into_iter().map(|k| (false, k)))
        .collect();
    let mut parts: Vec<RelayKeys> = changes
        .chunks(PER_MESSAGE)
        .map(|chunk| RelayKeys {
            full,
            added: chunk.iter().filter(|c| c.0).map(|c| c.1.to_vec()).collect(),
            removed: chunk
                .iter()
                .filter(|c| !c.0)
                .map(|c| c.1.to_vec())
                .collect(),
            more: true,
        })
        .collect();
    if parts.is_empty() {
        parts.push(RelayKeys {
            full,
            ..RelayKeys::default()
        });
    }
    if let Some(last) = parts.last_mut() {
        last.more = false;
    }
    parts
        .into_iter()
        .map(|k| encode_server(ServerBody::RelayKeys(k)))
        .collect()
}

/// What a node does with map parts: gathers them until the last one.
/// Bounded: a controller cannot make a node buffer more than
/// `MAX_ASSEMBLED_PEERS` entries.
#[derive(Debug, Default)]
pub struct MapAssembler {
    pending: Option<MapUpdate>,
}

/// Most peers and removals one (possibly split) map update may carry.
pub const MAX_ASSEMBLED_PEERS: usize = 1 << 20;

impl MapAssembler {
    /// Adds one part. Returns the whole update when `part` was the last.
    pub fn push(&mut self, part: MapUpdate) -> Result<Option<MapUpdate>, DecodeError> {
        let more = part.more;
        let merged = match self.pending.take() {
            None => part,
            Some(mut acc) => {
                if acc.version != part.version
                    || acc.full != part.full
                    || acc.base_version != part.base_version
                {
                    return Err(DecodeError::Field("map parts of different versions"));
                }
                acc.upserts.extend(part.upserts);
                acc.removed.extend(part.removed);
                acc
            }
        };
        if merged.upserts.len() + merged.removed.len() > MAX_ASSEMBLED_PEERS {
            return Err(DecodeError::Field("map too large"));
        }
        if more {
            self.pending = Some(merged);
            Ok(None)
        } else {
            let mut done = merged;
            done.more = false;
            Ok(Some(done))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64) -> Peer {
        Peer {
            node_id: id,
            name: format!("node-{id}"),
            node_key: vec![7; 32],
            address: vec![100, 64, 0, 1],
            endpoints: vec![Endpoint::from(SocketAddr::from(([192, 0, 2, 1], 51820)))],
            tags: vec!["tag:server".into()],
            nat: 0,
        }
    }

    #[test]
    fn a_large_map_is_split_into_messages_that_fit_and_reassemble_exactly() {
        let update = MapUpdate {
            version: 9,
            full: true,
            base_version: 0,
            upserts: (1..=5000).map(peer).collect(),
            removed: (10_000..12_000).collect(),
            more: false,
        };
        let parts = split_map_update(update.clone());
        assert!(parts.len() > 5, "split into {} parts", parts.len());
        let mut assembler = MapAssembler::default();
        let mut done = None;
        for (i, bytes) in parts.iter().enumerate() {
            assert!(
                bytes.len() <= MAX_MESSAGE,
                "part {i} is {} bytes",
                bytes.len()
            );
            let ServerBody::Map(part) = decode_server(bytes).unwrap() else {
                panic!("not a map")
            };
            let out = assembler.push(part).unwrap();
            assert_eq!(out.is_some(), i == parts.len() - 1);
            done = out.or(done);
        }
        assert_eq!(done.unwrap(), update);
    }

    #[test]
    fn map_parts_of_different_versions_are_refused() {
        let mut a = MapAssembler::default();
        let part = |version, more| MapUpdate {
            version,
            more,
            ..Default::default()
        };
        assert_eq!(a.push(part(1, true)), Ok(None));
        assert!(a.push(part(2, false)).is_err());
    }

    #[test]
    fn endpoints_and_keys_are_validated() {
        let good = Endpoint::from(SocketAddr::from(([10, 0, 0, 1], 41641)));
        assert_eq!(
            good.socket_addr(),
            Some(SocketAddr::from(([10, 0, 0, 1], 41641)))
        );
        let v6: SocketAddr = "[fd00::1]:5".parse().unwrap();
        assert_eq!(Endpoint::from(v6).socket_addr(), Some(v6));
        for bad in [
            Endpoint {
                ip: vec![1, 2, 3],
                port: 1,
            },
            Endpoint {
                ip: vec![1, 2, 3, 4],
                port: 0,
            },
            Endpoint {
                ip: vec![1, 2, 3, 4],
                port: 70_000,
            },
        ] {
            assert_eq!(bad.socket_addr(), None, "{bad:?}");
        }
        assert!(key32(&[0; 31]).is_none());
        assert!(key32(&[0; 32]).is_some());
    }

    #[test]
    fn hostnames_become_valid_dns_labels() {
        assert_eq!(sanitize_name("Web_Server.local"), "web-server-local");
        assert_eq!(sanitize_name("---"), "node");
        assert_eq!(sanitize_name(&"a".repeat(100)).len(), MAX_NAME);
        assert!(valid_name("db-1"));
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn garbage_decodes_to_typed_errors() {
        assert!(matches!(
            decode_server(&[0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
        assert_eq!(decode_client(&[]), Err(DecodeError::Empty));
    }
}
