//! STUN messages (RFC 8489 §5, §14): a zero-copy view for parsing and a
//! builder that writes into the caller's buffer. Parsing never panics and
//! never allocates.
//!
//! ```text
//!  0                   1                   2                   3
//! |0 0|     STUN Message Type     |         Message Length        |
//! |                         Magic Cookie                          |
//! |                     Transaction ID (96 bits)                  |
//! |  attributes: type (16) | length (16) | value, padded to 4 ... |
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

use crate::integrity::{self, MacAlg};

pub const HEADER_LEN: usize = 20;
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// Longest message we parse or build: the largest UDP payload is never
/// needed by STUN; this bounds work per datagram.
pub const MAX_MESSAGE_LEN: usize = 1500;

pub const METHOD_BINDING: u16 = 0x001;

// Attribute types (RFC 8489 §18.3, RFC 5389).
pub const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
pub const ATTR_USERNAME: u16 = 0x0006;
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ATTR_ERROR_CODE: u16 = 0x0009;
pub const ATTR_UNKNOWN_ATTRIBUTES: u16 = 0x000a;
pub const ATTR_REALM: u16 = 0x0014;
pub const ATTR_NONCE: u16 = 0x0015;
pub const ATTR_MESSAGE_INTEGRITY_SHA256: u16 = 0x001c;
pub const ATTR_PASSWORD_ALGORITHM: u16 = 0x001d;
pub const ATTR_USERHASH: u16 = 0x001e;
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const ATTR_PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ATTR_ALTERNATE_DOMAIN: u16 = 0x8003;
pub const ATTR_SOFTWARE: u16 = 0x8022;
pub const ATTR_ALTERNATE_SERVER: u16 = 0x8023;
pub const ATTR_FINGERPRINT: u16 = 0x8028;

/// Comprehension-required attributes this codec understands; any other in
/// 0x0000..=0x7fff makes a request fail with 420 (RFC 8489 §15).
const KNOWN_REQUIRED: [u16; 11] = [
    ATTR_MAPPED_ADDRESS,
    ATTR_USERNAME,
    ATTR_MESSAGE_INTEGRITY,
    ATTR_ERROR_CODE,
    ATTR_UNKNOWN_ATTRIBUTES,
    ATTR_REALM,
    ATTR_NONCE,
    ATTR_MESSAGE_INTEGRITY_SHA256,
    ATTR_PASSWORD_ALGORITHM,
    ATTR_USERHASH,
    ATTR_XOR_MAPPED_ADDRESS,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

/// Why bytes are not a usable STUN message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StunError {
    #[error("shorter than a STUN header")]
    Truncated,
    #[error("the two leading bits are not zero")]
    NotStun,
    #[error("wrong magic cookie")]
    BadCookie,
    #[error("length field {declared} does not match the {actual} bytes after the header")]
    BadLength { declared: usize, actual: usize },
    #[error("longer than {MAX_MESSAGE_LEN} bytes")]
    TooLong,
    #[error("attribute {0:#06x} runs past the end of the message")]
    AttributeOverrun(u16),
    #[error("attribute {0:#06x} has a malformed value")]
    BadAttribute(u16),
    #[error("attribute {0:#06x} is absent")]
    Missing(u16),
    #[error("MESSAGE-INTEGRITY does not verify")]
    BadIntegrity,
    #[error("FINGERPRINT does not verify")]
    BadFingerprint,
    /// Building: the caller's buffer is too small.
    #[error("buffer too small")]
    BufferTooSmall,
}

/// The 96-bit transaction identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TransactionId(pub [u8; 12]);

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Splits the 14-bit message type into class and method (the class bits
/// sit at positions 4 and 8, interleaved with the method bits).
fn split_type(t: u16) -> (Class, u16) {
    let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b1) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::SuccessResponse,
        _ => Class::ErrorResponse,
    };
    let method = (t & 0x000f) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0f80);
    (class, method)
}

fn join_type(class: Class, method: u16) -> u16 {
    let c: u16 = match class {
        Class::Request => 0,
        Class::Indication => 1,
        Class::SuccessResponse => 2,
        Class::ErrorResponse => 3,
    };
    (method & 0x000f)
        | ((method & 0x0070) << 1)
        | ((method & 0x0f80) << 2)
        | ((c & 1) << 4)
        | ((c & 2) << 7)
}

/// A cheap, allocation-free test for "this datagram is STUN", so one UDP
/// port can carry STUN next to WireGuard or relay traffic: the top two bits
/// are zero, the magic cookie is in place, and the length field matches.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0xc0 == 0
        && be32(datagram, 4) == MAGIC_COOKIE
        && usize::from(be16(datagram, 2)) + HEADER_LEN == datagram.len()
        && datagram.len() % 4 == 0
}

/// One attribute as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
    /// Offset of the attribute's header within the message.
    pub offset: usize,
}

/// A parsed message borrowing the caller's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    bytes: &'a [u8],
}

impl<'a> Message<'a> {
    /// Checks the header and that every attribute is well framed.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, StunError> {
        if bytes.len() < HEADER_LEN {
            return Err(StunError::Truncated);
        }
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(StunError::TooLong);
        }
        if bytes[0] & 0xc0 != 0 {
            return Err(StunError::NotStun);
        }
        if be32(bytes, 4) != MAGIC_COOKIE {
            return Err(StunError::BadCookie);
        }
        let declared = usize::from(be16(bytes, 2));
        let actual = bytes.len() - HEADER_LEN;
        if declared != actual || declared % 4 != 0 {
            return Err(StunError::BadLength { declared, actual });
        }
        let msg = Self { bytes };
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            if at + 4 > bytes.len() {
                return Err(StunError::AttributeOverrun(0));
            }
            let kind = be16(bytes, at);
            let len = usize::from(be16(bytes, at + 2));
            let next = at + 4 + len.div_ceil(4) * 4;
            if next > bytes.len() {
                return Err(StunError::AttributeOverrun(kind));
            }
            at = next;
        }
        Ok(msg)
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn class(&self) -> Class {
        split_type(be16(self.bytes, 0) & 0x3fff).0
    }

    pub fn method(&self) -> u16 {
        split_type(be16(self.bytes, 0) & 0x3fff).1
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.bytes[8..20]);
        TransactionId(id)
    }

    /// Every attribute, in order (framing was checked by `parse`).
    pub fn attributes(&self) -> impl Iterator<Item = RawAttribute<'a>> + 'a {
        let bytes = self.bytes;
        let mut at = HEADER_LEN;
        std::iter::from_fn(move || {
            if at + 4 > bytes.len() {
                return None;
            }
            let kind = be16(bytes, at);
            let len = usize::from(be16(bytes, at + 2));
            let value = bytes.get(at + 4..at + 4 + len)?;
            let attr = RawAttribute {
                kind,
                value,
                offset: at,
            };
            at += 4 + len.div_ceil(4) * 4;
            Some(attr)
        })
    }

    /// The first attribute of `kind` (RFC 8489: later duplicates are ignored).
    pub fn attribute(&self, kind: u16) -> Option<RawAttribute<'a>> {
        self.attributes().find(|a| a.kind == kind)
    }

    /// Comprehension-required attributes this codec does not understand.
    pub fn unknown_required(&self) -> impl Iterator<Item = u16> + 'a {
        self.attributes()
            .map(|a| a.kind)
            .filter(|k| *k < 0x8000 && !KNOWN_REQUIRED.contains(k))
    }

    fn text(&self, kind: u16) -> Result<Option<&'a str>, StunError> {
        self.attribute(kind)
            .map(|a| std::str::from_utf8(a.value).map_err(|_| StunError::BadAttribute(kind)))
            .transpose()
    }

    pub fn username(&self) -> Result<Option<&'a str>, StunError> {
        self.text(ATTR_USERNAME)
    }

    pub fn software(&self) -> Result<Option<&'a str>, StunError> {
        self.text(ATTR_SOFTWARE)
    }

    pub fn realm(&self) -> Result<Option<&'a str>, StunError> {
        self.text(ATTR_REALM)
    }

    pub fn nonce(&self) -> Result<Option<&'a str>, StunError> {
        self.text(ATTR_NONCE)
    }

    /// XOR-MAPPED-ADDRESS: the reflexive address a server saw.
    pub fn xor_mapped_address(&self) -> Result<Option<SocketAddr>, StunError> {
        self.attribute(ATTR_XOR_MAPPED_ADDRESS)
            .map(|a| {
                decode_address(a.value, Some(&self.bytes[4..20]))
                    .ok_or(StunError::BadAttribute(a.kind))
            })
            .transpose()
    }

    /// MAPPED-ADDRESS (RFC 5389 §15.1, kept for old servers).
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, StunError> {
        self.address(ATTR_MAPPED_ADDRESS)
    }

    pub fn alternate_server(&self) -> Result<Option<SocketAddr>, StunError> {
        self.address(ATTR_ALTERNATE_SERVER)
    }

    fn address(&self, kind: u16) -> Result<Option<SocketAddr>, StunError> {
        self.attribute(kind)
            .map(|a| decode_address(a.value, None).ok_or(StunError::BadAttribute(kind)))
            .transpose()
    }

    /// ERROR-CODE: the code (300..=699) and the reason phrase.
    pub fn error_code(&self) -> Result<Option<(u16, &'a str)>, StunError> {
        let Some(a) = self.attribute(ATTR_ERROR_CODE) else {
            return Ok(None);
        };
        let v = a.value;
        if v.len() < 4 {
            return Err(StunError::BadAttribute(a.kind));
        }
        let code = u16::from(v[2] & 0x07) * 100 + u16::from(v[3]);
        if !(300..700).contains(&code) || v[3] >= 100 {
            return Err(StunError::BadAttribute(a.kind));
        }
        let reason = std::str::from_utf8(&v[4..]).map_err(|_| StunError::BadAttribute(a.kind))?;
        Ok(Some((code, reason)))
    }

    /// UNKNOWN-ATTRIBUTES: the types a server did not understand.
    pub fn unknown_attributes(&self) -> Result<Option<impl Iterator<Item = u16> + 'a>, StunError> {
        let Some(a) = self.attribute(ATTR_UNKNOWN_ATTRIBUTES) else {
            return Ok(None);
        };
        if a.value.len() % 2 != 0 {
            return Err(StunError::BadAttribute(a.kind));
        }
        Ok(Some(
            a.value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        ))
    }

    /// The message as it is authenticated by the attribute at `offset`:
    /// everything before it, with the header length ending just after it.
    fn covered(&self, offset: usize, attr_len: usize) -> ([u8; 2], &'a [u8], &'a [u8]) {
        let length = (offset + 4 + attr_len - HEADER_LEN) as u16;
        (
            length.to_be_bytes(),
            &self.bytes[..2],
            &self.bytes[4..offset],
        )
    }

    /// Verifies MESSAGE-INTEGRITY (HMAC-SHA1) with `key` (the password for
    /// short-term credentials, `long_term_key` for long-term ones).
    pub fn check_integrity(&self, key: &[u8]) -> Result<(), StunError> {
        self.check_mac(MacAlg::HmacSha1, ATTR_MESSAGE_INTEGRITY, key)
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256.
    pub fn check_integrity_sha256(&self, key: &[u8]) -> Result<(), StunError> {
        self.check_mac(MacAlg::HmacSha256, ATTR_MESSAGE_INTEGRITY_SHA256, key)
    }

    fn check_mac(&self, alg: MacAlg, kind: u16, key: &[u8]) -> Result<(), StunError> {
        let a = self.attribute(kind).ok_or(StunError::Missing(kind))?;
        if !alg.valid_length(a.value.len()) {
            return Err(StunError::BadAttribute(kind));
        }
        let (length, head, rest) = self.covered(a.offset, a.value.len());
        if integrity::verify(alg, key, &[head, &length, rest], a.value) {
            Ok(())
        } else {
            Err(StunError::BadIntegrity)
        }
    }

    /// Whether a FINGERPRINT attribute is present.
    pub fn has_fingerprint(&self) -> bool {
        self.attribute(ATTR_FINGERPRINT).is_some()
    }

    /// Verifies FINGERPRINT (CRC-32 of what precedes it, XOR 0x5354554e).
    /// It must be the last attribute.
    pub fn check_fingerprint(&self) -> Result<(), StunError> {
        let a = self
            .attribute(ATTR_FINGERPRINT)
            .ok_or(StunError::Missing(ATTR_FINGERPRINT))?;
        if a.value.len() != 4 || a.offset + 8 != self.bytes.len() {
            return Err(StunError::BadFingerprint);
        }
        if integrity::fingerprint(&self.bytes[..a.offset]) == be32(a.value, 0) {
            Ok(())
        } else {
            Err(StunError::BadFingerprint)
        }
    }
}

/// MAPPED-ADDRESS family/port/address, optionally XORed with the cookie
/// and transaction id (`xor` = header bytes 4..20).
fn decode_address(v: &[u8], xor: Option<&[u8]>) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let mask = |i: usize| xor.map_or(0, |x| x[i]);
    let port = be16(v, 2) ^ xor.map_or(0, |x| be16(x, 0));
    match (v[1], v.len()) {
        (0x01, 8) => {
            let ip: [u8; 4] = std::array::from_fn(|i| v[4 + i] ^ mask(i));
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        (0x02, 20) => {
            let ip: [u8; 16] = std::array::from_fn(|i| v[4 + i] ^ mask(i));
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// Writes a message into a caller buffer, attribute by attribute.
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    buf: &'b mut [u8],
    len: usize,
    padding: u8,
}

impl<'b> MessageBuilder<'b> {
    pub fn new(
        buf: &'b mut [u8],
        class: Class,
        method: u16,
        id: TransactionId,
    ) -> Result<Self, StunError> {
        let head = buf.get_mut(..HEADER_LEN).ok_or(StunError::BufferTooSmall)?;
        head[..2].copy_from_slice(&join_type(class, method).to_be_bytes());
        head[2..4].fill(0);
        head[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        head[8..20].copy_from_slice(&id.0);
        Ok(Self {
            buf,
            len: HEADER_LEN,
            padding: 0,
        })
    }

    /// The byte used to pad attribute values (zero by default; RFC 5769's
    /// vectors use 0x20 to prove receivers ignore it).
    pub fn padding_byte(mut self, byte: u8) -> Self {
        self.padding = byte;
        self
    }

    fn set_length(&mut self) {
        let body = (self.len - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
    }

    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> Result<&mut Self, StunError> {
        let padded = value.len().div_ceil(4) * 4;
        let end = self.len + 4 + padded;
        if end > self.buf.len() || end > MAX_MESSAGE_LEN || value.len() > usize::from(u16::MAX) {
            return Err(StunError::BufferTooSmall);
        }
        let at = self.len;
        self.buf[at..at + 2].copy_from_slice(&kind.to_be_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf[at + 4..at + 4 + value.len()].copy_from_slice(value);
        self.buf[at + 4 + value.len()..end].fill(self.padding);
        self.len = end;
        self.set_length();
        Ok(self)
    }

    pub fn xor_mapped_address(&mut self, addr: SocketAddr) -> Result<&mut Self, StunError> {
        let mut v = [0u8; 20];
        let n = encode_address(addr, Some(&self.buf[4..20]), &mut v);
        self.attribute(ATTR_XOR_MAPPED_ADDRESS, &v[..n])
    }

    pub fn mapped_address(&mut self, addr: SocketAddr) -> Result<&mut Self, StunError> {
        let mut v = [0u8; 20];
        let n = encode_address(addr, None, &mut v);
        self.attribute(ATTR_MAPPED_ADDRESS, &v[..n])
    }

    /// ALTERNATE-SERVER (with a 300 Try Alternate error): where to go instead.
    pub fn alternate_server(&mut self, addr: SocketAddr) -> Result<&mut Self, StunError> {
        let mut v = [0u8; 20];
        let n = encode_address(addr, None, &mut v);
        self.attribute(ATTR_ALTERNATE_SERVER, &v[..n])
    }

    pub fn error_code(&mut self, code: u16, reason: &str) -> Result<&mut Self, StunError> {
        let mut v = [0u8; 4 + 128];
        let reason = reason
            .as_bytes()
            .get(..reason.len().min(128))
            .unwrap_or_default();
        v[2] = (code / 100) as u8 & 0x07;
        v[3] = (code % 100) as u8;
        v[4..4 + reason.len()].copy_from_slice(reason);
        self.attribute(ATTR_ERROR_CODE, &v[..4 + reason.len()])
    }

    pub fn unknown_attributes(
        &mut self,
        kinds: impl IntoIterator<Item = u16>,
    ) -> Result<&mut Self, StunError> {
        let mut v = [0u8; 64];
        let mut n = 0;
        for k in kinds.into_iter().take(32) {
            v[n..n + 2].copy_from_slice(&k.to_be_bytes());
            n += 2;
        }
        self.attribute(ATTR_UNKNOWN_ATTRIBUTES, &v[..n])
    }

    fn mac(&mut self, alg: MacAlg, kind: u16, key: &[u8]) -> Result<&mut Self, StunError> {
        let len = alg.tag_len();
        let end = self.len + 4 + len;
        if end > self.buf.len() {
            return Err(StunError::BufferTooSmall);
        }
        // The MAC covers the header with the length already counting itself.
        let body = (end - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
        let tag = integrity::tag(alg, key, &[&self.buf[..self.len]]);
        self.attribute(kind, &tag[..len])
    }

    /// MESSAGE-INTEGRITY over everything written so far.
    pub fn message_integrity(&mut self, key: &[u8]) -> Result<&mut Self, StunError> {
        self.mac(MacAlg::HmacSha1, ATTR_MESSAGE_INTEGRITY, key)
    }

    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> Result<&mut Self, StunError> {
        self.mac(MacAlg::HmacSha256, ATTR_MESSAGE_INTEGRITY_SHA256, key)
    }

    /// FINGERPRINT; must be the last attribute.
    pub fn fingerprint(&mut self) -> Result<&mut Self, StunError> {
        let end = self.len + 8;
        if end > self.buf.len() {
            return Err(StunError::BufferTooSmall);
        }
        let body = (end - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
        let crc = integrity::fingerprint(&self.buf[..self.len]);
        self.attribute(ATTR_FINGERPRINT, &crc.to_be_bytes())
    }

    /// The message length; the message is `buf[..len]`.
    pub fn finish(&self) -> usize {
        self.len
    }
}

fn encode_address(addr: SocketAddr, xor: Option<&[u8]>, out: &mut [u8; 20]) -> usize {
    let mask = |i: usize| xor.map_or(0, |x| x[i]);
    out[0] = 0;
    out[2..4].copy_from_slice(&(addr.port() ^ xor.map_or(0, |x| be16(x, 0))).to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ mask(i);
            }
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            for (i, b) in ip.octets().iter().enumerate() {
                out[4 + i] = b ^ mask(i);
            }
            20
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_bits_round_trip() {
        for class in [
            Class::Request,
            Class::Indication,
            Class::SuccessResponse,
            Class::ErrorResponse,
        ] {
            for method in [0x001u16, 0x003, 0x00f, 0x0ff, 0xfff] {
                assert_eq!(split_type(join_type(class, method)), (class, method));
            }
        }
        assert_eq!(join_type(Class::Request, METHOD_BINDING), 0x0001);
        assert_eq!(join_type(Class::SuccessResponse, METHOD_BINDING), 0x0101);
        assert_eq!(join_type(Class::ErrorResponse, METHOD_BINDING), 0x0111);
        assert_eq!(join_type(Class::Indication, METHOD_BINDING), 0x0011);
    }

    #[test]
    fn typed_attributes_round_trip() {
        let mut buf = [0u8; 256];
        let id = TransactionId([3; 12]);
        let alt: SocketAddr = "[2001:db8::7]:3479".parse().expect("addr");
        let mapped: SocketAddr = "192.0.2.7:1234".parse().expect("addr");
        let mut b =
            MessageBuilder::new(&mut buf, Class::ErrorResponse, METHOD_BINDING, id).expect("b");
        b.error_code(300, "Try Alternate").expect("ec");
        b.alternate_server(alt).expect("alt");
        b.mapped_address(mapped).expect("mapped");
        b.unknown_attributes([0x7001, 0x7002]).expect("ua");
        b.attribute(ATTR_REALM, b"example.org").expect("realm");
        b.attribute(ATTR_NONCE, b"n0nce").expect("nonce");
        b.message_integrity(b"key").expect("mi");
        b.fingerprint().expect("fp");
        let n = b.finish();
        let m = Message::parse(&buf[..n]).expect("parse");
        assert_eq!(
            (m.class(), m.method(), m.transaction_id()),
            (Class::ErrorResponse, METHOD_BINDING, id)
        );
        assert_eq!(m.error_code().expect("ec"), Some((300, "Try Alternate")));
        assert_eq!(m.alternate_server().expect("alt"), Some(alt));
        assert_eq!(m.mapped_address().expect("mapped"), Some(mapped));
        let ua: Vec<u16> = m.unknown_attributes().expect("ua").expect("some").collect();
        assert_eq!(ua, vec![0x7001, 0x7002]);
        assert_eq!(
            (m.realm().expect("r"), m.nonce().expect("n")),
            (Some("example.org"), Some("n0nce"))
        );
        m.check_integrity(b"key").expect("mi");
        m.check_fingerprint().expect("fp");
        assert_eq!(m.unknown_required().count(), 0);
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(integrity::crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let mut ok = [0u8; 20];
        ok[1] = 1;
        ok[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(Message::parse(&ok).is_ok());
        assert!(is_stun(&ok));
        assert_eq!(Message::parse(&ok[..19]).unwrap_err(), StunError::Truncated);
        let mut bad = ok;
        bad[0] = 0x80;
        assert_eq!(Message::parse(&bad).unwrap_err(), StunError::NotStun);
        let mut bad = ok;
        bad[4] = 0;
        assert_eq!(Message::parse(&bad).unwrap_err(), StunError::BadCookie);
        assert!(!is_stun(&bad));
        let mut long = [0u8; 28];
        long[..20].copy_from_slice(&ok);
        assert!(matches!(
            Message::parse(&long).unwrap_err(),
            StunError::BadLength { .. }
        ));
        // An attribute that claims more bytes than there are.
        long[3] = 8;
        long[20..24].copy_from_slice(&[0x00, 0x06, 0x00, 0x09]);
        assert_eq!(
            Message::parse(&long).unwrap_err(),
            StunError::AttributeOverrun(6)
        );
        assert_eq!(
            Message::parse(&[0u8; 1600]).unwrap_err(),
            StunError::TooLong
        );
    }
}
