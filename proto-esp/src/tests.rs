//! Known answers from strongSwan and round trips through every transform.

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
