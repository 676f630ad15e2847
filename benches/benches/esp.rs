//! ESP per packet: seal and open at 64 and 1420 bytes for each transform,
//! next to the raw AEAD pass they cost (one ChaCha20-Poly1305 seal of the
//! same length) so the framing overhead is visible.

use std::hint::black_box;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use proto_esp::{Cipher, InboundSa, Integ, OutboundSa};

/// A transform's name and how to key it.
type Transform = (&'static str, fn() -> Cipher);

fn transforms() -> Vec<Transform> {
    vec![
        ("aes128gcm16", || Cipher::aes_gcm(&[1; 20]).expect("key")),
        ("aes256gcm16", || Cipher::aes_gcm(&[2; 36]).expect("key")),
        ("chacha20poly1305", || {
            Cipher::chacha20_poly1305(&[3; 36]).expect("key")
        }),
        ("aes256cbc-sha256", || {
            Cipher::aes_cbc(&[4; 32], Integ::HmacSha256, &[5; 32]).expect("key")
        }),
    ]
}

fn esp(c: &mut Criterion) {
    let mut group = c.benchmark_group("esp");
    for len in [64usize, 1420] {
        group.throughput(Throughput::Bytes(len as u64));
        let raw = ChaCha20Poly1305::new(&[9u8; 32].into());
        let mut buf = vec![0u8; len];
        group.bench_with_input(
            BenchmarkId::new("raw-chacha20poly1305-seal", len),
            &len,
            |b, _| {
                b.iter(|| {
                    raw.encrypt_in_place_detached(&[0u8; 12].into(), b"", black_box(&mut buf))
                        .expect("seal")
                })
            },
        );
        for (name, make) in transforms() {
            let mut out = OutboundSa::new(1, make(), true);
            let mut packet = vec![0u8; out.sealed_len(len)];
            group.bench_with_input(
                BenchmarkId::new(format!("{name}-seal"), len),
                &len,
                |b, &len| b.iter(|| out.seal(black_box(&mut packet), len, 4).expect("seal")),
            );
            // Each open needs a fresh packet (a replay is refused before any
            // crypto): sealed in the untimed setup.
            let mut sealer = OutboundSa::new(2, make(), true);
            let mut inbound = InboundSa::new(2, make(), true, 1024);
            group.bench_with_input(
                BenchmarkId::new(format!("{name}-open"), len),
                &len,
                |b, &len| {
                    b.iter_batched_ref(
                        || {
                            let mut p = vec![0u8; sealer.sealed_len(len)];
                            sealer.seal(&mut p, len, 4).expect("seal");
                            p
                        },
                        |p| inbound.open(black_box(p)).expect("open"),
                        BatchSize::SmallInput,
                    )
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, esp);
criterion_main!(benches);
