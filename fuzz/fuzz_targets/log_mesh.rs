//! `log_mesh`: the body is `net_fuzz_bodies::mesh::log_mesh` (its docs say what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| net_fuzz_bodies::mesh::log_mesh(data));
