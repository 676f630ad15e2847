//! The message parser on its own: any bytes, no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(proto_wg::wire::Message::Data(h)) = proto_wg::wire::parse(data) {
        assert!(data.len() >= proto_wg::wire::DATA_MIN_LEN);
        let _ = h.counter;
    }
});
