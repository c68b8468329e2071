//! Proves that `proto-core` works without std: a `#![no_std]` `#![no_main]` binary with its own
//! panic handler and allocator (libc's malloc), which runs a full Noise handshake between two
//! nodes and one encrypted datagram each way, and exits 0 only if everything arrived.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use proto_core::{Config, Event, Identity, Instant, Node, Seed};

#[link(name = "c")]
extern "C" {
    fn malloc(size: usize) -> *mut u8;
    fn free(ptr: *mut u8);
    fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    fn abort() -> !;
}

struct LibcAlloc;

unsafe impl GlobalAlloc for LibcAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // malloc aligns to 16 bytes; larger alignments are not needed by proto-core.
        if layout.align() > 16 {
            return core::ptr::null_mut();
        }
        malloc(layout.size().max(1))
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        free(ptr)
    }
}

#[global_allocator]
static ALLOC: LibcAlloc = LibcAlloc;

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    say("nostd-check: panic\n");
    unsafe { abort() }
}

/// The prebuilt `core` references this symbol even with `panic = "abort"`.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

fn say(s: &str) {
    unsafe {
        write(1, s.as_ptr(), s.len());
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Moves every queued datagram between the two nodes until both are quiet; returns the events.
fn pump(a: &mut Node, b: &mut Node, now: Instant) -> Option<Vec<(u8, Event)>> {
    let mut buf = vec![0u8; 1500];
    let mut events = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now, &mut buf).ok()? {
            b.handle_datagram(now, addr(1), buf.get(..t.len)?).ok()?;
            moved = true;
            while let Some(ev) = b.poll_event() {
                events.push((b'b', ev));
            }
        }
        while let Some(t) = b.poll_transmit(now, &mut buf).ok()? {
            a.handle_datagram(now, addr(2), buf.get(..t.len)?).ok()?;
            moved = true;
            while let Some(ev) = a.poll_event() {
                events.push((b'a', ev));
            }
        }
        if !moved {
            return Some(events);
        }
    }
}

fn run() -> Option<()> {
    let now = Instant::from_millis(1);
    let mut a = Node::new(
        Config::new(Seed::from_u64(1)),
        Identity::from_seed(&Seed::from_u64(101)),
        now,
    )
    .ok()?;
    let mut b = Node::new(
        Config::new(Seed::from_u64(2)),
        Identity::from_seed(&Seed::from_u64(102)),
        now,
    )
    .ok()?;
    let s = a.connect(now, addr(2), b.peer_spec()).ok()?;
    a.send_datagram(now, s, b"ping from a").ok()?;
    let events = pump(&mut a, &mut b, now)?;
    let mut b_session = None;
    let mut got_a = false;
    for (side, ev) in &events {
        match (side, ev) {
            (b'b', Event::Connected { session, .. }) => b_session = Some(*session),
            (b'b', Event::Datagram { data, .. }) => got_a = data.as_slice() == b"ping from a",
            _ => {}
        }
    }
    say("nostd-check: handshake complete\n");
    b.send_datagram(now, b_session?, b"pong from b").ok()?;
    let events = pump(&mut a, &mut b, now)?;
    let got_b = events.iter().any(|(side, ev)| {
        *side == b'a' && matches!(ev, Event::Datagram { data, .. } if data.as_slice() == b"pong from b")
    });
    (got_a && got_b).then_some(())
}

#[no_mangle]
extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    match run() {
        Some(()) => {
            say("nostd-check: encrypted exchange ok (no_std + alloc)\n");
            0
        }
        None => {
            say("nostd-check: FAILED\n");
            1
        }
    }
}
