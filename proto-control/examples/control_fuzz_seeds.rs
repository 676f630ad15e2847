//! Writes seed inputs for the `control_messages` fuzz target: genuine
//! encodings of each message, so the fuzzer starts from valid structure.
//! `cargo run -p proto-control --example control_fuzz_seeds -- fuzz/corpus/control_messages`

use std::net::SocketAddr;

use prost::Message;
use proto_control::http;
use proto_control::messages::*;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/control_messages".into());
    std::fs::create_dir_all(&dir)?;
    let peer = |id: u64| Peer {
        node_id: id,
        name: format!("n{id}"),
        node_key: vec![id as u8; 32],
        address: vec![100, 64, 0, id as u8],
        endpoints: vec![Endpoint::from(SocketAddr::from((
            [10, 0, 0, id as u8],
            41641,
        )))],
        tags: vec!["tag:a".into()],
        nat: 2,
    };
    let full = MapUpdate {
        version: 3,
        full: true,
        upserts: (1..4).map(peer).collect(),
        ..Default::default()
    };
    let delta = MapUpdate {
        version: 4,
        base_version: 3,
        upserts: vec![peer(9)],
        removed: vec![2],
        ..Default::default()
    };
    let mut seeds: Vec<Vec<u8>> = vec![
        ClientHello {
            protocol_version: 1,
            node_key: vec![1; 32],
            hostname: "h".into(),
            auth_key: "cvlan-auth-x".into(),
            endpoints: vec![],
            map_version: 2,
            relay_feed: false,
            nat: 0,
        }
        .encode_to_vec(),
        encode_client(ClientBody::Ping(Ping { nonce: 5 })),
        encode_server(ServerBody::Registered(Registered {
            node_id: 1,
            name: "a".into(),
            address: vec![100, 64, 0, 1],
            prefix_len: 10,
            relays: vec![RelayInfo {
                address: "10.0.0.9:8443".into(),
                public_key: vec![9; 32],
                stun: "10.0.0.9:3478".into(),
            }],
        })),
        encode_server(ServerBody::Refused(Refused {
            reason: 2,
            message: "no".into(),
        })),
        http::upgrade_request("c:7443").into_bytes(),
    ];
    // A full map then a delta, as one stream (pieces separated by 0xff).
    let mut stream = Vec::new();
    for part in split_map_update(full)
        .into_iter()
        .chain(split_map_update(delta))
    {
        stream.extend_from_slice(&part);
        stream.push(0xff);
    }
    seeds.push(stream);
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(format!("{dir}/seed-{i}"), s)?;
    }
    Ok(())
}
