//! The bodies of Net's fuzz targets, as plain functions of the input bytes.
//!
//! `fuzz/fuzz_targets/<name>.rs` is one line around [`run`]; a stable test
//! (`tests/replay.rs`) feeds every committed corpus entry (`fuzz/corpus/<name>/`) and every
//! past crash artifact (`fuzz/artifacts/<name>/`) through the same functions on every CI run,
//! so a fixed crash stays fixed without a nightly toolchain. `docs/fuzzing.md` says how to
//! run, minimise and add to them.
//!
//! Each body panics when an invariant breaks; "never panics" is always one of them.
//! [`NullCrypto`] is the way past the packet AEAD for the targets that need it.

pub mod decoders;
pub mod log;
pub mod mesh;
pub mod node;
mod null_crypto;
pub mod rpc;
pub mod store;
pub mod streams;
pub mod world;

pub use null_crypto::NullCrypto;

/// A target: its name (the cargo-fuzz binary and corpus directory) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `docs/fuzzing.md` lists them.
pub const TARGETS: &[Target] = &[
    ("packet", decoders::packet),
    ("frames", decoders::frames),
    ("rpc_frames", decoders::rpc_frames),
    ("sync_msgs", decoders::sync_msgs),
    ("binding", decoders::binding),
    ("node_input", node::node_input),
    ("handshake_answers", node::handshake_answers),
    ("session_ops", node::session_ops),
    ("after_handshake", node::after_handshake),
    ("stream_ops", streams::stream_ops),
    ("rpc_ops", rpc::rpc_ops),
    ("log_ops", log::log_ops),
    ("log_mesh", mesh::log_mesh),
    ("log_file", store::log_file),
    ("world", world::world),
];

/// Runs the target called `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, body)) => {
            body(data);
            true
        }
        None => false,
    }
}
