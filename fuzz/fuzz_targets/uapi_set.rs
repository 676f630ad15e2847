//! The UAPI `set` parser fed arbitrary text. No panic; errors are errnos.
#![no_main]
use std::time::{Duration, Instant};

use wg_device::uapi::{self, Sockets, UapiError};
use libfuzzer_sys::fuzz_target;
use proto_wg::Device;

struct NoSockets(Option<u16>, u32);

impl Sockets for NoSockets {
    fn listen_port(&self) -> Option<u16> {
        self.0
    }
    fn set_listen_port(&mut self, port: u16) -> Result<(), UapiError> {
        self.0 = Some(port);
        Ok(())
    }
    fn fwmark(&self) -> u32 {
        self.1
    }
    fn set_fwmark(&mut self, mark: u32) -> Result<(), UapiError> {
        self.1 = mark;
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    let mut device = Device::new([0; 32], now, Duration::ZERO);
    let mut sockets = NoSockets(None, 0);
    if let Err(e) = uapi::set(&mut device, &mut sockets, now, text.lines()) {
        assert!(e.errno() < 0);
    }
    let _ = uapi::get(&device, &sockets);
});
