//! `log_file`: the body is `net_fuzz_bodies::store::log_file` (its docs say what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| net_fuzz_bodies::store::log_file(data));
