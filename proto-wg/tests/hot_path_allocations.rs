//! The data path allocates nothing: a counting global allocator watches
//! 10,000 encapsulate + decapsulate round trips on caller buffers.
//!
//! Only allocations made by the measuring thread count: the test harness's
//! own threads may allocate at any moment (CI once saw 4 such allocations).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use proto_wg::harness::{ipv4_packet, Pair};
use proto_wg::{Encapsulated, Received, DATA_HEADER_LEN};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised with no destructor: reading it never allocates.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn encapsulate_and_decapsulate_do_not_allocate() {
    let mut pair = Pair::new(5);
    let _ = pair.send(0, b"handshake first");
    pair.pump();
    assert_eq!(pair.nodes[1].delivered.len(), 1);
    let now = pair.now;
    let from = pair.nodes[0].addr;
    let ip = ipv4_packet([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), &[0x5a; 1400]);
    let mut buf = vec![0u8; 2048];
    let [a, b] = &mut pair.nodes;

    MEASURING.with(|m| m.set(true));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..10_000 {
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + ip.len()].copy_from_slice(&ip);
        let Ok(Encapsulated::Send { len, .. }) = a.device.encapsulate(now, &mut buf, ip.len())
        else {
            panic!("encapsulate")
        };
        let Ok(Received::Packet { range, .. }) =
            b.device.handle_datagram(now, from, &mut buf[..len])
        else {
            panic!("decapsulate")
        };
        assert_eq!(&buf[range], &ip[..]);
    }
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
    MEASURING.with(|m| m.set(false));
    assert_eq!(allocated, 0, "the data path allocated {allocated} times");
}
