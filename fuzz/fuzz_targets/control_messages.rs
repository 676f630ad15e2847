//! Every decoder a control message passes through, on both sides, fed
//! arbitrary bytes: protobuf decoding of what a node sends (hello and
//! messages) and of what a controller sends, map reassembly, the node's
//! map application, and the HTTP head parser. No panic; typed errors only.
#![no_main]
use agent::mesh::Mesh;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto_control::http;
use proto_control::messages::{
    decode_client, decode_server, ClientHello, MapAssembler, ServerBody,
};

fuzz_target!(|data: &[u8]| {
    let _ = ClientHello::decode(data);
    let _ = decode_client(data);
    let _ = http::parse(data);
    let _ = http::head_end(data);

    // A node receiving a stream of messages: split the input on 0xff and
    // treat each piece as one channel message.
    let mut assembler = MapAssembler::default();
    let mut mesh = Mesh::default();
    for piece in data.split(|&b| b == 0xff) {
        if let Ok(ServerBody::Map(part)) = decode_server(piece) {
            match assembler.push(part) {
                Ok(Some(update)) => {
                    if let Ok((changes, _)) = mesh.apply(&update) {
                        let _ = agent::mesh::peer_changes(&changes);
                    }
                }
                Ok(None) => {}
                Err(_) => assembler = MapAssembler::default(),
            }
        }
    }
});
