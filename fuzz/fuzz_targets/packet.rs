//! Arbitrary bytes into the packet decoder, the frame decoder, and a live node.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto_core::wire::{self, frame::Frames};
use proto_core::{Config, Identity, Instant, Node, Seed};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode(data);
    let _ = Frames::validate(data);
    let mut config = Config::new(Seed::from_u64(1));
    config.strict_drain = false;
    if let Ok(mut node) = Node::new(config, Identity::from_seed(&Seed::from_u64(2)), Instant::ZERO) {
        let from = "10.0.0.1:1".parse().expect("literal address");
        let _ = node.handle_datagram(Instant::ZERO, from, data);
        let mut buf = [0u8; 1500];
        while let Ok(Some(_)) = node.poll_transmit(Instant::ZERO, &mut buf) {}
    }
});
