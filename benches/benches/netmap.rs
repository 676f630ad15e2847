//! Control-plane costs at scale: what the controller spends building and
//! encoding a full network map for one connecting node, and a delta after
//! one change, for networks of 1k, 10k and 100k nodes; and what a node
//! spends applying a full map of that size.

use std::collections::BTreeMap;
use std::hint::black_box;

use agent::mesh::Mesh;
use controller::netmap::{delta, full_map, ChangeLog};
use controller::records::NodeRecord;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proto_control::messages::{split_map_update, Endpoint};

fn nodes(n: u64) -> BTreeMap<u64, NodeRecord> {
    (1..=n)
        .map(|id| {
            let node = NodeRecord {
                id,
                name: format!("node-{id}"),
                machine_key: vec![1; 32],
                node_key: (0..32).map(|i| (id as u8).wrapping_add(i)).collect(),
                address: 0x6440_0000 + id as u32,
                tags: vec!["tag:server".into()],
                endpoints: vec![Endpoint::from(std::net::SocketAddr::from((
                    (id as u32 + 0x0a00_0000).to_be_bytes(),
                    41641,
                )))],
                created_unix: 1_800_000_000,
                auth_key_id: 1,
                nat: 2,
            };
            (id, node)
        })
        .collect()
}

fn netmap(c: &mut Criterion) {
    let mut group = c.benchmark_group("netmap");
    group.sample_size(10);
    for n in [1_000u64, 10_000, 100_000] {
        let table = nodes(n);
        group.bench_with_input(BenchmarkId::new("full_map_encoded", n), &table, |b, t| {
            b.iter(|| split_map_update(full_map(black_box(t), 1, 7)))
        });
        let mut log = ChangeLog::new(6);
        log.record(7, n / 2);
        group.bench_with_input(
            BenchmarkId::new("delta_one_change_encoded", n),
            &table,
            |b, t| b.iter(|| split_map_update(delta(black_box(t), &log, 1, 6, 7).expect("delta"))),
        );
        let map = full_map(&table, 1, 7);
        group.bench_with_input(
            BenchmarkId::new("node_applies_full_map", n),
            &map,
            |b, m| {
                b.iter(|| {
                    let mut mesh = Mesh::default();
                    mesh.apply(black_box(m)).expect("apply").0.len()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, netmap);
criterion_main!(benches);
