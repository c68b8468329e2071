//! The memory an idle established session costs a node, heap included.
//!
//! A counting global allocator measures the live heap of one responder node before and after
//! N peers have connected to it and gone idle; the difference divided by N is the cost of one
//! idle session (its table entry, indices, timer, keys, replay window). Only allocations made
//! while the server node runs are counted (the peers' own allocations are not). Allocations made
//! in C (aws-lc's key contexts) do not go through Rust's allocator and are reported separately.
//!
//! `cargo bench -p proto-core --features aws-lc --bench session_size`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use proto_core::crypto::SharedProvider;
use proto_core::{Config, Event, Identity, Instant, Node, Seed};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Set while the measured node runs.
    static ON: Cell<bool> = const { Cell::new(false) };
}

fn count(delta: isize) {
    if ON.with(Cell::get) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Runs `f` with the allocations it makes counted.
fn counted<T>(f: impl FnOnce() -> T) -> T {
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    r
}

// SAFETY: forwards to the system allocator and only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NOW: Instant = Instant::from_millis(1);

fn config(seed: u64, provider: &SharedProvider) -> Config {
    let mut c = Config::new(Seed::from_u64(seed)).with_provider(provider.clone());
    c.strict_drain = false;
    c.binding_cache = 0;
    c.handshake_burst_per_source = u32::MAX;
    c
}

/// Live heap bytes of `server` per idle session, with `n` peers connected.
fn per_session(provider: &SharedProvider, n: usize) -> isize {
    let server_addr = SocketAddr::from(([10, 0, 0, 1], 1));
    let mut buf = vec![0u8; 1500];
    let mut peers: Vec<Node> = (0..n)
        .map(|i| {
            Node::new(
                config(1000 + i as u64, provider),
                Identity::from_seed(&Seed::from_u64(5000 + i as u64)),
                NOW,
            )
            .unwrap()
        })
        .collect();
    let mut server = Node::new(
        config(1, provider),
        Identity::from_seed(&Seed::from_u64(2)),
        NOW,
    )
    .unwrap();
    // Warm up the node's own buffers (scratch, queues) with one session, then measure.
    let mut connect = |server: &mut Node, peer: &mut Node, port: u16| {
        let from = SocketAddr::from(([10, 0, 1, 1], port));
        peer.connect(NOW, server_addr, server.peer_spec()).unwrap();
        loop {
            let mut moved = false;
            while let Some(t) = peer.poll_transmit(NOW, &mut buf).unwrap() {
                counted(|| server.handle_datagram(NOW, from, &buf[..t.len]).unwrap());
                moved = true;
            }
            while let Some(t) = counted(|| server.poll_transmit(NOW, &mut buf).unwrap()) {
                peer.handle_datagram(NOW, server_addr, &buf[..t.len])
                    .unwrap();
                moved = true;
            }
            while counted(|| server.poll_event()).is_some() {}
            while let Some(ev) = peer.poll_event() {
                let _: Event = ev;
            }
            if !moved {
                break;
            }
        }
    };
    let (first, rest) = peers.split_first_mut().unwrap();
    connect(&mut server, first, 1);
    let base = LIVE.load(Ordering::Relaxed);
    for (i, p) in rest.iter_mut().enumerate() {
        connect(&mut server, p, 2 + i as u16);
    }
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(server.session_count(), n);
    counted(|| drop(server));
    (after - base) / (n as isize - 1)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted or needed.
    let mut providers: Vec<SharedProvider> = vec![Arc::new(proto_core::crypto::RustCrypto)];
    #[cfg(feature = "aws-lc")]
    providers.push(Arc::new(proto_core::crypto::AwsLc));
    for p in providers {
        let bytes = per_session(&p, 201);
        let note = if p.name() == "aws-lc" {
            " (plus aws-lc's key contexts, allocated in C and invisible here: two EVP_AEAD_CTX, \
             one per direction, 584 bytes each by its header)"
        } else {
            ""
        };
        println!(
            "idle session: {bytes} bytes of Rust heap per session, provider {}{note}",
            p.name()
        );
    }
}
