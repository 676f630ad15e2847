//! Stateless cookies (RFC 7296 §2.6): what a responder under load sends
//! back instead of keeping state, and checks when the initiator returns.
//!
//! Cookie = version | HMAC-SHA-256(secret, Ni | IPi | SPIi), truncated to
//! 16 bytes: the construction the RFC suggests, keyed instead of hashed.
//! The secret changes every so often; a cookie made under the previous
//! one still verifies, so none is refused just after a change.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const COOKIE_LEN: usize = 17;

/// The current cookie secret, the previous one, and which is which.
pub struct CookieJar {
    current: Zeroizing<[u8; 32]>,
    previous: Zeroizing<[u8; 32]>,
    version: u8,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// `secret` must be random (from the endpoint's seeded CSPRNG).
    pub fn new(secret: Zeroizing<[u8; 32]>) -> Self {
        Self {
            previous: secret.clone(),
            current: secret,
            version: 0,
        }
    }

    /// The cookie for an initiator's nonce, address and SPI, now.
    pub fn make(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> [u8; COOKIE_LEN] {
        cookie(&self.current, self.version, ni, ip, spi_i)
    }

    /// Whether `data` is a cookie we made, under this secret or the last.
    pub fn verify(&self, data: &[u8], ni: &[u8], ip: IpAddr, spi_i: u64) -> bool {
        let Some(&version) = data.first() else {
            return false;
        };
        let secret = if version == self.version {
            &self.current
        } else if version == self.version.wrapping_sub(1) {
            &self.previous
        } else {
            return false;
        };
        let want = cookie(secret, version, ni, ip, spi_i);
        data.len() == want.len() && bool::from(data.ct_eq(&want))
    }

    /// A new secret; the current one becomes the previous.
    pub fn rotate(&mut self, fresh: Zeroizing<[u8; 32]>) {
        self.previous = std::mem::replace(&mut self.current, fresh);
        self.version = self.version.wrapping_add(1);
    }
}

fn cookie(secret: &[u8; 32], version: u8, ni: &[u8], ip: IpAddr, spi_i: u64) -> [u8; COOKIE_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(ni);
    match ip {
        IpAddr::V4(a) => m.update(&a.octets()),
        IpAddr::V6(a) => m.update(&a.octets()),
    }
    m.update(&spi_i.to_be_bytes());
    let tag = m.finalize().into_bytes();
    let mut out = [0u8; COOKIE_LEN];
    out[0] = version;
    out[1..].copy_from_slice(&tag[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_verifies_for_its_own_initiator_across_one_rotation_only() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut jar = CookieJar::new(Zeroizing::new([1; 32]));
        let c = jar.make(b"nonce", ip, 7);
        assert!(jar.verify(&c, b"nonce", ip, 7));
        assert!(!jar.verify(&c, b"other", ip, 7), "another nonce");
        assert!(
            !jar.verify(&c, b"nonce", "192.0.2.2".parse().unwrap(), 7),
            "another address"
        );
        assert!(!jar.verify(&c, b"nonce", ip, 8), "another SPI");
        assert!(!jar.verify(&c[..16], b"nonce", ip, 7), "truncated");
        jar.rotate(Zeroizing::new([2; 32]));
        assert!(
            jar.verify(&c, b"nonce", ip, 7),
            "the previous secret still counts"
        );
        assert_ne!(jar.make(b"nonce", ip, 7), c);
        jar.rotate(Zeroizing::new([3; 32]));
        assert!(
            !jar.verify(&c, b"nonce", ip, 7),
            "two rotations ago: refused"
        );
    }
}
