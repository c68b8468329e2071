//! `after_handshake`: the body is `net_fuzz_bodies::node::after_handshake` (its docs say what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| net_fuzz_bodies::node::after_handshake(data));
