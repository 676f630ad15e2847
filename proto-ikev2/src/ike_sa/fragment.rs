//! IKE fragmentation (RFC 7383): protected messages larger than the
//! configured size go out as Encrypted Fragment payloads, each sealed on
//! its own; incoming fragments are checked one by one before they are
//! kept, and reassembled under bounds on count and bytes.

use proto_esp::Cipher;
use sha2::{Digest, Sha256};

use crate::crypto::sk;
use crate::wire::{Header, HEADER_LEN, PAYLOAD_HEADER_LEN};

/// More fragments than any certificate chain needs; bounds what a peer
/// (already authenticated by the keys) can make us hold.
pub(super) const MAX_FRAGMENTS: u16 = 64;
const MAX_BYTES: usize = 64 * 1024;
/// Below this much room per fragment, fragmenting is pointless.
const MIN_CHUNK: usize = 64;

/// A message being put back together.
pub(super) struct Reassembly {
    message_id: u32,
    response: bool,
    first: u8,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
    /// SHA-256 of fragment 1: how a retransmitted request is recognised.
    first_digest: Option<[u8; 32]>,
}

/// A reassembled message: first inner payload type, plaintext, and the
/// digest of its first fragment.
pub(super) type Whole = (u8, Vec<u8>, Option<[u8; 32]>);

impl Reassembly {
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps one opened fragment; returns the whole message once all
    /// fragments are in. A fragment of another message starts over.
    pub(super) fn add(
        slot: &mut Option<Reassembly>,
        header: &Header,
        (number, total): (u16, u16),
        next: u8,
        plain: Vec<u8>,
        datagram: &[u8],
    ) -> Option<Whole> {
        if total > MAX_FRAGMENTS || number == 0 || number > total {
            return None;
        }
        let same = slot.as_ref().is_some_and(|r| {
            r.message_id == header.message_id
                && r.response == header.is_response()
                && r.parts.len() == usize::from(total)
        });
        if !same {
            *slot = Some(Reassembly {
                message_id: header.message_id,
                response: header.is_response(),
                first: 0,
                parts: vec![None; usize::from(total)],
                bytes: 0,
                first_digest: None,
            });
        }
        let r = slot.as_mut()?;
        let i = usize::from(number - 1);
        if r.parts[i].is_some() {
            return None;
        }
        if r.bytes + plain.len() > MAX_BYTES {
            *slot = None;
            return None;
        }
        if number == 1 {
            r.first = next;
            r.first_digest = Some(Sha256::digest(datagram).into());
        }
        r.bytes += plain.len();
        r.parts[i] = Some(plain);
        if r.parts.iter().any(Option::is_none) {
            return None;
        }
        let r = slot.take()?;
        let whole = r.parts.into_iter().flatten().flatten().collect();
        Some((r.first, whole, r.first_digest))
    }
}

/// Seals `plaintext` (a chain starting with `first`) as fragments no
/// longer than `max` bytes each, or `None` if it fits whole (or cannot be
/// split sensibly).
pub(super) fn seal_fragments(
    header: Header,
    first: u8,
    plaintext: &[u8],
    max: usize,
    cipher: &Cipher,
    iv_counter: &mut u64,
) -> Option<Vec<Vec<u8>>> {
    let overhead = HEADER_LEN + PAYLOAD_HEADER_LEN + cipher.iv_len() + cipher.icv_len() + 1;
    let padding = if cipher.is_aead() { 0 } else { 15 };
    if overhead + padding + plaintext.len() <= max {
        return None;
    }
    let chunk = max.checked_sub(overhead + padding + 4)?;
    if chunk < MIN_CHUNK {
        return None;
    }
    let total = plaintext.len().div_ceil(chunk);
    let total = u16::try_from(total).ok().filter(|t| *t <= MAX_FRAGMENTS)?;
    Some(
        plaintext
            .chunks(chunk)
            .zip(1u16..)
            .map(|(part, n)| {
                *iv_counter += 1;
                let next = if n == 1 { first } else { 0 };
                sk::seal_payload(header, next, part, Some((n, total)), cipher, *iv_counter)
            })
            .collect(),
    )
}
