//! The control channel: Noise_IK_25519_ChaChaPoly_BLAKE2s between a node
//! (initiator, its machine key) and the controller (responder, whose
//! static key the node knows in advance), over a framed byte stream.
//!
//! Sans-IO: bytes from the stream go in with `handle_input`, bytes to write
//! come out of `poll_transmit`, and what happened comes out of
//! `poll_event`. Randomness is a seed given at construction. Any error
//! closes the channel for good: a peer that sends one bad frame is
//! dropped, never resynchronised.

use std::collections::VecDeque;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::frame::{encode, FrameDecoder, MAX_FRAME};

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
        match self {
            Self::Control => b"cloudvlan control v1",
            Self::Relay => b"cloudvlan relay v1",
        }
    }
}
/// Noise adds at most this much to a payload (ephemerals, statics, tags).
const NOISE_OVERHEAD: usize = 96;
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
}

/// Something the caller should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// The handshake completed. `peer` is the other side's static key (for
    /// the controller: the node's machine key); `hello` is the payload the
    /// peer sent inside its handshake message.
    Connected { peer: [u8; 32], hello: Vec<u8> },
    /// An authenticated application message.
    Message(Vec<u8>),
}

/// A seeded RNG handed to snow, so the handshake's ephemeral keys come
/// from the caller's seed and nothing here reads OS randomness.
struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

struct SeededResolver {
    seed: Zeroizing<[u8; 32]>,
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(*self.seed))))
    }
    fn resolve_dh(&self, _: &DHChoice) -> Option<Box<dyn Dh>> {
        None
    }
    fn resolve_hash(&self, _: &HashChoice) -> Option<Box<dyn Hash>> {
        None
    }
    fn resolve_cipher(&self, _: &CipherChoice) -> Option<Box<dyn Cipher>> {
        None
    }
}

fn builder(seed: [u8; 32]) -> snow::Builder<'static> {
    let params = PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("a valid pattern"));
    let resolver = FallbackResolver::new(
        Box::new(SeededResolver {
            seed: Zeroizing::new(seed),
        }),
        Box::new(DefaultResolver),
    );
    snow::Builder::with_resolver(params, Box::new(resolver))
}

/// The X25519 public key of a 32-byte private key, for configuration.
pub fn public_key(private: &[u8; 32]) -> [u8; 32] {
    let mut dh = DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .unwrap_or_else(|| unreachable!("X25519 is built in"));
    dh.set(private);
    let mut out = [0u8; 32];
    out.copy_from_slice(dh.pubkey());
    out
}

enum State {
    Handshake(Box<snow::HandshakeState>),
    Open(Box<snow::TransportState>),
    Closed,
}

/// One end of a control connection.
pub struct Channel {
    state: State,
    initiator: bool,
    /// The responder's handshake reply payload, sent after reading message 1.
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
    /// (encrypted, and only readable by that controller).
    pub fn client(
        machine_key: &[u8; 32],
        controller: &[u8; 32],
        seed: [u8; 32],
        hello: &[u8],
    ) -> Result<Self, ChannelError> {
        Self::client_for(Purpose::Control, machine_key, controller, seed, hello)
    }

    /// As [`client`](Self::client), for another [`Purpose`].
    pub fn client_for(
        purpose: Purpose,
        machine_key: &[u8; 32],
        controller: &[u8; 32],
        seed: [u8; 32],
        hello: &[u8],
    ) -> Result<Self, ChannelError> {
        if hello.len() > MAX_MESSAGE {
            return Err(ChannelError::TooLarge);
        }
        let mut hs = builder(seed)
            .local_private_key(machine_key)
            .and_then(|b| b.remote_public_key(controller))
            .and_then(|b| b.prologue(purpose.prologue()))
            .and_then(|b| b.build_initiator())
            .map_err(|_| ChannelError::Handshake)?;
        let mut msg = vec![0u8; MAX_FRAME];
        let n = hs
            .write_message(hello, &mut msg)
            .map_err(|_| ChannelError::Handshake)?;
        let mut ch = Self::new(State::Handshake(Box::new(hs)), true, Vec::new());
        ch.queue(&msg[..n])?;
        Ok(ch)
    }

    /// The controller's side, with its static key; `reply` is sent inside
    /// the handshake's second message to every node that connects.
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

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The peer's static key, once the handshake has completed.
    pub fn peer(&self) -> Option<[u8; 32]> {
        self.peer
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
            State::Open(mut t) => {
                let mut payload = vec![0u8; frame.len()];
                let Ok(n) = t.read_message(frame, &mut payload) else {
                    return self.fail(ChannelError::Decrypt);
                };
                payload.truncate(n);
                self.state = State::Open(t);
                self.push_event(ChannelEvent::Message(payload))
            }
            State::Handshake(mut hs) => {
                let mut payload = Zeroizing::new(vec![0u8; frame.len()]);
                let Ok(n) = hs.read_message(frame, &mut payload) else {
                    return self.fail(ChannelError::Handshake);
                };
                let hello = payload[..n].to_vec();
                if !self.initiator {
                    // Message 1 read: answer with message 2 (carrying `reply`).
                    let mut msg = vec![0u8; MAX_FRAME];
                    let Ok(m) = hs.write_message(&self.reply, &mut msg) else {
                        return self.fail(ChannelError::Handshake);
                    };
                    self.queue(&msg[..m])?;
                }
                let mut peer = [0u8; 32];
                match hs.get_remote_static() {
                    Some(k) if k.len() == 32 => peer.copy_from_slice(k),
                    _ => return self.fail(ChannelError::Handshake),
                }
                let Ok(t) = hs.into_transport_mode() else {
                    return self.fail(ChannelError::Handshake);
                };
                self.state = State::Open(Box::new(t));
                self.peer = Some(peer);
                self.push_event(ChannelEvent::Connected { peer, hello })
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
