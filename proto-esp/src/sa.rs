//! Security associations: one direction each. Tunnel mode: the payload is
//! a whole inner IP packet (next header 4 or 41); a dummy packet (next
//! header 59) is opened, checked and reported so the caller can drop it.
//!
//! ```text
//! SPI (4) | sequence, low 32 bits (4) | IV | ciphertext(payload | padding | pad length | next header) | ICV
//! ```
//!
//! Both directions work in place on the caller's buffer and allocate nothing.

use std::ops::Range;

use thiserror::Error;

use crate::cipher::Cipher;
use crate::replay::{Check, ReplayWindow};

pub const NEXT_HEADER_IPV4: u8 = 4;
pub const NEXT_HEADER_IPV6: u8 = 41;
pub const NEXT_HEADER_DUMMY: u8 = 59;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EspError {
    #[error("packet too short for this SA")]
    TooShort,
    #[error("SPI {0:#010x} is not this SA's")]
    WrongSpi(u32),
    #[error("replayed packet")]
    Replayed,
    #[error("packet older than the replay window")]
    TooOld,
    #[error("integrity check failed")]
    Integrity,
    #[error("bad padding or trailer")]
    BadTrailer,
    #[error("sequence numbers exhausted: the SA must be rekeyed")]
    SeqExhausted,
    #[error("buffer too small for the sealed packet")]
    BufferTooSmall,
}

#[derive(Debug)]
pub struct OutboundSa {
    spi: u32,
    /// The next sequence number to use (starts at 1).
    next: u64,
    esn: bool,
    cipher: Cipher,
}

/// Where an opened packet's payload is, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub next_header: u8,
    pub payload: Range<usize>,
    pub seq: u64,
}

fn aad(spi: u32, seq: u64, esn: bool, out: &mut [u8; 12]) -> usize {
    out[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        out[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        out[8..].copy_from_slice(&(seq as u32).to_be_bytes());
        12
    } else {
        out[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        8
    }
}

impl OutboundSa {
    pub fn new(spi: u32, cipher: Cipher, esn: bool) -> Self {
        Self {
            spi,
            next: 1,
            esn,
            cipher,
        }
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }

    #[cfg(test)]
    pub(crate) fn set_next_seq(&mut self, next: u64) {
        self.next = next;
    }

    /// Packets sealed so far.
    pub fn packets(&self) -> u64 {
        self.next - 1
    }

    /// Bytes before the payload: where the caller puts the inner packet.
    pub fn headroom(&self) -> usize {
        8 + self.cipher.iv_len()
    }

    /// Total length of a sealed packet carrying `len` payload bytes.
    pub fn sealed_len(&self, len: usize) -> usize {
        let body = (len + 2).div_ceil(self.cipher.align()) * self.cipher.align();
        self.headroom() + body + self.cipher.icv_len()
    }

    /// Seals the `len` payload bytes at `buf[headroom()..]` into an ESP
    /// packet at `buf[..sealed_len(len)]`; returns that length.
    pub fn seal(&mut self, buf: &mut [u8], len: usize, next_header: u8) -> Result<usize, EspError> {
        let total = self.sealed_len(len);
        if buf.len() < total {
            return Err(EspError::BufferTooSmall);
        }
        let limit = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if self.next > limit || self.next == 0 {
            return Err(EspError::SeqExhausted);
        }
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        let (hr, icv_len, iv_len) = (self.headroom(), self.cipher.icv_len(), self.cipher.iv_len());
        let body_end = total - icv_len;
        // Trailer: padding 1, 2, 3, ... then its length and next header.
        let pad = body_end - hr - len - 2;
        for (i, b) in buf[hr + len..hr + len + pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        buf[body_end - 2] = pad as u8;
        buf[body_end - 1] = next_header;
        buf[..4].copy_from_slice(&self.spi.to_be_bytes());
        buf[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        let (head, rest) = buf.split_at_mut(hr);
        self.cipher.make_iv(seq, &mut head[8..8 + iv_len]);
        let (body, tail) = rest.split_at_mut(body_end - hr);
        let icv = &mut tail[..icv_len];
        let mut a = [0u8; 12];
        if self.cipher.is_aead() {
            let n = aad(self.spi, seq, self.esn, &mut a);
            self.cipher.seal(&a[..n], &head[8..], body, icv);
        } else {
            self.cipher.seal(&[], &head[8..], body, icv);
            let high = ((seq >> 32) as u32).to_be_bytes();
            let esn_part: &[u8] = if self.esn { &high } else { &[] };
            self.cipher.mac(&[head, body, esn_part], icv);
        }
        Ok(total)
    }
}

#[derive(Debug)]
pub struct InboundSa {
    spi: u32,
    esn: bool,
    cipher: Cipher,
    window: ReplayWindow,
}

impl InboundSa {
    pub fn new(spi: u32, cipher: Cipher, esn: bool, window: u64) -> Self {
        Self {
            spi,
            esn,
            cipher,
            window: ReplayWindow::new(window, esn),
        }
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Checks, authenticates and decrypts `packet` in place.
    pub fn open(&mut self, packet: &mut [u8]) -> Result<Opened, EspError> {
        let (iv_len, icv_len) = (self.cipher.iv_len(), self.cipher.icv_len());
        let hr = 8 + iv_len;
        if packet.len() < hr + self.cipher.align().max(4) + icv_len {
            return Err(EspError::TooShort);
        }
        let spi = u32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
        if spi != self.spi {
            return Err(EspError::WrongSpi(spi));
        }
        let low = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let seq = match self.window.check(low) {
            Check::Fresh(s) => s,
            Check::Replayed => return Err(EspError::Replayed),
            Check::TooOld => return Err(EspError::TooOld),
        };
        let body_end = packet.len() - icv_len;
        let (head, rest) = packet.split_at_mut(hr);
        let (body, icv) = rest.split_at_mut(body_end - hr);
        if self.cipher.is_aead() {
            let mut a = [0u8; 12];
            let n = aad(self.spi, seq, self.esn, &mut a);
            self.cipher
                .open(&a[..n], &head[8..], body, icv)
                .map_err(|_| EspError::Integrity)?;
        } else {
            let high = ((seq >> 32) as u32).to_be_bytes();
            let esn_part: &[u8] = if self.esn { &high } else { &[] };
            if !self.cipher.verify_mac(&[head, body, esn_part], icv) {
                return Err(EspError::Integrity);
            }
            self.cipher
                .open(&[], &head[8..], body, icv)
                .map_err(|_| EspError::Integrity)?;
        }
        // Authentic from here on: the window may move even if the trailer
        // is odd (a valid peer's bug, not a forgery).
        self.window.accept(seq);
        let n = body.len();
        let (pad, next_header) = (usize::from(body[n - 2]), body[n - 1]);
        if pad + 2 > n
            || body[n - 2 - pad..n - 2]
                .iter()
                .enumerate()
                .any(|(i, &b)| b != (i + 1) as u8)
        {
            return Err(EspError::BadTrailer);
        }
        Ok(Opened {
            next_header,
            payload: hr..hr + n - 2 - pad,
            seq,
        })
    }
}
