//! One end of a relay connection, sans-IO: a node (or a relay meshing
//! with another) authenticates with its static key over the Noise channel
//! and exchanges frames. Bytes in with `handle_input`, bytes out from
//! `poll_transmit`, what happened from `poll_event`; a keepalive goes out
//! when the link has been quiet (`handle_timeout`/`poll_timeout`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use proto_control::{Channel, ChannelError, ChannelEvent, Purpose};
use thiserror::Error;

use crate::frame::{Frame, FrameError, GoneReason, Key, MAX_PACKET};
use crate::server::Role;

/// Version byte in both hellos.
pub const RELAY_PROTOCOL_VERSION: u8 = 1;
/// A frame is sent at least this often, so the relay and middleboxes keep
/// the connection (the relay drops connections silent for 90 s).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    #[error("relay channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("relay sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("relay speaks protocol version {0}")]
    Version(u8),
    #[error("frame not expected on this kind of link")]
    Unexpected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Connected,
    /// A packet from `src`, relayed.
    Packet {
        src: Key,
        packet: Vec<u8>,
    },
    PeerGone {
        key: Key,
        reason: GoneReason,
    },
    Pong([u8; 8]),
    /// On a mesh link: a frame for the local relay's server to handle.
    MeshFrame(Vec<u8>),
}

/// The hello a connecting side sends: version and role.
pub fn hello(role: Role) -> [u8; 2] {
    [RELAY_PROTOCOL_VERSION, matches!(role, Role::Mesh) as u8]
}

/// The role a hello asks for, if the hello is valid.
pub fn parse_hello(b: &[u8]) -> Option<Role> {
    match b {
        [RELAY_PROTOCOL_VERSION, 0] => Some(Role::Client),
        [RELAY_PROTOCOL_VERSION, 1] => Some(Role::Mesh),
        _ => None,
    }
}

#[derive(Debug)]
pub struct RelayClient {
    ch: Channel,
    role: Role,
    events: VecDeque<ClientEvent>,
    last_sent: Instant,
    scratch: Vec<u8>,
}

impl RelayClient {
    /// Starts the handshake to the relay whose public key is `relay`;
    /// `timestamp` grows from one connection to the next
    /// ([`proto_control::next_timestamp`]).
    pub fn new(
        now: Instant,
        role: Role,
        key: &[u8; 32],
        relay: &Key,
        seed: [u8; 32],
        timestamp: u64,
    ) -> Result<Self, ClientError> {
        let ch = Channel::client_for(Purpose::Relay, key, relay, seed, timestamp, &hello(role))?;
        Ok(Self {
            ch,
            role,
            events: VecDeque::new(),
            last_sent: now,
            scratch: Vec::new(),
        })
    }

    pub fn is_connected(&self) -> bool {
        self.ch.is_open()
    }

    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), ClientError> {
        self.ch.handle_input(bytes)?;
        while let Some(ev) = self.ch.poll_event() {
            match ev {
                // Only a responder is asked about a hello.
                ChannelEvent::Hello { .. } => {}
                ChannelEvent::Connected { hello, .. } => {
                    if hello.first() != Some(&RELAY_PROTOCOL_VERSION) {
                        return Err(ClientError::Version(hello.first().copied().unwrap_or(0)));
                    }
                    self.events.push_back(ClientEvent::Connected);
                }
                ChannelEvent::Message(m) => {
                    if self.role == Role::Mesh {
                        Frame::decode(&m)?;
                        self.events.push_back(ClientEvent::MeshFrame(m));
                        continue;
                    }
                    let ev = match Frame::decode(&m)? {
                        Frame::RecvPacket { src, packet } => ClientEvent::Packet {
                            src,
                            packet: packet.to_vec(),
                        },
                        Frame::PeerGone { key, reason } => ClientEvent::PeerGone { key, reason },
                        Frame::Pong(d) => ClientEvent::Pong(d),
                        Frame::KeepAlive => continue,
                        Frame::Ping(d) => {
                            self.send_frame(now, &Frame::Pong(d))?;
                            continue;
                        }
                        _ => return Err(ClientError::Unexpected),
                    };
                    self.events.push_back(ev);
                }
            }
        }
        Ok(())
    }

    fn send_frame(&mut self, now: Instant, f: &Frame<'_>) -> Result<(), ClientError> {
        f.encode_into(&mut self.scratch)?;
        self.ch.send(&self.scratch)?;
        self.last_sent = now;
        Ok(())
    }

    /// Sends a (sealed) packet to the node with key `dst`.
    pub fn send_packet(
        &mut self,
        now: Instant,
        dst: &Key,
        packet: &[u8],
    ) -> Result<(), ClientError> {
        if packet.len() > MAX_PACKET {
            return Err(FrameError::TooLarge.into());
        }
        self.send_frame(now, &Frame::SendPacket { dst: *dst, packet })
    }

    /// Sends a raw frame (a relay's server output on a mesh link).
    pub fn send_raw(&mut self, now: Instant, frame: &[u8]) -> Result<(), ClientError> {
        self.ch.send(frame)?;
        self.last_sent = now;
        Ok(())
    }

    pub fn ping(&mut self, now: Instant, data: [u8; 8]) -> Result<(), ClientError> {
        self.send_frame(now, &Frame::Ping(data))
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.ch.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Instant {
        self.last_sent + KEEPALIVE_INTERVAL
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientError> {
        if self.ch.is_open() && now >= self.poll_timeout() {
            self.send_frame(now, &Frame::KeepAlive)?;
        }
        Ok(())
    }
}
