//! Framing on the TCP stream: a 2-byte big-endian length, then that many
//! bytes (one Noise message; Noise caps messages at 65535 bytes). The
//! decoder takes the stream in any split and never buffers more than one
//! maximal frame.

/// Largest frame body (Noise's message limit).
pub const MAX_FRAME: usize = 65_535;

/// Reassembles frames from stream bytes.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Appends stream bytes. Returns how many were taken: it stops after
    /// one complete frame so a caller can act on it first.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let want = self.missing();
        let take = want.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..take]);
        take
    }

    /// Bytes still needed for the current frame (header first).
    fn missing(&self) -> usize {
        if self.buf.len() < 2 {
            return 2 - self.buf.len();
        }
        let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
        2 + len - self.buf.len()
    }

    /// The next complete frame body, if one is ready.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        if self.buf.len() >= 2 && self.missing() == 0 {
            let frame = self.buf[2..].to_vec();
            self.buf.clear();
            return Some(frame);
        }
        None
    }
}

/// Prefixes `body` with its length. `None` if it is too long.
pub fn encode(body: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(body.len()).ok()?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let stream: Vec<u8> = [
            encode(b"one").unwrap(),
            encode(b"").unwrap(),
            encode(&[7; 300]).unwrap(),
        ]
        .concat();
        for chunk in [1usize, 2, 3, 7, 1000] {
            let mut d = FrameDecoder::default();
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let n = d.push(rest);
                    rest = &rest[n..];
                    while let Some(f) = d.next_frame() {
                        frames.push(f);
                    }
                }
            }
            assert_eq!(
                frames,
                vec![b"one".to_vec(), vec![], vec![7; 300]],
                "chunk {chunk}"
            );
        }
        assert!(encode(&vec![0; MAX_FRAME + 1]).is_none());
    }
}
