//! Building messages: the writer links each payload into the chain and
//! fills in every length, so no caller computes one by hand.

use super::{Header, Payload, HEADER_LEN, PAYLOAD_HEADER_LEN};

/// A message (or, for the inside of an SK payload, a bare payload chain)
/// under construction.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
    has_header: bool,
    first: u8,
    /// Where the previous payload's "next payload" byte is.
    prev_next_at: Option<usize>,
}

impl Writer {
    /// A message starting with `header` (its next-payload and length
    /// fields are filled in as payloads are pushed).
    pub fn message(header: Header) -> Self {
        let mut buf = vec![0u8; HEADER_LEN];
        let mut h = [0u8; HEADER_LEN];
        header.emit(&mut h);
        buf.copy_from_slice(&h);
        buf[16] = 0;
        Self {
            buf,
            has_header: true,
            first: 0,
            prev_next_at: Some(16),
        }
    }

    /// A bare chain: the plaintext inside an SK payload.
    pub fn chain() -> Self {
        Self {
            buf: Vec::new(),
            has_header: false,
            first: 0,
            prev_next_at: None,
        }
    }

    /// The type of the first payload pushed (0 if none).
    pub fn first(&self) -> u8 {
        self.first
    }

    pub fn push(&mut self, p: &Payload<'_>) -> &mut Self {
        let start = self.open(p.kind(), false);
        if let Payload::Sk(sk) = p {
            // The encrypted payload is last; its "next payload" names the
            // first payload inside it.
            self.buf[start] = sk.next;
        }
        p.emit_body(&mut self.buf);
        self.close(start);
        self
    }

    /// A payload given as its raw body.
    pub fn push_raw(&mut self, kind: u8, critical: bool, body: &[u8]) -> &mut Self {
        let start = self.open(kind, critical);
        self.buf.extend_from_slice(body);
        self.close(start);
        self
    }

    /// Starts a payload whose body the caller appends to [`Writer::buf`];
    /// [`Writer::close`] ends it. For the SK payload, `next` is the
    /// first inner payload's type.
    pub fn open_with_next(&mut self, kind: u8, next: u8) -> usize {
        let start = self.open(kind, false);
        self.buf[start] = next;
        start
    }

    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn open(&mut self, kind: u8, critical: bool) -> usize {
        match self.prev_next_at {
            Some(at) => self.buf[at] = kind,
            None => self.first = kind,
        }
        let start = self.buf.len();
        self.buf
            .extend_from_slice(&[0, if critical { 0x80 } else { 0 }, 0, 0]);
        self.prev_next_at = Some(start);
        start
    }

    /// Ends the payload that started at `start` (fills its length).
    pub fn close(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        debug_assert!(self.buf.len() - start >= PAYLOAD_HEADER_LEN);
        self.buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The finished bytes (a message gets its total length).
    pub fn finish(mut self) -> Vec<u8> {
        if self.has_header {
            let len = self.buf.len() as u32;
            self.buf[24..28].copy_from_slice(&len.to_be_bytes());
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, Sk};

    #[test]
    fn an_encrypted_payload_keeps_its_inner_type_when_re_encoded() {
        let header = Header {
            spi_i: 1,
            spi_r: 2,
            next_payload: 0,
            version: 0x20,
            exchange: 37,
            flags: 0x08,
            message_id: 5,
            length: 0,
        };
        for fragment in [None, Some((1, 2))] {
            let sk = Payload::Sk(Sk {
                next: 42,
                fragment,
                body: &[7; 33],
            });
            let mut w = Writer::message(header);
            w.push(&Payload::Vendor(b"v")).push(&sk);
            let bytes = w.finish();
            let m = Message::parse(&bytes).unwrap();
            assert_eq!(m.payloads, vec![Payload::Vendor(b"v"), sk]);
        }
    }
}
