//! TUN offload code fed arbitrary bytes: `split` (what the kernel hands
//! over) and GRO (what a peer's decrypted packets look like). No panic;
//! whatever GRO builds must split back into the packets it took.
#![no_main]
use libfuzzer_sys::fuzz_target;
use netstack::offload::{gro_build, gro_run, split, VNET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    let mut slots: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 2048]).collect();
    let mut lens = [0usize; 64];
    let _ = split(data, &mut slots, 16, &mut lens);

    // Packets: a 2-byte length before each.
    let mut packets: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && packets.len() < 64 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        packets.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let run = gro_run(&packets);
    assert!(run <= packets.len());
    if run > 1 {
        let mut out = vec![0u8; VNET_HDR_LEN + 65_536];
        let len = gro_build(&packets[..run], &mut out).expect("a run gro_run accepted must build");
        let mut again: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 2048]).collect();
        let n = split(&out[..len], &mut again, 0, &mut lens).expect("resplit");
        assert_eq!(n, run);
        for i in 0..n {
            assert_eq!(
                &again[i][..lens[i]],
                packets[i],
                "segment {i} changed by the round trip"
            );
        }
    }
});
