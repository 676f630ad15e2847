//! The IKEv2 wire format (RFC 7296 §3): the fixed header, the chain of
//! generic payloads, and typed views of each payload this crate uses.
//!
//! Parsing never panics and never trusts a length: every field is read
//! through bounds-checked helpers, and a message holds at most
//! [`MAX_PAYLOADS`] payloads. Emitting goes through [`Writer`], which links
//! the "next payload" chain and fills in every length itself.

pub mod consts;
mod payload;
mod reader;
mod sa;
mod ts;
mod writer;

pub use payload::{
    Auth, CertData, Delete, Identification, KeyExchange, Notify, Payload, PayloadIter, RawPayload,
    Sk, NONCE_MAX, NONCE_MIN,
};
pub use sa::{Proposal, SaPayload, Transform, MAX_PROPOSALS, MAX_TRANSFORMS};
pub use ts::{TrafficSelector, MAX_SELECTORS};
pub use writer::Writer;

use thiserror::Error;

/// The fixed IKE header length.
pub const HEADER_LEN: usize = 28;
/// The generic payload header length.
pub const PAYLOAD_HEADER_LEN: usize = 4;
/// More payloads than any real exchange carries; bounds the work one
/// datagram can cause.
pub const MAX_PAYLOADS: usize = 64;

/// Why bytes are not a well-formed IKEv2 message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("a length field does not match the data")]
    BadLength,
    #[error("IKE major version {0} is not 2")]
    UnsupportedVersion(u8),
    #[error("more than {MAX_PAYLOADS} payloads")]
    TooManyPayloads,
    #[error("unknown payload type {0} marked critical")]
    UnknownCritical(u8),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl WireError {
    /// The notify's data: the payload type for UNSUPPORTED_CRITICAL_PAYLOAD
    /// (RFC 7296 §3.10.1), nothing otherwise.
    pub fn notify_data(self) -> Vec<u8> {
        match self {
            Self::UnknownCritical(t) => vec![t],
            _ => vec![],
        }
    }

    /// The notify RFC 7296 asks a responder to send for this error, if any.
    pub fn notify(self) -> Option<u16> {
        match self {
            Self::UnsupportedVersion(_) => Some(consts::notify::INVALID_MAJOR_VERSION),
            Self::UnknownCritical(_) => Some(consts::notify::UNSUPPORTED_CRITICAL_PAYLOAD),
            _ => Some(consts::notify::INVALID_SYNTAX),
        }
    }
}

/// The IKE header (RFC 7296 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    pub next_payload: u8,
    /// Major version in the high nibble, minor in the low.
    pub version: u8,
    pub exchange: u8,
    pub flags: u8,
    pub message_id: u32,
    pub length: u32,
}

impl Header {
    /// Reads the header and checks that `length` covers exactly `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = reader::Reader::new(buf);
        let spi_i = r.u64()?;
        let spi_r = r.u64()?;
        let next_payload = r.u8()?;
        let version = r.u8()?;
        let exchange = r.u8()?;
        let flags = r.u8()?;
        let message_id = r.u32()?;
        let length = r.u32()?;
        if version >> 4 != 2 {
            return Err(WireError::UnsupportedVersion(version >> 4));
        }
        if length as usize != buf.len() {
            return Err(WireError::BadLength);
        }
        Ok(Self {
            spi_i,
            spi_r,
            next_payload,
            version,
            exchange,
            flags,
            message_id,
            length,
        })
    }

    pub fn is_response(&self) -> bool {
        self.flags & consts::flags::RESPONSE != 0
    }

    /// Set by the original initiator of the IKE SA (not of the exchange).
    pub fn from_initiator(&self) -> bool {
        self.flags & consts::flags::INITIATOR != 0
    }

    pub fn emit(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..8].copy_from_slice(&self.spi_i.to_be_bytes());
        out[8..16].copy_from_slice(&self.spi_r.to_be_bytes());
        out[16] = self.next_payload;
        out[17] = self.version;
        out[18] = self.exchange;
        out[19] = self.flags;
        out[20..24].copy_from_slice(&self.message_id.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
    }
}

/// A parsed message: its header and its payloads, borrowed from the bytes.
#[derive(Debug)]
pub struct Message<'a> {
    pub header: Header,
    pub payloads: Vec<Payload<'a>>,
}

impl<'a> Message<'a> {
    /// Parses a whole message. An encrypted (SK/SKF) payload stays opaque
    /// here; see [`crate::crypto::sk`] to open it.
    pub fn parse(buf: &'a [u8]) -> Result<Self, WireError> {
        let header = Header::parse(buf)?;
        let payloads = parse_chain(header.next_payload, &buf[HEADER_LEN..])?;
        Ok(Self { header, payloads })
    }

    /// The first payload of a type, if present.
    pub fn find(&self, kind: u8) -> Option<&Payload<'a>> {
        self.payloads.iter().find(|p| p.kind() == kind)
    }

    /// Notifies of one type.
    pub fn notifies(&self, kind: u16) -> impl Iterator<Item = &Notify<'a>> {
        self.payloads.iter().filter_map(move |p| match p {
            Payload::Notify(n) if n.kind == kind => Some(n),
            _ => None,
        })
    }
}

/// Parses a payload chain whose first payload is `first`, into typed
/// payloads (unknown, non-critical payloads are skipped as RFC 7296 §2.5
/// requires; unknown critical ones are an error).
pub fn parse_chain(first: u8, body: &[u8]) -> Result<Vec<Payload<'_>>, WireError> {
    let mut out = Vec::new();
    for raw in PayloadIter::new(first, body) {
        let raw = raw?;
        match Payload::from_raw(raw)? {
            Some(p) => out.push(p),
            None if raw.critical => return Err(WireError::UnknownCritical(raw.kind)),
            None => {}
        }
    }
    Ok(out)
}
