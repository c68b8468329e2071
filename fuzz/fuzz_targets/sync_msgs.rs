//! `sync_msgs`: the body is `net_fuzz_bodies::decoders::sync_msgs` (its docs say what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| net_fuzz_bodies::decoders::sync_msgs(data));
