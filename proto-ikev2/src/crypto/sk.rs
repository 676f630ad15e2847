//! The Encrypted payload (RFC 7296 §3.14; AEAD per RFC 5282 and RFC 7634):
//! IV || ciphertext of (inner payloads || padding || pad length) || ICV.
//!
//! The cipher is proto-esp's `Cipher`, so IKE and ESP share one file of
//! symmetric crypto. The IV comes from a per-direction counter the caller
//! keeps: AEAD IVs must never repeat under a key, and for CBC the counter
//! is encrypted under the key (unpredictable, as CBC needs), so no
//! randomness is needed here.

use proto_esp::Cipher;
use thiserror::Error;

use crate::wire::consts::payload as pt;
use crate::wire::{Header, Writer, HEADER_LEN, PAYLOAD_HEADER_LEN};

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkError {
    #[error("encrypted payload too short or misaligned")]
    Length,
    #[error("integrity check failed")]
    Integrity,
    #[error("bad padding")]
    Padding,
}

/// Builds `header` + an SK payload holding `inner` (a chain from
/// [`Writer::chain`]), sealed under `cipher` with IV number `iv_counter`.
pub fn seal(header: Header, inner: Writer, cipher: &Cipher, iv_counter: u64) -> Vec<u8> {
    seal_payload(
        header,
        inner.first(),
        &inner.finish(),
        None,
        cipher,
        iv_counter,
    )
}

/// Seals `plaintext` (a payload chain starting with type `first`) into an
/// SK payload, or an SKF payload when `fragment` is `Some((n, total))`.
pub fn seal_payload(
    header: Header,
    first: u8,
    plaintext: &[u8],
    fragment: Option<(u16, u16)>,
    cipher: &Cipher,
    iv_counter: u64,
) -> Vec<u8> {
    let iv_len = cipher.iv_len();
    let icv_len = cipher.icv_len();
    // AEADs need no padding; CBC pads (data + pad length) to the block.
    let align = if cipher.is_aead() { 1 } else { 16 };
    let pad = (align - (plaintext.len() + 1) % align) % align;

    let mut w = Writer::message(header);
    let kind = if fragment.is_some() { pt::SKF } else { pt::SK };
    let start = w.open_with_next(kind, first);
    let buf = w.buf();
    if let Some((n, total)) = fragment {
        buf.extend_from_slice(&n.to_be_bytes());
        buf.extend_from_slice(&total.to_be_bytes());
    }
    let aad_end = buf.len();
    buf.resize(aad_end + iv_len, 0);
    cipher.make_iv(iv_counter, &mut buf[aad_end..]);
    let ct_start = buf.len();
    buf.extend_from_slice(plaintext);
    buf.resize(buf.len() + pad, 0);
    buf.push(pad as u8);
    let ct_end = buf.len();
    buf.resize(ct_end + icv_len, 0);
    w.close(start);
    let mut msg = w.finish();

    let (head, tail) = msg.split_at_mut(ct_start);
    let (ct, icv) = tail.split_at_mut(ct_end - ct_start);
    let iv = &head[aad_end..];
    cipher.seal(&head[..aad_end], iv, ct, icv);
    if !cipher.is_aead() {
        let (covered, icv) = msg.split_at_mut(ct_end);
        cipher.mac(&[covered], icv);
    }
    msg
}

/// Opens the encrypted payload whose `body` (IV || ciphertext || ICV) ends
/// the message `msg`. Returns the inner plaintext chain.
pub fn open(msg: &[u8], body: &[u8], cipher: &Cipher) -> Result<Vec<u8>, SkError> {
    let iv_len = cipher.iv_len();
    let icv_len = cipher.icv_len();
    if body.len() < iv_len + icv_len + 1
        || msg.len() < body.len() + HEADER_LEN + PAYLOAD_HEADER_LEN
        || !msg.ends_with(body)
    {
        return Err(SkError::Length);
    }
    let body_start = msg.len() - body.len();
    let (iv, rest) = body.split_at(iv_len);
    let (ct, icv) = rest.split_at(rest.len() - icv_len);
    if !cipher.is_aead() {
        if ct.len() % 16 != 0 {
            return Err(SkError::Length);
        }
        if !cipher.verify_mac(&[&msg[..msg.len() - icv_len]], icv) {
            return Err(SkError::Integrity);
        }
    }
    let mut plain = ct.to_vec();
    cipher
        .open(&msg[..body_start], iv, &mut plain, icv)
        .map_err(|_| SkError::Integrity)?;
    let pad = *plain.last().ok_or(SkError::Padding)? as usize;
    if pad + 1 > plain.len() {
        return Err(SkError::Padding);
    }
    plain.truncate(plain.len() - pad - 1);
    Ok(plain)
}
