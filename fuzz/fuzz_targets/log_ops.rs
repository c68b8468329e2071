//! `log_ops`: the body is `net_fuzz_bodies::log::log_ops` (its docs say what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| net_fuzz_bodies::log::log_ops(data));
