//! ESP decapsulation fed arbitrary packets for every transform, with and
//! without extended sequence numbers: typed errors only, and nothing
//! that is not sealed under the SA's key ever opens.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_esp::{Cipher, InboundSa, Integ};

fuzz_target!(|data: &[u8]| {
    let ciphers = [
        Cipher::aes_gcm(&[1; 20]).expect("key"),
        Cipher::aes_gcm(&[2; 36]).expect("key"),
        Cipher::chacha20_poly1305(&[3; 36]).expect("key"),
        Cipher::aes_cbc(&[4; 16], Integ::HmacSha256, &[5; 32]).expect("key"),
        Cipher::aes_cbc(&[6; 32], Integ::HmacSha512, &[7; 64]).expect("key"),
    ];
    for (i, cipher) in ciphers.into_iter().enumerate() {
        let spi = data
            .get(..4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let mut sa = InboundSa::new(spi, cipher, i % 2 == 0, 1024);
        let mut packet = data.to_vec();
        assert!(sa.open(&mut packet).is_err(), "a forged packet opened");
    }
});
