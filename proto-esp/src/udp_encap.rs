//! UDP encapsulation on port 4500 (RFC 3948): one socket carries IKE and
//! ESP. IKE messages start with four zero bytes (the non-ESP marker, never
//! a valid SPI); a single 0xff byte is a NAT keepalive; anything else is ESP.

/// What a datagram on port 4500 holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Udp4500<'a> {
    /// An IKE message (marker removed).
    Ike(&'a [u8]),
    Esp(&'a [u8]),
    Keepalive,
    Invalid,
}

pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
pub const KEEPALIVE: [u8; 1] = [0xff];

pub fn classify(payload: &[u8]) -> Udp4500<'_> {
    match payload {
        [0xff] => Udp4500::Keepalive,
        [0, 0, 0, 0, ike @ ..] if !ike.is_empty() => Udp4500::Ike(ike),
        // ESP: SPI (non-zero) and sequence number at least.
        p if p.len() >= 8 => Udp4500::Esp(p),
        _ => Udp4500::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ike_esp_and_keepalives_are_told_apart() {
        assert_eq!(classify(&[0xff]), Udp4500::Keepalive);
        assert_eq!(classify(&[0, 0, 0, 0, 1, 2]), Udp4500::Ike(&[1, 2]));
        assert_eq!(classify(&[0, 0, 0, 0]), Udp4500::Invalid);
        assert_eq!(
            classify(&[0, 0, 0, 1, 0, 0, 0, 1]),
            Udp4500::Esp(&[0, 0, 0, 1, 0, 0, 0, 1])
        );
        assert_eq!(classify(&[1, 2, 3]), Udp4500::Invalid);
        assert_eq!(classify(&[]), Udp4500::Invalid);
    }
}
