//! All of STUN's cryptography and checksums: MESSAGE-INTEGRITY
//! (HMAC-SHA1) and MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.5-14.6, compared
//! in constant time), the long-term credential key, and FINGERPRINT's
//! CRC-32. `wire.rs` decides which bytes are covered; this file only
//! computes over them.

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// FINGERPRINT is the CRC-32 XORed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// A message-integrity algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlg {
    HmacSha1,
    HmacSha256,
}

impl MacAlg {
    /// The length we write.
    pub fn tag_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
        }
    }

    /// Lengths we accept: RFC 8489 allows SHA-256 tags truncated down to
    /// 16 bytes (in steps of 4); SHA-1's is always 20.
    pub fn valid_length(self, len: usize) -> bool {
        match self {
            Self::HmacSha1 => len == 20,
            Self::HmacSha256 => (16..=32).contains(&len),
        }
    }
}

fn hmac_of<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The full tag over `parts`, in order.
pub fn tag(alg: MacAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        MacAlg::HmacSha1 => hmac_of::<Hmac<sha1::Sha1>>(key, parts),
        MacAlg::HmacSha256 => hmac_of::<Hmac<sha2::Sha256>>(key, parts),
    }
}

/// Whether `got` is the (possibly truncated) tag over `parts`, in
/// constant time.
pub fn verify(alg: MacAlg, key: &[u8], parts: &[&[u8]], got: &[u8]) -> bool {
    let want = tag(alg, key, parts);
    got.len() <= want.len() && bool::from(want[..got.len()].ct_eq(got))
}

/// The FINGERPRINT value of the bytes before it.
pub fn fingerprint(data: &[u8]) -> u32 {
    crc32(data) ^ FINGERPRINT_XOR
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320), as FINGERPRINT
/// uses it. A 256-entry table built at compile time.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |c, b| {
        TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// The long-term credential key: MD5(username ":" realm ":" password).
/// The password must already be SASLprep'd by the caller.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::Digest;
    let mut h = md5::Md5::new();
    for (i, part) in [username, realm, password].iter().enumerate() {
        if i > 0 {
            h.update(b":");
        }
        h.update(part.as_bytes());
    }
    h.finalize().into()
}
