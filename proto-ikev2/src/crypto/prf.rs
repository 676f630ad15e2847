//! The IKE pseudo-random function and prf+ (RFC 7296 §2.13), with the
//! HMAC-SHA2 PRFs of RFC 4868.

use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

use crate::wire::consts::transform as t;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prf {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// prf+ makes at most 255 blocks (its counter is one octet).
const MAX_BLOCKS: usize = 255;

impl Prf {
    pub fn from_transform(id: u16) -> Option<Self> {
        match id {
            t::PRF_HMAC_SHA2_256 => Some(Self::HmacSha256),
            t::PRF_HMAC_SHA2_384 => Some(Self::HmacSha384),
            t::PRF_HMAC_SHA2_512 => Some(Self::HmacSha512),
            _ => None,
        }
    }

    pub fn transform_id(self) -> u16 {
        match self {
            Self::HmacSha256 => t::PRF_HMAC_SHA2_256,
            Self::HmacSha384 => t::PRF_HMAC_SHA2_384,
            Self::HmacSha512 => t::PRF_HMAC_SHA2_512,
        }
    }

    /// Output length, which is also the preferred key length (SK_d,
    /// SK_pi, SK_pr).
    pub fn output_len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }

    /// prf(key, parts[0] | parts[1] | ...).
    pub fn compute(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        macro_rules! run {
            ($h:ty) => {{
                // HMAC accepts keys of any length: this cannot fail.
                let mut m = <Hmac<$h> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                for p in parts {
                    m.update(p);
                }
                Zeroizing::new(m.finalize().into_bytes().to_vec())
            }};
        }
        match self {
            Self::HmacSha256 => run!(sha2::Sha256),
            Self::HmacSha384 => run!(sha2::Sha384),
            Self::HmacSha512 => run!(sha2::Sha512),
        }
    }

    /// prf+(key, seed) truncated to `len` bytes: T1 = prf(K, S | 0x01),
    /// Tn = prf(K, Tn-1 | S | n). `None` if `len` needs over 255 blocks.
    pub fn plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Option<Zeroizing<Vec<u8>>> {
        if len > MAX_BLOCKS * self.output_len() {
            return None;
        }
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut prev = Zeroizing::new(Vec::new());
        let mut n = 1u8;
        while out.len() < len {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
            parts.push(&prev);
            parts.extend_from_slice(seed);
            let counter = [n];
            parts.push(&counter);
            let block = self.compute(key, &parts);
            out.extend_from_slice(&block);
            prev = block;
            n = n.wrapping_add(1);
        }
        out.truncate(len);
        Some(out)
    }
}
