//! The work a caller may do outside the device lock: sealing a prepared
//! packet, the initiation's Diffie-Hellman, opening a data message.

use super::*;

/// One packet's sealing, detached from the device: the session key (shared;
/// wiped when the last holder drops it), the counter reserved for it, and
/// where it goes.
pub struct SealJob {
    pub(super) key: Arc<AeadKey>,
    pub(super) receiver: u32,
    pub(super) counter: u64,
    pub to: SocketAddr,
    /// The same datagram goes here too (the peer's fallback path, while
    /// its endpoint is silent).
    pub also_to: Option<SocketAddr>,
    pub(super) mtu: usize,
}

impl core::fmt::Debug for SealJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SealJob")
            .field("counter", &self.counter)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl SealJob {
    /// Seals the packet at `buf[DATA_HEADER_LEN..][..len]` in place;
    /// returns the datagram length (`buf[..n]`).
    pub fn seal(&self, buf: &mut [u8], len: usize) -> Result<usize, SendError> {
        if buf.len() < sealed_len(len, self.mtu) {
            return Err(SendError::BufferTooSmall);
        }
        Ok(seal_data(
            &self.key,
            self.receiver,
            self.counter,
            buf,
            len,
            self.mtu,
        ))
    }
}

/// What `prepare_datagram` made of a datagram.
#[derive(Debug)]
pub enum Incoming {
    /// Fully handled (a handshake message or cookie reply).
    Done(Received),
    /// A data message: open it with the job, then `finish_datagram`.
    Open(OpenJob),
    /// A handshake initiation past the DoS gate (MAC1; under load MAC2
    /// and the per-address rate): `consume` it without the device (its
    /// two X25519 operations are where a sender who knows our public key
    /// can make us work), then `finish_initiation`.
    Initiation(InitiationJob),
}

/// One handshake initiation's reading, detached from the device.
pub struct InitiationJob {
    pub(super) identity: Arc<Identity>,
    pub(super) msg: Box<[u8; wire::INITIATION_LEN]>,
}

impl core::fmt::Debug for InitiationJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InitiationJob").finish_non_exhaustive()
    }
}

/// An initiation that decrypted: who sent it (for `finish_initiation`).
pub struct ConsumedInitiation {
    /// The device key it was read with: a key changed meanwhile drops it.
    pub(super) under: PublicKey,
    pub(super) init: noise::ConsumedInitiation,
}

impl core::fmt::Debug for ConsumedInitiation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ConsumedInitiation")
            .field("from", &self.init.remote_static)
            .finish_non_exhaustive()
    }
}

impl InitiationJob {
    /// Decrypts the initiator's static key and timestamp (whitepaper
    /// §5.4.2): DH(Sr, Ei) and DH(Sr, Si).
    pub fn consume(&self) -> Result<ConsumedInitiation, RecvError> {
        let init = noise::consume_initiation(
            &self.identity.private,
            &self.identity.initial_hash,
            &self.msg,
        )?;
        Ok(ConsumedInitiation {
            under: self.identity.public,
            init,
        })
    }
}

/// One data message's opening, detached from the device.
pub struct OpenJob {
    pub(super) key: Arc<AeadKey>,
    pub(super) peer: PeerId,
    pub(super) local_index: u32,
    pub(super) counter: u64,
    /// The second copy of a packet already received (the first came on
    /// the fallback path): opened only as a word from the endpoint.
    pub(super) twin: bool,
}

impl core::fmt::Debug for OpenJob {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenJob")
            .field("peer", &self.peer)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl OpenJob {
    /// Authenticates and decrypts the data message in `buf` in place;
    /// returns the padded plaintext length (at `buf[DATA_HEADER_LEN..]`).
    pub fn open(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        open_data(&self.key, self.counter, buf).map_err(RecvError::from)
    }
}
