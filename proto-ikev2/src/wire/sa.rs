//! The Security Association payload (RFC 7296 §3.3): proposals of
//! transforms, each transform with its optional key length.

use super::consts::transform::ATTR_KEY_LENGTH;
use super::reader::Reader;
use super::WireError;

/// Bounds on what one SA payload may hold (strongSwan's widest default
/// proposal has about 40 transforms).
pub const MAX_PROPOSALS: usize = 32;
pub const MAX_TRANSFORMS: usize = 96;

/// One transform: its type, its id and, for ciphers with a variable key
/// size, the key length in bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform {
    pub kind: u8,
    pub id: u16,
    pub key_len: Option<u16>,
    /// The transform carried an attribute this crate does not know: RFC
    /// 7296 §3.3.6 says such a transform must not be selected.
    pub unknown_attribute: bool,
}

impl Transform {
    pub const fn new(kind: u8, id: u16) -> Self {
        Self {
            kind,
            id,
            key_len: None,
            unknown_attribute: false,
        }
    }

    pub const fn with_key_len(kind: u8, id: u16, bits: u16) -> Self {
        Self {
            kind,
            id,
            key_len: Some(bits),
            unknown_attribute: false,
        }
    }
}

/// One proposal: a protocol, the SPI the sender chose for it (empty in an
/// initial IKE SA proposal), and its transforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// The SA payload: proposals in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaPayload {
    pub proposals: Vec<Proposal>,
}

const LAST: u8 = 0;
const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;

impl SaPayload {
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let mut proposals = Vec::new();
        loop {
            if proposals.len() == MAX_PROPOSALS {
                return Err(WireError::Malformed("too many proposals"));
            }
            let more = r.u8()?;
            r.u8()?;
            let len = r.u16()? as usize;
            let inner = r.take(len.checked_sub(4).ok_or(WireError::BadLength)?)?;
            proposals.push(parse_proposal(inner)?);
            match more {
                LAST if r.is_empty() => break,
                MORE_PROPOSALS if !r.is_empty() => {}
                _ => return Err(WireError::Malformed("proposal chain")),
            }
        }
        Ok(Self { proposals })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        for (i, p) in self.proposals.iter().enumerate() {
            let start = out.len();
            let last = i + 1 == self.proposals.len();
            out.extend_from_slice(&[if last { LAST } else { MORE_PROPOSALS }, 0, 0, 0]);
            out.push(p.number);
            out.push(p.protocol);
            out.push(p.spi.len() as u8);
            out.push(p.transforms.len() as u8);
            out.extend_from_slice(&p.spi);
            for (j, t) in p.transforms.iter().enumerate() {
                let t_start = out.len();
                let last = j + 1 == p.transforms.len();
                out.extend_from_slice(&[if last { LAST } else { MORE_TRANSFORMS }, 0, 0, 0]);
                out.push(t.kind);
                out.push(0);
                out.extend_from_slice(&t.id.to_be_bytes());
                if let Some(bits) = t.key_len {
                    out.extend_from_slice(&(0x8000 | ATTR_KEY_LENGTH).to_be_bytes());
                    out.extend_from_slice(&bits.to_be_bytes());
                }
                patch_len(out, t_start);
            }
            patch_len(out, start);
        }
    }
}

fn patch_len(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn parse_proposal(body: &[u8]) -> Result<Proposal, WireError> {
    let mut r = Reader::new(body);
    let number = r.u8()?;
    let protocol = r.u8()?;
    let spi_size = r.u8()? as usize;
    let count = r.u8()? as usize;
    if spi_size > 8 {
        return Err(WireError::Malformed("proposal SPI size"));
    }
    let spi = r.take(spi_size)?.to_vec();
    if count > MAX_TRANSFORMS {
        return Err(WireError::Malformed("too many transforms"));
    }
    let mut transforms = Vec::with_capacity(count);
    for i in 0..count {
        let more = r.u8()?;
        r.u8()?;
        let len = r.u16()? as usize;
        let inner = r.take(len.checked_sub(4).ok_or(WireError::BadLength)?)?;
        transforms.push(parse_transform(inner)?);
        let last = i + 1 == count;
        if (more == LAST) != last || !(more == LAST || more == MORE_TRANSFORMS) {
            return Err(WireError::Malformed("transform chain"));
        }
    }
    if !r.is_empty() {
        return Err(WireError::BadLength);
    }
    Ok(Proposal {
        number,
        protocol,
        spi,
        transforms,
    })
}

fn parse_transform(body: &[u8]) -> Result<Transform, WireError> {
    let mut r = Reader::new(body);
    let kind = r.u8()?;
    r.u8()?;
    let id = r.u16()?;
    let mut t = Transform::new(kind, id);
    while !r.is_empty() {
        let ty = r.u16()?;
        if ty & 0x8000 != 0 {
            let value = r.u16()?;
            if ty & 0x7fff == ATTR_KEY_LENGTH && t.key_len.is_none() {
                t.key_len = Some(value);
            } else {
                t.unknown_attribute = true;
            }
        } else {
            let len = r.u16()? as usize;
            r.take(len)?;
            t.unknown_attribute = true;
        }
    }
    Ok(t)
}
