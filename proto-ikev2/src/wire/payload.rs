//! The generic payload chain and a typed view of each payload.

use super::consts::payload as pt;
use super::reader::Reader;
use super::sa::SaPayload;
use super::ts::{self, TrafficSelector};
use super::{WireError, MAX_PAYLOADS, PAYLOAD_HEADER_LEN};

/// One payload as the chain frames it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    pub kind: u8,
    /// The type of the payload after this one (for SK/SKF: of the first
    /// payload inside).
    pub next: u8,
    pub critical: bool,
    /// The payload's content after the generic header.
    pub body: &'a [u8],
}

/// Walks a payload chain. An SK or SKF payload ends the chain (RFC 7296
/// §3.14: it must be last, and its "next payload" names the first payload
/// inside it).
#[derive(Debug)]
pub struct PayloadIter<'a> {
    next: u8,
    rest: &'a [u8],
    count: usize,
    done: bool,
}

impl<'a> PayloadIter<'a> {
    pub fn new(first: u8, body: &'a [u8]) -> Self {
        Self {
            next: first,
            rest: body,
            count: 0,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<RawPayload<'a>>, WireError> {
        if self.next == pt::NONE {
            return if self.rest.is_empty() {
                Ok(None)
            } else {
                Err(WireError::BadLength)
            };
        }
        self.count += 1;
        if self.count > MAX_PAYLOADS {
            return Err(WireError::TooManyPayloads);
        }
        let mut r = Reader::new(self.rest);
        let next = r.u8()?;
        let critical = r.u8()? & 0x80 != 0;
        let len = r.u16()? as usize;
        if len < PAYLOAD_HEADER_LEN || len > self.rest.len() {
            return Err(WireError::BadLength);
        }
        let body = &self.rest[PAYLOAD_HEADER_LEN..len];
        let kind = self.next;
        self.rest = &self.rest[len..];
        self.next = next;
        if matches!(kind, pt::SK | pt::SKF) {
            if !self.rest.is_empty() {
                return Err(WireError::Malformed("payload after the encrypted payload"));
            }
            self.done = true;
        }
        Ok(Some(RawPayload {
            kind,
            next,
            critical,
            body,
        }))
    }
}

impl<'a> Iterator for PayloadIter<'a> {
    type Item = Result<RawPayload<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r.transpose()
    }
}

/// Key Exchange payload (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyExchange<'a> {
    pub group: u16,
    pub data: &'a [u8],
}

/// Identification payload (§3.5): IDi or IDr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identification<'a> {
    pub id_type: u8,
    pub data: &'a [u8],
}

/// Certificate or Certificate Request payload (§3.6, §3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertData<'a> {
    pub encoding: u8,
    pub data: &'a [u8],
}

/// Authentication payload (§3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    pub method: u8,
    pub data: &'a [u8],
}

/// Notify payload (§3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify<'a> {
    pub protocol: u8,
    pub spi: &'a [u8],
    pub kind: u16,
    pub data: &'a [u8],
}

/// Delete payload (§3.11): the SPIs, `spi_size` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delete<'a> {
    pub protocol: u8,
    pub spi_size: u8,
    pub spis: &'a [u8],
}

impl Delete<'_> {
    /// The 4-byte SPIs of a Child SA delete.
    pub fn esp_spis(&self) -> impl Iterator<Item = u32> + '_ {
        let spis: &[u8] = if self.spi_size == 4 { self.spis } else { &[] };
        spis.chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// Encrypted payload (SK, §3.14) or Encrypted Fragment (SKF, RFC 7383).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sk<'a> {
    /// First payload inside (only meaningful in fragment 1 for SKF).
    pub next: u8,
    /// `(number, total)` for an SKF payload.
    pub fragment: Option<(u16, u16)>,
    /// IV || ciphertext || ICV.
    pub body: &'a [u8],
}

/// A typed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Payload<'a> {
    Sa(SaPayload),
    Ke(KeyExchange<'a>),
    IdI(Identification<'a>),
    IdR(Identification<'a>),
    Cert(CertData<'a>),
    CertReq(CertData<'a>),
    Auth(Auth<'a>),
    Nonce(&'a [u8]),
    Notify(Notify<'a>),
    Delete(Delete<'a>),
    Vendor(&'a [u8]),
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    Sk(Sk<'a>),
    /// Configuration payload, kept raw (type, reserved, attributes).
    Cp(&'a [u8]),
    Eap(&'a [u8]),
}

/// RFC 7296 §3.9: nonces are 16 to 256 bytes.
pub const NONCE_MIN: usize = 16;
pub const NONCE_MAX: usize = 256;

impl<'a> Payload<'a> {
    /// Its payload type number.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Sa(_) => pt::SA,
            Self::Ke(_) => pt::KE,
            Self::IdI(_) => pt::IDI,
            Self::IdR(_) => pt::IDR,
            Self::Cert(_) => pt::CERT,
            Self::CertReq(_) => pt::CERTREQ,
            Self::Auth(_) => pt::AUTH,
            Self::Nonce(_) => pt::NONCE,
            Self::Notify(_) => pt::NOTIFY,
            Self::Delete(_) => pt::DELETE,
            Self::Vendor(_) => pt::VENDOR,
            Self::TsI(_) => pt::TSI,
            Self::TsR(_) => pt::TSR,
            Self::Sk(Sk { fragment: None, .. }) => pt::SK,
            Self::Sk(Sk {
                fragment: Some(_), ..
            }) => pt::SKF,
            Self::Cp(_) => pt::CP,
            Self::Eap(_) => pt::EAP,
        }
    }

    /// The typed payload, or `None` for a type this crate does not know.
    pub fn from_raw(raw: RawPayload<'a>) -> Result<Option<Self>, WireError> {
        let mut r = Reader::new(raw.body);
        let p = match raw.kind {
            pt::SA => Self::Sa(SaPayload::parse(raw.body)?),
            pt::KE => {
                let group = r.u16()?;
                r.u16()?;
                Self::Ke(KeyExchange {
                    group,
                    data: r.rest(),
                })
            }
            pt::IDI | pt::IDR => {
                let id_type = r.u8()?;
                r.take(3)?;
                let id = Identification {
                    id_type,
                    data: r.rest(),
                };
                if raw.kind == pt::IDI {
                    Self::IdI(id)
                } else {
                    Self::IdR(id)
                }
            }
            pt::CERT | pt::CERTREQ => {
                let c = CertData {
                    encoding: r.u8()?,
                    data: r.rest(),
                };
                if raw.kind == pt::CERT {
                    Self::Cert(c)
                } else {
                    Self::CertReq(c)
                }
            }
            pt::AUTH => {
                let method = r.u8()?;
                r.take(3)?;
                Self::Auth(Auth {
                    method,
                    data: r.rest(),
                })
            }
            pt::NONCE => {
                if !(NONCE_MIN..=NONCE_MAX).contains(&raw.body.len()) {
                    return Err(WireError::Malformed("nonce length"));
                }
                Self::Nonce(raw.body)
            }
            pt::NOTIFY => {
                let protocol = r.u8()?;
                let spi_size = r.u8()? as usize;
                let kind = r.u16()?;
                let spi = r.take(spi_size)?;
                Self::Notify(Notify {
                    protocol,
                    spi,
                    kind,
                    data: r.rest(),
                })
            }
            pt::DELETE => {
                let protocol = r.u8()?;
                let spi_size = r.u8()?;
                let count = r.u16()? as usize;
                let spis = r.rest();
                if spis.len() != count * spi_size as usize {
                    return Err(WireError::Malformed("delete payload SPI count"));
                }
                Self::Delete(Delete {
                    protocol,
                    spi_size,
                    spis,
                })
            }
            pt::VENDOR => Self::Vendor(raw.body),
            pt::TSI => Self::TsI(ts::parse_list(raw.body)?),
            pt::TSR => Self::TsR(ts::parse_list(raw.body)?),
            pt::SK => Self::Sk(Sk {
                next: raw.next,
                fragment: None,
                body: raw.body,
            }),
            pt::SKF => {
                let number = r.u16()?;
                let total = r.u16()?;
                if number == 0 || total == 0 || number > total {
                    return Err(WireError::Malformed("fragment numbering"));
                }
                Self::Sk(Sk {
                    next: raw.next,
                    fragment: Some((number, total)),
                    body: r.rest(),
                })
            }
            pt::CP => Self::Cp(raw.body),
            pt::EAP => Self::Eap(raw.body),
            _ => return Ok(None),
        };
        Ok(Some(p))
    }

    /// Appends the payload's body (everything after the generic header).
    /// SK/SKF bodies are written by [`crate::crypto::sk`], not here.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(sa) => sa.emit(out),
            Self::Ke(ke) => {
                out.extend_from_slice(&ke.group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(ke.data);
            }
            Self::IdI(id) | Self::IdR(id) => {
                out.extend_from_slice(&[id.id_type, 0, 0, 0]);
                out.extend_from_slice(id.data);
            }
            Self::Cert(c) | Self::CertReq(c) => {
                out.push(c.encoding);
                out.extend_from_slice(c.data);
            }
            Self::Auth(a) => {
                out.extend_from_slice(&[a.method, 0, 0, 0]);
                out.extend_from_slice(a.data);
            }
            Self::Nonce(n) | Self::Vendor(n) | Self::Cp(n) | Self::Eap(n) => {
                out.extend_from_slice(n)
            }
            Self::Notify(n) => {
                out.push(n.protocol);
                out.push(n.spi.len() as u8);
                out.extend_from_slice(&n.kind.to_be_bytes());
                out.extend_from_slice(n.spi);
                out.extend_from_slice(n.data);
            }
            Self::Delete(d) => {
                out.push(d.protocol);
                out.push(d.spi_size);
                let count = d.spis.len().checked_div(d.spi_size as usize).unwrap_or(0);
                out.extend_from_slice(&(count as u16).to_be_bytes());
                out.extend_from_slice(d.spis);
            }
            Self::TsI(list) | Self::TsR(list) => ts::emit_list(list, out),
            Self::Sk(sk) => {
                if let Some((n, t)) = sk.fragment {
                    out.extend_from_slice(&n.to_be_bytes());
                    out.extend_from_slice(&t.to_be_bytes());
                }
                out.extend_from_slice(sk.body);
            }
        }
    }
}
