//! Known answers from strongSwan and RFC 7634, and round trips through
//! every transform.

use crate::cipher::{Cipher, Integ};
use crate::sa::{EspError, InboundSa, OutboundSa, NEXT_HEADER_DUMMY, NEXT_HEADER_IPV4};

const CAPTURED: &str = include_str!("../tests/data/strongswan-esp.txt");

fn ipv4_checksum_ok(h: &[u8]) -> bool {
    let ihl = usize::from(h[0] & 15) * 4;
    let mut sum: u32 = h[..ihl]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

#[test]
fn packets_sealed_by_strongswan_open_to_the_pings_it_carried() {
    let mut opened = 0;
    for line in CAPTURED.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let spi = u32::from_str_radix(f[1], 16).unwrap();
        let enc = hex::decode(f[2]).unwrap();
        let cipher = match f[0] {
            "aes-gcm-16" => Cipher::aes_gcm(&enc).unwrap(),
            "aes-cbc" => {
                Cipher::aes_cbc(&enc, Integ::HmacSha256, &hex::decode(f[3]).unwrap()).unwrap()
            }
            other => panic!("{other}"),
        };
        let mut packet = hex::decode(f[4]).unwrap();
        let mut sa = InboundSa::new(spi, cipher, false, 1024);
        let o = sa
            .open(&mut packet)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(o.next_header, NEXT_HEADER_IPV4);
        let inner = &packet[o.payload.clone()];
        assert_eq!(inner[0] >> 4, 4, "IPv4 inside");
        assert_eq!(
            usize::from(u16::from_be_bytes([inner[2], inner[3]])),
            inner.len(),
            "total length matches"
        );
        assert_eq!(inner[9], 1, "ICMP, as the lab pinged");
        assert!(ipv4_checksum_ok(inner), "inner header checksum");
        // The same packet again is a replay; a flipped bit fails integrity.
        let mut again = hex::decode(f[4]).unwrap();
        assert_eq!(sa.open(&mut again), Err(EspError::Replayed));
        let mut sa2 = InboundSa::new(spi, Cipher::aes_gcm(&[0; 36]).unwrap(), false, 1024);
        let mut tampered = hex::decode(f[4]).unwrap();
        assert_eq!(sa2.open(&mut tampered), Err(EspError::Integrity));
        opened += 1;
    }
    assert_eq!(
        opened, 18,
        "6 AES-GCM (PSK), 6 AES-GCM (certificates), 6 AES-CBC"
    );
}

/// A transform's name and a way to make its cipher (both ends need one).
type NamedCipher = (&'static str, Box<dyn Fn() -> Cipher>);

fn ciphers() -> Vec<NamedCipher> {
    vec![
        (
            "AES-128-GCM",
            Box::new(|| Cipher::aes_gcm(&[1; 20]).unwrap()),
        ),
        (
            "AES-256-GCM",
            Box::new(|| Cipher::aes_gcm(&[2; 36]).unwrap()),
        ),
        (
            "ChaCha20-Poly1305",
            Box::new(|| Cipher::chacha20_poly1305(&[3; 36]).unwrap()),
        ),
        (
            "AES-128-CBC/SHA-256",
            Box::new(|| Cipher::aes_cbc(&[4; 16], Integ::HmacSha256, &[5; 32]).unwrap()),
        ),
        (
            "AES-256-CBC/SHA-384",
            Box::new(|| Cipher::aes_cbc(&[6; 32], Integ::HmacSha384, &[7; 48]).unwrap()),
        ),
        (
            "AES-256-CBC/SHA-512",
            Box::new(|| Cipher::aes_cbc(&[8; 32], Integ::HmacSha512, &[9; 64]).unwrap()),
        ),
    ]
}

#[test]
fn every_transform_round_trips_with_and_without_esn_and_rejects_tampering() {
    for (name, make) in ciphers() {
        for esn in [false, true] {
            let mut out = OutboundSa::new(0x1234, make(), esn);
            let mut inb = InboundSa::new(0x1234, make(), esn, 1024);
            for len in [0usize, 1, 20, 63, 64, 1400] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut buf = vec![0u8; out.sealed_len(len)];
                let hr = out.headroom();
                buf[hr..hr + len].copy_from_slice(&payload);
                let n = out.seal(&mut buf, len, NEXT_HEADER_IPV4).unwrap();
                assert_eq!(n, buf.len());
                if len > 0 {
                    let shown = len.min(16);
                    assert_ne!(&buf[hr..hr + shown], &payload[..shown], "{name}: encrypted");
                }
                let mut copy = buf.clone();
                let o = inb
                    .open(&mut buf)
                    .unwrap_or_else(|e| panic!("{name} esn={esn} len={len}: {e}"));
                assert_eq!(&buf[o.payload.clone()], payload.as_slice(), "{name}");
                assert_eq!(o.next_header, NEXT_HEADER_IPV4);
                assert_eq!(
                    inb.open(&mut copy.clone()),
                    Err(EspError::Replayed),
                    "{name}"
                );
                let last = copy.len() - 1;
                copy[last] ^= 1;
                copy[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
                assert_eq!(
                    inb.open(&mut copy),
                    Err(EspError::Integrity),
                    "{name}: tampered"
                );
            }
        }
    }
}

#[test]
fn esn_high_bits_are_authenticated_but_not_sent() {
    for (name, make) in ciphers() {
        let mut out = OutboundSa::new(7, make(), true);
        out.set_next_seq((5u64 << 32) | 10);
        let mut inb = InboundSa::new(7, make(), true, 128);
        let mut buf = vec![0u8; out.sealed_len(10)];
        out.seal(&mut buf, 10, NEXT_HEADER_IPV4).unwrap();
        assert_eq!(
            &buf[4..8],
            &10u32.to_be_bytes(),
            "{name}: only the low half travels"
        );
        // A receiver that believes the high half is 0 cannot authenticate it.
        assert_eq!(
            inb.open(&mut buf.clone()),
            Err(EspError::Integrity),
            "{name}"
        );
    }
}

#[test]
fn sequence_numbers_run_out_without_esn_and_dummies_are_reported() {
    let mut out = OutboundSa::new(9, Cipher::aes_gcm(&[1; 20]).unwrap(), false);
    out.set_next_seq(u64::from(u32::MAX));
    let mut buf = vec![0u8; 64];
    assert!(out.seal(&mut buf, 0, NEXT_HEADER_DUMMY).is_ok());
    assert_eq!(
        out.seal(&mut buf, 0, NEXT_HEADER_IPV4),
        Err(EspError::SeqExhausted)
    );

    let mut out = OutboundSa::new(9, Cipher::aes_gcm(&[1; 20]).unwrap(), false);
    let mut inb = InboundSa::new(9, Cipher::aes_gcm(&[1; 20]).unwrap(), false, 64);
    let n = out.seal(&mut buf, 0, NEXT_HEADER_DUMMY).unwrap();
    let o = inb.open(&mut buf[..n]).unwrap();
    assert_eq!((o.next_header, o.payload.len()), (NEXT_HEADER_DUMMY, 0));
}

#[test]
fn malformed_packets_are_typed_errors() {
    let mut inb = InboundSa::new(9, Cipher::aes_gcm(&[1; 20]).unwrap(), false, 64);
    assert_eq!(inb.open(&mut []), Err(EspError::TooShort));
    assert_eq!(inb.open(&mut [0u8; 20]), Err(EspError::TooShort));
    let mut p = [0u8; 40];
    p[3] = 8;
    assert_eq!(inb.open(&mut p), Err(EspError::WrongSpi(8)));
    p[3] = 9;
    assert_eq!(inb.open(&mut p), Err(EspError::TooOld), "sequence 0");
    p[7] = 1;
    assert_eq!(inb.open(&mut p), Err(EspError::Integrity));
    assert!(Cipher::aes_gcm(&[0; 16]).is_err());
    assert!(Cipher::chacha20_poly1305(&[0; 32]).is_err());
    assert!(Cipher::aes_cbc(&[0; 24], Integ::HmacSha256, &[0; 32]).is_err());
    assert!(Cipher::aes_cbc(&[0; 16], Integ::HmacSha256, &[0; 31]).is_err());
}

/// RFC 7634 Appendix A: the ESP example (ChaCha20-Poly1305, SPI
/// 0x01020304, sequence number 5) opens to the ICMP echo it carries.
#[test]
fn rfc7634_appendix_a_esp_example() {
    let h = |s: &str| hex::decode(s.split_whitespace().collect::<String>()).unwrap();
    let keymat: Vec<u8> = (0x80u8..=0xa3).collect();
    let mut sa = InboundSa::new(
        0x0102_0304,
        Cipher::chacha20_poly1305(&keymat).unwrap(),
        false,
        1024,
    );
    let mut packet = h("01 02 03 04 00 00 00 05");
    packet.extend(h(
        "10 11 12 13 14 15 16 17 24 03 94 28 b9 7f 41 7e 3c 13 75 3a
         4f 05 08 7b 67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef 40 7a e5 c6
         14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7 2a a7 1e 7c
         4c 4f 64 c9 be fe 2f ac c6 38 e8 f3 cb ec 16 3f ac 46 9b 50
         27 73 f6 fb 94 e6 64 da 91 65 b8 28 29 f6 41 e0 76 aa a8 26
         6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43",
    ));
    let mut tampered = packet.clone();
    tampered[20] ^= 1;
    let opened = sa.open(&mut packet).unwrap();
    assert_eq!(opened.seq, 5);
    assert_eq!(opened.next_header, NEXT_HEADER_IPV4);
    assert_eq!(
        &packet[opened.payload],
        &h(
            "45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05 c0 00 02 05 08 00 5b 7a
            3a 08 00 00 55 3b ec 10 00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13
            14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21 22 23 24 25 26 27 28 29 2a 2b
            2c 2d 2e 2f 30 31 32 33 34 35 36 37"
        )[..]
    );
    let mut fresh = InboundSa::new(
        0x0102_0304,
        Cipher::chacha20_poly1305(&keymat).unwrap(),
        false,
        1024,
    );
    assert!(fresh.open(&mut tampered).is_err());
}

/// Every cipher an SA can hold wipes its key when the SA is dropped: a
/// build without the crates' `zeroize` features does not compile this.
#[test]
fn every_cipher_wipes_its_keys_on_drop() {
    fn wipes<T: zeroize::ZeroizeOnDrop>() {}
    wipes::<aes::Aes128>();
    wipes::<aes::Aes256>();
    wipes::<chacha20poly1305::ChaCha20Poly1305>();
    wipes::<cbc::Encryptor<aes::Aes256>>();
    wipes::<cbc::Decryptor<aes::Aes256>>();
}
