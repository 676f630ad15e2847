//! Pre-auth keys as users see them: `cvlan-auth-<id>-<secret>`, with the
//! id in 16 hex digits (to find the record) and a 32-byte secret in hex.
//! The controller stores only BLAKE2s(secret) and compares hashes in
//! constant time, so its database alone does not let anyone join.

use blake2::{Blake2s256, Digest};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

const PREFIX: &str = "cvlan-auth-";

/// A key split into its parts, from the string a node presents.
#[derive(Debug)]
pub struct PresentedKey {
    pub id: u64,
    secret: Zeroizing<[u8; 32]>,
}

impl PresentedKey {
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.trim().strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('-')?;
        if id.len() != 16 || secret.len() != 64 {
            return None;
        }
        let id = u64::from_str_radix(id, 16).ok()?;
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(secret, &mut *bytes).ok()?;
        Some(Self { id, secret: bytes })
    }

    /// Whether this key's secret hashes to `stored`, in constant time.
    pub fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(hash(&self.secret).ct_eq(stored))
    }
}

pub fn hash(secret: &[u8; 32]) -> [u8; 32] {
    Blake2s256::digest(secret).into()
}

/// The string shown once at creation.
pub fn format(id: u64, secret: &[u8; 32]) -> Zeroizing<String> {
    Zeroizing::new(format!("{PREFIX}{id:016x}-{}", hex::encode(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_only_the_right_secret_matches() {
        let secret = [9u8; 32];
        let text = format(0x1234, &secret);
        let key = PresentedKey::parse(&text).unwrap();
        assert_eq!(key.id, 0x1234);
        assert!(key.matches(&hash(&secret)));
        assert!(!key.matches(&hash(&[8u8; 32])));
        assert!(!key.matches(&[]));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "cvlan-auth-",
            "cvlan-auth-0000000000001234",
            "cvlan-auth-1234-00",
            "tskey-0000000000001234-0000000000000000000000000000000000000000000000000000000000000000",
            "cvlan-auth-000000000000123g-0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(PresentedKey::parse(bad).is_none(), "{bad}");
        }
    }
}
