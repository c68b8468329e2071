//! The memory an idle established session costs a node, heap included.
//!
//! One responder node accepts IK sessions from N peer nodes (one session each), which then go
//! idle. The live heap of the responder is measured after its first session (which also sizes
//! the node's reusable buffers) and after all N; the difference divided by N - 1 is the cost of
//! one idle session: its table entry, its indices and timer, both directions' packet keys and
//! the replay window. Only what the responder allocates and frees is counted (its calls run
//! with counting switched on; the peers' run with it off). The binding cache is off, so that
//! remembered peer signatures (a node-wide cache, not session state) are not counted.
//!
//! Two meters:
//! - a counting Rust global allocator: the bytes Rust code asked for. It cannot see memory that
//!   C code allocates with `malloc` directly, which is what aws-lc does for its key contexts;
//! - glibc's `mallinfo2`: bytes in use in malloc's heap, C allocations and malloc's own chunk
//!   headers and rounding included. So that it is exact, the binary re-runs itself with the
//!   per-thread cache disabled (`GLIBC_TUNABLES=glibc.malloc.tcache_count=0`): chunks parked
//!   in that cache would otherwise still look allocated.
//!
//! `cargo bench -p proto-core --features aws-lc --bench session_size`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use proto_core::crypto::SharedProvider;
use proto_core::{Config, Identity, Instant, Node, Seed};

/// Peers connected to the measured node (`cargo bench`); a quick run otherwise (`cargo test`
/// runs bench targets without `--bench`, in a debug build).
const N: usize = 1000;
const N_QUICK: usize = 20;

const TUNABLES: &str = "glibc.malloc.tcache_count=0";

struct Counting;

/// Bytes the measured node's Rust code holds (allocated minus freed while counting was on).
static RUST_LIVE: AtomicIsize = AtomicIsize::new(0);
/// Change of malloc's in-use bytes over the measured node's calls.
static MALLOC_LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Set while the measured node runs.
    static ON: Cell<bool> = const { Cell::new(false) };
}

fn count(delta: isize) {
    if ON.with(Cell::get) {
        RUST_LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged and only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// glibc's `struct mallinfo2` (glibc 2.33 and later).
#[repr(C)]
#[derive(Default)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

#[allow(unsafe_code)]
extern "C" {
    fn mallinfo2() -> MallInfo2;
}

/// Bytes in use in malloc's heap: ordinary chunks plus mmapped ones.
fn malloc_in_use() -> isize {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's statistics.
    #[allow(unsafe_code)]
    let m = unsafe { mallinfo2() };
    (m.uordblks + m.hblkhd) as isize
}

/// Runs `f` (a call into the measured node) with both meters on.
fn counted<T>(f: impl FnOnce() -> T) -> T {
    let before = malloc_in_use();
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    MALLOC_LIVE.fetch_add(malloc_in_use() - before, Ordering::Relaxed);
    r
}

fn meters() -> (isize, isize) {
    (
        RUST_LIVE.load(Ordering::Relaxed),
        MALLOC_LIVE.load(Ordering::Relaxed),
    )
}

const NOW: Instant = Instant::from_millis(1);

fn config(seed: u64, provider: &SharedProvider) -> Config {
    let mut c = Config::new(Seed::from_u64(seed)).with_provider(provider.clone());
    c.binding_cache = 0;
    // All peers share one IP address (so the per-source limiter holds one entry, not N).
    c.handshake_burst_per_source = u32::MAX;
    c
}

struct Measured {
    /// Per idle session: (Rust-requested bytes, malloc in-use bytes).
    per_session: (f64, f64),
    /// What the node still held after it was dropped (0 if the meters saw everything).
    residue: (isize, isize),
}

/// Heap of one node per idle session, with `n` peers connected to it.
fn measure(provider: &SharedProvider, n: usize) -> Measured {
    RUST_LIVE.store(0, Ordering::Relaxed);
    MALLOC_LIVE.store(0, Ordering::Relaxed);
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
    let server_config = config(1, provider);
    let server_identity = Identity::from_seed(&Seed::from_u64(2));
    let mut server = counted(|| Node::new(server_config, server_identity, NOW).unwrap());
    let spec = server.peer_spec();
    let mut connect = |server: &mut Node, peer: &mut Node, port: u16| {
        let from = SocketAddr::from(([10, 0, 1, 1], port));
        peer.connect(NOW, server_addr, spec).unwrap();
        loop {
            let mut moved = false;
            while let Some(t) = peer.poll_transmit(NOW, &mut buf).unwrap() {
                counted(|| {
                    server.handle_datagram(NOW, from, &buf[..t.len]).unwrap();
                    while server.poll_event().is_some() {}
                });
                moved = true;
                while let Some(t) = counted(|| server.poll_transmit(NOW, &mut buf).unwrap()) {
                    peer.handle_datagram(NOW, server_addr, &buf[..t.len])
                        .unwrap();
                    while peer.poll_event().is_some() {}
                }
            }
            if !moved {
                break;
            }
        }
    };
    let (first, rest) = peers.split_first_mut().unwrap();
    connect(&mut server, first, 1);
    let base = meters();
    for (i, p) in rest.iter_mut().enumerate() {
        connect(&mut server, p, 2 + i as u16);
    }
    let after = meters();
    assert_eq!(server.session_count(), n);
    for i in 0..n {
        assert!(server
            .session_info(proto_core::SessionId(1 + i as u64))
            .is_some_and(|s| s.established));
    }
    counted(|| drop(server));
    let per = |a: isize, b: isize| (a - b) as f64 / (n - 1) as f64;
    Measured {
        per_session: (per(after.0, base.0), per(after.1, base.1)),
        residue: meters(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is needed. Re-run with malloc's per-thread
    // cache off, so that mallinfo2 counts freed chunks as free.
    if std::env::var("GLIBC_TUNABLES").ok().as_deref() != Some(TUNABLES) {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", TUNABLES)
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    #[allow(unused_mut)]
    let mut providers: Vec<SharedProvider> = vec![Arc::new(proto_core::crypto::RustCrypto)];
    #[cfg(feature = "aws-lc")]
    providers.push(Arc::new(proto_core::crypto::AwsLc));
    let n = if std::env::args().any(|a| a == "--bench") {
        N
    } else {
        N_QUICK
    };
    for p in providers {
        let m = measure(&p, n);
        let (rust, malloc) = m.per_session;
        let note = if p.name() == "aws-lc" {
            "; aws-lc allocates its key contexts in C with malloc, which a Rust global \
             allocator cannot see: the Rust figure leaves them out (two EVP_AEAD_CTX, one per \
             direction, 584 bytes each by aws-lc's header, plus its 8-byte size prefix), the \
             malloc figure includes them"
        } else {
            ""
        };
        println!(
            "idle session: {rust:.0} bytes (provider {}): Rust heap requested, counting \
             allocator; {malloc:.0} bytes in malloc's heap incl. C allocations and malloc \
             chunk overhead (mallinfo2){note}",
            p.name()
        );
        println!(
            "  (over {} sessions; after dropping the node the meters read {} / {} bytes)",
            n - 1,
            m.residue.0,
            m.residue.1
        );
    }
}
