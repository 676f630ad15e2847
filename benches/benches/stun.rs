//! STUN codec costs: a Binding request and a success response, each built
//! and parsed (with FINGERPRINT, as agents send them), and the server's
//! whole answer.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use stun::server::answer;
use stun::wire::METHOD_BINDING;
use stun::{Class, Message, MessageBuilder, TransactionId};

fn codec(c: &mut Criterion) {
    let id = TransactionId([9; 12]);
    let from: SocketAddr = "203.0.113.7:41641".parse().expect("addr");
    let mut g = c.benchmark_group("stun");
    let mut buf = [0u8; 128];
    g.bench_function("encode-binding-request", |b| {
        b.iter(|| {
            let mut m =
                MessageBuilder::new(&mut buf, Class::Request, METHOD_BINDING, id).expect("builder");
            m.fingerprint().expect("fp");
            black_box(m.finish())
        })
    });
    let mut req = [0u8; 128];
    let n = {
        let mut m =
            MessageBuilder::new(&mut req, Class::Request, METHOD_BINDING, id).expect("builder");
        m.fingerprint().expect("fp");
        m.finish()
    };
    let req = &req[..n];
    g.bench_function("decode-binding-request", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(req)).expect("parse");
            black_box(m.check_fingerprint().is_ok())
        })
    });
    g.bench_function("encode-binding-response", |b| {
        b.iter(|| {
            let mut m = MessageBuilder::new(&mut buf, Class::SuccessResponse, METHOD_BINDING, id)
                .expect("builder");
            m.xor_mapped_address(from).expect("xma");
            m.fingerprint().expect("fp");
            black_box(m.finish())
        })
    });
    let mut resp = [0u8; 128];
    let Ok(stun::server::Answer::Reply(rn)) = Ok::<_, ()>(answer(req, from, &mut resp)) else {
        panic!("answer")
    };
    let resp = &resp[..rn];
    g.bench_function("decode-binding-response", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(resp)).expect("parse");
            black_box((m.xor_mapped_address().ok(), m.check_fingerprint().is_ok()))
        })
    });
    let mut out = [0u8; 128];
    g.bench_function("server-answer", |b| {
        b.iter(|| black_box(answer(black_box(req), from, &mut out)))
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
