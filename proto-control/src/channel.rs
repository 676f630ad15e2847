//! The control channel: Noise_IK_25519_ChaChaPoly_BLAKE2s between a node
//! (initiator, its machine key) and the controller (responder, whose
//! static key the node knows in advance), over a framed byte stream.
//!
//! IK's first message is authenticated by the initiator's static key but
//! can be replayed by anyone who recorded it. So the responder acts on
//! nothing until the initiator has proven the handshake is live:
//!
//! 1. initiator -> responder: message 1, carrying a timestamp and the hello.
//!    The responder reports [`ChannelEvent::Hello`] (who, and when it says
//!    it wrote this) and answers only if the caller [`accept`](Channel::accept)s:
//!    a caller that keeps the newest timestamp per peer turns a stale
//!    replay away before spending a reply on it.
//! 2. responder -> initiator: message 2. The initiator is connected.
//! 3. initiator -> responder: an empty transport message, sealed under keys
//!    that mix in the responder's fresh ephemeral. Only the holder of the
//!    initiator's ephemeral (and static) key can make it; when it opens,
//!    the responder reports [`ChannelEvent::Connected`].
//!
//! Sans-IO: bytes from the stream go in with `handle_input`, bytes to write
//! come out of `poll_transmit`, and what happened comes out of
//! `poll_event`. Randomness is a seed given at construction, the timestamp
//! an argument. Any error closes the channel for good: a peer that sends
//! one bad frame is dropped, never resynchronised. The primitives are in
//! [`crate::noise_crypto`].

use std::collections::VecDeque;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::frame::{encode, FrameDecoder, MAX_FRAME};
use crate::noise_crypto::Resolver;

pub use crate::noise_crypto::public_key;

const PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash: a peer speaking another protocol or
/// version fails the handshake instead of misreading messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Node to controller.
    Control,
    /// Node (or relay) to relay: the node proves it holds its node key.
    Relay,
}

impl Purpose {
    fn prologue(self) -> &'static [u8] {
        // v2: message 1 carries a timestamp and the initiator confirms.
        match self {
            Self::Control => b"cloudvlan control v2",
            Self::Relay => b"cloudvlan relay v2",
        }
    }
}
/// Noise adds at most this much to a payload (ephemerals, statics, tags).
const NOISE_OVERHEAD: usize = 96;
/// The timestamp in front of the initiator's hello.
const TIMESTAMP_LEN: usize = 8;
/// Largest application message one frame can carry.
pub const MAX_MESSAGE: usize = MAX_FRAME - NOISE_OVERHEAD;
/// Events and outgoing frames waiting at most (a peer that never reads).
const MAX_QUEUED: usize = 1024;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelError {
    #[error("handshake failed: wrong key, or not our protocol")]
    Handshake,
    #[error("frame failed to authenticate (tampered, replayed or reordered)")]
    Decrypt,
    #[error("the channel is closed after an earlier error")]
    Closed,
    #[error("message too large for one frame")]
    TooLarge,
    #[error("not connected yet")]
    NotConnected,
    #[error("the peer is not reading: too much queued")]
    Backlog,
    #[error("the handshake was refused (a stale or replayed hello)")]
    Refused,
    #[error("accept or refuse called when no hello is waiting")]
    NoHelloWaiting,
}

/// Something the caller should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// Responder only: message 1 arrived from the holder of `peer` (the
    /// node's machine key, for the controller), written at `timestamp` by
    /// its own account. It may be a replay: nothing is known to be live
    /// yet. Call [`Channel::accept`] to answer or [`Channel::refuse`].
    Hello { peer: [u8; 32], timestamp: u64 },
    /// The handshake completed. `peer` is the other side's static key;
    /// `hello` is the payload the peer sent inside its handshake message.
    /// On the responder this means the initiator proved it is live.
    Connected { peer: [u8; 32], hello: Vec<u8> },
    /// An authenticated application message.
    Message(Vec<u8>),
}

fn builder(seed: [u8; 32]) -> snow::Builder<'static> {
    let params = PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("a valid pattern"));
    snow::Builder::with_resolver(params, Box::new(Resolver::new(seed)))
}

/// The timestamp to put in the next hello: the wall clock in nanoseconds,
/// but never at or below the `last` one sent (a clock that steps back
/// must not make the node's own hellos look like replays).
pub fn next_timestamp(unix_nanos: u64, last: u64) -> u64 {
    unix_nanos.max(last.saturating_add(1))
}

enum State {
    /// Initiator: message 1 sent. Responder: waiting for message 1.
    Handshake(Box<snow::HandshakeState>),
    /// Responder: message 1 read, waiting for the caller's verdict.
    Hello {
        hs: Box<snow::HandshakeState>,
        hello: Zeroizing<Vec<u8>>,
    },
    /// Responder: message 2 sent, waiting for the initiator's proof.
    Confirming {
        transport: Box<snow::TransportState>,
        hello: Zeroizing<Vec<u8>>,
    },
    Open(Box<snow::TransportState>),
    Closed,
}

/// One end of a control connection.
pub struct Channel {
    state: State,
    initiator: bool,
    /// The responder's handshake reply payload, sent with message 2.
    reply: Vec<u8>,
    decoder: FrameDecoder,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<ChannelEvent>,
    peer: Option<[u8; 32]>,
}

impl core::fmt::Debug for Channel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match self.state {
            State::Handshake(_) => "handshake",
            State::Hello { .. } => "hello",
            State::Confirming { .. } => "confirming",
            State::Open(_) => "open",
            State::Closed => "closed",
        };
        f.debug_struct("Channel")
            .field("initiator", &self.initiator)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// The node's side: authenticates to `controller` (its static public
    /// key) with `machine_key`, sending `hello` in the first message
    /// (encrypted, and only readable by that controller). `timestamp`
    /// must grow from one connection to the next ([`next_timestamp`]).
    pub fn client(
        machine_key: &[u8; 32],
        controller: &[u8; 32],
        seed: [u8; 32],
        timestamp: u64,
        hello: &[u8],
    ) -> Result<Self, ChannelError> {
        Self::client_for(
            Purpose::Control,
            machine_key,
            controller,
            seed,
            timestamp,
            hello,
        )
    }

    /// As [`client`](Self::client), for another [`Purpose`].
    pub fn client_for(
        purpose: Purpose,
        machine_key: &[u8; 32],
        controller: &[u8; 32],
        seed: [u8; 32],
        timestamp: u64,
        hello: &[u8],
    ) -> Result<Self, ChannelError> {
        if hello.len() + TIMESTAMP_LEN > MAX_MESSAGE {
            return Err(ChannelError::TooLarge);
        }
        let mut hs = builder(seed)
            .local_private_key(machine_key)
            .and_then(|b| b.remote_public_key(controller))
            .and_then(|b| b.prologue(purpose.prologue()))
            .and_then(|b| b.build_initiator())
            .map_err(|_| ChannelError::Handshake)?;
        let mut payload = Zeroizing::new(Vec::with_capacity(TIMESTAMP_LEN + hello.len()));
        payload.extend_from_slice(&timestamp.to_be_bytes());
        payload.extend_from_slice(hello);
        let mut msg = vec![0u8; MAX_FRAME];
        let n = hs
            .write_message(&payload, &mut msg)
            .map_err(|_| ChannelError::Handshake)?;
        let mut ch = Self::new(State::Handshake(Box::new(hs)), true, Vec::new());
        ch.queue(&msg[..n])?;
        Ok(ch)
    }

    /// The controller's side, with its static key; `reply` is sent inside
    /// the handshake's second message to every node that is accepted.
    pub fn server(
        controller_key: &[u8; 32],
        seed: [u8; 32],
        reply: &[u8],
    ) -> Result<Self, ChannelError> {
        Self::server_for(Purpose::Control, controller_key, seed, reply)
    }

    /// As [`server`](Self::server), for another [`Purpose`].
    pub fn server_for(
        purpose: Purpose,
        controller_key: &[u8; 32],
        seed: [u8; 32],
        reply: &[u8],
    ) -> Result<Self, ChannelError> {
        if reply.len() > MAX_MESSAGE {
            return Err(ChannelError::TooLarge);
        }
        let hs = builder(seed)
            .local_private_key(controller_key)
            .and_then(|b| b.prologue(purpose.prologue()))
            .and_then(|b| b.build_responder())
            .map_err(|_| ChannelError::Handshake)?;
        Ok(Self::new(
            State::Handshake(Box::new(hs)),
            false,
            reply.to_vec(),
        ))
    }

    fn new(state: State, initiator: bool, reply: Vec<u8>) -> Self {
        Self {
            state,
            initiator,
            reply,
            decoder: FrameDecoder::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            peer: None,
        }
    }

    fn queue(&mut self, body: &[u8]) -> Result<(), ChannelError> {
        if self.transmits.len() >= MAX_QUEUED {
            return self.fail(ChannelError::Backlog);
        }
        let framed = encode(body).ok_or(ChannelError::TooLarge)?;
        self.transmits.push_back(framed);
        Ok(())
    }

    fn fail<T>(&mut self, e: ChannelError) -> Result<T, ChannelError> {
        self.state = State::Closed;
        self.transmits.clear();
        Err(e)
    }

    /// Whether application messages flow (for the responder: the
    /// initiator has confirmed the handshake).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The peer's static key, once the handshake has completed.
    pub fn peer(&self) -> Option<[u8; 32]> {
        self.peer
    }

    /// Answers the waiting message 1 (see [`ChannelEvent::Hello`]).
    pub fn accept(&mut self) -> Result<(), ChannelError> {
        if !matches!(self.state, State::Hello { .. }) {
            return Err(ChannelError::NoHelloWaiting);
        }
        let State::Hello { mut hs, hello } = std::mem::replace(&mut self.state, State::Closed)
        else {
            return self.fail(ChannelError::NoHelloWaiting);
        };
        let mut msg = vec![0u8; MAX_FRAME];
        let Ok(m) = hs.write_message(&self.reply, &mut msg) else {
            return self.fail(ChannelError::Handshake);
        };
        let Ok(transport) = hs.into_transport_mode() else {
            return self.fail(ChannelError::Handshake);
        };
        self.queue(&msg[..m])?;
        self.state = State::Confirming {
            transport: Box::new(transport),
            hello,
        };
        Ok(())
    }

    /// Turns the waiting message 1 away (or ends the channel in any other
    /// state): nothing more is sent.
    pub fn refuse(&mut self) {
        self.state = State::Closed;
        self.transmits.clear();
        self.events.clear();
    }

    /// Bytes read from the stream, in any split.
    pub fn handle_input(&mut self, mut bytes: &[u8]) -> Result<(), ChannelError> {
        if matches!(self.state, State::Closed) {
            return Err(ChannelError::Closed);
        }
        while !bytes.is_empty() {
            let n = self.decoder.push(bytes);
            bytes = &bytes[n..];
            while let Some(frame) = self.decoder.next_frame() {
                self.handle_frame(&frame)?;
            }
        }
        Ok(())
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<(), ChannelError> {
        // Plaintext is never longer than the frame. Transport messages are
        // opened straight into the buffer handed to the caller; handshake
        // payloads (a hello may carry an auth key) are wiped after use.
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Closed => Err(ChannelError::Closed),
            // Nothing may come before the verdict on message 1.
            State::Hello { .. } => self.fail(ChannelError::Handshake),
            State::Open(mut t) => {
                let mut payload = vec![0u8; frame.len()];
                let Ok(n) = t.read_message(frame, &mut payload) else {
                    return self.fail(ChannelError::Decrypt);
                };
                payload.truncate(n);
                self.state = State::Open(t);
                self.push_event(ChannelEvent::Message(payload))
            }
            State::Confirming {
                mut transport,
                hello,
            } => {
                // The initiator's proof: an empty message under keys only
                // the live initiator has. A replayed message 1 never gets here.
                let mut payload = Zeroizing::new(vec![0u8; frame.len()]);
                match transport.read_message(frame, &mut payload) {
                    Ok(0) => {}
                    _ => return self.fail(ChannelError::Handshake),
                }
                let peer = self.peer.ok_or(ChannelError::Handshake)?;
                self.state = State::Open(transport);
                self.push_event(ChannelEvent::Connected {
                    peer,
                    hello: hello.to_vec(),
                })
            }
            State::Handshake(mut hs) => {
                let mut payload = Zeroizing::new(vec![0u8; frame.len()]);
                let Ok(n) = hs.read_message(frame, &mut payload) else {
                    return self.fail(ChannelError::Handshake);
                };
                let mut peer = [0u8; 32];
                match hs.get_remote_static() {
                    Some(k) if k.len() == 32 => peer.copy_from_slice(k),
                    _ => return self.fail(ChannelError::Handshake),
                }
                self.peer = Some(peer);
                if self.initiator {
                    // Message 2 read: connected; prove it with message 3.
                    let Ok(mut t) = hs.into_transport_mode() else {
                        return self.fail(ChannelError::Handshake);
                    };
                    let mut confirm = [0u8; 16];
                    let Ok(m) = t.write_message(&[], &mut confirm) else {
                        return self.fail(ChannelError::Handshake);
                    };
                    self.queue(&confirm[..m])?;
                    self.state = State::Open(Box::new(t));
                    return self.push_event(ChannelEvent::Connected {
                        peer,
                        hello: payload[..n].to_vec(),
                    });
                }
                // Message 1 read: its timestamp goes to the caller first.
                let Some((stamp, hello)) = payload[..n].split_first_chunk::<TIMESTAMP_LEN>() else {
                    return self.fail(ChannelError::Handshake);
                };
                let timestamp = u64::from_be_bytes(*stamp);
                self.state = State::Hello {
                    hs,
                    hello: Zeroizing::new(hello.to_vec()),
                };
                self.push_event(ChannelEvent::Hello { peer, timestamp })
            }
        }
    }

    fn push_event(&mut self, e: ChannelEvent) -> Result<(), ChannelError> {
        if self.events.len() >= MAX_QUEUED {
            return self.fail(ChannelError::Backlog);
        }
        self.events.push_back(e);
        Ok(())
    }

    /// Encrypts and frames an application message.
    pub fn send(&mut self, message: &[u8]) -> Result<(), ChannelError> {
        if message.len() > MAX_MESSAGE {
            return Err(ChannelError::TooLarge);
        }
        let State::Open(t) = &mut self.state else {
            return Err(if matches!(self.state, State::Closed) {
                ChannelError::Closed
            } else {
                ChannelError::NotConnected
            });
        };
        if self.transmits.len() >= MAX_QUEUED {
            return self.fail(ChannelError::Backlog);
        }
        // Sealed straight behind its 2-byte length: one buffer, no copy.
        let mut framed = vec![0u8; 2 + message.len() + 16];
        let n = t
            .write_message(message, &mut framed[2..])
            .map_err(|_| ChannelError::TooLarge)?;
        let len = u16::try_from(n).map_err(|_| ChannelError::TooLarge)?;
        framed[..2].copy_from_slice(&len.to_be_bytes());
        framed.truncate(2 + n);
        self.transmits.push_back(framed);
        Ok(())
    }

    /// Bytes to write to the stream, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ChannelEvent> {
        self.events.pop_front()
    }
}
