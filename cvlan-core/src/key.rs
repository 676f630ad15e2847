//! 32-byte keys (X25519 public keys, WireGuard and Noise static keys) and
//! their text forms: 64 hex digits (our configuration and logs) or 44
//! characters of base64 (WireGuard's own tools).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("a key is 64 hex digits (or 44 characters of base64)")]
    Text,
}

/// A public 32-byte key. `Display` is hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key32(pub [u8; 32]);

fn decode_into(text: &str, out: &mut [u8; 32]) -> Result<(), KeyError> {
    let text = text.trim();
    match text.len() {
        64 => hex::decode_to_slice(text, out).map_err(|_| KeyError::Text),
        44 => {
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| KeyError::Text)?,
            );
            let b: &[u8; 32] = bytes[..].try_into().map_err(|_| KeyError::Text)?;
            out.copy_from_slice(b);
            Ok(())
        }
        _ => Err(KeyError::Text),
    }
}

impl Key32 {
    /// 64 hex digits or 44 characters of base64 (surrounding blanks are
    /// ignored).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut k = [0u8; 32];
        decode_into(text, &mut k)?;
        Ok(Self(k))
    }

    /// From wire bytes: exactly 32 of them.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

/// A private 32-byte key from its text form, into memory wiped on drop.
pub fn parse_secret(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut k = Zeroizing::new([0u8; 32]);
    decode_into(text, &mut k)?;
    Ok(k)
}

impl FromStr for Key32 {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
    }
}

impl fmt::Display for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key32({}..)", &self.to_hex()[..8])
    }
}

impl From<[u8; 32]> for Key32 {
    fn from(k: [u8; 32]) -> Self {
        Self(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_and_write_both_text_forms() {
        let k = Key32([0xab; 32]);
        assert_eq!(Key32::parse(&k.to_hex()), Ok(k));
        assert_eq!(Key32::parse(&format!(" {}\n", k.to_base64())), Ok(k));
        assert_eq!(k.to_base64().len(), 44);
        assert_eq!(Key32::parse("00"), Err(KeyError::Text));
        assert_eq!(Key32::parse(&"zz".repeat(32)), Err(KeyError::Text));
        // 44 characters that are base64 of 33 bytes are not a key.
        assert_eq!(Key32::parse(&"A".repeat(44)), Err(KeyError::Text));
        assert_eq!(*parse_secret(&"01".repeat(32)).unwrap(), [1u8; 32]);
        assert_eq!(Key32::from_slice(&[1; 31]), None);
        assert_eq!(format!("{k:?}"), "Key32(abababab..)");
    }
}
