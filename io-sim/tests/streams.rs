//! Streams end to end in the simulator: transfers under loss, reordering, duplication,
//! corruption, partitions and tail loss, checked byte for byte.

use std::time::Duration;

use io_sim::transfer::{transfer, TransferParams};
use io_sim::LinkConfig;
use proto_core::Instant;

fn link(latency_ms: u64, loss: f64) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(latency_ms),
        bandwidth_bps: Some(100_000_000),
        queue_bytes: 512 * 1024,
        loss_ppm: (loss * 1e6) as u32,
        ..LinkConfig::default()
    }
}

#[test]
fn a_lossless_transfer_completes() {
    let p = TransferParams {
        bytes: 4 << 20,
        link: link(10, 0.0),
        ..TransferParams::default()
    };
    let (mut w, out) = transfer(p);
    w.run_until(Instant::from_millis(20_000)).unwrap();
    let o = out.borrow().clone();
    println!("{o:?}");
    assert!(o.complete(p.bytes), "{o:?}");
}
