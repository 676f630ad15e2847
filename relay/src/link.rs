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
}

#[derive(Debug)]
pub struct ServerLink {
    ch: Channel,
    peer: Option<(Key, Role)>,
}

impl ServerLink {
    pub fn new(relay_key: &[u8; 32], seed: [u8; 32]) -> Result<Self, LinkError> {
        let ch = Channel::server_for(Purpose::Relay, relay_key, seed, &[RELAY_PROTOCOL_VERSION])?;
        Ok(Self { ch, peer: None })
    }

    /// Who is on the other end, once the handshake completed.
    pub fn peer(&self) -> Option<(Key, Role)> {
        self.peer
    }

    /// Stream bytes in; decrypted frames are appended to `frames`. Returns
    /// the peer's key and role the moment the handshake completes.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        frames: &mut Vec<Vec<u8>>,
    ) -> Result<Option<(Key, Role)>, LinkError> {
        self.ch.handle_input(bytes)?;
        let mut authenticated = None;
        while let Some(ev) = self.ch.poll_event() {
            match ev {
                ChannelEvent::Connected { peer, hello } => {
                    let role = parse_hello(&hello).ok_or(LinkError::Hello)?;
                    self.peer = Some((peer, role));
                    authenticated = Some((peer, role));
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
