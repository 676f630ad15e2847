//! Data path and handshake costs, each next to its limit: the bare
//! ChaCha20-Poly1305 seal of the same number of bytes.

use std::hint::black_box;

use benches::{established, open, packet_in_buffer, seal, Established};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use proto_wg::harness::Pair;

const SIZES: [usize; 2] = [64, 1420];

fn encapsulate(c: &mut Criterion) {
    for len in SIZES {
        let mut g = c.benchmark_group(format!("encapsulate/{len}"));
        g.throughput(Throughput::Bytes(len as u64));
        let Established { mut a, now, .. } = established();
        let template = packet_in_buffer(len);
        let mut buf = template.clone();
        g.bench_function("proto-wg", |b| {
            b.iter(|| {
                buf[..].copy_from_slice(&template);
                black_box(seal(&mut a, now, &mut buf, len))
            })
        });
        let cipher = ChaCha20Poly1305::new(&[7u8; 32].into());
        let mut raw = vec![0xa5u8; len];
        let mut counter = 0u64;
        g.bench_function("raw-chacha20poly1305-seal", |b| {
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                black_box(
                    cipher
                        .encrypt_in_place_detached(&nonce.into(), &[], &mut raw)
                        .ok(),
                )
            })
        });
        #[cfg(feature = "ring")]
        {
            use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
            let key =
                LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).expect("key"));
            g.bench_function("ring-chacha20poly1305-seal", |b| {
                b.iter(|| {
                    counter += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&counter.to_le_bytes());
                    let n = Nonce::assume_unique_for_key(nonce);
                    black_box(
                        key.seal_in_place_separate_tag(n, Aad::empty(), &mut raw)
                            .ok(),
                    )
                })
            });
        }
        g.finish();
    }
}

fn decapsulate(c: &mut Criterion) {
    for len in SIZES {
        let mut g = c.benchmark_group(format!("decapsulate/{len}"));
        g.throughput(Throughput::Bytes(len as u64));
        let Established {
            mut a,
            mut b,
            a_addr,
            now,
        } = established();
        let template = packet_in_buffer(len);
        g.bench_function("proto-wg", |bencher| {
            // Each iteration needs a fresh counter: sealing is set-up, not measured.
            bencher.iter_batched_ref(
                || {
                    let mut buf = template.clone();
                    let n = seal(&mut a, now, &mut buf, len);
                    buf.truncate(n);
                    buf
                },
                |datagram| black_box(open(&mut b, now, a_addr, datagram)),
                BatchSize::SmallInput,
            )
        });
        let cipher = ChaCha20Poly1305::new(&[7u8; 32].into());
        let mut raw = vec![0xa5u8; len];
        g.bench_function("raw-chacha20poly1305-seal", |b| {
            b.iter(|| {
                black_box(
                    cipher
                        .encrypt_in_place_detached(&[0u8; 12].into(), &[], &mut raw)
                        .ok(),
                )
            })
        });
        g.finish();
    }
}

fn handshake(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.bench_function("initiation+response+confirm", |b| {
        let mut seed = 0;
        b.iter_batched(
            || {
                seed += 1;
                Pair::new(seed)
            },
            |mut pair| {
                let _ = pair.send(0, b"x");
                pair.pump();
                assert_eq!(pair.nodes[1].delivered.len(), 1);
                pair
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, encapsulate, decapsulate, handshake);
criterion_main!(benches);
