//! The relay's side of one connection, sans-IO: the Noise handshake that
//! proves which key the other side holds and what it is (a node or a
//! meshed relay), then decrypting its frames and sealing ours.

use proto_control::{Channel, ChannelError, ChannelEvent, Purpose};
use thiserror::Error;

use crate::client::{parse_hello, RELAY_PROTOCOL_VERSION};
use crate::frame::Key;
use crate::server::Role;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("bad hello (unknown version or role)")]
    Hello,
    #[error("a hello not newer than the last confirmed one (a replay, or the peer's clock)")]
    StaleHello,
}

/// Who proved to be on the other end, once the handshake completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    pub key: Key,
    pub role: Role,
    /// The hello's timestamp: newer hellos only, from now on.
    pub timestamp: u64,
}

#[derive(Debug)]
pub struct ServerLink {
    ch: Channel,
    peer: Option<(Key, Role)>,
    timestamp: u64,
}

impl ServerLink {
    pub fn new(relay_key: &[u8; 32], seed: [u8; 32]) -> Result<Self, LinkError> {
        let ch = Channel::server_for(Purpose::Relay, relay_key, seed, &[RELAY_PROTOCOL_VERSION])?;
        Ok(Self {
            ch,
            peer: None,
            timestamp: 0,
        })
    }

    /// Who is on the other end, once the handshake completed.
    pub fn peer(&self) -> Option<(Key, Role)> {
        self.peer
    }

    /// Stream bytes in; decrypted frames are appended to `frames`. Returns
    /// who is on the other end the moment the handshake completes, which
    /// is only once the peer has proven the session live (a recorded
    /// first message never gets that far). A first message whose
    /// timestamp `fresh` rejects is turned away unanswered.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<Vec<u8>>,
        fresh: impl Fn(&Key, u64) -> bool,
    ) -> Result<Option<Authenticated>, LinkError> {
        self.ch.handle_input(bytes)?;
        let mut authenticated = None;
        while let Some(ev) = self.ch.poll_event() {
            match ev {
                ChannelEvent::Hello { peer, timestamp } => {
                    if !fresh(&peer, timestamp) {
                        self.ch.refuse();
                        return Err(LinkError::StaleHello);
                    }
                    self.timestamp = timestamp;
                    self.ch.accept()?;
                }
                ChannelEvent::Connected { peer, hello } => {
                    let role = parse_hello(&hello).ok_or(LinkError::Hello)?;
                    self.peer = Some((peer, role));
                    authenticated = Some(Authenticated {
                        key: peer,
                        role,
                        timestamp: self.timestamp,
                    });
                }
                ChannelEvent::Message(m) => frames.push(m),
            }
        }
        Ok(authenticated)
    }

    pub fn send(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        Ok(self.ch.send(frame)?)
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.ch.poll_transmit()
    }
}
